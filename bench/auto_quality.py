"""Auto quality: does `auto` train as good a model as a hyperparameter sweep, in minutes?

    nice -n 10 .venv/bin/python bench/auto_quality.py            # the measurement (hours)
    nice -n 10 .venv/bin/python bench/auto_quality.py --quick    # smoke run, tiny model (~1-2 min)
    .venv/bin/python bench/auto_quality.py --show-data --datasets intent   # the converted rows
    nice -n 10 .venv/bin/python bench/auto_quality.py --resume-json bench/results/FILE.json

The evidence for issue 12 (automatic hyperparameters), item 5. Two data sets:
  demo    examples/demo: 400 training / 100 held-out chat examples, free text -> one strict JSON
          object; main metric `json_fields`, max_seq_len and max_new_tokens are the demo's own
          (imported from `tunesmith.demo`, so the bench follows the demo if it changes).
  intent  BIG-bench's `intent_recognition` task (693 SNIPS utterances, 7 intents), as shipped
          in the PyPI sdist `bigbench==1.0.0` (358 MB, sha256 pinned below). Only the one file
          */bigbench/benchmark_tasks/intent_recognition/task.json is read out of the tar; nothing
          of the package is imported or executed by this script (note: `pip download` of an
          sdist prepares its metadata, which runs its setup.py in pip's build environment; pass
          --bigbench-sdist to use a copy you already have and skip pip). Each example becomes
          user = the task's `task_prefix` (it lists the 7 intents) + "Utterance: ...", assistant
          = the label whose target score is 1; seeded shuffle (seed 0), 443 training / 250
          held-out rows, written as JSONL into the cache (bench/.cache/auto_quality/, git-ignored:
          the task carries BIG-bench's canary, its rows must never be committed). Main metric
          `exact_match` (normalised string equality with the reference label); `choice` (the
          label the answer names) beside it. max_seq_len 256, max_new_tokens 16.
Cells, per data set: the sweep epochs {1, 2, 3, 5} x learning rate {1e-4, 2e-4, 5e-4} (LoRA,
`early_stopping.enabled: false`, everything else `auto`), and `auto` (the spec sets only
model, data.train, data.validation and data.max_seq_len). Every cell passes the held-out file
as `data.validation`, as a user would, so in-run validation (and, for `auto`, early stopping)
costs what it costs a user; each trains in a fresh output directory.
Measured per cell: the wall time of the `api.train` call alone (setup, loop, in-run
validation, checkpoints, final save; `compare_base=False`, the comparison is timed on its
own), optimizer steps, epochs actually trained, status (completed / early_stopped and the step
it stopped at), the resolved hyperparameters, then the held-out main metric of the tuned model
on the FULL held-out file (greedy, batched, the forgetting check and the prompt-cost view off).
The base model's answers do not depend on the cell, so they are computed once per data set
(`api.evaluate` on the base model) and paired with each sweep cell's tuned answers
(`api.evaluate` on RUN/final) for the delta's paired bootstrap interval; the `auto` cell runs
the full `api.compare(run, heldout)` a user gets (base and tuned), and the JSON records whether
its base scores equal the reused ones. Before the `auto` cell trains, `api.validate_data(train,
validation=heldout, estimate=True)` gives the estimate a user sees; it is recorded whole, with
its ratio to the measured training time (and to training + comparison).
Isolation: every cell (and each base evaluation) runs in its own Python process, so a cell
uses the tunesmith code on disk when it starts: `--order auto-last` (the default) runs every
sweep cell first and the `auto` cells last, because the `auto` rule may change while the sweep
runs; each cell records the git HEAD and a SHA-256 of src/**/*.py it ran with. The whole run
holds an exclusive flock on /tmp/tunesmith-bench.lock, so two benches never overlap.
Targets (issue 12): `auto` within 2 points of the sweep's best cell; `auto` training time
<= 5 minutes (both data sets are under 1,000 examples of <= 256 tokens); the estimate within
+-25 % of the measured training time.
--quick: a tiny model built from a config (tests/tiny.py), 40 training / 20 held-out
examples, the cells e1-lr2e-4 and auto: a smoke test of the whole pipeline, not a measurement.
Results: printed, and written (after every cell, atomically) to
bench/results/auto_quality-<UTC time>.json; --resume-json continues such a file, skipping the
cells it already holds (failed cells, and those named by --rerun, are run again; the new
record replaces the old one).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache" / "auto_quality"
LOCK = Path("/tmp/tunesmith-bench.lock")

BIGBENCH = "bigbench"
BIGBENCH_VERSION = "1.0.0"
BIGBENCH_SDIST = f"bigbench-{BIGBENCH_VERSION}.tar.gz"
# PyPI's published digest of bigbench-1.0.0.tar.gz (https://pypi.org/simple/bigbench/)
BIGBENCH_SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
INTENT_MEMBER = "bigbench/benchmark_tasks/intent_recognition/task.json"
INTENT_TASK_SHA256 = "04ca74852de19abfc64c807b096f0094bacbb82131c793d8c413cad3dfdeb5ae"
INTENT_EXAMPLES = 693
INTENT_TRAIN = 443  # the rest (250) is held out
INTENT_SEED = 0
INTENT_MAX_SEQ_LEN = 256
INTENT_MAX_NEW_TOKENS = 16  # the longest label is 7 tokens

SWEEP_EPOCHS = (1, 2, 3, 5)
SWEEP_LRS = (1e-4, 2e-4, 5e-4)
QUICK_CELLS = ("e1-lr2e-4", "auto")
QUICK_TRAIN, QUICK_HELDOUT = 40, 20
TARGET_GAP_POINTS = 2.0
TARGET_TRAIN_SECONDS = 300.0
TARGET_ESTIMATE_ERROR = 0.25


# ---------------------------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write rows unless the file already holds exactly them (keeps its mtime and hash)."""
    from tunesmith.io import atomic_write

    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)


