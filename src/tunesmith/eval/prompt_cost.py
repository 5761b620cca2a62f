"""The prompt-cost view: what the fine-tune saves against prompting the base model harder.

The honest alternative to fine-tuning is a long instruction prompt on the base model. This view
runs that alternative — the base model with the long prompt as its system message — on (a
subset of) the held-out prompts and sets its score, tokens per request and seconds per request
beside the tuned model answering the short prompt. The tuned model's numbers come from its run
over all held-out prompts; re-running it on the subset would only cost time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tunesmith.eval.answers import answer, output_tokens, prompt_tokens
from tunesmith.eval.examples import EvalExample
from tunesmith.eval.results import ExampleResult, PromptCost
from tunesmith.eval.stats import paired_bootstrap
from tunesmith.events import Reporter
from tunesmith.graders import Grader, Item, Sample


def with_system(prompt: Sequence[dict[str, Any]], system: str) -> list[dict[str, Any]]:
    """Replace (or add) the system message: how the long instruction prompt is applied."""
    rest = [m for m in prompt if m["role"] != "system"]
    return [{"role": "system", "content": system}, *rest]


def measure_prompt_cost(
    base_lm: Any,
    tuned_lm: Any,
    examples: Sequence[EvalExample],
    results: Sequence[ExampleResult],
    graders: Sequence[Grader],
    main: str,
    long_prompt: str,
    *,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
    tuned_seconds_per_request: float,
    on_event: Reporter | None = None,
) -> PromptCost:
    """Base + `long_prompt` vs tuned + the examples' own prompt, scored by the main metric (or
    the first grader when the main metric is the held-out loss)."""
    grader = next((g for g in graders if g.name == main), graders[0])
    prompts = [list(e.prompt) for e in examples]
    long_prompts = [with_system(p, long_prompt) for p in prompts]
    t = time.perf_counter()
    outputs = answer(
        base_lm,
        long_prompts,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        on_event=on_event,
        phase="generate:base-long-prompt",
        text="base model with long prompt: answering",
    )
    long_seconds = (time.perf_counter() - t) / len(prompts)
    long_scores = [
        grader.grade(Sample(o), Item(e.reference, e.prompt))
        for o, e in zip(outputs, examples, strict=True)
    ]
    tuned_scores = [r.tuned_scores[grader.name] for r in results]
    base_scores = [r.base_scores[grader.name] for r in results]  # type: ignore[index]
    r = paired_bootstrap(long_scores, tuned_scores, seed=seed)
    return PromptCost(
        metric=grader.name,
        base_long_score=r.base,
        tuned_short_score=r.tuned,
        base_short_score=float(np.mean(base_scores)),
        n=len(prompts),
        diff_ci=r.ci,
        significant=r.significant,
        base_long_prompt_tokens=prompt_tokens(base_lm, long_prompts),
        tuned_short_prompt_tokens=prompt_tokens(tuned_lm, prompts),
        base_long_output_tokens=output_tokens(base_lm, outputs),
        tuned_short_output_tokens=output_tokens(tuned_lm, [r.tuned_output for r in results]),
        base_long_seconds=long_seconds,
        tuned_short_seconds=tuned_seconds_per_request,
    )
