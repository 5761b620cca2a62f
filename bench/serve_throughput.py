"""Serving throughput: 8 concurrent streaming requests vs the same 8 one at a time, 4 adapters.

    .venv/bin/python bench/serve_throughput.py                  # the measurement
    .venv/bin/python bench/serve_throughput.py --max-tokens 8   # smoke

Setup: the default model (fp32 on CPU, bf16 on CUDA) and 4 LoRA adapters of it (r=16, alpha
32, every linear layer; random A and small random B, saved by peft: each answers a little
differently from the base and from the others, like 4 tenants' fine-tunes). 8 held-out support
prompts (examples/chat-heldout.jsonl), 2 per adapter. A live `tunesmith` server in its own
process (loopback; so the client's work does not share the server's interpreter) serves the
adapters as 4 models; the client is the official `openai` SDK, streaming with
`stream_options.include_usage`, temperature 0, `max_tokens` N. A warm-up request per adapter
loads them first (all 4 on the one base in memory).
- sequential: the 8 requests one after the other;
- concurrent: 8 threads released together (the engine batches them: 4 adapters, one batch).
Per request: time to first token (request sent -> first content chunk) and completion tokens
(usage). Aggregate tokens/s = all completion tokens / (last end - first start). Single-stream
decode tokens/s = (tokens - 1) / (end - first token), over the sequential requests. Greedy
answers must not depend on the batch: the concurrent answers are compared with the sequential.
Both serving precisions run, one server each: float32 (exact) and int8 (inference/packed.py,
what `serve_precision: auto` picks on a CPU whose int8 kernel is faster); int8's answers are
compared with float32's, and its next-token agreement and perplexity (teacher-forced, held-out
and sample conversations, base model) are measured in-process.
llama.cpp (optional, `pip install 'tunesmith[llamacpp]'`, a 15-minute source build), two more
rows, skipped with a note when it is missing:
- ours, llama.cpp engine: a third server with `serve_engine: llamacpp`, as a user runs it on a
  CPU with the extra installed: the warm-up requests are answered by torch while the server
  exports each adapter as q8_0 GGUF in the background (server/gguf_cache.py); once the 4
  exports are in its cache the next request of each adapter moves it over to llama.cpp; then
  the same sequential and concurrent rounds through HTTP and the SDK;
- llama.cpp alone: the same 4 GGUF files (the server's exports, byte for byte), the same 8
  prompts one at a time (request k to adapter k % 4, as ours) through llama-cpp-python's
  streaming chat completion in this process: the reference for single-stream speed; its
  answers compared with our llama.cpp engine's and our float32 ones.
The 2-core box is shared: the load average before and after is recorded with the results, and
each server runs with the OpenMP policy `tunesmith serve` picks for its engine (`server_env`).
Results: printed, and written to bench/results/serve_throughput-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HELDOUT = ROOT / "examples" / "chat-heldout.jsonl"
LORA = {"r": 16, "alpha": 32}
ADAPTERS = 4
REQUESTS = 8
PRECISIONS = ("float32", "int8")  # the server's serve_precision, both measured in one run
LLAMACPP_ISSUE_TOKS = 55.9  # issue 13: llama.cpp single stream on this box, q8_0, demo model


# ---------------------------------------------------------------------------------------------
# Setup: adapters, prompts, a server in its own process
# ---------------------------------------------------------------------------------------------


def make_adapters(base: Path, out: Path, n: int) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dirs = []
    for i in range(n):
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        config = LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        peft = get_peft_model(model, config)
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:  # small: fluent answers, each a little different
                    p.copy_(torch.randn(p.shape, generator=gen) * 2e-3)
        peft.save_pretrained(out / f"adapter{i}")
        dirs.append(out / f"adapter{i}")
    return dirs


def prompts(n: int) -> list[list[dict[str, str]]]:
    rows = [json.loads(line)["messages"] for line in HELDOUT.read_text().splitlines() if line]
    convs = [[m for m in msgs if m["role"] != "assistant"][:2] for msgs in rows]
    return [convs[i % len(convs)] for i in range(n)]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cache_exports(tmp: str) -> dict[str, Path]:
    """The server's GGUF exports so far: target (an adapter dir) -> its file."""
    found = {}
    for meta in (Path(tmp) / "home" / "cache" / "gguf").glob("*/meta.json"):
        files = sorted(meta.parent.rglob("*.gguf"))
        if files:
            found[json.loads(meta.read_text())["target"]] = files[0]
    return found


