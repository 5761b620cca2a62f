"""Benchmark: validate 100k chat examples with token counts; report speed and peak memory.

Generates N varied chat examples (single- and multi-turn, some with system prompts) into a
temp JSONL file, then runs the same validation `tunesmith data validate` runs: every example is
rendered with the model's chat template and tokenized with loss masks. Uses the default model's
tokenizer when it is installed, else the tiny test tokenizer. Prints examples/s, wall time and
peak RSS, plus the peak RSS growth during validation (which must stay bounded: validation keeps
only compact per-row statistics, never the records or their token lists). Target: < 60 s.

    .venv/bin/python bench/validate_speed.py [--n 100000] [--model NAME_OR_DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "order refund delivery invoice account password reset broken late phone email customer "
    "please thanks help support ticket urgent today tomorrow price plan upgrade cancel "
    "billing address shipping tracking number status question answer problem solution"
).split()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def generate(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            messages = []
            if i % 3 == 0:
                messages.append({"role": "system", "content": "You are a support agent."})
            for turn in range(1 if i % 5 else 2):
                messages.append(
                    {"role": "user", "content": f"Ticket {i}-{turn}: " + sentence(rng, 8, 40)}
                )
                messages.append({"role": "assistant", "content": sentence(rng, 5, 60)})
            f.write(json.dumps({"messages": messages}) + "\n")


def load_tokenizer(model: str | None):
    from tunesmith.models import load_tokenizer as load
    from tunesmith.models.load import resolve_path

    if model:
        return load(resolve_path(model)), model
    try:
        return load(resolve_path("smollm2-135m-instruct")), "smollm2-135m-instruct"
    except Exception as exc:  # the default model is not installed: use the tiny tokenizer
        print(f"default model unavailable ({exc}); using the tiny test tokenizer", file=sys.stderr)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny import build_tiny_tokenizer

        out = Path(tempfile.mkdtemp(prefix="tiny-tok-"))
        build_tiny_tokenizer(out)
        return load(out), "tiny"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--model", default=None)
    parser.add_argument("--max-seq-len", type=int, default=2048)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()

    from tunesmith.data.validate import validate

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        t0 = time.perf_counter()
        generate(path, args.n)
        gen_s = time.perf_counter() - t0
        tokenizer, model = load_tokenizer(args.model)
        base_rss = peak_rss_mb()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        report, _ = validate(path, tokenizer, max_seq_len=args.max_seq_len)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        size_mb = path.stat().st_size / 1e6
    result = {
        "benchmark": "validate_speed",
        "examples": report.rows_read,
        "rows_ok": report.rows_ok,
        "errors": report.error_count,
        "file_mb": round(size_mb, 1),
        "model": model,
        "tokens": report.stats["tokens"]["total"]["sum"] if report.stats.get("tokens") else None,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),  # wall > cpu means the machine was shared with other work
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "examples_per_s": round(report.rows_read / wall),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_growth_mb": round(peak_rss_mb() - base_rss, 1),
        "generate_s": round(gen_s, 2),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }
    print(
        f"{result['examples']:,} examples ({size_mb:.0f} MB, {result['tokens']:,} tokens, "
        f"model {model}) validated in {wall:.1f} s (CPU {cpu:.1f} s) = "
        f"{result['examples_per_s']:,} examples/s; "
        f"peak RSS {result['peak_rss_mb']:.0f} MB (+{result['rss_growth_mb']:.0f} MB during "
        f"validation); {result['errors']} errors"
    )
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
