"""Single-stream decoding: our llama.cpp engine vs llama-cpp-python alone vs our torch engine.

    .venv/bin/python bench/serve_llamacpp.py            # needs `pip install 'tunesmith[llamacpp]'`
    .venv/bin/python bench/serve_llamacpp.py --max-tokens 16 --prompts 2   # smoke

Issue 13's target: our single stream >= 0.7x llama.cpp's. The server now serves a model with a
GGUF through llama.cpp (inference/llamacpp.py, `serve_engine: auto`), so this bench measures, in
one run, one process each, the same held-out prompts (examples/chat-heldout.jsonl, user turns),
greedy, `--max-tokens` new tokens, one request at a time, on the default model:
- ours, llama.cpp: `ModelPool` with the server's `GgufCache` (the GGUF the model ships as),
  through `Served.stream` — our tokenizer, TextStream, stop handling, the engine thread;
- llama-cpp-python alone: `Llama.generate` on the same file and the same prompt token ids,
  stopping at the same stop tokens (the reference: what llama.cpp does without us);
- ours, torch: `ModelPool` without GGUFs (`serve_precision` auto: int8 weights where faster).
Decode tokens/s = (tokens - 1) / (end - first token), summed over the prompts; time to first
token beside it. Greedy answers are compared (llama.cpp ours vs alone must be equal: same
file, same ids; torch differs by the weights' precision). Results: printed, and written to
bench/results/serve_llamacpp-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HELDOUT = ROOT / "examples" / "chat-heldout.jsonl"
MODEL = "smollm2-135m-instruct"


def conversations(n: int) -> list[list[dict]]:
    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines() if line.strip()][:n]
    return [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows]


def measure(side: str, n: int, max_tokens: int) -> dict:
    from tunesmith.inference import GenerationSettings, prompt_ids
    from tunesmith.inference.pool import ModelPool
    from tunesmith.models.registry import tunesmith_home
    from tunesmith.server.gguf_cache import GgufCache

    gguf_of = GgufCache(tunesmith_home()) if side == "ours-llamacpp" else None
    pool = ModelPool(1, precision="auto", gguf_of=gguf_of)
    served = pool.get(MODEL)
    engine = served.model.engine
    convs = conversations(n)
    ids_all = [prompt_ids(served.tokenizer, c) for c in convs]
    rows = []
    if side == "llamacpp-alone":
        import llama_cpp

        gguf = GgufCache(tunesmith_home())(MODEL)
        threads = len(os.sched_getaffinity(0))
        llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=4096, n_threads=threads, verbose=False)
        stops = set(served.stop_ids)
        pool.close()
        engine = "llama-cpp-python"
        for i, ids in enumerate([ids_all[0], *ids_all]):
            start, first, out = time.perf_counter(), None, []
            for tok in llm.generate(ids, temp=0.0, top_k=0, min_p=0.0, repeat_penalty=1.0):
                first = first or time.perf_counter()
                if tok in stops or len(out) >= max_tokens:
                    break
                out.append(int(tok))
                if len(out) >= max_tokens:
                    break
            end = time.perf_counter()
            if i:  # the first is a warm-up
                text = served.tokenizer.decode(out, skip_special_tokens=True)
                rows.append({"start": start, "first": first or end, "end": end,
                             "tokens": len(out), "text": text})  # fmt: skip
    else:
        settings = GenerationSettings(max_new_tokens=max_tokens, temperature=0.0)
        served.complete(ids_all[0], GenerationSettings(max_new_tokens=4, temperature=0.0))
        for ids in ids_all:
            start, first, item = time.perf_counter(), None, None
            for item in served.stream(ids, settings):
                if isinstance(item, str) and item and first is None:
                    first = time.perf_counter()
            end = time.perf_counter()
            rows.append({"start": start, "first": first or end, "end": end,
                         "tokens": item.completion_tokens, "text": item.text})  # fmt: skip
        pool.close()
    decode_tokens = sum(max(0, r["tokens"] - 1) for r in rows)
    decode_s = sum(r["end"] - r["first"] for r in rows)
    ttft = sorted(r["first"] - r["start"] for r in rows)
    return {
        "side": side,
        "engine": engine,
        "decode_tokens_per_s": decode_tokens / decode_s if decode_s else 0.0,
        "ttft_p50_s": ttft[len(ttft) // 2],
        "tokens": sum(r["tokens"] for r in rows),
        "answers": [r["text"] for r in rows],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--side", default=None, help=argparse.SUPPRESS)  # a child measures one side
    args = p.parse_args()
    if args.side:
        print(json.dumps(measure(args.side, args.prompts, args.max_tokens)), flush=True)
        os._exit(0)  # the engines' daemon threads need no orderly interpreter shutdown
    from tunesmith.inference.llamacpp import available
    from tunesmith.models.precision import cpu_info

    if not available():
        raise SystemExit("llama-cpp-python is not installed: pip install 'tunesmith[llamacpp]'")
    cpu, flags = cpu_info()
    load_before = os.getloadavg()
    results = {}
    for side in ("ours-llamacpp", "llamacpp-alone", "ours-torch"):  # one process each
        cmd = [sys.executable, __file__, "--side", side, "--prompts", str(args.prompts),
               "--max-tokens", str(args.max_tokens)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[side]
        line = f"{side:15s} {r['engine']:17s} {r['decode_tokens_per_s']:6.1f} decode tok/s, "
        print(line + f"TTFT p50 {r['ttft_p50_s'] * 1000:.0f} ms, {r['tokens']} tokens", flush=True)
    ours, alone = results["ours-llamacpp"], results["llamacpp-alone"]
    torch_ = results["ours-torch"]
    ratio = ours["decode_tokens_per_s"] / alone["decode_tokens_per_s"]
    same = sum(a == b for a, b in zip(ours["answers"], alone["answers"], strict=True))
    report = {
        "bench": "serve_llamacpp",
        "utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpu": cpu, "cpu_flags": flags, "cpu_count": os.cpu_count()},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "settings": {"prompts": args.prompts, "max_tokens": args.max_tokens, "model": MODEL},
        "results": results,
        "ours_vs_llamacpp": ratio,
        "ours_llamacpp_vs_ours_torch": ours["decode_tokens_per_s"] / torch_["decode_tokens_per_s"],
        "same_answers_ours_vs_alone": f"{same}/{len(ours['answers'])}",
    }
    print(f"single stream: ours (llama.cpp engine) {ratio:.2f}x llama-cpp-python alone "
          f"(target >= 0.7x); {report['ours_llamacpp_vs_ours_torch']:.2f}x our torch engine; "
          f"same greedy answers as llama.cpp alone {same}/{len(ours['answers'])}")  # fmt: skip
    out = (
        HERE / "results" / f"serve_llamacpp-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    )
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
