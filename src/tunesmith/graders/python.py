"""User code graders: `module:function` or `path/to/file.py:function`.

A grader a user writes in Python is called as `fn(prediction, reference)` or, when it takes a
third positional parameter, `fn(prediction, reference, prompt)` (the prompt messages as a list
of dicts); it returns a bool or a number. It is the user's own code, run on the user's own
machine, in this process, exactly like a plugin they import. So it is only ever loaded when
the user names it on this command line (`--metrics`, an api call's `metrics=`) or in the spec
they train with; a run directory's saved config names code that another person may have
written, so `compare RUN` imports it only with an explicit `--trust-run-config`
(`tunesmith.eval.compare`). Every import is announced (a message event naming the file).
(A server running other people's graders must isolate them first: own process, time and
memory limits, no network.)

The number is taken as it is (`bounded=False`): a user grader may score 0..1, 0..10 or
count something; NaN or a non-number is a user error naming the grader.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith import events
from tunesmith.errors import ConfigError
from tunesmith.events import Reporter
from tunesmith.graders.base import Grader, Item, Sample


def grader_file(target: str) -> str:
    """The file `target` (`path.py` or `module`) would import, found without running it."""
    if target.endswith(".py"):
        return str(Path(target).expanduser().resolve())
    try:
        found = importlib.util.find_spec(target.partition(".")[0])
    except (ImportError, ValueError):
        found = None
    origin = getattr(found, "origin", None)
    return f"module {target}" + (f" ({origin})" if origin else "")


def _import(target: str, on_event: Reporter | None = None) -> Any:
    report = events.reporter(on_event)
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"grader file {target} does not exist")
            report(events.message(f"importing user grader code from {path}", phase="graders"))
            mod_spec = importlib.util.spec_from_file_location(
                f"_tunesmith_grader_{path.stem}", path
            )
            assert mod_spec is not None and mod_spec.loader is not None
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
            return module
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, "")  # like `python -m`: modules beside the user's cwd
        report(
            events.message(f"importing user grader code: {grader_file(target)}", phase="graders")
        )
        return importlib.import_module(target)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"could not import grader module {target!r}: {exc}") from None


def _wants_prompt(fn: Callable[..., Any]) -> bool:
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return False
    return len(params) >= 3


def code_grader(spec: str, on_event: Reporter | None = None) -> Grader:
    """Import `module:function` or `path/to/file.py:function` and wrap it as a grader (the
    import is announced to `on_event` first, naming the file)."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ConfigError(f"grader {spec!r} must look like module:function")
    module = _import(target, on_event)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"grader {spec!r}: {target} has no function {attr!r}")
    wants_prompt = _wants_prompt(fn)

    def score(sample: Sample, item: Item) -> float:
        prediction, reference = sample.output_text, item.reference
        value = (
            fn(prediction, reference, list(item.prompt))
            if wants_prompt
            else fn(prediction, reference)
        )
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"grader {spec} returned {value!r}; it must return a bool or a number"
            ) from None
        if math.isnan(number):
            raise ConfigError(f"grader {spec} returned NaN")
        return number

    return Grader(spec, score, description=f"user grader {spec}", bounded=False)
