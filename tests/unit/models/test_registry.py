"""Model name resolution and the atomic GGUF cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.errors import ModelError
from tunesmith.models import registry


def test_local_hf_dir_resolves(tiny_model_dir: Path) -> None:
    ref = registry.resolve(str(tiny_model_dir))
    assert ref.kind == "hf_dir"
    assert registry.prepare(ref) == tiny_model_dir.resolve()


def test_missing_path_is_a_one_line_model_error() -> None:
    with pytest.raises(ModelError) as err:
        registry.resolve("/no/such/model")
    text = str(err.value)
    assert "/no/such/model" in text and "\n" not in text
    assert registry.DEFAULT_MODEL in text  # says what to pass instead


def test_dir_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no config\.json"):
        registry.resolve(str(tmp_path))


def test_non_gguf_file_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\x80\x04not a pickle we would ever load")
    with pytest.raises(ModelError, match=r"not a \.gguf"):
        registry.resolve(str(f))


def test_hub_id_offline_says_what_to_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = registry.resolve("some-org/some-model")
    assert ref.kind == "hub"
    with pytest.raises(ModelError, match="cannot be reached") as err:
        registry.prepare(ref)
    assert "local model directory" in str(err.value)


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    alias = registry.Alias("x", "no-such-dist-tunesmith", "d", "pip install --no-deps nope")
    monkeypatch.setitem(registry.ALIASES, "x", alias)
    with pytest.raises(ModelError, match="pip install --no-deps nope"):
        registry.resolve("x")


def test_run_dir_and_adapter_dir_resolve_to_base(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    final = run / "final"
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/gone"}))
    (run / "manifest.json").write_text(json.dumps({"base_model": str(tiny_model_dir)}))
    ref = registry.resolve(str(run))
    assert ref.kind == "adapter"
    assert ref.adapter == final.resolve()
    assert registry.prepare(ref) == tiny_model_dir.resolve()


def test_interrupted_conversion_leaves_no_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversion that dies half-way must not leave anything that later loads as a model."""
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF-not-really")
    out = tmp_path / "home" / "models" / "m"

    import transformers

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # like Ctrl-C during the long de-quantisation

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)
    with pytest.raises(KeyboardInterrupt):
        registry.convert_gguf(gguf, out)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # the temp dir is gone too
    assert not registry.is_complete(out)


def test_failed_conversion_keeps_the_old_cache_dir_and_reported_its_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale (incomplete) cache is replaced only by a complete conversion."""
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF-not-really")
    out = tmp_path / "home" / "models" / "m"
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")

    import transformers

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)
    seen = []
    with pytest.raises(OSError, match="disk full"):
        registry.convert_gguf(gguf, out, on_event=seen.append)
    assert [p.name for p in out.iterdir()] == ["config.json"]
    assert [p.name for p in out.parent.iterdir()] == ["m"]  # no temp dir left
    assert [(e.kind, e.phase, e.total) for e in seen] == [("progress", "pull", 100)]
    assert seen[0].message == "reading tokenizer"


def test_list_models_reports_cached_dirs(tiny_model_dir: Path, monkeypatch, tmp_path) -> None:
    import shutil

    home = tmp_path / "home"
    monkeypatch.setenv("TUNESMITH_HOME", str(home))
    target = home / "models" / "tiny-abc"
    shutil.copytree(tiny_model_dir, target)
    (target / registry.COMPLETE_MARKER).write_text("ok")
    rows = {r.name: r for r in registry.list_models()}
    assert rows["tiny-abc"].status == "cached"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    assert rows["tiny-abc"].parameters == sum(p.numel() for p in model.parameters())
    assert rows["tiny-abc"].size_bytes > 0
