"""Base vs tuned on held-out preference pairs: does the model rank the chosen answer first?

A DPO/ORPO run is better when the tuned model prefers the answers people preferred. Each model
scores both answers of every held-out pair by the summed log-probability of the answer's
tokens — the tokens training puts loss on, through the same code as held-out loss
(`eval/loss.py`, the data layer's labels with `train_on="last"`). Per model:

  preference_accuracy  share of pairs with log p(chosen) > log p(rejected)
  reward_margin        beta x mean(log p(chosen) - log p(rejected))

Both get a paired bootstrap interval of tuned - base over pairs (`eval/stats.py`). With the
base model as the reference (it is, for DPO: the run starts from it), tuned - base of
`reward_margin` is exactly the mean implicit DPO reward margin
beta [(log pi - log ref)(chosen) - (log pi - log ref)(rejected)] on held-out data; the base's
own value says how far it already leaned towards the chosen answers. `reward_accuracy` (the
tuned model alone, with its bootstrap interval) is how often that implicit reward favours the
chosen answer: what training reports as `val_preference_accuracy`. A base model that already
ranks most pairs right (absolute accuracy near 1) can leave `preference_accuracy` flat while
the margin and reward accuracy move: the report shows all three.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import PREFERENCE_METHODS
from tunesmith.data.records import Conversation, Message, PreferencePair
from tunesmith.errors import DataError
from tunesmith.eval.results import MetricComparison
from tunesmith.eval.stats import bootstrap_mean, paired_bootstrap
from tunesmith.events import Reporter

__all__ = ["PREFERENCE_METHODS", "heldout_pairs", "preference_comparison"]


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """The preference pairs of a file (every format the data layer reads)."""
    from tunesmith.data.prepare import read_records

    pairs = [r for r in read_records(Path(path)) if isinstance(r, PreferencePair)]
    if not pairs:
        raise DataError(f"no preference pairs in {path}", hint="pass a prompt/chosen/rejected file")
    return pairs


def heldout_pairs(config: dict[str, Any], data: str | Path | None = None) -> list[PreferencePair]:
    """The run's held-out pairs: `data` when given, else its validation file, else the same
    seeded split of the training file that training held out (`heldout_split`)."""
    if data is not None:
        return read_pairs(data)
    cfg = config.get("data") or {}
    if cfg.get("validation"):
        return read_pairs(cfg["validation"])
    if cfg.get("validation_fraction") and cfg.get("train"):
        from tunesmith.data.prepare import heldout_split
        from tunesmith.data.quality import record_key

        pairs = read_pairs(cfg["train"])
        keys = [record_key(p) for p in pairs]
        if cfg.get("dedupe"):  # the rows training kept: the first copy of each
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            kept = [i for i, k in enumerate(keys) if first[k] == i]
            pairs, keys = [pairs[i] for i in kept], [keys[i] for i in kept]
        _, held = heldout_split(keys, float(cfg["validation_fraction"]), int(config.get("seed", 0)))
        return [pairs[i] for i in held]
    raise DataError("the run has no held-out preference pairs", hint="pass --data PAIRS.jsonl")


def log_prob_margins(
    lm: Any, pairs: Sequence[PreferencePair], *, on_event: Reporter | None = None, who: str = ""
) -> np.ndarray:
    """log p(chosen) - log p(rejected) of each pair under `lm` (a LoadedModel)."""
    from tunesmith.eval.loss import example_losses

    convs = [
        Conversation((*p.prompt, Message("assistant", answer)), p.source)
        for p in pairs
        for answer in (p.chosen, p.rejected)
    ]
    losses = example_losses(
        lm.model,
        lm.tokenizer,
        convs,
        on_event=on_event,
        phase=f"preference:{who}",
        label=f"{who} model: scoring held-out pairs",
    )
    nll = np.array([x.nll for x in losses], dtype=np.float64).reshape(-1, 2)
    return nll[:, 1] - nll[:, 0]  # -nll is the log-prob


def compare_margins(
    base: np.ndarray, tuned: np.ndarray, *, beta: float, seed: int = 0
) -> dict[str, MetricComparison]:
    """The two preference metrics, base vs tuned, with paired bootstrap intervals."""
    out: dict[str, MetricComparison] = {}
    specs = [
        (
            "preference_accuracy",
            "share of held-out pairs whose chosen answer the model finds more likely",
            True,
            lambda m: (m > 0).astype(np.float64),
        ),
        (
            "reward_margin",
            f"beta ({beta:g}) x mean log-prob margin, chosen - rejected; tuned - base is the "
            "mean implicit DPO reward margin",
            False,
            lambda m: beta * m,
        ),
    ]
    for name, desc, bounded, score in specs:
        r = paired_bootstrap(score(base), score(tuned), seed=seed)
        out[name] = MetricComparison(
            name, desc, True, bounded, r.base, r.tuned, r.diff, r.ci, r.p_value, r.significant, r.n
        )
    # what DPO itself optimises, with the base as the reference: the tuned model's value alone
    wins = (tuned > base).astype(np.float64)
    value, ci = bootstrap_mean(wins.tolist(), seed=seed)
    out["reward_accuracy"] = MetricComparison(
        "reward_accuracy",
        "share of held-out pairs whose implicit DPO reward (the base as reference) favours the "
        "chosen answer (training's val_preference_accuracy)",
        True,
        True,
        None,
        value,
        None,
        ci,
        None,
        None,
        len(wins),
    )
    return out


def preference_comparison(
    tuned: Any,
    base: Any,
    pairs: Sequence[PreferencePair],
    *,
    beta: float,
    seed: int = 0,
    on_event: Reporter | None = None,
) -> dict[str, MetricComparison]:
    """Load both models (names, paths or LoadedModels), score every pair, compare."""
    from tunesmith.eval.answers import load_for_eval

    tuned_lm = load_for_eval(tuned, on_event)
    tuned_m = log_prob_margins(tuned_lm, pairs, on_event=on_event, who="tuned")
    del tuned_lm
    base_lm = load_for_eval(base, on_event)
    base_m = log_prob_margins(base_lm, pairs, on_event=on_event, who="base")
    return compare_margins(base_m, tuned_m, beta=beta, seed=seed)


def method_beta(config: dict[str, Any]) -> float:
    """The run's beta (DPO's or ORPO's; 0.1 when unset or auto)."""
    method = config.get("method")
    if isinstance(method, dict):
        block = method.get(method.get("type", "")) or {}
        beta = block.get("beta") if isinstance(block, dict) else None
        if isinstance(beta, (int, float)) and beta > 0:
            return float(beta)
    return 0.1
