"""Evaluation: task metrics, paired bootstrap verdicts, forgetting check, reports.

`compare_run(run_dir)` is what a training run calls at its end; `compare_models` is the general
base-vs-tuned comparison behind `tunesmith eval`. Heavy imports (torch, transformers,
matplotlib) happen inside the functions that need them.
"""

from tunesmith.eval.compare import ComparisonResult, MetricComparison, compare_models, compare_run
from tunesmith.eval.metrics import Metric, build_metric, build_metrics, infer_schema
from tunesmith.eval.stats import BootstrapResult, paired_bootstrap

__all__ = [
    "BootstrapResult",
    "ComparisonResult",
    "Metric",
    "MetricComparison",
    "build_metric",
    "build_metrics",
    "compare_models",
    "compare_run",
    "infer_schema",
    "paired_bootstrap",
]
