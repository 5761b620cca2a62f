"""DPO throughput: tunesmith's DPO vs trl's DPOTrainer, same model, pairs and settings.

    .venv/bin/python bench/dpo_throughput.py                                  # the measurement
    .venv/bin/python bench/dpo_throughput.py --steps 3 --pairs 24 --heldout 8  # smoke

Both sides: the default model (fp32 on CPU, bf16 autocast on CUDA), LoRA r=16 / alpha 32 on all
linear layers with LoRA dropout 0 (trl disables dropout in DPO by default; ours is set to the
same), sigmoid DPO loss with beta 0.1, the same max length, learning rate, cosine schedule,
pairs per micro-batch (B) and per optimizer step (B x G), and the same preference pairs: the
demo's support-triage task (`tunesmith.demo_data.generate_pairs`: the right JSON answer chosen,
a near miss rejected), given to us in OpenAI's DPO format and to trl as conversational
prompt/chosen/rejected. Each side runs in its own subprocess, so its peak RSS is its own.

Sides:
  ours           reference log-probs from one pass with the adapter disabled, before step 1
                 (cache off, so the pass is paid and counted), LM head on answer tokens only;
  trl            trl's default: the reference is the adapter-disabled model, run again in
                 every step (one extra forward per micro-batch);
  trl precompute trl with precompute_ref_log_probs=True (its own one-time reference pass).
Speed: pairs/s over optimizer steps 2..N (step 1 includes warm-up), and the wall time from the
trainer's start to its last step with every one-time cost (tokenization, reference pass) in it.
On a shared machine the load changes by the minute: `--repeat N` lets the sides take turns N
rounds and each keeps its best (every round, with the load average around it, is in the JSON).
Peak RSS: the process's maximum resident set, read right after training (before evaluation
loads anything else).
Quality: on the same held-out pairs, by the same code for every side (`tunesmith.eval.
preference`): preference accuracy (share of pairs whose chosen answer the model finds more
likely, summed answer log-probs), the reward accuracy (share whose implicit DPO reward, with the
base model as reference, favours the chosen answer) and the mean reward margin
beta x [(log pi - log ref)(chosen) - (log pi - log ref)(rejected)].
Results: printed, and written to bench/results/dpo_throughput-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LORA = {"r": 16, "alpha": 32, "dropout": 0.0}
LR = 2e-4  # our LoRA default: a short bench run should move the held-out numbers
BETA = 0.1
WARMUP = 0.1


def build_data(n_train: int, n_heldout: int, out_dir: Path) -> dict[str, Path]:
    """The same pairs in both shapes (ours: OpenAI DPO; trl: prompt/chosen/rejected)."""
    from tunesmith.demo_data import generate_pairs

    train, heldout = generate_pairs(n_train, n_heldout)
    paths = {}
    for name, rows in (("train", train), ("heldout", heldout)):
        ours, theirs = out_dir / f"{name}-ours.jsonl", out_dir / f"{name}-trl.jsonl"
        with open(ours, "w", encoding="utf-8") as fo, open(theirs, "w", encoding="utf-8") as ft:
            for row in rows:
                fo.write(json.dumps(row) + "\n")
                trl_row = {
                    "prompt": row["input"]["messages"],
                    "chosen": row["preferred_output"],
                    "rejected": row["non_preferred_output"],
                }
                ft.write(json.dumps(trl_row) + "\n")
        paths[name], paths[f"{name}_trl"] = ours, theirs
    return paths


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def heldout_quality(model, args: argparse.Namespace) -> dict:
    """Preference accuracy, reward accuracy and margin of `model` vs the base on held-out
    pairs, by tunesmith's evaluator (the same for every side)."""
    from types import SimpleNamespace

    import numpy as np

    from tunesmith.eval.preference import log_prob_margins, read_pairs
    from tunesmith.models.load import load_model

    pairs = read_pairs(args.heldout)
    base = load_model(args.model)
    tuned = SimpleNamespace(model=model.eval(), tokenizer=base.tokenizer)
    m_base = log_prob_margins(base, pairs)
    m_tuned = log_prob_margins(tuned, pairs)
    return {
        "heldout_pairs": len(pairs),
        "preference_accuracy_base": float(np.mean(m_base > 0)),
        "preference_accuracy": float(np.mean(m_tuned > 0)),
        "reward_accuracy": float(np.mean(m_tuned > m_base)),
        "reward_margin": float(BETA * np.mean(m_tuned - m_base)),
    }


