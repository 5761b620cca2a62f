"""A run's checkpoints are models (issue 11 item 16): `RUN@step-N`, `RUN@best`, `RUN@latest`
and `RUN/checkpoints/step-N` work wherever a model is accepted, as base + the checkpoint's
trainable weights; bad references are one-line errors that list what there is."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))
from train_helpers import base_spec, write_chat

from cli_run import run_cli as _run_cli
from tunesmith import api
from tunesmith.errors import ModelError
from tunesmith.models import registry
from tunesmith.models.load import load_model
from tunesmith.runs import RunDir

IDS = torch.tensor([[1, 5, 9, 12, 40, 7, 3]])


@pytest.fixture(scope="module")
def cancelled_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA run cancelled at step 4: complete checkpoints at steps 2 and 4, no final/."""
    root = tmp_path_factory.mktemp("ckpt-run")
    train = write_chat(root / "train.jsonl", 48)
    val = write_chat(root / "val.jsonl", 8, seed=1)
    run = RunDir(root / "run")
    spec = base_spec(
        tiny_model_dir, train, run.path, max_steps=50, save_every_steps=2, keep_checkpoints=5,
        eval={"every_steps": 2, "compare_base": False},
    )  # fmt: skip
    spec["data"]["validation"] = str(val)

    def cancel_at_4(event):
        if event.kind == "metrics" and event.step == 4:
            run.request_cancel()

    assert api.train(spec, on_event=cancel_at_4).status == "cancelled"
    assert [s for s, _ in run.complete_checkpoints()] == [2, 4] and not run.has_final()
    return run.path


def _logits(lm) -> torch.Tensor:
    with torch.no_grad():
        return lm.model(input_ids=IDS).logits