def serve(args: argparse.Namespace) -> None:
    """The server process: adapters as models `ft-0..3`, the base as `base`."""
    import uvicorn

    from tunesmith.server import create_app
    from tunesmith.service import ServerSettings

    models = {"base": args.model, **json.loads(args.models)}
    settings = ServerSettings(
        home=Path(args.tmp) / "home", models=models, api_keys=None, serve_precision=args.precision
    )
    uvicorn.run(create_app(settings), host="127.0.0.1", port=args.port, log_level="warning")


def server_env(engine: str = "torch") -> dict[str, str]:
    """The environment `tunesmith serve` gives itself for `engine` (service.openmp_env): a
    short OpenMP spin for our torch engine, libgomp's default for llama.cpp."""
    from tunesmith.service import openmp_env

    # The engine is pinned for each server: with llama-cpp-python installed the default
    # `serve_engine: auto` would serve the torch rows' adapters through llama.cpp too.
    env = {**os.environ, "TUNESMITH_SERVE_ENGINE": engine}
    env.update(openmp_env(engine, env))
    return env


def start_server(
    args: argparse.Namespace, adapters: list[Path], precision: str, engine: str = "torch"
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    models = json.dumps({f"ft-{i}": str(d) for i, d in enumerate(adapters)})
    cmd = [
        sys.executable,
        __file__,
        "--serve",
        "--port",
        str(port),
        "--models",
        models,
        "--tmp",
        args.tmp,
        "--model",
        args.model,
        "--precision",
        precision,
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=server_env(engine))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the server exited during start-up") from None
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start within 120 s")


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def one_request(client, model: str, messages, max_tokens: int) -> dict:
    start = time.perf_counter()
    first, text, usage = None, [], None
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        temperature=0,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter()
            text.append(chunk.choices[0].delta.content)
    end = time.perf_counter()
    tokens = usage.completion_tokens if usage is not None else 0
    first = first or end
    return {
        "model": model,
        "start": start,
        "first": first,
        "end": end,
        "tokens": tokens,
        "text": "".join(text),
    }


def summary(rows: list[dict]) -> dict:
    t0 = min(r["start"] for r in rows)
    t1 = max(r["end"] for r in rows)
    ttft = sorted(r["first"] - r["start"] for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    decode = [
        (r["tokens"] - 1) / (r["end"] - r["first"])
        for r in rows
        if r["tokens"] > 1 and r["end"] > r["first"]
    ]
    return {
        "requests": len(rows),
        "completion_tokens": tokens,
        "wall_s": t1 - t0,
        "tokens_per_s": tokens / (t1 - t0),
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_p95_s": percentile(ttft, 95),
        "single_stream_decode_tokens_per_s": statistics.mean(decode) if decode else None,
    }


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def run_ours(
    args: argparse.Namespace, adapters: list[Path], precision: str, engine: str = "torch"
) -> dict:
    import openai

    print(f"ours, {precision} weights, {engine} engine:", flush=True)
    proc, url = start_server(args, adapters, precision, engine)
    exported: dict[str, float] = {}
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
        convs = prompts(REQUESTS)
        models = [f"ft-{i % ADAPTERS}" for i in range(REQUESTS)]
        began = time.perf_counter()
        for i in range(ADAPTERS):  # warm-up: loads the base once and the 4 adapters onto it
            one_request(client, f"ft-{i}", convs[i], 4)
        if engine == "llamacpp":  # the warm-up went to torch; wait for the 4 exports to land
            print("waiting for the server's GGUF exports ...", flush=True)
            deadline = time.monotonic() + 900
            while len(cache_exports(args.tmp)) < ADAPTERS:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the server did not export the adapters within 15 min")
                time.sleep(0.5)
            exported["all_exported_after_s"] = time.perf_counter() - began
            for i in range(ADAPTERS):  # moves each adapter over to llama.cpp, loads its file
                one_request(client, f"ft-{i}", convs[i], 4)
        print("sequential ...", flush=True)
        sequential = [
            one_request(client, m, c, args.max_tokens) for m, c in zip(models, convs, strict=True)
        ]
        print("concurrent ...", flush=True)
        concurrent: list[dict] = [{} for _ in range(REQUESTS)]
        gate = threading.Barrier(REQUESTS)

        def worker(k: int) -> None:
            gate.wait()
            concurrent[k] = one_request(client, models[k], convs[k], args.max_tokens)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(REQUESTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        base = one_request(client, "base", convs[0], args.max_tokens)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    same = sum(a["text"] == b["text"] for a, b in zip(sequential, concurrent, strict=True))
    distinct = len({r["text"] for r in sequential[:ADAPTERS]})
    return {
        "engine": engine,
        **exported,
        "sequential": summary(sequential),
        "concurrent": summary(concurrent),
        "base_single_stream": summary([base]),
        "same_answers_concurrent_vs_sequential": same,
        "distinct_answers_of_4_adapters": distinct,
        "answers": [r["text"] for r in sequential],
    }


def run_engine_in_process(args: argparse.Namespace, adapters: list[Path], precision: str) -> dict:
    """Our engine without HTTP, the SDK or a client process — how llama.cpp is measured: the
    same 8 requests one at a time through `ModelPool.stream` in this process."""
    from tunesmith.inference import GenerationSettings, prompt_ids
    from tunesmith.inference.pool import ModelPool

    pool = ModelPool(1, precision=precision)  # type: ignore[arg-type]
    try:
        served = [pool.get(str(a)) for a in adapters]
        settings = GenerationSettings(max_new_tokens=args.max_tokens, temperature=0.0)
        warm = GenerationSettings(max_new_tokens=4, temperature=0.0)
        convs = prompts(REQUESTS)
        for s, c in zip(served, convs, strict=False):
            s.complete(prompt_ids(s.tokenizer, c), warm)
        rows = []
        for k, messages in enumerate(convs):
            s = served[k % len(served)]
            ids = prompt_ids(s.tokenizer, messages)
            start = time.perf_counter()
            first, item = None, None
            for item in s.stream(ids, settings):
                if isinstance(item, str) and item:
                    first = first or time.perf_counter()
            end = time.perf_counter()
            tokens = getattr(item, "completion_tokens", 0)
            rows.append({"start": start, "first": first or end, "end": end, "tokens": tokens})
    finally:
        pool.close()
    return summary(rows)


def engine_in_child(args: argparse.Namespace, adapters: list[Path], precision: str) -> dict:
    """`run_engine_in_process` in a fresh process with the server's environment (OMP workers
    that sleep, see `server_env`), so neither side inherits the other's threads."""
    cmd = [
        sys.executable, __file__, "--engine-child", "--precision", precision,
        "--models", json.dumps([str(a) for a in adapters]), "--max-tokens", str(args.max_tokens),
    ]  # fmt: skip
    done = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=server_env()
    )
    if done.returncode != 0:
        raise SystemExit(
            f"the in-process engine ({precision}) exited with {done.returncode}:\n"
            f"{done.stderr[-3000:]}\nits output: {done.stdout[-500:]}"
        )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def llamacpp_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def run_llamacpp(args: argparse.Namespace, adapters: list[Path]) -> dict | None:
    """Each adapter's q8_0 GGUF (the one our server exported; exported here if it is not in
    its cache); request k goes to adapter k % 4's file, as ours does, so the answers can be
    compared one to one."""
    try:
        import llama_cpp
    except ImportError:
        return None
    from tunesmith import api

    print("llama.cpp alone, on the same GGUF files ...", flush=True)
    llms = []
    exports = cache_exports(args.tmp)
    for i, adapter in enumerate(adapters):
        gguf = exports.get(str(adapter))
        if gguf is None:
            out = Path(args.tmp) / f"gguf{i}"
            api.export_model(adapter, format="gguf", quantize="q8_0", out=out, verify=False)
            gguf = next(out.rglob("*.gguf"))
        threads = os.cpu_count() or 1
        llm = llama_cpp.Llama(
            model_path=str(gguf), n_ctx=2048, n_threads=threads, seed=0, verbose=False
        )
        llms.append(llm)
    rows = []
    for k, messages in enumerate(prompts(REQUESTS)):
        llm = llms[k % len(llms)]
        start = time.perf_counter()
        first, pieces, text = None, 0, []
        for chunk in llm.create_chat_completion(
            messages=messages,
            max_tokens=args.max_tokens,
            temperature=0.0,
            top_k=1,
            repeat_penalty=1.0,
            stream=True,
        ):
            content = chunk["choices"][0]["delta"].get("content")
            if content:
                first = first or time.perf_counter()
                pieces += 1
                text.append(content)
        end = time.perf_counter()
        rows.append(
            {"start": start, "first": first or end, "end": end, "tokens": pieces,
             "text": "".join(str(t) for t in text)}
        )  # fmt: skip
    result = summary(rows)  # tokens counted as streamed pieces (one per token in llama.cpp)
    result["answers"] = [r["text"] for r in rows]
    return result


def next_token_agreement(model_name: str) -> dict:
    """int8 against float32 weights on held-out and sample conversations, teacher-forced:
    how often the most likely next token is the same, and the perplexity of the text."""
    import math

    import torch

    from tunesmith.inference.packed import pack_linears
    from tunesmith.models.load import load_model

    loaded = load_model(model_name)
    model, tok = loaded.model, loaded.tokenizer
    rows = [json.loads(line)["messages"] for line in HELDOUT.read_text().splitlines() if line]
    sample = ROOT / "examples" / "chat-sample.jsonl"
    rows += [json.loads(line)["messages"] for line in sample.read_text().splitlines() if line]

    def ids(messages: list[dict]) -> list[int]:
        out = tok.apply_chat_template(messages, tokenize=True)
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    seqs = [torch.tensor([ids(m)]) for m in rows[:40]]

    def logits() -> list[Any]:
        with torch.inference_mode():
            return [model(input_ids=s).logits[0, :-1].float() for s in seqs]

    def nll(all_logits: list[Any]) -> float:
        total = sum(
            float(torch.nn.functional.cross_entropy(lg, s[0, 1:], reduction="sum"))
            for lg, s in zip(all_logits, seqs, strict=True)
        )
        return total / sum(s.shape[1] - 1 for s in seqs)

    fp32 = logits()
    pack_linears(model)
    int8 = logits()
    same = sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(fp32, int8, strict=True))
    tokens = sum(s.shape[1] - 1 for s in seqs)
    return {
        "tokens": tokens,
        "top1_agreement": same / tokens,
        "perplexity_float32": math.exp(nll(fp32)),
        "perplexity_int8": math.exp(nll(int8)),
    }


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--skip-llamacpp", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--models", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--engine-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    if args.engine_child:
        adapters = [Path(a) for a in json.loads(args.models)]
        print(json.dumps(run_engine_in_process(args, adapters, args.precision)))
        return

    import torch

    from tunesmith.models.load import resolve_path

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ts-serve-bench-") as tmp:
        args.tmp = tmp
        adapters = make_adapters(resolve_path(args.model), Path(tmp), ADAPTERS)
        runs = {p: run_ours(args, adapters, p) for p in PRECISIONS}
        print("our engine in-process, one at a time ...", flush=True)
        engine = {p: engine_in_child(args, adapters, p) for p in PRECISIONS}
        with_llama = not args.skip_llamacpp and llamacpp_installed()
        on_llama = run_ours(args, adapters, "float32", "llamacpp") if with_llama else None
        llama = run_llamacpp(args, adapters) if with_llama else None
    print("next-token agreement, int8 vs float32 ...", flush=True)
    agreement = next_token_agreement(args.model)
    exact = runs["float32"]["answers"]

    def same_as_float32(answers: list[str]) -> int:
        return sum(a == b for a, b in zip(answers, exact, strict=True))

    fast = runs["int8"]
    report = {
        "when": dt.datetime.now().isoformat(timespec="seconds"),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "server_omp_wait_policy": {
            e: server_env(e).get("OMP_WAIT_POLICY", "(not set)") for e in ("torch", "llamacpp")
        },
        "settings": {
            "model": args.model,
            "max_tokens": args.max_tokens,
            "adapters": ADAPTERS,
            "requests": REQUESTS,
            "lora": LORA,
            "temperature": 0,
        },
        "ours": runs,
        "ours_llamacpp_engine": on_llama,
        "engine_in_process": engine,
        "llamacpp": llama,
        "int8_next_token_agreement": agreement,
        "same_answers_as_float32": {
            "int8": same_as_float32(fast["answers"]),
            "llamacpp_q8_0": same_as_float32(llama["answers"]) if llama else None,
            "ours_llamacpp_engine": same_as_float32(on_llama["answers"]) if on_llama else None,
        },
        "same_answers_ours_llamacpp_engine_vs_llamacpp": (
            sum(a == b for a, b in zip(on_llama["answers"], llama["answers"], strict=True))
            if on_llama and llama
            else None
        ),
    }
    for p in PRECISIONS:
        r = runs[p]
        report[f"concurrent_vs_sequential_{p}"] = (
            r["concurrent"]["tokens_per_s"] / r["sequential"]["tokens_per_s"]
        )
    ref = llama["single_stream_decode_tokens_per_s"] if llama else LLAMACPP_ISSUE_TOKS
    for p in PRECISIONS:
        ours_decode = runs[p]["sequential"]["single_stream_decode_tokens_per_s"]
        report[f"single_stream_vs_llamacpp_{p}"] = ours_decode / ref
        in_process = engine[p]["single_stream_decode_tokens_per_s"]
        report[f"single_stream_in_process_vs_llamacpp_{p}"] = in_process / ref
    if on_llama and llama:
        decode = on_llama["sequential"]["single_stream_decode_tokens_per_s"]
        report["single_stream_vs_llamacpp_ours_llamacpp_engine"] = decode / ref
        report["concurrent_vs_sequential_ours_llamacpp_engine"] = (
            on_llama["concurrent"]["tokens_per_s"] / on_llama["sequential"]["tokens_per_s"]
        )
    report["llamacpp_reference"] = "measured" if llama else "issue 13's figure (not installed)"

    print(
        f"\n{args.model}, {ADAPTERS} LoRA adapters, {REQUESTS} requests, max_tokens "
        f"{args.max_tokens}, {report['threads']} threads, {report['cpu']}, load "
        f"{load_before[0]:.1f} -> {report['load_average_after'][0]:.1f}"
    )
    head = f"{'tokens/s':>10}{'TTFT p50':>10}{'TTFT p95':>10}{'decode/stream':>15}{'wall s':>8}"
    print(f"{'':34}{head}")
    rows = []
    for p in PRECISIONS:
        rows += [
            (f"ours {p}, one at a time", runs[p]["sequential"]),
            (f"ours {p}, 8 concurrent", runs[p]["concurrent"]),
            (f"ours {p}, base model alone", runs[p]["base_single_stream"]),
            (f"engine {p}, in-process, 1 at a time", engine[p]),
        ]
    if on_llama:
        rows += [
            ("ours llama.cpp engine, 1 at a time", on_llama["sequential"]),
            ("ours llama.cpp engine, 8 concurrent", on_llama["concurrent"]),
        ]
    if llama:
        rows.append(("llama.cpp q8_0 alone, 1 at a time", llama))
    for name, r in rows:
        decode = r["single_stream_decode_tokens_per_s"]
        print(
            f"{name:34}{r['tokens_per_s']:10.1f}{r['ttft_p50_s'] * 1000:8.0f}ms"
            f"{r['ttft_p95_s'] * 1000:8.0f}ms{decode or 0:15.1f}{r['wall_s']:8.1f}"
        )
    if not llama:
        print(
            "llama.cpp: skipped (llama-cpp-python is not installed: pip install "
            "'tunesmith[llamacpp]', a ~15 min source build); reference: issue 13's "
            f"{LLAMACPP_ISSUE_TOKS} tokens/s"
        )
    for p in PRECISIONS:
        print(
            f"{p}: concurrent vs sequential {report[f'concurrent_vs_sequential_{p}']:.2f}x "
            f"(target 3x); single stream vs llama.cpp "
            f"{report[f'single_stream_vs_llamacpp_{p}']:.2f}x through the server, "
            f"{report[f'single_stream_in_process_vs_llamacpp_{p}']:.2f}x in-process "
            f"(target 0.7x); same greedy "
            f"answers batched: {runs[p]['same_answers_concurrent_vs_sequential']}/{REQUESTS}"
        )
    if on_llama and llama:
        print(
            f"llama.cpp engine through the server: single stream "
            f"{report['single_stream_vs_llamacpp_ours_llamacpp_engine']:.2f}x llama.cpp alone "
            f"(target 0.7x), concurrent vs sequential "
            f"{report['concurrent_vs_sequential_ours_llamacpp_engine']:.2f}x; same greedy answers "
            f"as llama.cpp alone {report['same_answers_ours_llamacpp_engine_vs_llamacpp']}"
            f"/{REQUESTS}; the 4 exports were in the cache "
            f"{on_llama['all_exported_after_s']:.0f} s after the first request"
        )
    same = report["same_answers_as_float32"]
    print(
        f"answers equal to float32's: int8 {same['int8']}/{REQUESTS}"
        + (f", llama.cpp q8_0 {same['llamacpp_q8_0']}/{REQUESTS}" if llama else "")
        + f"; int8 next-token top-1 agreement {agreement['top1_agreement']:.3f} over "
        f"{agreement['tokens']} tokens, perplexity {agreement['perplexity_float32']:.3f} -> "
        f"{agreement['perplexity_int8']:.3f}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"serve_throughput-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