def worker_ours(args: argparse.Namespace) -> dict:
    # imported before the clock starts, as trl's side imports trl, datasets and transformers
    import peft  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401
    import transformers  # noqa: F401

    import tunesmith.train.run
    import tunesmith.train.setup  # noqa: F401
    from tunesmith import api

    spec = {
        "model": args.model,
        "method": {"type": "dpo", "dpo": {"beta": BETA, "cache_reference": False}},
        "adapter": "lora",
        "lora": {**LORA, "target_modules": "all-linear"},
        "data": {"train": args.data, "max_seq_len": args.max_seq_len},
        "batch_size": args.batch,
        "grad_accum": args.grad_accum,
        "learning_rate": LR,
        "warmup": WARMUP,
        "scheduler": "cosine",
        "epochs": 1,
        "max_steps": args.steps,
        "save_every_steps": 10**9,
        "eval": {"compare_base": False},
        "output_dir": tempfile.mkdtemp(prefix="ours-run-", dir=args.tmp),
        "seed": 0,
    }
    marks: dict[str, float] = {}

    def clock(event) -> None:
        if event.kind == "status" and event.phase == "train" and "start" not in marks:
            marks["start"] = time.perf_counter()  # the loop starts (after the reference pass)
        if event.kind == "message" and event.phase == "reference":
            marks["reference_done"] = time.perf_counter()

    begin = time.perf_counter()
    result = api.train(spec, on_event=clock)
    end = time.perf_counter()
    rss = peak_rss_mb()
    m = result.metrics
    first, last = m[0], m[-1]
    pairs = last["trained_tokens"] - first["trained_tokens"]  # the unit is pairs
    seconds = last["elapsed_s"] - first["elapsed_s"]
    out = {
        "steps": len(m),
        "pairs": pairs,
        "seconds": seconds,
        "pairs_per_s": pairs / max(seconds, 1e-9),
        "wall_seconds": end - begin,
        "train_wall_seconds": marks.get("start", begin) - begin + last["elapsed_s"],
        "losses": [x["loss"] for x in m],
        "peak_rss_mb": rss,
    }
    out.update(heldout_quality(result.model, args))
    return out


def worker_trl(args: argparse.Namespace) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from tunesmith.models.load import load_tokenizer, resolve_path

    begin = time.perf_counter()
    path = resolve_path(args.model)
    tok = load_tokenizer(path)
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    dataset = load_dataset("json", data_files=args.data, split="train")
    precompute = args.trl_precompute == "on"
    config = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix=f"trl-{args.trl_precompute}-", dir=args.tmp),
        max_length=args.max_seq_len,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=WARMUP,
        num_train_epochs=1,
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=cuda,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=not cuda,
        dataloader_num_workers=0,
        seed=0,
        beta=BETA,
        loss_type=["sigmoid"],
        disable_dropout=True,
        precompute_ref_log_probs=precompute,
    )
    times: list[float] = []
    losses: list[float] = []
    start: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            start.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    peft = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tok,
        peft_config=peft,
        callbacks=[Clock()],
    )
    trainer.train()
    rss = peak_rss_mb()
    per_step = args.batch * args.grad_accum
    seconds = times[-1] - times[0]
    out = {
        "steps": len(times),
        "pairs": per_step * (len(times) - 1),
        "seconds": seconds,
        "pairs_per_s": per_step * (len(times) - 1) / max(seconds, 1e-9),
        "wall_seconds": times[-1] - begin,
        "train_wall_seconds": times[-1] - begin,
        "losses": losses,
        "peak_rss_mb": rss,
    }
    out.update(heldout_quality(trainer.model, args))
    return out