def _expected(tiny_model_dir: Path, run: Path, step: int) -> torch.Tensor:
    """Base + the checkpoint's weights, built by hand the way training built the model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    weights = load_file(str(run / "checkpoints" / f"step-{step}" / "trainable.safetensors"))
    result = model.load_state_dict(
        {k.removeprefix("model."): v for k, v in weights.items()}, strict=False
    )
    assert not result.unexpected_keys
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_each_spelling_of_a_checkpoint_is_base_plus_its_weights(cancelled_run, tiny_model_dir):
    want = _expected(tiny_model_dir, cancelled_run, 4)
    for name in (f"{cancelled_run}@step-4", f"{cancelled_run}@latest", f"{cancelled_run}@4",
                 str(cancelled_run / "checkpoints" / "step-4")):  # fmt: skip
        lm = load_model(name)
        assert lm.ref.kind == "adapter"
        torch.testing.assert_close(_logits(lm), want, atol=1e-5, rtol=1e-5, msg=name)
    base = _logits(load_model(str(tiny_model_dir)))
    assert not torch.allclose(want, base, atol=1e-3)  # the checkpoint really trained
    step2 = _logits(load_model(f"{cancelled_run}@step-2"))
    torch.testing.assert_close(
        step2, _expected(tiny_model_dir, cancelled_run, 2), atol=1e-5, rtol=1e-5
    )
    # written once as a plain peft adapter inside the checkpoint: loadable by peft alone
    out = cancelled_run / "checkpoints" / "step-4" / "model"
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "tokenizer_config.json").is_file()


def test_best_is_the_checkpoint_with_the_lowest_validation_loss(cancelled_run):
    run = RunDir(cancelled_run)
    losses = {r["step"]: r["val_loss"] for r in run.read_metrics() if "val_loss" in r}
    best = min((losses[s], s) for s in (2, 4))[1]
    assert run.resolve_checkpoint("best")[0] == best
    assert (
        registry.resolve(f"{cancelled_run}@best").adapter
        == (cancelled_run / "checkpoints" / f"step-{best}" / "model").resolve()
    )
    assert run.resolve_checkpoint("ckpt-step-2")[0] == 2  # the server's spelling


@pytest.mark.parametrize("ref", ["step-3", "step-99", "banana"])
def test_a_checkpoint_that_is_not_there_is_a_one_line_error(cancelled_run, capsys, ref):
    before = sorted(p.name for p in (cancelled_run / "checkpoints").iterdir())
    code, _, err = _run_cli(["generate", f"{cancelled_run}@{ref}", "hi"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "step-2, step-4" in err  # says what there is
    assert sorted(p.name for p in (cancelled_run / "checkpoints").iterdir()) == before


def test_the_run_itself_says_to_use_a_checkpoint(cancelled_run):
    with pytest.raises(ModelError) as info:
        registry.resolve(str(cancelled_run))
    assert "has no final model (status: cancelled)" in info.value.message
    assert f"{cancelled_run}@step-4" in (info.value.hint or "")


def test_generate_eval_compare_and_export_take_a_checkpoint(cancelled_run, capsys, tmp_path):
    lm = load_model(f"{cancelled_run}@step-4")
    expected = api.generate(lm, "hello", max_new_tokens=5)
    code, out, _ = _run_cli(
        ["generate", f"{cancelled_run}@step-4", "hello", "--max-new-tokens", "5"], capsys
    )
    assert code == 0 and out == expected + "\n"

    val = cancelled_run.parent / "val.jsonl"
    options = ["--metrics", "exact_match", "--max-new-tokens", "2", "--no-forgetting",
               "--no-progress", "--limit", "3"]  # fmt: skip
    code, out, err = _run_cli(
        ["eval", f"{cancelled_run}@step-4", "--data", str(val), *options], capsys
    )
    assert code == 0, err
    (folder,) = (cancelled_run / "evals").iterdir()
    assert folder.name.startswith("step-4-val-")
    report = json.loads((folder / "results.json").read_text())
    assert report["n"] == 3 and report["base_model"] is not None  # against the run's base
    code, _, err = _run_cli(["compare", f"{cancelled_run}@best", *options], capsys)
    assert code == 0, err
    assert not (cancelled_run / "eval").exists()  # eval/ is final/'s comparison, not these

    out_dir = tmp_path / "exported"
    code, out, err = _run_cli(
        ["export", f"{cancelled_run}@step-4", "--format", "hf", "--out", str(out_dir)], capsys
    )
    assert code == 0, err
    meta = json.loads((out_dir / "export.json").read_text())
    assert meta["source"]["run_dir"] == str(cancelled_run.resolve())
    assert meta["name"].endswith("step-4")
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        got = merged(input_ids=IDS).logits
    torch.testing.assert_close(got, _logits(lm), atol=1e-4, rtol=1e-4)


def test_a_read_only_run_keeps_its_copy_in_the_model_cache(tiny_model_dir, tmp_path, monkeypatch):
    from tunesmith.models import checkpoint as ckpt

    train = write_chat(tmp_path / "train.jsonl", 24)
    run = RunDir(tmp_path / "run")
    api.train(base_spec(tiny_model_dir, train, run.path, max_steps=2, save_every_steps=2))
    real = ckpt.write_model

    def read_only(r, step, source, base, out):
        if Path(out).is_relative_to(run.path):
            raise PermissionError(13, "Permission denied", str(out))
        return real(r, step, source, base, out)

    monkeypatch.setattr(ckpt, "write_model", read_only)
    ref = registry.resolve(f"{run.path}@step-2")
    assert not Path(ref.adapter).is_relative_to(run.path)
    assert Path(ref.adapter).is_relative_to(registry.models_dir())
    # the last checkpoint of a finished run is the final model
    torch.testing.assert_close(
        _logits(load_model(f"{run.path}@step-2")), _logits(load_model(str(run.path))),
        atol=1e-5, rtol=1e-5,
    )  # fmt: skip


def test_a_full_fine_tuning_checkpoint_is_the_base_with_its_weights(tiny_model_dir, tmp_path):
    train = write_chat(tmp_path / "train.jsonl", 24)
    run = RunDir(tmp_path / "run")
    spec = base_spec(
        tiny_model_dir, train, run.path, adapter="none", learning_rate=1e-3, max_steps=2,
        save_every_steps=1, keep_checkpoints=5,
    )  # fmt: skip
    api.train(spec)
    one = load_model(f"{run.path}@step-1")
    assert one.ref.kind == "hf_dir"
    weights = load_file(str(run.checkpoint(1) / "trainable.safetensors"))
    state = one.model.state_dict()
    for key, value in weights.items():
        torch.testing.assert_close(state[key.removeprefix("model.")], value, msg=key)
    final = _logits(load_model(str(run.path)))
    torch.testing.assert_close(_logits(load_model(f"{run.path}@latest")), final)
    assert not torch.allclose(_logits(one), final, atol=1e-4)


def test_a_damaged_checkpoint_is_a_one_line_error(tiny_model_dir, tmp_path):
    train = write_chat(tmp_path / "train.jsonl", 24)
    run = RunDir(tmp_path / "run")
    api.train(base_spec(tiny_model_dir, train, run.path, max_steps=1, save_every_steps=1))
    weights = run.checkpoint(1) / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError) as info:
        registry.resolve(f"{run.path}@step-1")
    assert info.value.where == str(weights)
    assert not run.checkpoint_model(1).exists()
