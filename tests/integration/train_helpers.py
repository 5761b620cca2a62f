"""Helpers shared by the training tests: a learnable chat data set and subprocess runs."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

_WORDS = (
    "refund delivery late broken invoice account password reset urgent email phone "
    "customer order question help thanks please"
).split()
_LABELS = {
    "refund": "billing",
    "invoice": "billing",
    "password": "account",
    "account": "account",
    "delivery": "shipping",
    "late": "shipping",
    "broken": "support",
    "urgent": "support",
}


def write_chat(path: Path, n: int, seed: int = 0, *, flip: bool = False) -> Path:
    """`n` conversations of varied length whose answers follow a learnable rule
    (`flip=True` gives every example a different, wrong label: data that disagrees)."""
    rng = random.Random(seed)
    keys = sorted(_LABELS)
    names = sorted(set(_LABELS.values()))
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(n):
            key = rng.choice(keys)
            words = [rng.choice(_WORDS) for _ in range(rng.randint(2, 12))] + [key]
            rng.shuffle(words)
            label = _LABELS[key]
            if flip:
                label = names[(names.index(label) + 1) % len(names)]
            msgs = [
                {"role": "user", "content": "Classify: " + " ".join(words)},
                {"role": "assistant", "content": '{"category": "' + label + '"}'},
            ]
            fh.write(json.dumps({"messages": msgs}) + "\n")
    return Path(path)


def base_spec(model_dir: Path, train: Path, out: Path, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": str(model_dir),
        "data": {"train": str(train), "max_seq_len": 128},
        "output_dir": str(out),
        "learning_rate": 5e-3,
        "batch_size": 1,
        "grad_accum": 2,
        "warmup": 0,
        "eval": {"compare_base": False},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def write_config(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def tunesmith_cmd(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("tunesmith")), *args]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Any:
    return subprocess.run(
        tunesmith_cmd(*args),
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def losses(run_dir: Path) -> list[tuple[int, float]]:
    out = []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out.append((rec["step"], rec["loss"]))
    return out


def write_pairs(path: Path, n: int, seed: int = 0, *, chat: bool = False) -> Path:
    """`n` preference pairs (prompt/chosen/rejected) on the same classification task: the
    chosen answer follows the rule (JSON with the right category), the rejected one does not
    (prose of two lengths, half of the time naming another category). `chat=True` writes the
    chosen answers as chat conversations instead: an SFT file."""
    rng = random.Random(seed)
    keys = sorted(_LABELS)
    names = sorted(set(_LABELS.values()))
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(n):
            key = rng.choice(keys)
            words = [rng.choice(_WORDS) for _ in range(rng.randint(2, 8))] + [key]
            rng.shuffle(words)
            label = _LABELS[key]
            wrong = rng.choice([x for x in names if x != label])
            prompt = [{"role": "user", "content": "Classify: " + " ".join(words)}]
            chosen = '{"category": "' + label + '"}'
            # prose of two lengths: a base model ranks these by length, not by the rule
            prose = rng.choice(["The category is {} here.", "The category is {}, yes."])
            rejected = prose.format(rng.choice([label, wrong]))
            if chat:
                row: dict[str, Any] = {
                    "messages": [*prompt, {"role": "assistant", "content": chosen}]
                }
            else:
                row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
            fh.write(json.dumps(row) + "\n")
    return Path(path)
