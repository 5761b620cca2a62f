"""Training objectives behind one small protocol (base.py); the loop never knows which runs.

`supervised` (sft.py), `dpo` (dpo.py) and `orpo` (orpo.py; both on preference pairs,
preference.py) and `reinforcement` (grpo.py: GRPO against a grader, sampling with rollout.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.config import METHODS_NOT_YET as NOT_YET
from tunesmith.config import PREFERENCE_METHODS
from tunesmith.errors import ConfigError
from tunesmith.train.objectives.base import Objective, causal_lm_parts


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


def check_options(spec: Any, item: Any = None) -> None:
    """Method options that can be checked before anything loads: GRPO's grader (with `item`,
    a training row's fields, its `{{item.x}}` references too)."""
    if spec.method.type == "reinforcement":
        from tunesmith.train.objectives.grpo import check_grader

        if spec.distributed.strategy == "fsdp":  # the rollout runs the unsharded model
            raise ConfigError(
                "reinforcement fine-tuning samples from the model between steps, which FSDP's "
                "sharded weights do not allow yet",
                where="distributed.strategy",
                param="distributed.strategy",
                hint="use distributed.strategy: ddp (LoRA fits on each GPU)",
            )
        check_grader(spec.method.reinforcement, item)


def make_objective(spec: Any, *, pad_id: int, tokenizer: Any = None) -> Objective:
    """The objective for `spec.method.type` (`tokenizer`: GRPO decodes what it samples)."""
    kind = spec.method.type
    check_method(kind)
    if kind == "supervised":
        from tunesmith.train.objectives.sft import SupervisedObjective

        return SupervisedObjective(pad_id)
    if kind == "dpo":
        from tunesmith.train.objectives.dpo import DPOObjective

        return DPOObjective(pad_id, spec.method.dpo)
    if kind == "orpo":
        from tunesmith.train.objectives.orpo import ORPOObjective

        return ORPOObjective(pad_id, spec.method.orpo)
    if kind == "reinforcement":
        from tunesmith.train.objectives.grpo import GRPOObjective

        return GRPOObjective(
            pad_id,
            spec.method.reinforcement,
            tokenizer,
            max_seq_len=spec.data.max_seq_len,
            seed=spec.seed,
        )
    raise ConfigError(f"unknown method '{kind}'", where="method.type", param="method.type")


def make_rows(
    method_type: str, examples: Sequence[Any], max_seq_len: int, *, packing: bool
) -> list[Any]:
    """The loop's rows for a method: packed (or single) sequences for SFT, one row per pair
    for the preference methods, one per prompt for reinforcement (neither is packed)."""
    if method_type == "reinforcement":
        from tunesmith.train.objectives.grpo import prompt_rows

        return prompt_rows(examples)
    if method_type in PREFERENCE_METHODS:
        from tunesmith.train.objectives.preference import pair_rows

        return pair_rows(examples, max_seq_len)
    from tunesmith.train.batching import make_rows as sequence_rows

    return sequence_rows(examples, max_seq_len, packing=packing)


__all__ = [
    "NOT_YET",
    "PREFERENCE_METHODS",
    "Objective",
    "causal_lm_parts",
    "check_method",
    "check_options",
    "make_objective",
    "make_rows",
]