def answer_of(row: dict) -> str:
    return row["messages"][-1]["content"]


def demo_dataset() -> dict:
    from tunesmith.demo import (
        DEMO_MAIN_METRIC,
        DEMO_MAX_NEW_TOKENS,
        DEMO_MAX_SEQ_LEN,
        find_demo_data,
    )

    data = find_demo_data()
    train, heldout = data / "train.jsonl", data / "heldout.jsonl"
    return {
        "name": "demo",
        "source": f"tunesmith's bundled demo task ({data})",
        "train": str(train),
        "heldout": str(heldout),
        "main_metric": DEMO_MAIN_METRIC,
        "metrics": None,  # the comparison's defaults for JSON references, as `tunesmith demo`
        "max_seq_len": DEMO_MAX_SEQ_LEN,
        "max_new_tokens": DEMO_MAX_NEW_TOKENS,
    }


def bigbench_sdist(path: Path | None, cache: Path) -> Path:
    """The bigbench sdist: the one given, else the cached download, else `pip download` it.
    Its SHA-256 must be PyPI's."""
    if path is None:
        path = cache / "sdist" / BIGBENCH_SDIST
        if not path.is_file():
            print(f"downloading {BIGBENCH}=={BIGBENCH_VERSION} (sdist, 358 MB) ...", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            cmd += [f"{BIGBENCH}=={BIGBENCH_VERSION}", "-d", str(path.parent)]
            subprocess.run(cmd, check=True)
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (the {BIGBENCH} {BIGBENCH_VERSION} sdist)")
    digest = sha256_file(path)
    if digest != BIGBENCH_SDIST_SHA256:
        raise SystemExit(
            f"{path}: sha256 {digest} is not PyPI's {BIGBENCH_SDIST_SHA256} for {BIGBENCH_SDIST}"
        )
    return path


def read_intent_task(sdist: Path) -> dict:
    """task.json of intent_recognition, read from the tar without extracting anything else."""
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/", 1)
            if member.isfile() and len(parts) == 2 and parts[1] == INTENT_MEMBER:
                raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                break
        else:
            raise SystemExit(f"{sdist}: no */{INTENT_MEMBER}")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != INTENT_TASK_SHA256:
        raise SystemExit(f"{sdist}: {INTENT_MEMBER} has sha256 {digest}, not the pinned one")
    return json.loads(raw)


def intent_rows(task: dict) -> list[dict]:
    prefix = task["task_prefix"]
    rows = []
    for i, ex in enumerate(task["examples"]):
        labels = [k for k, v in ex["target_scores"].items() if v == 1]
        if len(labels) != 1:
            raise SystemExit(f"intent_recognition example {i}: {len(labels)} labels score 1")
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": prefix + ex["input"]},
                    {"role": "assistant", "content": labels[0]},
                ]
            }
        )
    return rows


def intent_dataset(sdist: Path | None, cache: Path) -> dict:
    path = bigbench_sdist(sdist, cache)
    task = read_intent_task(path)
    rows = intent_rows(task)
    if len(rows) != INTENT_EXAMPLES:
        raise SystemExit(f"intent_recognition: {len(rows)} examples, expected {INTENT_EXAMPLES}")
    random.Random(INTENT_SEED).shuffle(rows)
    train, heldout = cache / "intent" / "train.jsonl", cache / "intent" / "heldout.jsonl"
    write_jsonl(train, rows[:INTENT_TRAIN])
    write_jsonl(heldout, rows[INTENT_TRAIN:])
    return {
        "name": "intent",
        "source": (
            f"BIG-bench intent_recognition from PyPI {BIGBENCH}=={BIGBENCH_VERSION} "
            f"(sdist sha256 {BIGBENCH_SDIST_SHA256[:12]}..., */{INTENT_MEMBER})"
        ),
        "package": BIGBENCH,
        "version": BIGBENCH_VERSION,
        "sdist_sha256": BIGBENCH_SDIST_SHA256,
        "task_json_sha256": INTENT_TASK_SHA256,
        "split": (
            f"{len(rows)} examples, seeded shuffle (random.Random({INTENT_SEED})): "
            f"first {INTENT_TRAIN} train, last {len(rows) - INTENT_TRAIN} held out"
        ),
        "labels": sorted(task["examples"][0]["target_scores"]),
        "train": str(train),
        "heldout": str(heldout),
        "main_metric": "exact_match",
        "metrics": ["exact_match", "choice"],
        "max_seq_len": INTENT_MAX_SEQ_LEN,
        "max_new_tokens": INTENT_MAX_NEW_TOKENS,
    }


