"""`calculate_output` of a multi grader: arithmetic over sub-grader names, parsed, never eval'd.

A formula arrives in a request body, so it is data, not code: a small recursive-descent parser
turns it into a tree over numbers and names, and only that tree is evaluated. The language is
OpenAI's: `+ - * /`, `^` (power, right-associative, binding tighter than unary minus, so
`-x^2` is `-(x^2)`), parentheses, and the functions `min max abs floor ceil exp sqrt log`
(`log` natural; `min`/`max` take one or more arguments). A name that is not a sub-grader is a
parse-time error naming it; a math error while evaluating (`log(0)`, `1/0`) is a grading error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from tunesmith.graders.failures import GraderError

MAX_LENGTH = 4096
MAX_DEPTH = 64


def _unary(fn: Callable[[float], float]) -> Callable[..., float]:
    def call(*args: float) -> float:
        return float(fn(args[0]))

    return call


FUNCTIONS: dict[str, tuple[Callable[..., float], int | None]] = {
    # name -> (function, exact number of arguments or None for one or more)
    "min": (lambda *a: float(min(a)), None),
    "max": (lambda *a: float(max(a)), None),
    "abs": (_unary(abs), 1),
    "floor": (_unary(math.floor), 1),
    "ceil": (_unary(math.ceil), 1),
    "exp": (_unary(math.exp), 1),
    "sqrt": (_unary(math.sqrt), 1),
    "log": (_unary(math.log), 1),
}

_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_]\w*)|(?P<op>[-+*/^(),]))"
)


class FormulaError(ValueError):
    """The formula does not parse, or names something that is not a sub-grader."""


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Name:
    name: str


@dataclass(frozen=True)
class Unary:
    op: str
    arg: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple[Node, ...]


Node = Num | Name | Unary | Binary | Call


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match:
            at = len(text) - len(text[pos:].lstrip())
            raise FormulaError(f"unexpected {text[at]!r} at position {at + 1}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind), match.start(kind)))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, text: str, names: set[str]):
        self.tokens = _tokens(text)
        self.i = 0
        self.names = names
        self.depth = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise FormulaError(
                "the formula ends too early" + (f": expected {value!r}" if value else "")
            )
        if value is not None and token[1] != value:
            raise FormulaError(f"expected {value!r} at position {token[2] + 1}, found {token[1]!r}")
        self.i += 1
        return token

    def at(self, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "op" and token[1] in values

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FormulaError(f"the formula nests deeper than {MAX_DEPTH} levels")

    def expr(self) -> Node:
        self.nested()
        node = self.term()
        while self.at("+", "-"):
            op = self.take()[1]
            node = Binary(op, node, self.term())
        self.depth -= 1
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.at("*", "/"):
            op = self.take()[1]
            node = Binary(op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.at("-", "+"):
            op = self.take()[1]
            self.nested()
            arg = self.unary()
            self.depth -= 1
            return Unary(op, arg)
        return self.power()

    def power(self) -> Node:
        base = self.atom()
        if self.at("^"):
            self.take()
            self.nested()
            exponent = self.unary()  # right-associative: a^b^c = a^(b^c); a^-b allowed
            self.depth -= 1
            return Binary("^", base, exponent)
        return base

    def atom(self) -> Node:
        kind, value, pos = self.take()
        if kind == "num":
            return Num(float(value))
        if kind == "name":
            if self.at("("):
                return self.call(value, pos)
            if value in FUNCTIONS:
                raise FormulaError(f"{value} is a function: write {value}(...)")
            if value not in self.names:
                known = ", ".join(sorted(self.names)) or "none"
                raise FormulaError(f"unknown name {value!r} (the graders are: {known})")
            return Name(value)
        if value == "(":
            node = self.expr()
            self.take(")")
            return node
        raise FormulaError(f"unexpected {value!r} at position {pos + 1}")

    def call(self, fn: str, pos: int) -> Node:
        if fn not in FUNCTIONS:
            raise FormulaError(
                f"unknown function {fn!r} at position {pos + 1} (use {', '.join(FUNCTIONS)})"
            )
        self.take("(")
        args = [self.expr()]
        while self.at(","):
            self.take()
            args.append(self.expr())
        self.take(")")
        arity = FUNCTIONS[fn][1]
        if arity is not None and len(args) != arity:
            raise FormulaError(f"{fn}() takes {arity} argument, not {len(args)}")
        return Call(fn, tuple(args))


def parse(text: str, names: Iterable[str]) -> Node:
    """The tree of `text` over these sub-grader `names`; raises FormulaError saying what is
    wrong and where."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("must be a non-empty formula such as (a + b) / 2")
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"is longer than {MAX_LENGTH} characters")
    parser = _Parser(text, set(names))
    node = parser.expr()
    leftover = parser.peek()
    if leftover is not None:
        raise FormulaError(f"unexpected {leftover[1]!r} at position {leftover[2] + 1}")
    return node


def names_in(node: Node) -> set[str]:
    if isinstance(node, Name):
        return {node.name}
    if isinstance(node, Unary):
        return names_in(node.arg)
    if isinstance(node, Binary):
        return names_in(node.left) | names_in(node.right)
    if isinstance(node, Call):
        return set().union(*(names_in(a) for a in node.args))
    return set()


def _eval(node: Node, values: Mapping[str, float]) -> float:
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Name):
        return float(values[node.name])
    if isinstance(node, Unary):
        arg = _eval(node.arg, values)
        return -arg if node.op == "-" else arg
    if isinstance(node, Call):
        return FUNCTIONS[node.fn][0](*(_eval(a, values) for a in node.args))
    a, b = _eval(node.left, values), _eval(node.right, values)
    if node.op == "+":
        return a + b
    if node.op == "-":
        return a - b
    if node.op == "*":
        return a * b
    if node.op == "/":
        return a / b
    result = a**b
    if isinstance(result, complex):
        raise ValueError(f"{a}^{b} is not a real number")
    return float(result)


def evaluate(node: Node, values: Mapping[str, float]) -> float:
    """The formula's value for these sub-grader scores; a math error (division by zero, log of
    zero, overflow) is a `GraderError` of kind `other_error`."""
    try:
        result = _eval(node, values)
    except (ZeroDivisionError, ValueError, OverflowError) as exc:
        raise GraderError("other_error", f"calculate_output: {exc}") from None
    if not math.isfinite(result):
        raise GraderError("other_error", f"calculate_output: the result is {result}")
    return result
