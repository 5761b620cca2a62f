"""User code graders: module:function and file.py:function, with and without the prompt."""

from __future__ import annotations

import textwrap

import pytest

from tunesmith.errors import ConfigError
from tunesmith.graders import build_grader


def test_user_grader_module_and_file(tmp_path, monkeypatch) -> None:
    (tmp_path / "mygrader.py").write_text(
        textwrap.dedent(
            """
            def starts_same(prediction, reference):
                return prediction[:1] == reference[:1]

            def uses_prompt(prediction, reference, prompt):
                return len(prompt)

            def bad(prediction, reference):
                return "nope"

            def nan(prediction, reference):
                return float("nan")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    grader = build_grader("mygrader:starts_same", ["x"])
    assert grader("abc", "axe", []) == 1.0
    assert grader("xbc", "axe", []) == 0.0
    assert grader.bounded is False and grader.name == "mygrader:starts_same"
    by_file = build_grader(f"{tmp_path / 'mygrader.py'}:uses_prompt", ["x"])
    assert by_file("a", "b", [{"role": "user", "content": "q"}]) == 1.0
    with pytest.raises(ConfigError, match="bool or a number"):
        build_grader("mygrader:bad", ["x"])("a", "b", [])
    with pytest.raises(ConfigError, match="NaN"):
        build_grader("mygrader:nan", ["x"])("a", "b", [])
    with pytest.raises(ConfigError, match="has no function"):
        build_grader("mygrader:missing", ["x"])
    with pytest.raises(ConfigError, match="could not import"):
        build_grader("no_such_module_xyz:f", ["x"])
    with pytest.raises(ConfigError, match="does not exist"):
        build_grader(f"{tmp_path / 'absent.py'}:f", ["x"])