def quick_subset(ds: dict, out: Path) -> dict:
    """The first QUICK_TRAIN / QUICK_HELDOUT rows of each file (smoke runs)."""
    ds = dict(ds)
    for key, n in (("train", QUICK_TRAIN), ("heldout", QUICK_HELDOUT)):
        dst = out / ds["name"] / f"{key}.jsonl"
        write_jsonl(dst, read_jsonl(Path(ds[key]))[:n])
        ds[key] = str(dst)
    ds["source"] += f" (--quick: first {QUICK_TRAIN} train / {QUICK_HELDOUT} held-out rows)"
    return ds


def describe_files(ds: dict) -> None:
    """Row counts, SHA-256 and the answer distribution of both files, into `ds`."""
    for key in ("train", "heldout"):
        rows = read_jsonl(Path(ds[key]))
        ds[f"n_{key}"] = len(rows)
        ds[f"{key}_sha256"] = sha256_file(Path(ds[key]))
        if ds["name"] == "intent":
            ds[f"{key}_labels"] = dict(
                collections.Counter(answer_of(r) for r in rows).most_common()
            )


def show_data(ds: dict) -> None:
    train, held = read_jsonl(Path(ds["train"])), read_jsonl(Path(ds["heldout"]))
    print(f"\n== {ds['name']}: {ds['source']}")
    if ds.get("split"):
        print(f"   split: {ds['split']}")
    print(f"   train {ds['train']} ({len(train)} rows), held-out {ds['heldout']} ({len(held)})")
    for row in train[:3]:
        print("   " + json.dumps(row, ensure_ascii=False))
    for key, rows in (("train", train), ("held-out", held)):
        counts = collections.Counter(answer_of(r) for r in rows)
        if len(counts) <= 20:
            shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            print(f"   {key} labels ({len(counts)}): {shown}")
        else:
            print(f"   {key}: {len(counts)} distinct answers")
    seen = {json.dumps(r["messages"][:-1]) for r in train}
    leaked = sum(json.dumps(r["messages"][:-1]) in seen for r in held)
    print(f"   held-out prompts that also occur in train: {leaked}")


# ---------------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------------

CELL = re.compile(r"e(\d+)-lr(\d+(?:\.\d+)?e-?\d+)")


def lr_name(lr: float) -> str:
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def sweep_cells() -> list[str]:
    return [f"e{e}-lr{lr_name(lr)}" for e in SWEEP_EPOCHS for lr in SWEEP_LRS]


def parse_cell(name: str) -> tuple[int, float] | None:
    """(epochs, learning rate) of a sweep cell name, None for `auto`."""
    if name == "auto":
        return None
    m = CELL.fullmatch(name)
    if not m:
        raise SystemExit(f"bad cell {name!r}: use auto or e<EPOCHS>-lr<RATE>, e.g. e3-lr2e-4")
    return int(m.group(1)), float(m.group(2))


def canonical_cell(name: str) -> str:
    parsed = parse_cell(name)
    return "auto" if parsed is None else f"e{parsed[0]}-lr{lr_name(parsed[1])}"


def cell_spec(ds: dict, cell: str, model: str, output_dir: Path) -> dict:
    """The spec a user would write: `auto` sets only model and data; a sweep cell adds LoRA,
    its epochs and learning rate, and turns early stopping off so every cell trains its
    epochs."""
    spec: dict[str, Any] = {
        "model": model,
        "data": {
            "train": ds["train"],
            "validation": ds["heldout"],
            "max_seq_len": ds["max_seq_len"],
        },
        "output_dir": str(output_dir),
    }
    parsed = parse_cell(cell)
    if parsed is not None:
        spec.update(
            adapter="lora",
            epochs=parsed[0],
            learning_rate=parsed[1],
            early_stopping={"enabled": False},
        )
    return spec


def plan(datasets: list[str], cells: list[str], order: str) -> list[tuple[str, str]]:
    if order == "given":
        return [(d, c) for d in datasets for c in cells]
    sweep = [(d, c) for d in datasets for c in cells if c != "auto"]
    autos = [(d, "auto") for d in datasets if "auto" in cells]
    return sweep + autos if order == "auto-last" else autos + sweep


# ---------------------------------------------------------------------------------------------
# Workers (each in its own process: the tunesmith code on disk when the cell starts)
# ---------------------------------------------------------------------------------------------


def printer(label: str):
    """A Reporter that prints a few lines: train metrics every 30 s and at each validation,
    messages, and evaluation progress every 30 s (to stderr)."""
    last = {"metrics": 0.0, "progress": 0.0}

    def on_event(ev) -> None:
        now = time.monotonic()
        if ev.kind == "metrics" and ev.phase == "train":
            d = ev.data
            val = d.get("val_loss")
            if val is None and ev.step != ev.total and now - last["metrics"] < 30:
                return
            last["metrics"] = now
            text = f"step {ev.step}/{ev.total} epoch {d.get('epoch')} loss {d.get('loss', 0):.4f}"
            text += f" val_loss {val:.4f}" if val is not None else ""
            text += f" ({d.get('elapsed_s', 0):.0f} s)"
        elif ev.kind in ("message", "status"):
            text = ev.message or json.dumps(ev.data, default=str)
        elif ev.kind == "progress" and ev.total:
            if ev.done != ev.total and now - last["progress"] < 30:
                return
            last["progress"] = now
            text = f"{ev.phase}: {ev.done}/{ev.total}"
        else:
            return
        print(f"  [{label}] {text}", file=sys.stderr, flush=True)

    return on_event


