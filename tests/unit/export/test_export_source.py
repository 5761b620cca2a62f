"""Resolving what to export: run dirs, adapter dirs, full model dirs, and the user's mistakes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tunesmith.export.common import ExportError, check_out_dir
from tunesmith.export.source import resolve_source
from tunesmith.io import atomic_dir


def test_run_dir_uses_the_manifest_base(lora_run: Path, tiny_model_dir: Path) -> None:
    src = resolve_source(lora_run)
    assert src.kind == "adapter" and src.adapter_type == "lora"
    assert src.weights_dir == (lora_run / "final").resolve()
    assert src.base_path == tiny_model_dir.resolve()
    assert src.run_dir == lora_run.resolve()
    assert src.tokenizer_dir == src.weights_dir  # the template saved with the run wins


def test_dora_and_qlora_are_recognised(dora_run: Path, tmp_path: Path) -> None:
    assert resolve_source(dora_run).adapter_type == "dora"
    run = tmp_path / "q"
    shutil.copytree(dora_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "adapter": "qlora"}))
    assert resolve_source(run).adapter_type == "qlora"


def test_adapter_dir_alone_finds_its_base(lora_run: Path, tiny_model_dir: Path) -> None:
    src = resolve_source(lora_run / "final")
    assert src.kind == "adapter" and src.run_dir is None
    assert src.base_path == tiny_model_dir.resolve()


def test_manifest_alias_or_dir_is_resolved_through_the_registry(
    lora_run: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "r"
    shutil.copytree(lora_run, run)
    (run / "manifest.json").write_text(json.dumps({"base_model": str(tiny_model_dir)}))
    assert resolve_source(run).base_path == tiny_model_dir.resolve()
    (run / "manifest.json").write_text(json.dumps({"base_model": "no-such-model-xyz"}))
    with pytest.raises(ExportError, match="no-such-model-xyz"):
        resolve_source(run)
    assert resolve_source(run, base=tiny_model_dir).base_path == tiny_model_dir.resolve()


def test_full_model_dir(tiny_model_dir: Path) -> None:
    src = resolve_source(tiny_model_dir)
    assert src.kind == "full" and src.base_path is None


def test_user_mistakes_are_one_line_errors(tmp_path: Path, lora_run: Path) -> None:
    with pytest.raises(ExportError, match="no such"):
        resolve_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="neither an adapter"):
        resolve_source(tmp_path / "empty")
    run = tmp_path / "unfinished"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    with pytest.raises(ExportError, match="no final/"):
        resolve_source(run)
    orphan = tmp_path / "orphan"
    shutil.copytree(lora_run / "final", orphan)
    cfg = json.loads((orphan / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = None
    (orphan / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError) as info:
        resolve_source(orphan)
    assert "--base" in str(info.value)
    (orphan / "adapter_model.safetensors").unlink()
    with pytest.raises(ExportError, match="safetensors"):
        resolve_source(orphan)


def test_output_dir_is_replaced_only_when_allowed_and_only_when_complete(tmp_path: Path) -> None:
    """What the pipeline does: check_out_dir, then io.atomic_dir(replace=True)."""
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(out, replace=True) as tmp:
        (tmp / "half-written").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    check_out_dir(out, force=False)  # an empty directory may be filled
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ExportError, match="not empty"):
        check_out_dir(out, force=False)
    check_out_dir(out, force=True)
    with pytest.raises(RuntimeError), atomic_dir(out, replace=True) as tmp:
        (tmp / "b").write_text("half")
        raise RuntimeError("disk full")
    assert [p.name for p in out.iterdir()] == ["a"]  # the old export, untouched
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a directory"):
        check_out_dir(tmp_path / "file", force=True)
