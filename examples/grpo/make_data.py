"""Writes examples/grpo/{train,heldout}.jsonl: 200 + 40 prompts "What is A + B?" (1 <= A, B <= 20,
no pair in both files) in OpenAI's reinforcement fine-tuning shape — the messages end with the
user's turn, and the other field (`answer`) is the grader's item. Run from the repository root:
    .venv/bin/python examples/grpo/make_data.py
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rows(rng: random.Random, n: int, seen: set) -> list[dict]:
    out: list[dict] = []
    while len(out) < n:
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        text = f'What is {a} + {b}? Reply with JSON only, in the form {{"answer": <number>}}.'
        out.append({"messages": [{"role": "user", "content": text}], "answer": a + b})
    return out


def main() -> None:
    rng, seen = random.Random(14), set()
    for name, n in (("train", 200), ("heldout", 40)):
        with open(HERE / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows(rng, n, seen):
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
