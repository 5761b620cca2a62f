"""calculate_output: arithmetic over grader names, parsed by hand, never eval'd."""

from __future__ import annotations

import math

import pytest

from tunesmith.graders import GraderError
from tunesmith.graders.formula import FormulaError, evaluate, names_in, parse


def value(text: str, **values: float) -> float:
    return evaluate(parse(text, values), values)


def test_operators_precedence_and_functions() -> None:
    assert value("(a + b) / 2", a=1, b=0.5) == 0.75
    assert value("0.5 * a + 0.5 * b", a=1, b=0) == 0.5
    assert value("a - b - c", a=1, b=2, c=3) == -4  # left-associative
    assert value("2 ^ 3 ^ 2") == 512  # right-associative power
    assert value("-a ^ 2", a=3) == -9  # power binds tighter than unary minus
    assert value("2 ^ -1") == 0.5
    assert value("1e-1 * 10 + .5") == 1.5
    assert value("min(a, b, 0.3) + max(a)", a=0.9, b=0.4) == pytest.approx(1.2)
    assert value("abs(a - b) + floor(2.7) + ceil(0.2)", a=0.25, b=1) == 3.75
    assert value("exp(log(a)) + sqrt(16)", a=2) == pytest.approx(6)
    assert names_in(parse("a * max(b, 1)", ["a", "b", "c"])) == {"a", "b"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a +", "ends too early"),
        ("(a + b", "expected ')'"),
        ("a b", "unexpected 'b'"),
        ("a + nope", "unknown name 'nope' (the graders are: a, b)"),
        ("evil(a)", "unknown function 'evil'"),
        ("__import__(a)", "unknown function '__import__'"),
        ("__import__('os')", "unexpected"),
        ("a.__class__", "unexpected '.'"),
        ("a; b", "unexpected ';'"),
        ("sqrt(a, b)", "takes 1 argument"),
        ("max", "is a function"),
        ("", "non-empty formula"),
        ("(" * 100 + "a" + ")" * 100, "nests deeper"),
    ],
)
def test_bad_formulas_are_parse_errors(text: str, message: str) -> None:
    with pytest.raises(FormulaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text, ["a", "b"])


def test_math_errors_while_grading_are_grader_errors() -> None:
    for text in ("a / b", "log(b)", "sqrt(b - 1)", "exp(1000)", "(b - 1) ^ 0.5"):
        with pytest.raises(GraderError) as err:
            value(text, a=1, b=0)
        assert err.value.kind == "other_error"
    assert math.isfinite(value("10 ^ 10"))
