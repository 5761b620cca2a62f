"""A hand-made comparison whose numbers are known (shared by the report, CLI and browser
tests)."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.eval.compare import compare_scores
from tunesmith.eval.forgetting import forgetting_from_losses
from tunesmith.eval.loss import ExampleLoss
from tunesmith.eval.results import ComparisonResult, ExampleResult
from tunesmith.graders import build_graders


def make_comparison(run_dir: Path | None = None, n: int = 30) -> ComparisonResult:
    """n examples: the tuned model is right on all but the last; the base model only on the
    first 3, and example 2 is a regression (base right, tuned wrong)."""
    refs = [json.dumps({"label": "a" if i % 2 else "b", "id": i}) for i in range(n)]
    metrics = build_graders(["json_match", "json_valid", "length"], refs)
    examples = []
    for i, ref in enumerate(refs):
        base_out = ref if i < 3 else f"<script>alert({i})</script> I think it is b"
        tuned_out = ref if i not in (2, n - 1) else "not json"
        prompt = [{"role": "user", "content": f"ticket <b>{i}</b>"}]
        examples.append(
            ExampleResult(
                i,
                f"heldout.jsonl:{i + 1}",
                prompt,
                ref,
                tuned_out,
                {m.name: m(tuned_out, ref, prompt) for m in metrics},
                base_out,
                {m.name: m(base_out, ref, prompt) for m in metrics},
            )
        )
    comparisons = {
        m.name: compare_scores(
            m,
            [e.base_scores[m.name] for e in examples],
            [e.tuned_scores[m.name] for e in examples],
            seed=0,
        )
        for m in metrics
    }
    base_l = [ExampleLoss(10.0, 10) for _ in range(20)]
    tuned_l = [ExampleLoss(10.5 + 0.1 * (i % 2), 10) for i in range(20)]
    return ComparisonResult(
        main_metric="json_match",
        metrics=comparisons,
        examples=examples,
        base_model="base-m",
        tuned_model="tuned-m",
        data="heldout.jsonl",
        settings={"max_new_tokens": 32, "seed": 0},
        forgetting=forgetting_from_losses(base_l, tuned_l, source="bundled"),
        timings={"total_seconds": 1.0},
        run_dir=run_dir,
    )
