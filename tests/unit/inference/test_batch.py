"""A row's logits are the same alone and in a padded, mixed-adapter batch, also after other rows
join (merge) or leave (select) — the property that keeps greedy answers batch-independent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith.inference.batch import BASE, Batch

FORCED = [17, 42, 5, 99, 230, 8]  # the tokens fed after each prompt, the same for every row


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path, adapter_dirs: list[Path]):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    peft = PeftModel.from_pretrained(base, str(adapter_dirs[0]), adapter_name="a0")
    peft.load_adapter(str(adapter_dirs[1]), adapter_name="a1")
    return peft.eval()


def alone(model, prompt: list[int], adapter: str, steps: int) -> list[torch.Tensor]:
    with torch.inference_mode():
        b = Batch(model)
        out = [b.prefill(model, [prompt], [adapter])[0]]
        out += [b.step(model, [t])[0] for t in FORCED[:steps]]
    return out


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, atol=1e-5, rtol=1e-4) and int(a.argmax()) == int(b.argmax())


def test_padded_mixed_batch_matches_each_row_alone(model, prompts) -> None:
    rows = [(prompts[0], "a0"), (prompts[1], BASE), (prompts[2], "a1"), (prompts[3], "a0")]
    assert len({len(p) for p, _ in rows}) > 2  # different lengths: real left padding
    with torch.inference_mode():
        b = Batch(model)
        got = [b.prefill(model, [p for p, _ in rows], [a for _, a in rows])]
        got += [b.step(model, [t] * len(rows)) for t in FORCED]
    for i, (p, a) in enumerate(rows):
        want = alone(model, p, a, len(FORCED))
        assert all(close(g[i], w) for g, w in zip(got, want, strict=True)), f"row {i}"
    # and the adapters really differ from one another and from the base
    first = [alone(model, prompts[0], a, 0)[0] for a in (BASE, "a0", "a1")]
    assert not torch.allclose(first[0], first[1]) and not torch.allclose(first[1], first[2])


def test_rows_join_and_leave_between_steps(model, prompts) -> None:
    with torch.inference_mode():
        b = Batch(model)
        logits = b.prefill(model, [prompts[1], prompts[0]], [BASE, "a1"])
        got = {0: [logits[0]], 1: [logits[1]]}
        for t in FORCED[:2]:
            out = b.step(model, [t, t])
            got[0].append(out[0])
            got[1].append(out[1])
        newcomer = Batch(model)
        got[2] = [newcomer.prefill(model, [prompts[3]], ["a0"])[0]]
        b.merge(newcomer)  # rows: 0, 1, 2 (the newcomer has a shorter cache: padded)
        fed = {0: 2, 1: 2, 2: 0}
        out = b.step(model, [FORCED[fed[0]], FORCED[fed[1]], FORCED[fed[2]]])
        for r in (0, 1, 2):
            got[r].append(out[r])
            fed[r] += 1
        b.select([1, 2])  # row 0 leaves; columns that are padding for both others go too
        assert len(b) == 2 and b.mask.shape[1] == int(b.mask.sum(dim=1).max())
        for _ in range(2):
            out = b.step(model, [FORCED[fed[1]], FORCED[fed[2]]])
            for j, r in enumerate((1, 2)):
                got[r].append(out[j])
                fed[r] += 1
    wants = {
        0: alone(model, prompts[1], BASE, 3),
        1: alone(model, prompts[0], "a1", 5),
        2: alone(model, prompts[3], "a0", 3),
    }
    for r, want in wants.items():
        assert len(got[r]) == len(want)
        assert all(close(g, w) for g, w in zip(got[r], want, strict=True)), f"row {r}"


def test_a_plain_model_runs_without_adapter_names(tiny_model_dir: Path, prompts) -> None:
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.inference_mode():
        b = Batch(plain)
        two = b.prefill(plain, prompts[:2], [BASE, BASE])
        one = Batch(plain).prefill(plain, prompts[1:2], [BASE])
    assert close(two[1], one[0])
    b.select([])
    assert len(b) == 0
