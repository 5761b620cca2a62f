"""Field checks for grader objects: every mistake found in one pass, each naming its field.

OpenAI's API answers a bad grader with the parameter at fault (`grader.operation`); a user who
fixes one field at a time and resubmits learns of the next mistake only then, so the checks
here collect every error of the object, each as `path: what is wrong`, and the builder raises
them together (`GraderConfigError.errors`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any


class Checker:
    """Collects `path: message` errors for one grader object."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def keys(self, obj: Mapping[str, Any], path: str, allowed: Collection[str]) -> None:
        """Unknown fields are errors: a misspelt optional field would silently do nothing."""
        for key in obj:
            if key not in allowed:
                self.error(
                    f"{path}.{key}", f"unknown field (allowed: {', '.join(sorted(allowed))})"
                )

    def string(
        self, obj: Mapping[str, Any], key: str, path: str, *, required: bool = True
    ) -> str | None:
        value = obj.get(key)
        if value is None:
            if required:
                self.error(f"{path}.{key}", "is required")
            return None
        if not isinstance(value, str) or (required and not value.strip()):
            self.error(f"{path}.{key}", "must be a non-empty string")
            return None
        return value

    def choice(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        options: Collection[str],
        default: str | None = None,
    ) -> str | None:
        value = obj.get(key, default)
        if value is None:
            self.error(f"{path}.{key}", f"is required: one of {', '.join(options)}")
            return None
        if value not in options:
            self.error(f"{path}.{key}", f"must be one of {', '.join(options)} (got {value!r})")
            return None
        return str(value)

    def number(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        default: float | None = None,
        *,
        minimum: float | None = None,
    ) -> float | None:
        value = obj.get(key, default)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            self.error(f"{path}.{key}", f"must be a number (got {value!r})")
            return None
        if minimum is not None and value < minimum:
            self.error(f"{path}.{key}", f"must be at least {minimum:g} (got {value!r})")
            return None
        return float(value)

    def mapping(self, value: Any, path: str) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.error(path, f"must be an object (got {type(value).__name__})")
            return None
        return value
