"""A CPU run says which precision its frozen base computes in and writes it to the manifest;
dtype bf16 takes the bf16 base path (float32 weights and optimizer, fused LoRA kept), float32
and auto on a model too narrow to pay stay on today's float32 path."""

from __future__ import annotations

import math

import pytest
import torch
from train_helpers import base_spec

from tunesmith import api
from tunesmith.models import precision


@pytest.mark.parametrize(("dtype", "compute"), [("bf16", "bfloat16"), ("auto", "float32")])
def test_a_cpu_run_records_its_base_precision(
    tiny_model_dir, chat_file, tmp_path, dtype, compute, monkeypatch
):
    def no_probe():  # the tiny model (width 64) never needs one
        raise AssertionError("probed")

    monkeypatch.setattr(precision, "measure", no_probe)
    said = []
    spec = base_spec(tiny_model_dir, chat_file, tmp_path / "run", max_steps=3, dtype=dtype)
    result = api.train(spec, on_event=said.append)
    setup = [e.message for e in said if e.kind == "message" and e.phase == "setup"]
    assert any(m.startswith(f"frozen base products in {compute}") for m in setup), setup
    assert any(m.startswith("LoRA: 14 layers run as one fused") for m in setup)
    assert any(m.startswith("LM head: bf16") for m in setup) is (compute == "bfloat16")
    manifest = result.run.manifest()
    assert manifest["precision"]["compute"] == compute
    assert all(math.isfinite(loss) for loss in result.losses)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