def comparison_scores(result, side: str) -> dict[str, list[float]]:
    names = list(result.examples[0].tuned_scores) if result.examples else []
    attr = "tuned_scores" if side == "tuned" else "base_scores"
    return {n: [float(getattr(r, attr)[n]) for r in result.examples] for n in names}


def heldout_loss(result, side: str) -> float | None:
    loss = result.metrics.get("heldout_loss")
    return None if loss is None else getattr(loss, side)


def worker_base(job: dict) -> dict:
    """The base model's answers and scores on the full held-out file."""
    from tunesmith import api

    ds = job["dataset"]
    t = time.perf_counter()
    result = api.evaluate(
        job["model"],
        ds["heldout"],
        metrics=ds["metrics"],
        main_metric=ds["main_metric"],
        max_new_tokens=ds["max_new_tokens"],
        reference=False,
        on_event=printer(f"{ds['name']} base"),
    )
    seconds = time.perf_counter() - t
    return {
        "seconds": seconds,
        "model": result.tuned_model,
        "scores": comparison_scores(result, "tuned"),
        "heldout_loss": heldout_loss(result, "tuned"),
        "timings": result.timings,
        "outputs_head": [r.tuned_output for r in result.examples[:3]],
    }


RESOLVED_KEYS = (
    "adapter",
    "epochs",
    "total_steps",
    "batch_size",
    "grad_accum",
    "learning_rate",
    "scheduler",
    "warmup",
    "eval_every_steps",
    "save_every_steps",
    "dtype",
)


def resolved_summary(spec) -> dict | None:
    """What the run's ResolvedSpec chose (getattr: the spec's fields may change)."""
    if spec is None:
        return None
    out = {key: getattr(spec, key, None) for key in RESOLVED_KEYS}
    for key in ("lora", "early_stopping", "eval"):
        value = getattr(spec, key, None)
        out[key] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
    out["auto_notes"] = getattr(spec, "auto_notes", None)
    return out


def worker_cell(job: dict) -> dict:
    from tunesmith import api
    from tunesmith.runs import RunDir

    ds, cell, spec = job["dataset"], job["cell"], job["spec"]
    label = f"{ds['name']} {cell}"
    out: dict[str, Any] = {}
    if cell == "auto":  # what `tunesmith data validate` tells the user before training
        t = time.perf_counter()
        report = api.validate_data(
            ds["train"],
            model=job["model"],
            validation=ds["heldout"],
            max_seq_len=ds["max_seq_len"],
            estimate=True,
        )
        out["validate_seconds"] = time.perf_counter() - t
        out["estimate"] = report.estimate
        out["estimated_hyperparameters"] = report.hyperparameters
    t = time.perf_counter()
    result = api.train(spec, on_event=printer(label), compare_base=False)
    out["train_seconds"] = time.perf_counter() - t

    run = RunDir(result.run_dir)
    manifest = run.manifest()
    metrics = result.metrics
    last = metrics[-1] if metrics else {}
    vals = [m for m in metrics if "val_loss" in m]
    out.update(
        status=result.status,
        steps=manifest.get("steps", last.get("step")),
        epochs_trained=last.get("epoch"),
        stopped_at_step=last.get("step") if result.status == "early_stopped" else None,
        best_step=manifest.get("best_step"),
        loop_seconds=last.get("elapsed_s"),
        validations=len(vals),
        val_losses=[(m["step"], m["val_loss"]) for m in vals],
        final_train_loss=last.get("loss"),
        resolved=resolved_summary(result.spec),
    )
    t = time.perf_counter()
    options = {
        "metrics": ds["metrics"],
        "main_metric": ds["main_metric"],
        "max_new_tokens": ds["max_new_tokens"],
        "reference": False,  # no forgetting check; no long_prompt: no prompt-cost view
        "on_event": printer(f"{label} compare"),
    }
    if job["compare"] == "full":  # what a user runs: `tunesmith compare RUN HELDOUT`
        comparison = api.compare(result.run_dir, ds["heldout"], **options)
        out["base_scores"] = comparison_scores(comparison, "base")
        out["base_heldout_loss"] = heldout_loss(comparison, "base")
    else:  # the tuned model only; the base model's scores are the data set's
        comparison = api.evaluate(result.final_dir, ds["heldout"], **options)
    out["compare_seconds"] = time.perf_counter() - t
    out["compare"] = job["compare"]
    out["scores"] = comparison_scores(comparison, "tuned")
    out["heldout_loss"] = heldout_loss(comparison, "tuned")
    out["compare_timings"] = comparison.timings
    out["outputs_head"] = [r.tuned_output for r in comparison.examples[:3]]
    return out


