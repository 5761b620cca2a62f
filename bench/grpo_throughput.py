"""GRPO throughput: tunesmith's GRPO vs trl's GRPOTrainer, same model, prompts, grader, settings.

    flock /tmp/tunesmith-bench.lock .venv/bin/python bench/grpo_throughput.py        # measurement
    .venv/bin/python bench/grpo_throughput.py --steps 2 --prompts 8 --heldout 4      # smoke

Both sides: the default model (fp32 on CPU), LoRA r=16 / alpha 32 on all linear layers, LoRA
dropout 0, the same prompts (examples/grpo: "What is A + B? Reply with JSON only ...", in
OpenAI's reinforcement shape for us and as conversational `prompt` + `answer` columns for trl),
the same reward (examples/grpo.yaml's multi grader — strict JSON with an integer "answer", half;
the right sum, half — through `tunesmith.graders` on both sides), K completions per prompt,
P prompts per optimizer step in one micro-batch (trl: per_device_train_batch_size = P x K
completions, num_generations = K), the same completion cap, temperature 1, top_p 1, learning
rate, constant schedule, beta 0 (no reference model on either side), one optimisation pass per
rollout, and the same loss normalisation (trl's `loss_type="grpo"`: each completion's mean over
its tokens, then the mean over completions; group-std scaled advantages on both). Each side
runs in its own subprocess, so its peak RSS is its own.

Speed: prompts/s (each with K completions) over optimizer steps 2..N (step 1 includes warm-up),
and the wall time of all N steps. Peak RSS: the process's maximum resident set, read right after
training. Quality: the mean training reward of the last steps as each trainer logs it, and the
mean reward of one greedy answer per held-out prompt, scored by the same code for both sides.
The load average (`uptime`) before and after each side is recorded: the machine is shared.
Results: printed, and written to bench/results/grpo_throughput-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
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
ROOT = HERE.parent
LORA = {"r": 16, "alpha": 32, "dropout": 0.0}
LR = 2e-4


def grader_object() -> dict:
    """The grader of examples/grpo.yaml (one source of truth for the example and the bench)."""
    from tunesmith.config import load_spec

    spec = load_spec(ROOT / "examples" / "grpo.yaml")
    return dict(spec.method.reinforcement.grader)  # type: ignore[union-attr]


def read_rows(path: Path, n: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows[:n]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_avg() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def heldout_reward(model, tokenizer, rows: list[dict], max_new_tokens: int) -> float:
    """Mean grader reward of one greedy answer per held-out prompt (same code for both)."""
    from tunesmith.graders import GraderError, Item, Sample, build_grader_object
    from tunesmith.inference import GenerationSettings, generate

    if not rows:
        return float("nan")
    grader = build_grader_object(grader_object())
    model.eval()
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=16)
    answers = generate(model, tokenizer, [r["messages"] for r in rows], settings)
    total = 0.0
    for row, text in zip(rows, answers, strict=True):
        with contextlib.suppress(GraderError):  # a failing grader scores 0, as in training
            total += grader.grade(
                Sample(text), Item("", row["messages"], {"answer": row["answer"]})
            )
    return total / len(rows)


def step_rate(stamps: list[float], prompts_per_step: int) -> float:
    """Prompts/s over steps 2..N (the first step's time includes warm-up)."""
    if len(stamps) < 3:
        return prompts_per_step * (len(stamps) - 1) / max(1e-9, stamps[-1] - stamps[0])
    return prompts_per_step * (len(stamps) - 2) / max(1e-9, stamps[-1] - stamps[1])


def worker_ours(args: argparse.Namespace) -> dict:
    from tunesmith import api

    train = ROOT / "examples" / "grpo" / "train.jsonl"
    work = Path(tempfile.mkdtemp(prefix="grpo-bench-ours-"))
    data = work / "train.jsonl"
    data.write_text(
        "".join(json.dumps(r) + "\n" for r in read_rows(train, args.prompts)), encoding="utf-8"
    )
    stamps: list[float] = []
    rewards: list[float] = []

    def on_event(event) -> None:
        if event.kind == "status" and event.data.get("status") == "running" and not stamps:
            stamps.append(time.perf_counter())
        if event.kind == "metrics" and event.phase == "train":
            stamps.append(time.perf_counter())
            rewards.append(float(event.data["reward"]))

    spec = {
        "model": "smollm2-135m-instruct",
        "method": {
            "type": "reinforcement",
            "reinforcement": {
                "grader": grader_object(),
                "samples_per_prompt": args.k,
                "max_new_tokens": args.max_new_tokens,
                "temperature": 1.0,
                "top_p": 1.0,
                "kl_beta": 0.0,
            },
        },
        "adapter": "lora",
        "lora": {**LORA, "target_modules": "all-linear"},
        "data": {"train": str(data), "max_seq_len": 512},
        "batch_size": args.prompts_per_step,
        "grad_accum": 1,
        "learning_rate": LR,
        "scheduler": "constant",
        "warmup": 0,
        "max_steps": args.steps,
        "save_every_steps": args.steps,
        "seed": 0,
        "eval": {"compare_base": False},
        "output_dir": str(work / "run"),
    }
    result = api.train(spec, on_event=on_event)
    rss = peak_rss_mb()
    train_s = stamps[-1] - stamps[0]
    from tunesmith.models.load import load_tokenizer, resolve_path

    tokenizer = load_tokenizer(resolve_path("smollm2-135m-instruct"))
    held = read_rows(ROOT / "examples" / "grpo" / "heldout.jsonl", args.heldout)
    return {
        "side": "ours",
        "prompts_per_s": step_rate(stamps[1:], args.prompts_per_step),
        "train_seconds": train_s,
        "peak_rss_mb": rss,
        "train_reward_last": sum(rewards[-3:]) / max(1, len(rewards[-3:])),
        "train_rewards": rewards,
        "heldout_reward": heldout_reward(result.model, tokenizer, held, args.max_new_tokens),
    }


def worker_trl(args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tunesmith.graders import GraderError, Item, Sample, build_grader_object
    from tunesmith.models.load import load_tokenizer, resolve_path

    path = resolve_path("smollm2-135m-instruct")
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    rows = read_rows(ROOT / "examples" / "grpo" / "train.jsonl", args.prompts)
    dataset = Dataset.from_list([{"prompt": r["messages"], "answer": r["answer"]} for r in rows])
    grader = build_grader_object(grader_object())

    def reward(completions, answer, **_: object) -> list[float]:
        out = []
        for completion, target in zip(completions, answer, strict=True):
            text = completion[0]["content"] if isinstance(completion, list) else completion
            try:
                out.append(grader.grade(Sample(text.strip()), Item("", [], {"answer": target})))
            except GraderError:
                out.append(0.0)
        return out

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            stamps.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    work = Path(tempfile.mkdtemp(prefix="grpo-bench-trl-"))
    config = GRPOConfig(
        output_dir=str(work),
        per_device_train_batch_size=args.prompts_per_step * args.k,
        num_generations=args.k,
        gradient_accumulation_steps=1,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_steps=args.steps,
        beta=0.0,
        loss_type="grpo",
        scale_rewards="group",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[Clock()],
    )
    trainer.train()
    rss = peak_rss_mb()
    rewards = [float(h["reward"]) for h in trainer.state.log_history if "reward" in h]
    held = read_rows(ROOT / "examples" / "grpo" / "heldout.jsonl", args.heldout)
    return {
        "side": "trl",
        "trl_version": __import__("trl").__version__,
        "prompts_per_s": step_rate(stamps, args.prompts_per_step),
        "train_seconds": stamps[-1] - stamps[0],
        "peak_rss_mb": rss,
        "train_reward_last": sum(rewards[-3:]) / max(1, len(rewards[-3:])),
        "train_rewards": rewards,
        "heldout_reward": heldout_reward(trainer.model, tokenizer, held, args.max_new_tokens),
    }


def run_worker(kind: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind]
    for key in ("steps", "prompts", "prompts_per_step", "k", "max_new_tokens", "heldout"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 2))
    env.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    before = load_avg()
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{kind} worker failed ({proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(
        load_before=before, load_after=load_avg(), wall_seconds=time.perf_counter() - started
    )
    return result


def table(results: dict) -> str:
    ours, trl = results["ours"], results["trl"]
    lines = [
        f"{'':24}{'tunesmith':>12}{'trl':>12}",
        f"{'prompts/s (K=' + str(results['settings']['k']) + ')':24}"
        f"{ours['prompts_per_s']:>12.3f}{trl['prompts_per_s']:>12.3f}",
        f"{'seconds, all steps':24}{ours['train_seconds']:>12.1f}{trl['train_seconds']:>12.1f}",
        f"{'peak RSS (MB)':24}{ours['peak_rss_mb']:>12.0f}{trl['peak_rss_mb']:>12.0f}",
        f"{'train reward, last 3':24}{ours['train_reward_last']:>12.3f}"
        f"{trl['train_reward_last']:>12.3f}",
        f"{'held-out reward':24}{ours['heldout_reward']:>12.3f}{trl['heldout_reward']:>12.3f}",
        f"speed-up {results['speedup']:.2f}x, memory ratio {results['memory_ratio']:.2f}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=["ours", "trl"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=64, help="training prompts available")
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--k", type=int, default=4, help="completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--heldout", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.worker:
        fn = worker_ours if args.worker == "ours" else worker_trl
        print(json.dumps(fn(args)))
        return
    print("load before:", load_avg(), flush=True)
    results: dict = {
        "settings": {
            "steps": args.steps,
            "prompts_per_step": args.prompts_per_step,
            "k": args.k,
            "max_new_tokens": args.max_new_tokens,
            "heldout": args.heldout,
            "lora": LORA,
            "learning_rate": LR,
            "model": "smollm2-135m-instruct",
            "device": "cpu",
            "cpus": os.cpu_count(),
        }
    }
    for kind in ("ours", "trl"):
        print(f"running {kind} ...", flush=True)
        results[kind] = run_worker(kind, args)
        got = results[kind]
        print(f"  {kind}: {got['prompts_per_s']:.3f} prompts/s, {got['peak_rss_mb']:.0f} MB "
              f"({got['load_after']})", flush=True)  # fmt: skip
    results["speedup"] = results["ours"]["prompts_per_s"] / results["trl"]["prompts_per_s"]
    results["memory_ratio"] = results["ours"]["peak_rss_mb"] / results["trl"]["peak_rss_mb"]
    print(table(results))
    print("load after:", load_avg())
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or HERE / "results" / f"grpo_throughput-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
