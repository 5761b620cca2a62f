"""Training objectives behind one small protocol (base.py); the loop never knows which runs.

`supervised` (sft.py) is here; `dpo` and `reinforcement` plug in beside it.
"""

from __future__ import annotations

from typing import Any

from tunesmith.errors import ConfigError
from tunesmith.train.objectives.base import Objective, causal_lm_parts

NOT_YET = {
    "dpo": "preference training (DPO) is not available yet",
    "reinforcement": "reinforcement fine-tuning (GRPO with graders) is not available yet",
}


def check_method(method_type: str) -> None:
    """Fail before anything is loaded when the spec asks for a method we cannot train yet."""
    if method_type in NOT_YET:
        raise ConfigError(
            NOT_YET[method_type],
            where="method.type",
            param="method.type",
            hint="use method: {type: supervised} for now",
            code="unsupported_method",
        )


def make_objective(spec: Any, *, pad_id: int) -> Objective:
    """The objective for `spec.method.type`."""
    kind = spec.method.type
    check_method(kind)
    if kind == "supervised":
        from tunesmith.train.objectives.sft import SupervisedObjective

        return SupervisedObjective(pad_id)
    raise ConfigError(f"unknown method '{kind}'", where="method.type", param="method.type")


__all__ = ["Objective", "causal_lm_parts", "check_method", "make_objective"]
