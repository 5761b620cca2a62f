"""Evaluation: base vs tuned with paired bootstrap verdicts, forgetting check, prompt cost,
reports.

`compare_run(run_dir)` is what a training run calls at its end; `compare_models` is the
general base-vs-tuned comparison behind `tunesmith eval`. The per-example metrics are graders
(`tunesmith.graders`); what a comparison found is plain data (`tunesmith.eval.results`). Heavy
imports (torch, transformers, matplotlib) happen inside the functions that need them.
"""

from tunesmith.eval.compare import compare_models, compare_run
from tunesmith.eval.results import ComparisonResult, ExampleResult, MetricComparison, PromptCost
from tunesmith.eval.stats import BootstrapResult, paired_bootstrap

__all__ = [
    "BootstrapResult",
    "ComparisonResult",
    "ExampleResult",
    "MetricComparison",
    "PromptCost",
    "compare_models",
    "compare_run",
    "paired_bootstrap",
]
