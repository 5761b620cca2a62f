"""Training throughput: tunesmith SFT vs trl's SFTTrainer, same model, data and settings.

    .venv/bin/python bench/train_throughput.py                       # the measurement
    .venv/bin/python bench/train_throughput.py --steps 2 --max-seq-len 256 --examples 60  # smoke

Both sides: the default model (float32 weights), LoRA r=16 / alpha 32 /
dropout 0.05 on all linear layers, no gradient checkpointing, the same variable-length chat
data (1-3 exchanges drawn from examples/chat-sample.jsonl), loss on the final answer only
(ours: train_on=last; trl: prompt/completion data, completion-only loss), the same max length,
learning rate, schedule and tokens per optimizer step:
  ours           packed rows of max_seq_len, 1 row per micro-batch, G micro-batches per step;
  trl packing on  the same (trl's best-fit packing, padding-free), G micro-batches per step;
  trl packing off B examples per micro-batch (B = examples per packed row), G per step.
Precision: ours runs `dtype: auto` (on a CPU with bf16 matrix units the frozen base's products
in bf16, LoRA, optimizer and loss in float32; models/precision.py) and, as the quality and
speed reference, `dtype: float32`; trl runs float32 and, where the CPU has bf16 units (or on
CUDA), its bf16 autocast (`bf16=True`), both with packing off and on. The comparison is
against trl's fastest configuration per packing mode. The header and the JSON name the CPU
model and its bf16/AMX flags (/proc/cpuinfo) and the load average before and after.
Each side runs in its own subprocess so its peak RSS is its own; `--rounds N` runs the whole
list N times, alternating sides, and reports each side's median round (all rounds kept).
Every side trains exactly one epoch over the same --examples conversations (--steps caps it,
for smoke runs only), so all sides train on the same tokens: a fixed number of steps would
sample different examples per side, and the share of trained tokens per row varies a lot
between 1- and 3-exchange conversations (a 12-step window once trained 21 % of its input tokens
on our side and 30 % on trl's, against 28 % over the whole set). Trained tokens/s are counted
from the labels each side actually trained on, over steps 2..N (step 1 includes warm-up); the
whole epoch's wall time, step 1 included, is reported beside it.
Quality: the loss of each trained model on the same 40 held-out conversations, computed by the
same code (per-step training losses differ by batch composition, so they are only shown).
MFU = model FLOPs (4 x non-embedding params per input token for the frozen base, + 6 x LoRA
params, + 4 x lm_head params per trained token) / time / a matmul peak measured in this run.
Results: printed, and written to bench/results/train_throughput-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLE = ROOT / "examples" / "chat-sample.jsonl"
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
LR = 2e-4
WARMUP = 0.1


# ---------------------------------------------------------------------------------------------
# Data: variable-length conversations built from the bundled sample
# ---------------------------------------------------------------------------------------------


def build_data(n: int, seed: int, out_dir: Path) -> tuple[Path, Path]:
    """Write the same conversations twice: chat messages (ours) and prompt/completion (trl)."""
    rng = random.Random(seed)
    pairs = []
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        msgs = json.loads(line)["messages"]
        for i, m in enumerate(msgs):
            if m["role"] == "assistant" and i > 0 and msgs[i - 1]["role"] == "user":
                pairs.append((msgs[i - 1]["content"], m["content"]))
    system = {"role": "system", "content": "You are a support triage assistant. Reply in JSON."}
    ours, theirs = out_dir / "ours.jsonl", out_dir / "trl.jsonl"
    with open(ours, "w", encoding="utf-8") as fo, open(theirs, "w", encoding="utf-8") as ft:
        for k in range(n):
            turns = [rng.choice(pairs) for _ in range(rng.randint(1, 3))]
            messages = [system]
            for j, (user, answer) in enumerate(turns):
                messages += [
                    {"role": "user", "content": f"[ticket {k}] {user}" if j == 0 else user},
                    {"role": "assistant", "content": answer},
                ]
            fo.write(json.dumps({"messages": messages}) + "\n")
            ft.write(json.dumps({"prompt": messages[:-1], "completion": messages[-1:]}) + "\n")
    return ours, theirs


# ---------------------------------------------------------------------------------------------
# Workers (each in its own process)
# ---------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_ours(args: argparse.Namespace) -> dict:
    from tunesmith import api

    spec = {
        "model": args.model,
        "adapter": "lora",
        "lora": {**LORA, "target_modules": "all-linear"},
        "data": {
            "train": args.data,
            "max_seq_len": args.max_seq_len,
            "packing": True,
            "train_on": "last",
        },
        "batch_size": 1,
        "grad_accum": args.grad_accum,
        "learning_rate": LR,
        "warmup": WARMUP,
        "scheduler": "cosine",
        "epochs": 1,
        "max_steps": args.steps,
        "save_every_steps": 10**9,
        "eval": {"compare_base": False},
        "output_dir": str(Path(args.tmp) / f"ours-run-{args.dtype}-{os.getpid()}"),
        "seed": 0,
        "dtype": args.dtype,
    }
    result = api.train(spec)
    precision = result.run.manifest().get("precision")
    from tunesmith.models.load import load_tokenizer, resolve_path

    heldout = heldout_loss(
        result.model, load_tokenizer(resolve_path(args.model)), args.heldout, args.max_seq_len
    )
    m = result.metrics
    first, last = m[0], m[-1]
    tokens = last["trained_tokens"] - first["trained_tokens"]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    model = result.model
    return {
        "steps": len(m),
        "epoch_seconds": last["elapsed_s"],
        "epoch_trained_tokens": last["trained_tokens"],
        "losses": [x["loss"] for x in m],
        "heldout_loss": heldout,
        "trained_tokens": tokens,
        "seconds": seconds,
        "trained_tokens_per_s": tokens / max(seconds, 1e-9),
        "input_tokens_per_step": args.grad_accum * args.max_seq_len,
        "flops": _flops(model, tokens, input_tokens=_ours_input_tokens(result, len(m) - 1)),
        "peak_rss_mb": peak_rss_mb(),
        "precision": precision,
    }


def _ours_input_tokens(result, steps: int) -> int:
    """Input tokens of steps 2..N: every packed row's length (rows are max_seq_len or less)."""
    from tunesmith.data.prepare import prepare_sft
    from tunesmith.models.load import load_tokenizer, resolve_path
    from tunesmith.train.batching import epoch_order, make_rows, step_micro_batches, steps_per_epoch

    spec = result.spec
    tok = load_tokenizer(resolve_path(spec.model))
    data = prepare_sft(
        Path(spec.data.train), tok, max_seq_len=spec.data.max_seq_len, train_on="last"
    )
    rows = make_rows(data.train, spec.data.max_seq_len, packing=True)
    per_epoch = steps_per_epoch(len(rows), spec.grad_accum)
    total = 0
    for step in range(1, steps + 1):
        epoch, in_epoch = divmod(step, per_epoch)
        order = epoch_order(len(rows), spec.seed, epoch)
        for mb in step_micro_batches(
            rows, order, in_epoch, batch_size=1, grad_accum=spec.grad_accum
        ):
            total += sum(len(r) for r in mb if r.n_trained)
    return total