def run_worker(kind: str, args: argparse.Namespace, data: Path, extra: list[str]) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--data",
        str(data),
        "--heldout",
        str(args.heldout),
        "--tmp",
        args.tmp,
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--grad-accum",
        str(args.grad_accum),
        "--max-seq-len",
        str(args.max_seq_len),
        "--model",
        args.model,
        *extra,
    ]
    print(f"running {kind} {' '.join(extra)} ...", flush=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr[-4000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _best(found: list[dict]) -> dict:
    good = [r for r in found if "pairs_per_s" in r]
    return max(good, key=lambda r: r["pairs_per_s"]) if good else found[-1]


def table(results: dict) -> str:
    head = (
        f"{'side':<16}{'pairs/s':>9}{'step s':>8}{'wall s':>8}{'peak RSS MB':>13}"
        f"{'pref acc base->tuned':>22}{'reward acc':>12}{'margin':>9}"
    )
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"{name:<16} failed: {r['error'].strip().splitlines()[-1][:80]}")
            continue
        step = r["seconds"] / max(1, r["steps"] - 1)
        acc = f"{r['preference_accuracy_base']:.3f}->{r['preference_accuracy']:.3f}"
        lines.append(
            f"{name:<16}{r['pairs_per_s']:>9.3f}{step:>8.2f}{r['train_wall_seconds']:>8.1f}"
            f"{r['peak_rss_mb']:>13.0f}{acc:>22}{r['reward_accuracy']:>12.3f}"
            f"{r['reward_margin']:>9.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch", type=int, default=2, help="pairs per micro-batch")
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--pairs", type=int, default=None, help="train pairs (default: one epoch)")
    p.add_argument("--heldout", default=40)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--repeat", type=int, default=1, help="rounds; each side keeps its best")
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--skip-precompute", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--worker", choices=["ours", "trl"])
    p.add_argument("--trl-precompute", choices=["on", "off"], default="off")
    p.add_argument("--data")
    p.add_argument("--tmp")
    args = p.parse_args()

    if args.worker:
        result = worker_ours(args) if args.worker == "ours" else worker_trl(args)
        print(json.dumps(result))
        return

    import torch

    n_train = args.pairs or args.steps * args.batch * args.grad_accum
    sides = [("ours", "ours", "train", [])]
    if not args.skip_trl:
        sides.append(("trl", "trl", "train_trl", ["--trl-precompute", "off"]))
        if not args.skip_precompute:
            sides.append(("trl_precompute", "trl", "train_trl", ["--trl-precompute", "on"]))
    runs: dict[str, list[dict]] = {name: [] for name, *_ in sides}
    with tempfile.TemporaryDirectory(prefix="ts-dpo-bench-") as tmp:
        args.tmp = tmp
        data = build_data(n_train, int(args.heldout), Path(tmp))
        args.heldout = data["heldout"]
        # the sides take turns, `--repeat` rounds: on a shared machine the load changes over
        # minutes, and each side keeps its best round (all rounds are in the JSON)
        for _ in range(args.repeat):
            for name, kind, which, extra in sides:
                load = os.getloadavg()[0]
                result = run_worker(kind, args, data[which], extra)
                result["load_before"], result["load_after"] = load, os.getloadavg()[0]
                runs[name].append(result)
    results = {name: _best(found) for name, found in runs.items()}
    report = {
        "when": dt.datetime.now().isoformat(timespec="seconds"),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "settings": {
            "model": args.model,
            "steps": args.steps,
            "batch_pairs": args.batch,
            "grad_accum": args.grad_accum,
            "train_pairs": n_train,
            "max_seq_len": args.max_seq_len,
            "lora": LORA,
            "learning_rate": LR,
            "beta": BETA,
        },
        "results": results,
        "rounds": runs,
    }
    ours = results["ours"]
    for name in ("trl", "trl_precompute"):
        theirs = results.get(name)
        if ours.get("pairs_per_s") and theirs and theirs.get("pairs_per_s"):
            report[f"speedup_vs_{name}"] = ours["pairs_per_s"] / theirs["pairs_per_s"]
            report[f"wall_speedup_vs_{name}"] = (
                theirs["train_wall_seconds"] / ours["train_wall_seconds"]
            )
            report[f"rss_ratio_vs_{name}"] = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"dpo_throughput-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    for key in sorted(k for k in report if k.startswith(("speedup", "wall_speedup", "rss_ratio"))):
        print(f"{key}: {report[key]:.3f}")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
