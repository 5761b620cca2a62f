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
    monkeypatch.setenv("TUNESMITH_ALLOW_DOWNLOADS", "1")  # allowed, but the hub is unreachable
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
    with pytest.raises(ModelError, match=r"cannot read the GGUF file .*m\.gguf: disk full"):
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


# -- offline by default; bad GGUF files are one line naming the file ----------------------------


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from tunesmith.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return (exc.value.code if isinstance(exc.value.code, int) else 0), out.out + out.err


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every socket connection attempt is recorded and refused."""
    import socket

    attempts: list = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled in this test")

    def refuse_lookup(host, *args, **kwargs):
        attempts.append(host)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)  # a lookup comes first
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # prove our own guard, not HF's
    monkeypatch.delenv("TUNESMITH_ALLOW_DOWNLOADS", raising=False)
    return attempts


@pytest.mark.parametrize("command", ["generate", "train"])
def test_hub_names_open_no_connection_unless_allowed(command, no_network, tmp_path, capsys):
    name = "some-org/some-model"
    argv = (
        ["generate", name, "hi"]
        if command == "generate"
        else ["train", "--model", name, "--data", str(tmp_path / "x.jsonl"), "--no-progress",
              "--output-dir", str(tmp_path / "run")]
    )  # fmt: skip
    if command == "train":
        (tmp_path / "x.jsonl").write_text("{}\n")
    code, printed = _cli(argv, capsys)
    assert code == 2, printed
    assert "TUNESMITH_ALLOW_DOWNLOADS=1" in printed and name in printed
    assert "Traceback" not in printed
    assert no_network == []
    assert not (tmp_path / "run").exists()


def test_opting_in_is_what_lets_it_try(no_network, monkeypatch) -> None:
    asked: list[bool] = []
    real = registry.hub_reachable

    def reachable(*args, **kwargs) -> bool:
        asked.append(True)
        return real(*args, **kwargs)  # the test's sockets refuse: not reachable

    monkeypatch.setattr(registry, "hub_reachable", reachable)
    monkeypatch.setenv("TUNESMITH_ALLOW_DOWNLOADS", "1")
    with pytest.raises(ModelError, match="cannot be reached"):
        registry.prepare(registry.resolve("some-org/some-model"))
    assert asked  # only now does it go looking for the hub


def test_a_local_model_loads_with_no_connection(no_network, tiny_model_dir) -> None:
    from tunesmith.models import load_model

    load_model(str(tiny_model_dir))
    assert no_network == []


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"", "is empty"),
        (b"PK\x03\x04 this is a zip file, not a model" * 3, "is not a GGUF file"),
        (b"GGUF\x03\x00", "cut short"),
        (b"GGUF\x03\x00\x00\x00" + b"\xff" * 200, "cannot read the GGUF file"),
    ],
)
def test_bad_gguf_files_exit_2_naming_the_file(content, expect, tmp_path, capsys) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(content)
    code, printed = _cli(["generate", str(gguf), "hi"], capsys)
    assert code == 2, printed
    assert expect in printed and str(gguf) in printed and "Traceback" not in printed
    assert not list((tmp_path / "tunesmith-home").rglob("*.safetensors"))  # no half cache


def test_a_pickle_only_adapter_is_refused(tiny_model_dir, tmp_path, capsys) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(tiny_model_dir), "peft_type": "LORA"})
    )
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04cos\nsystem\n")  # never unpickled
    code, printed = _cli(["generate", str(adapter), "hi"], capsys)
    assert code == 2 and "adapter_model.bin" in printed and "pickle" in printed
    assert "safetensors" in printed and "Traceback" not in printed