def run_worker(job: dict, work: Path) -> dict:
    """Run one job in a fresh interpreter; its output streams to stderr, its result comes
    back through a file. A failure is returned as {"error": ...} so the bench goes on."""
    stem = f"job-{job['dataset']['name']}-{job.get('cell', 'base')}-{os.getpid()}"
    job_path, result_path = work / f"{stem}.json", work / f"{stem}.result.json"
    job_path.write_text(json.dumps(job, default=str))
    result_path.unlink(missing_ok=True)
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(job_path)]
    tail: collections.deque[str] = collections.deque(maxlen=30)
    t = time.perf_counter()
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            tail.append(line.rstrip())
        rc = proc.wait()
    wall = time.perf_counter() - t
    if rc != 0 or not result_path.is_file():
        return {"error": f"worker exit status {rc}", "log_tail": list(tail), "wall_seconds": wall}
    result = json.loads(result_path.read_text())
    result["wall_seconds"] = wall
    return result


def worker_main(job_path: Path) -> None:
    job = json.loads(job_path.read_text())
    result = worker_base(job) if job["kind"] == "base" else worker_cell(job)
    result_path = job_path.with_name(job_path.name.replace(".json", ".result.json"))
    result_path.write_text(json.dumps(result, default=str))


# ---------------------------------------------------------------------------------------------
# Statistics, the table and the summary
# ---------------------------------------------------------------------------------------------


def cell_stats(cell: dict, base: dict, main: str) -> None:
    """Tuned main metric with its interval and the paired tuned - base delta, into `cell`."""
    from tunesmith.eval.stats import bootstrap_mean, paired_bootstrap

    tuned = cell["scores"][main]
    base_scores = cell.get("base_scores") or base["scores"]
    value, ci = bootstrap_mean(tuned, seed=0)
    r = paired_bootstrap(base_scores[main], tuned, seed=0)
    cell["main"] = {
        "metric": main,
        "base": r.base,
        "tuned": value,
        "tuned_ci": list(ci),
        "delta": r.diff,
        "delta_ci": list(r.ci),
        "p_value": r.p_value,
        "n": r.n,
    }
    cell["tuned_metrics"] = {k: sum(v) / len(v) for k, v in cell["scores"].items() if v}
    if cell.get("base_scores"):
        cell["base_matches_reused"] = cell["base_scores"] == base["scores"]


def estimate_check(cell: dict) -> dict | None:
    """The auto cell's estimate against what it measured: `seconds` (what `data validate`
    says training takes) against the api.train call; `total_seconds`, when the estimate gives
    one (training + the end-of-run comparison), against training + the full api.compare.
    Its parts, where it gives them, against the matching measurements: the loop (steps +
    in-run validation: `elapsed_s` of the last step), setup + final save (the rest of the
    api.train call) and the comparison (without the forgetting check)."""
    est = cell.get("estimate") or {}
    seconds = est.get("seconds")
    if not isinstance(seconds, (int, float)) or not cell.get("train_seconds"):
        return None
    train, compare = cell["train_seconds"], cell.get("compare_seconds") or 0.0
    out: dict[str, Any] = {
        "estimate_seconds": seconds,
        "train_seconds": train,
        "error": seconds / train - 1,
        "within_target": abs(seconds / train - 1) <= TARGET_ESTIMATE_ERROR,
    }
    total = est.get("total_seconds")
    if isinstance(total, (int, float)):
        out["total"] = {"estimate": total, "measured": train + compare}
        out["total_error"] = total / (train + compare) - 1
    loop = cell.get("loop_seconds")
    parts: dict[str, tuple[Any, Any]] = {}
    if "train_seconds" in est and loop:
        parts["loop"] = (est["train_seconds"] + (est.get("validation_seconds") or 0), loop)
    if "setup_seconds" in est and loop:
        parts["setup + save"] = (est["setup_seconds"], train - loop)
    if "compare_seconds" in est:
        parts["compare"] = (est["compare_seconds"], compare)
    out["parts"] = {k: {"estimate": e, "measured": m} for k, (e, m) in parts.items()}
    return out