def heldout_loss(model, tokenizer, path: str, max_seq_len: int) -> float:
    """Mean token loss of `model` on the held-out file (final answers only), computed by the
    same code for both sides, so the quality comparison does not depend on batch noise."""
    import torch

    from tunesmith.data.prepare import prepare_sft
    from tunesmith.train.batching import collate, make_rows
    from tunesmith.train.objectives.sft import SFTLoss

    data = prepare_sft(Path(path), tokenizer, max_seq_len=max_seq_len, train_on="last")
    rows = make_rows(data.train, max_seq_len, packing=True)
    loss_fn = SFTLoss(model)
    model.eval()
    total = count = 0.0
    device = next(model.parameters()).device
    with torch.no_grad():
        for row in rows:
            out = loss_fn(**collate([row], tokenizer.pad_token_id, device))
            loss_sum, n = out["loss"], out["count"]
            total += loss_sum.item()
            count += int(n)
    return total / max(1.0, count)


def worker_trl(args: argparse.Namespace) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tunesmith.models.load import load_tokenizer, resolve_path

    path = resolve_path(args.model)
    tok = load_tokenizer(path)
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    dataset = load_dataset("json", data_files=args.data, split="train")
    packing = args.trl_packing == "on"
    config = SFTConfig(
        output_dir=str(Path(args.tmp) / f"trl-{args.trl_packing}-{os.getpid()}"),
        max_length=args.max_seq_len,
        packing=packing,
        per_device_train_batch_size=1 if packing else args.trl_batch,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=WARMUP,
        num_train_epochs=1,
        max_steps=args.steps or -1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=cuda or args.trl_bf16,  # on a CPU: torch.autocast("cpu", bfloat16)
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=not cuda,
        dataloader_num_workers=0,
        seed=0,
        completion_only_loss=True,
    )
    counts: dict[str, list] = {"tokens": [], "inputs": [], "times": [], "losses": [], "begin": []}

    class Counting(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            labels = inputs["labels"]
            counts["tokens"].append(int((labels[..., 1:] != -100).sum()))
            counts["inputs"].append(int(labels.numel()))
            return super().training_step(model, inputs, num_items_in_batch)

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            counts["begin"] = [time.perf_counter()]

        def on_step_end(self, *a, **k):
            counts["times"].append(time.perf_counter())

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "loss" in logs:
                counts["losses"].append(float(logs["loss"]))

    peft = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = Counting(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tok,
        peft_config=peft,
        callbacks=[Clock()],
    )
    trainer.train()
    heldout = heldout_loss(trainer.model, tok, args.heldout, args.max_seq_len)
    ga = args.grad_accum
    tokens = sum(counts["tokens"][ga:])  # steps 2..N
    inputs = sum(counts["inputs"][ga:])
    seconds = counts["times"][-1] - counts["times"][0]
    return {
        "steps": len(counts["times"]),
        "epoch_seconds": counts["times"][-1] - counts["begin"][0],
        "epoch_trained_tokens": sum(counts["tokens"]),
        "losses": counts["losses"],
        "heldout_loss": heldout,
        "trained_tokens": tokens,
        "seconds": seconds,
        "trained_tokens_per_s": tokens / max(seconds, 1e-9),
        "input_tokens_per_step": inputs / max(1, len(counts["times"]) - 1),
        "flops": _flops(trainer.model, tokens, input_tokens=inputs),
        "peak_rss_mb": peak_rss_mb(),
        "precision": "bf16 autocast" if config.bf16 else "float32",
    }


def _flops(model, trained_tokens: int, *, input_tokens: int) -> float:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings().weight.numel()
    embed = base.get_input_embeddings().weight.numel()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    tied = base.get_output_embeddings().weight is base.get_input_embeddings().weight
    body = frozen - embed - (0 if tied else head)
    return float(input_tokens * (4 * body + 6 * trainable) + trained_tokens * 4 * head)


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def matmul_peak(seconds: float = 3.0, size: int = 2048) -> float:
    """Best fp32 matmul FLOP/s this process reaches (all threads) — the MFU denominator."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best, end = 0.0, time.time() + seconds
    while time.time() < end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - t))
    return best


def run_worker(kind: str, args: argparse.Namespace, data: Path, extra: list[str]) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--data",
        str(data),
        "--tmp",
        args.tmp,
        *(["--steps", str(args.steps)] if args.steps else []),
        "--max-seq-len",
        str(args.max_seq_len),
        "--grad-accum",
        str(args.grad_accum),
        "--model",
        args.model,
        "--heldout",
        args.heldout,
        *extra,
    ]
    print(f"running {kind} {' '.join(extra)} ...", flush=True)
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_header() -> dict:
    """CPU model, its bf16/AMX flags, and whether it has bf16 matrix units."""
    from tunesmith.models.precision import cpu_info

    model, flags = cpu_info()
    return {"model": model, "flags": flags, "bf16_units": any("bf16" in f for f in flags)}


def sides(args: argparse.Namespace, batch: int, bf16: bool) -> list[tuple[str, str, list[str]]]:
    """(name, worker, extra args) in the order they run: ours and trl alternate."""
    off = ["--trl-packing", "off", "--trl-batch", str(batch)]
    on = ["--trl-packing", "on"]
    out = [("ours", "ours", ["--dtype", "auto"])]
    if not args.skip_trl:
        out.append(("trl_packing_off", "trl", off))
    out.append(("ours_float32", "ours", ["--dtype", "float32"]))
    if not args.skip_trl:
        out.append(("trl_packing_on", "trl", on))
        if bf16:
            out += [
                ("trl_packing_off_bf16", "trl", [*off, "--trl-bf16"]),
                ("trl_packing_on_bf16", "trl", [*on, "--trl-bf16"]),
            ]
    return [side for side in out if not args.only or side[0] in args.only]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="cap (smoke runs); default one epoch")
    p.add_argument("--max-seq-len", type=int, default=1024)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--only", nargs="*", help="run only these sides (e.g. ours trl_packing_on)")
    p.add_argument("--rounds", type=int, default=1, help="run every side this many times")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--worker", choices=["ours", "trl"])
    p.add_argument("--dtype", default="auto")
    p.add_argument("--trl-packing", choices=["on", "off"], default="off")
    p.add_argument("--trl-batch", type=int, default=1)
    p.add_argument("--trl-bf16", action="store_true")
    p.add_argument("--data")
    p.add_argument("--heldout")
    p.add_argument("--tmp")
    args = p.parse_args()

    if args.worker:
        result = worker_ours(args) if args.worker == "ours" else worker_trl(args)
        print(json.dumps(result))
        return

    import torch

    cuda = torch.cuda.is_available()
    cpu = cpu_header()
    load_before = os.getloadavg()
    print(
        f"CPU: {cpu['model']}; bf16/AMX flags: {' '.join(cpu['flags']) or 'none'}; "
        f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="ts-bench-") as tmp:
        args.tmp = tmp
        ours_data, trl_data = build_data(args.examples, 0, Path(tmp))
        held_dir = Path(tmp) / "heldout"
        held_dir.mkdir()
        args.heldout = str(build_data(40, 1, held_dir)[0])
        peak = matmul_peak()
        # trl without packing: as many examples per micro-batch as one packed row holds.
        batch = _examples_per_row(ours_data, args)
        rounds: dict[str, list[dict]] = {}
        for _ in range(max(1, args.rounds)):
            for name, kind, extra in sides(args, batch, cuda or cpu["bf16_units"]):
                data = ours_data if kind == "ours" else trl_data
                rounds.setdefault(name, []).append(run_worker(kind, args, data, extra))
        peak = max(peak, matmul_peak())  # again at the end: one disturbed probe must not count
    load_after = os.getloadavg()
    results = {name: _median_round(runs) for name, runs in rounds.items()}
    ours = results.get("ours") or results["ours_float32"]
    report = {
        "when": dt.datetime.now().isoformat(timespec="seconds"),
        "device": "cuda" if cuda else "cpu",
        "cpu": cpu,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "settings": {
            "steps": args.steps,
            "max_seq_len": args.max_seq_len,
            "grad_accum": args.grad_accum,
            "examples": args.examples,
            "trl_batch_packing_off": batch,
            "lora": LORA,
            "learning_rate": LR,
            "rounds": args.rounds,
        },
        "matmul_peak_gflops": peak / 1e9,
        "results": results,
        "ours_mfu": ours["flops"] / ours["seconds"] / peak,
    }
    print(f"\nmatmul peak {peak / 1e9:.1f} GFLOP/s (float32); {report['threads']} threads")
    print(
        f"{'':22}{'precision':>15}{'trained tok/s':>14}{'peak RSS MB':>13}{'train loss*':>12}"
        f"{'held-out loss':>14}{'MFU':>8}{'steps':>7}{'epoch s':>9}"
    )
    for name, r in results.items():
        mfu = r["flops"] / r["seconds"] / peak
        r["train_loss_tail"] = _tail_mean(r["losses"])
        prec = r.get("precision")
        prec = prec.get("compute") if isinstance(prec, dict) else prec
        print(
            f"{name:22}{prec!s:>15}{r['trained_tokens_per_s']:14.1f}{r['peak_rss_mb']:13.0f}"
            f"{r['train_loss_tail']:12.4f}{r['heldout_loss']:14.4f}{mfu:8.1%}"
            f"{r['steps']:7d}{r['epoch_seconds']:9.0f}"
        )
    print("* mean training loss over the last quarter of the steps; MFU against the fp32 peak")
    if "ours" in results and "ours_float32" in results:
        ref = results["ours_float32"]
        report["ours_vs_ours_float32"] = {
            "speed": ours["trained_tokens_per_s"] / ref["trained_tokens_per_s"],
            "heldout_loss_rel_diff": (ours["heldout_loss"] - ref["heldout_loss"])
            / ref["heldout_loss"],
        }
        q = report["ours_vs_ours_float32"]
        print(
            f"ours (auto) vs ours float32: {q['speed']:.2f}x trained tok/s, held-out loss "
            f"{q['heldout_loss_rel_diff']:+.2%}"
        )
    for name, r in results.items():
        if not name.startswith("trl"):
            continue
        ratios = _ratios(ours, r)
        report[f"vs_{name}"] = ratios
        print(
            f"ours vs {name}: {ratios['speed']:.2f}x trained tok/s, "
            f"{1 / ratios['epoch_time']:.2f}x faster epoch, memory "
            f"{ratios['memory']:.2f}x, held-out loss {ratios['heldout_loss_rel_diff']:+.1%}"
        )
    for mode in ("off", "on"):  # trl's fastest configuration per packing mode
        cands = [n for n in results if n.startswith(f"trl_packing_{mode}")]
        if cands:
            best = max(cands, key=lambda n: results[n]["trained_tokens_per_s"])
            report[f"vs_trl_fastest_packing_{mode}"] = {"side": best, **report[f"vs_{best}"]}
            speed = report[f"vs_{best}"]["speed"]
            print(f"trl's fastest, packing {mode}: {best}; ours {speed:.2f}x")
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"train_throughput-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out}")


def _ratios(ours: dict, r: dict) -> dict:
    return {
        "speed": ours["trained_tokens_per_s"] / r["trained_tokens_per_s"],
        "epoch_time": ours["epoch_seconds"] / r["epoch_seconds"],
        "memory": ours["peak_rss_mb"] / r["peak_rss_mb"],
        "heldout_loss_rel_diff": (ours["heldout_loss"] - r["heldout_loss"]) / r["heldout_loss"],
    }


def _median_round(runs: list[dict]) -> dict:
    """The round with the median trained tok/s (the lower middle one of an even count), with
    every round's tok/s beside it."""
    ordered = sorted(runs, key=lambda r: r["trained_tokens_per_s"])
    pick = dict(ordered[(len(ordered) - 1) // 2])
    pick["rounds_trained_tokens_per_s"] = [r["trained_tokens_per_s"] for r in runs]
    return pick


def _tail_mean(values: list[float]) -> float:
    tail = values[-max(1, len(values) // 4) :]
    return sum(tail) / len(tail)


def _examples_per_row(data: Path, args: argparse.Namespace) -> int:
    from tunesmith.data.prepare import prepare_sft
    from tunesmith.models.load import load_tokenizer, resolve_path
    from tunesmith.train.batching import make_rows

    tok = load_tokenizer(resolve_path(args.model))
    prepared = prepare_sft(data, tok, max_seq_len=args.max_seq_len, train_on="last")
    rows = make_rows(prepared.train, args.max_seq_len, packing=True)
    return max(1, round(len(prepared.train) / max(1, len(rows))))


if __name__ == "__main__":
    main()
