"""End-to-end behaviour of the loop on the tiny model: every adapter learns, LoRA leaves the
base untouched, the run directory is complete, tokens (not micro-batches) normalise the loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_helpers import base_spec

from tunesmith import api
from tunesmith.config import ResolvedSpec, load_spec
from tunesmith.errors import ConfigError


def _train(spec: dict, **kw):
    return api.train(spec, **kw)


@pytest.mark.parametrize("adapter", ["lora", "dora", "qlora", "none"])
def test_loss_falls_and_final_loads(adapter, tiny_model_dir, chat_file, tmp_path):
    lr = 2e-3 if adapter == "none" else 1e-2
    result = _train(
        base_spec(
            tiny_model_dir,
            chat_file,
            tmp_path / "run",
            adapter=adapter,
            max_steps=12,
            learning_rate=lr,
            save_every_steps=100,
        )
    )
    losses = result.losses
    assert len(losses) == 12 and result.status == "completed"
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.3, losses  # nats; chance level is ln(700) = 6.55
    final = result.final_dir
    assert (final / "tokenizer_config.json").is_file() and (final / "chat_template.jinja").is_file()
    from transformers import AutoModelForCausalLM

    if adapter == "none":
        model = AutoModelForCausalLM.from_pretrained(str(final))
    else:
        from peft import PeftModel

        cfg = json.loads((final / "adapter_config.json").read_text())
        assert cfg["use_dora"] is (adapter == "dora")
        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(final)
        )
    ids = torch.tensor([[1, 5, 9, 13]])
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids.shape[1]


def test_lora_leaves_base_weights_bit_identical_and_changes_adapters(
    tiny_model_dir, chat_file, tmp_path
):
    from transformers import AutoModelForCausalLM

    result = _train(base_spec(tiny_model_dir, chat_file, tmp_path / "run", max_steps=5))
    original = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).state_dict()
    trained = result.model.get_base_model()
    base_names = [n for n, _ in trained.named_parameters() if "lora_" not in n]
    assert len(base_names) >= 18
    for name in base_names:
        key = name.replace(".base_layer", "")
        assert torch.equal(trained.get_parameter(name), original[key]), name
    lora_b = [p for n, p in trained.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # initialised at zero, now trained
    assert all(p.requires_grad for n, p in trained.named_parameters() if "lora_" in n)


def test_run_directory_is_complete(tiny_model_dir, chat_file, val_file, tmp_path):
    spec = base_spec(
        tiny_model_dir,
        chat_file,
        tmp_path / "run",
        max_steps=4,
        save_every_steps=2,
        data={"validation": str(val_file)},
        eval={"every_steps": 2},
    )
    result = _train(spec)
    run = result.run_dir
    resolved = load_spec(run / "config.yaml", cls=ResolvedSpec)
    assert resolved.total_steps == 4 and resolved.learning_rate == pytest.approx(5e-3)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["base_model"] == str(tiny_model_dir)
    assert manifest["base_model_path"] == str(tiny_model_dir)
    assert len(manifest["base_model_sha256"]) == 64
    assert len(manifest["data"]["train_sha256"]) == 64
    assert len(manifest["data"]["validation_sha256"]) == 64
    assert manifest["libraries"]["torch"] and manifest["seed"] == 0
    assert manifest["hardware"]["device"] == "cpu" and manifest["status"] == "completed"
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for key in ("epoch", "loss", "lr", "grad_norm", "tokens_per_s", "trained_tokens"):
        assert all(key in m for m in metrics), key
    assert "val_loss" in metrics[1] and "val_loss" not in metrics[0]
    assert metrics[1]["val_perplexity"] == pytest.approx(2.718281828 ** metrics[1]["val_loss"])
    assert 0.0 <= metrics[3]["val_token_accuracy"] <= 1.0
    assert metrics[3]["trained_tokens"] > metrics[0]["trained_tokens"] > 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-2", "step-4"]
    assert (run / "final" / "adapter_model.safetensors").is_file()
    # A second run into the same directory is refused, pointing at --resume.
    with pytest.raises(ConfigError, match="already holds a finished run"):  # not resumable
        _train(spec)


def test_loss_is_normalised_by_trained_tokens_not_micro_batches(
    tiny_model_dir, chat_file, tmp_path
):
    """2 rows in one micro-batch log the losses of 2 micro-batches of 1 row (rows have
    different numbers of trained tokens, so averaging per micro-batch would differ). The
    gradient itself is compared where it lives, before the optimizer step: test_loop.py."""
    common = {"max_steps": 3, "lora": {"dropout": 0.0}, "save_every_steps": 100}
    one = _train(
        base_spec(tiny_model_dir, chat_file, tmp_path / "a", batch_size=2, grad_accum=1, **common)
    )
    two = _train(
        base_spec(tiny_model_dir, chat_file, tmp_path / "b", batch_size=1, grad_accum=2, **common)
    )
    assert one.losses == pytest.approx(two.losses, rel=1e-5)


def test_early_stopping_needs_validation_data(tiny_model_dir, chat_file, tmp_path):
    with pytest.raises(ConfigError, match="validation"):
        _train(
            base_spec(
                tiny_model_dir,
                chat_file,
                tmp_path / "r",
                max_steps=2,
                early_stopping={"enabled": True},
            )
        )


def test_missing_training_data_is_a_config_error(tiny_model_dir, tmp_path: Path):
    spec = base_spec(tiny_model_dir, tmp_path / "x.jsonl", tmp_path / "r")
    spec["data"].pop("train")
    with pytest.raises(ConfigError, match=r"data\.train"):
        _train(spec)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_gradient_checkpointing_gives_the_same_losses(dropout, tiny_model_dir, chat_file, tmp_path):
    """With dropout too: recomputed forwards draw the same fused-dropout masks (checkpointing
    restores the RNG state)."""
    common = {"max_steps": 3, "lora": {"dropout": dropout}, "save_every_steps": 100}
    plain = _train(base_spec(tiny_model_dir, chat_file, tmp_path / "a", **common))
    ckpt = _train(
        base_spec(tiny_model_dir, chat_file, tmp_path / "b", gradient_checkpointing=True, **common)
    )
    assert ckpt.losses == pytest.approx(plain.losses, rel=1e-5)
    assert ckpt.model.get_base_model().is_activation_checkpointing
    assert not plain.model.get_base_model().is_activation_checkpointing


def test_fused_lora_trains_like_peft(tiny_model_dir, chat_file, tmp_path):
    common = {"max_steps": 4, "lora": {"dropout": 0.0}, "save_every_steps": 100}
    fused = _train(base_spec(tiny_model_dir, chat_file, tmp_path / "a", **common))
    peft = _train(base_spec(tiny_model_dir, chat_file, tmp_path / "b", fused_lora=False, **common))
    assert fused.losses == pytest.approx(peft.losses, rel=1e-4)
    kinds = {type(m).__name__ for m in fused.model.modules()}
    assert "FastLoraLinear" in kinds
    assert "FastLoraLinear" not in {type(m).__name__ for m in peft.model.modules()}


def test_base_comparison_runs_after_training_when_asked(
    tiny_model_dir, chat_file, tmp_path, monkeypatch
):
    calls = []
    monkeypatch.setattr(api, "compare", lambda run_dir, *a, **k: calls.append(run_dir))
    seen: list = []
    spec = base_spec(
        tiny_model_dir,
        chat_file,
        tmp_path / "a",
        max_steps=2,
        data={"validation_fraction": 0.2},
        eval={"compare_base": True},
    )
    result = api.train(spec, on_event=seen.append)
    assert calls == [result.run_dir]
    assert [e.step for e in seen if e.kind == "metrics"] == [1, 2]
    assert any("comparing the tuned model" in e.message for e in seen)
    spec = base_spec(
        tiny_model_dir, chat_file, tmp_path / "b", max_steps=2, data={"validation_fraction": 0.2}
    )  # compare_base: false
    _train(spec)
    assert len(calls) == 1