def pts(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def display(cell: str) -> str:
    return cell.replace("-lr", " lr")


def print_table(report: dict) -> None:
    names = list(report["datasets"])

    def order(c: dict) -> tuple:  # data set, then the sweep by epochs and rate, auto last
        parsed = parse_cell(c["cell"])
        return (names.index(c["dataset"]), parsed is None, parsed or (0, 0.0))

    cells = sorted((c for c in report["cells"] if c["dataset"] in names), key=order)
    head = (
        f"{'data':8}{'cell':12}{'train s':>9}{'steps':>7}{'epochs':>8}  {'status':18}"
        f"{'held-out main metric: base -> tuned [95% CI]':>46}{'delta [95% CI]':>24}{'eval s':>8}"
    )
    print("\n" + head)
    for c in cells:
        if "error" in c:
            print(f"{c['dataset']:8}{display(c['cell']):12}  FAILED: {c['error']}")
            continue
        m = c["main"]
        status = c["status"]
        if c.get("stopped_at_step"):
            status += f"@{c['stopped_at_step']}"
        score = (
            f"{m['metric']} {pts(m['base'])} -> {pts(m['tuned'])} "
            f"[{pts(m['tuned_ci'][0])}, {pts(m['tuned_ci'][1])}]"
        )
        delta = f"{100 * m['delta']:+.1f} [{100 * m['delta_ci'][0]:+.1f}, "
        delta += f"{100 * m['delta_ci'][1]:+.1f}]"
        epochs = c.get("epochs_trained")
        print(
            f"{c['dataset']:8}{display(c['cell']):12}{c['train_seconds']:9.0f}{c['steps']!s:>7}"
            f"{epochs if epochs is None else f'{epochs:.2f}'!s:>8}  {status:18}{score:>46}"
            f"{delta:>24}{c['compare_seconds']:8.0f}"
        )
    print(
        "train s: the api.train call alone; eval s: the tuned model's answers and held-out loss "
        "on the full held-out file (auto: the whole base-vs-tuned api.compare a user runs)"
    )


def summarize(report: dict) -> dict:
    out = {}
    for name in report["datasets"]:
        done = [c for c in report["cells"] if c["dataset"] == name and "error" not in c]
        sweep = [c for c in done if c["cell"] != "auto"]
        auto = next((c for c in done if c["cell"] == "auto"), None)
        s: dict[str, Any] = {}
        if sweep:
            best = max(sweep, key=lambda c: (c["main"]["tuned"], -c["train_seconds"]))
            s["best_sweep_cell"] = best["cell"]
            s["best_sweep_tuned"] = best["main"]["tuned"]
            s["best_sweep_train_seconds"] = best["train_seconds"]
            s["sweep_cells"] = len(sweep)
        if auto:
            s["auto_tuned"] = auto["main"]["tuned"]
            s["auto_train_seconds"] = auto["train_seconds"]
            s["auto_within_time_target"] = auto["train_seconds"] <= TARGET_TRAIN_SECONDS
            s["estimate"] = estimate_check(auto)
            if sweep:
                gap = 100 * (auto["main"]["tuned"] - s["best_sweep_tuned"])
                s["auto_gap_points"] = gap
                s["auto_within_quality_target"] = gap >= -TARGET_GAP_POINTS
        out[name] = s
    return out


def verdict(ok: bool | None) -> str:
    return "" if ok is None else (" PASS" if ok else " MISS")


def print_summary(report: dict) -> None:
    note = " (--quick: tiny model, the targets say nothing)" if report["settings"]["quick"] else ""
    print(f"\nSummary{note}")
    for name, s in report["summary"].items():
        main = report["datasets"][name]["main_metric"]
        line = f"{name} ({main}):"
        if "best_sweep_cell" in s:
            line += (
                f" best sweep cell {display(s['best_sweep_cell'])} {pts(s['best_sweep_tuned'])}"
                f" ({s['best_sweep_train_seconds']:.0f} s, of {s['sweep_cells']} cells)"
            )
        print(line)
        if "auto_tuned" not in s:
            print("    auto: not run")
            continue
        auto = next(c for c in report["cells"] if c["dataset"] == name and c["cell"] == "auto")
        if "auto_gap_points" in s:
            print(
                f"    auto {pts(s['auto_tuned'])}: {s['auto_gap_points']:+.1f} points vs the best"
                f" (target >= -{TARGET_GAP_POINTS:.0f}){verdict(s['auto_within_quality_target'])}"
            )
        print(
            f"    auto train time {s['auto_train_seconds']:.0f} s (target <= "
            f"{TARGET_TRAIN_SECONDS:.0f} s){verdict(s['auto_within_time_target'])}; "
            f"{auto['steps']} steps, {auto.get('epochs_trained') or 0:.2f} epochs, "
            f"{auto['status']}"
            + (f" at step {auto['stopped_at_step']}" if auto.get("stopped_at_step") else "")
            + f", {auto['validations']} in-run validations"
        )
        r = auto.get("resolved") or {}
        print(
            f"    auto chose: epochs {r.get('epochs')}, total_steps {r.get('total_steps')}, "
            f"lr {r.get('learning_rate')}, batch {r.get('batch_size')} x accum "
            f"{r.get('grad_accum')}, eval every {r.get('eval_every_steps')}, early stopping "
            f"{(r.get('early_stopping') or {}).get('enabled')}"
        )
        e = s.get("estimate")
        if e is None:
            print(f"    estimate: none given ({auto.get('estimate')})")
        else:
            parts = "; ".join(
                f"{k} {v['estimate']:.0f} vs {v['measured']:.0f} s" for k, v in e["parts"].items()
            )
            line = (
                f"    estimate {e['estimate_seconds']:.0f} s vs train {e['train_seconds']:.0f} s:"
                f" {100 * e['error']:+.0f} % (target +-{100 * TARGET_ESTIMATE_ERROR:.0f} %)"
                f"{verdict(e['within_target'])}"
            )
            if "total" in e:
                line += (
                    f"; with the comparison {e['total']['estimate']:.0f} vs "
                    f"{e['total']['measured']:.0f} s: {100 * e['total_error']:+.0f} %"
                )
            print(line)
            if parts:
                print(f"    estimate parts: {parts}")
        if auto.get("base_matches_reused") is False:
            print("    note: the auto cell's base scores differ from the reused base scores")


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def code_state() -> dict:
    """The git HEAD and a SHA-256 of src/**/*.py: which tunesmith code a cell ran with."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head, dirty = None, ""
    return {"git_head": head, "src_dirty": bool(dirty), "src_sha256": h.hexdigest()}


def take_lock():
    fh = open(LOCK, "a+")  # noqa: SIM115 (held for the whole run)
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"waiting for {LOCK} (another bench is running) ...", flush=True)
        fcntl.flock(fh, fcntl.LOCK_EX)
    return fh


def host_info() -> dict:
    import torch

    from tunesmith.models.precision import cpu_id, cpu_info

    model, flags = cpu_info()
    return {
        "cpu": model,
        "cpu_id": cpu_id(),
        "cpu_flags": flags,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "python": sys.version.split()[0],
    }


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# What makes two timings comparable. cpu_id (vendor, family, model, stepping) because one name
# and one set of flags covered two CPUs here whose bf16 speed differs 2x ("AMD EPYC",
# avx512_bf16: 374 and 750 GFLOP/s); a file from before cpu_id was recorded cannot be resumed.
MACHINE_KEYS = ("cpu", "cpu_id", "cpu_flags", "cpu_count", "cuda")


def load_resume(path: Path, settings: dict, host: dict) -> dict:
    report = json.loads(path.read_text())
    if report.get("bench") != "auto_quality":
        raise SystemExit(f"{path}: not an auto_quality results file")
    theirs = report.get("settings", {})
    for key in ("model", "quick"):
        if theirs.get(key) != settings[key]:
            raise SystemExit(
                f"{path} was measured with {key}={theirs.get(key)!r}, not {settings[key]!r}"
            )
    # One table, one machine kind: the cells' times are compared with each other, and bf16 units
    # (or their absence) change both the times and the numerics.
    theirs_host = report.get("host", {})
    differ = [k for k in MACHINE_KEYS if theirs_host.get(k) != host.get(k)]
    if differ:
        raise SystemExit(
            f"{path} was measured on another machine kind ("
            + ", ".join(f"{k}: {theirs_host.get(k)!r} there, {host.get(k)!r} here" for k in differ)
            + "); start a new results file here instead of mixing the two in one table"
        )
    return report


def same_data(old: dict, new: dict) -> bool:
    keys = ("train_sha256", "heldout_sha256", "max_seq_len", "max_new_tokens", "main_metric")
    return all(old.get(k) == new.get(k) for k in keys)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="demo,intent", help="comma-separated: demo,intent")
    p.add_argument("--cells", default=None, help="comma-separated subset, e.g. auto,e1-lr2e-4")
    p.add_argument("--model", default=None, help="default: tunesmith's default model")
    p.add_argument(
        "--order",
        choices=["auto-last", "auto-first", "given"],
        default="auto-last",
        help="auto-last: every sweep cell of every data set, then the auto cells",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model, 40 examples")
    p.add_argument("--resume-json", type=Path, help="continue this results file")
    p.add_argument(
        "--rerun",
        default="",
        help="with --resume-json: run these cells again (e.g. auto, once its rule changed)",
    )
    p.add_argument("--bigbench-sdist", type=Path, help=f"a local {BIGBENCH_SDIST}")
    p.add_argument("--cache", type=Path, default=CACHE, help="data cache (git-ignored)")
    p.add_argument("--keep-runs", type=Path, help="keep the run directories here")
    p.add_argument("--show-data", action="store_true", help="print the converted data and exit")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        worker_main(args.worker)
        return

    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for d in names:
        if d not in ("demo", "intent"):
            raise SystemExit(f"unknown data set {d!r}: use demo, intent")
    default_cells = list(QUICK_CELLS) if args.quick else [*sweep_cells(), "auto"]
    cells = [canonical_cell(c.strip()) for c in (args.cells or "").split(",") if c.strip()]
    cells = list(dict.fromkeys(cells or default_cells))

    lock = None if args.show_data else take_lock()
    tmp = Path(tempfile.mkdtemp(prefix="ts-auto-quality-"))
    try:
        run(args, names, cells, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            lock.close()


def run(args: argparse.Namespace, names: list[str], cells: list[str], tmp: Path) -> None:
    from tunesmith.config import DEFAULT_MODEL

    datasets: dict[str, dict] = {}
    for name in names:
        ds = demo_dataset() if name == "demo" else intent_dataset(args.bigbench_sdist, args.cache)
        if args.quick:
            ds = quick_subset(ds, tmp / "data")
        describe_files(ds)
        datasets[name] = ds
    if args.show_data:
        for ds in datasets.values():
            show_data(ds)
        return

    model = args.model or DEFAULT_MODEL
    model_path = model
    if args.quick and not args.model:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny import build_tiny_model

        model_path = str(build_tiny_model(tmp / "tiny-model"))
        model = "tiny (tests/tiny.py)"
    settings = {
        "model": model,
        "quick": args.quick,
        "order": args.order,
        "sweep": {"epochs": list(SWEEP_EPOCHS), "learning_rates": list(SWEEP_LRS)},
        "targets": {
            "auto_gap_points": TARGET_GAP_POINTS,
            "auto_train_seconds": TARGET_TRAIN_SECONDS,
            "estimate_error": TARGET_ESTIMATE_ERROR,
        },
    }
    host = host_info()
    if args.resume_json:
        report = load_resume(args.resume_json, settings, host)
        out = args.resume_json
    else:
        report = {"bench": "auto_quality", "started_utc": utc_now(), "cells": [], "datasets": {}}
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        out = args.out / f"auto_quality-{stamp}.json"
    load_before = os.getloadavg()
    session = {
        "started_utc": utc_now(),
        "argv": sys.argv[1:],
        "load_average_before": load_before,
        "code": code_state(),
        "host": host,
    }
    report.update(settings=settings, host=host)
    report.setdefault("sessions", []).append(session)
    for name, ds in datasets.items():
        old = report["datasets"].get(name)
        if old is not None and not same_data(old, ds):
            raise SystemExit(f"{out}: the {name} data differ from the ones it was measured on")
        report["datasets"][name] = {**ds, "base": (old or {}).get("base")}

    def save() -> None:
        from tunesmith.io import atomic_write_json

        report["updated_utc"] = utc_now()
        report["summary"] = summarize(report)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, report)

    print(
        f"CPU: {host['cpu']} [{host.get('cpu_id') or '?'}] ({host['cpu_count']} cores; bf16 flags: "
        f"{' '.join(host['cpu_flags']) or 'none'}); torch {host['torch']}, "
        f"{host['threads']} threads; load average {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}"
    )
    code = session["code"]
    print(f"code: {code['git_head']}{' + uncommitted src changes' if code['src_dirty'] else ''}")
    print(f"model: {model}" + (f" ({model_path})" if model_path != model else ""))
    for ds in datasets.values():
        print(f"{ds['name']}: {ds['source']}")
        if ds.get("split"):
            print(f"    split: {ds['split']}")
        print(
            f"    {ds['n_train']} train / {ds['n_heldout']} held-out rows; main metric "
            f"{ds['main_metric']}; max_seq_len {ds['max_seq_len']}, max_new_tokens "
            f"{ds['max_new_tokens']}"
        )
        for key in ("train_labels", "heldout_labels"):
            if ds.get(key):
                print(f"    {key}: " + ", ".join(f"{k} {v}" for k, v in ds[key].items()))

    rerun = {canonical_cell(c.strip()) for c in args.rerun.split(",") if c.strip()}
    done = {
        (c["dataset"], c["cell"])
        for c in report["cells"]
        if "error" not in c and c["cell"] not in rerun
    }
    todo = [job for job in plan(names, cells, args.order) if job not in done]
    skipped = len(plan(names, cells, args.order)) - len(todo)
    print(f"cells: {len(todo)} to run" + (f", {skipped} already in {out}" if skipped else ""))
    print(f"results: {out}\n", flush=True)
    save()

    runs_root = args.keep_runs or (tmp / "runs")
    for i, (name, cell) in enumerate(todo, 1):
        ds = report["datasets"][name]
        job_ds = {k: v for k, v in ds.items() if k != "base"}
        if ds.get("base") is None or "error" in ds["base"]:
            print(
                f"[{name}] base model: answering the {ds['n_heldout']} held-out prompts", flush=True
            )
            base = run_worker({"kind": "base", "model": model_path, "dataset": job_ds}, tmp)
            base.update(code=code_state(), finished_utc=utc_now())
            ds["base"] = base
            save()
            if "error" in base:
                print(f"[{name}] base evaluation failed: {base['error']}", flush=True)
                continue
            main = ds["main_metric"]
            print(f"[{name}] base {main}: {pts(sum(base['scores'][main]) / ds['n_heldout'])}")
        if "error" in ds["base"]:
            continue
        run_dir = runs_root / f"{name}-{cell}-{dt.datetime.now():%H%M%S}"
        print(f"[{i}/{len(todo)}] {name} {display(cell)} -> {run_dir}", flush=True)
        job = {
            "kind": "cell",
            "model": model_path,
            "dataset": job_ds,
            "cell": cell,
            "spec": cell_spec(ds, cell, model_path, run_dir),
            "compare": "full" if cell == "auto" else "tuned",
        }
        code = code_state()
        result = run_worker(job, tmp)
        record = {"dataset": name, "cell": cell, "spec": job["spec"], "code": code, **result}
        record["finished_utc"] = utc_now()
        if "error" not in record:
            cell_stats(record, ds["base"], ds["main_metric"])
            m = record["main"]
            print(
                f"[{i}/{len(todo)}] {name} {display(cell)}: train {record['train_seconds']:.0f} s,"
                f" {record['steps']} steps, {record['status']}; {m['metric']} {pts(m['base'])} ->"
                f" {pts(m['tuned'])} ({100 * m['delta']:+.1f}); compare "
                f"{record['compare_seconds']:.0f} s; cell wall {record['wall_seconds']:.0f} s",
                flush=True,
            )
        else:
            print(f"[{i}/{len(todo)}] {name} {display(cell)} FAILED: {record['error']}", flush=True)
        report["cells"] = [
            c for c in report["cells"] if (c["dataset"], c["cell"]) != (name, cell)
        ] + [record]
        save()
        if not args.keep_runs:
            shutil.rmtree(run_dir, ignore_errors=True)

    load_after = os.getloadavg()
    session["load_average_after"] = load_after
    session["finished_utc"] = utc_now()
    save()
    print_table(report)
    print_summary(report)
    print(f"\nload average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
