"""Where one packed 1024-token training step spends its time (torch.profiler), on this CPU.

    .venv/bin/python bench/profile_train_step.py --dtype float32
    .venv/bin/python bench/profile_train_step.py --dtype bf16 --top 20

The run is set up exactly as `tunesmith train` sets it up (train/setup.prepare: the default
model, LoRA r=16 on all linear layers, dropout 0.05, packing, loss on the final answer, the
bench's data), then a few micro-batches of one full packed row each run forward + backward +
optimizer step untimed, and one more runs under the profiler. Prints the top operators by self
CPU time and the share of matrix products, and writes the table to
bench/results/profile_train_step-<dtype>-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_throughput import LORA, build_data  # noqa: E402

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="auto")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--max-seq-len", type=int, default=1024)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--timed", type=int, default=3, help="steps timed without the profiler")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from tunesmith.config import load_spec
    from tunesmith.train import distributed as dist
    from tunesmith.train.loop import accumulate

    with tempfile.TemporaryDirectory(prefix="ts-profile-") as tmp:
        data, _ = build_data(200, 0, Path(tmp))
        spec = load_spec(
            {
                "model": args.model,
                "adapter": "lora",
                "lora": {**LORA, "target_modules": "all-linear"},
                "data": {"train": str(data), "max_seq_len": args.max_seq_len, "packing": True,
                         "train_on": "last"},
                "batch_size": 1,
                "grad_accum": 1,
                "dtype": args.dtype,
                "save_every_steps": 10**9,
                "eval": {"compare_base": False},
                "output_dir": str(Path(tmp) / "run"),
            }
        )  # fmt: skip
        from tunesmith.train.setup import prepare

        said: list[str] = []
        prepared = prepare(
            spec, None, dist.DistInfo(), torch.device("cpu"), lambda e: said.append(e.message)
        )
        for line in said:
            if "frozen base" in line or "LoRA:" in line:
                print(line)
        ctx = prepared.ctx
        rows = sorted(ctx.rows, key=len, reverse=True)  # the fullest packed rows
        batches = [ctx.objective.collate([r], ctx.device) for r in rows[: args.warmup + 1]]
        import time

        def step(batch: dict) -> None:
            units = ctx.objective.count(batch)
            accumulate(ctx, [batch], units)
            ctx.optimizer.step()
            ctx.optimizer.zero_grad(set_to_none=True)

        for batch in batches[:-1]:
            step(batch)
        seconds = []
        for _ in range(args.timed):  # the same full row again: no profiler, wall clock
            start = time.perf_counter()
            step(batches[-1])
            seconds.append(time.perf_counter() - start)
        seconds.sort()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(batches[-1])
        if prepared.lock is not None:
            prepared.lock.release()

    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows_out = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    table = [
        {
            "op": e.key,
            "self_ms": e.self_cpu_time_total / 1e3,
            "share": e.self_cpu_time_total / max(1, total),
            "calls": e.count,
        }
        for e in rows_out
    ]
    matmul = sum(r["self_ms"] for r in table if r["op"] in MATMUL_OPS)
    tokens = int(batches[-1]["input_ids"].numel())
    median = seconds[len(seconds) // 2] if seconds else float("nan")
    print(f"\nwall clock, no profiler: {median * 1e3:.0f} ms per step (median of {len(seconds)})")
    print(
        f"one packed step: {tokens} tokens, {total / 1e3:.0f} ms self CPU total, "
        f"matrix products {matmul / (total / 1e3):.0%}  (dtype {args.dtype}, "
        f"{torch.get_num_threads()} threads)"
    )
    print(f"{'op':44}{'self ms':>10}{'share':>8}{'calls':>7}")
    for r in table[: args.top]:
        print(f"{r['op'][:43]:44}{r['self_ms']:10.1f}{r['share']:8.1%}{r['calls']:7d}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"profile_train_step-{args.dtype}-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(
        json.dumps(
            {
                "when": dt.datetime.now().isoformat(timespec="seconds"),
                "dtype": args.dtype,
                "tokens": tokens,
                "step_seconds": seconds,
                "threads": torch.get_num_threads(),
                "total_self_ms": total / 1e3,
                "matmul_share": matmul / max(1e-9, total / 1e3),
                "top": table[:40],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
