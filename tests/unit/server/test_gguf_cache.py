"""Which GGUF llama.cpp serves a target from, and when the server uses llama.cpp at all."""

from __future__ import annotations

import logging

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.server import app as app_module
from tunesmith.server.gguf_cache import GgufCache
from tunesmith.service import ServerSettings


def test_a_local_model_is_exported_once_then_reused(tiny_model_dir, tmp_path, monkeypatch):
    from tunesmith import api

    calls = []
    real = api.export_model

    def counting(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "export_model", counting)
    cache = GgufCache(tmp_path / "home", "f32")
    first = cache(str(tiny_model_dir))
    assert first is not None and first.suffix == ".gguf" and first.read_bytes()[:4] == b"GGUF"
    assert first.is_relative_to(tmp_path / "home" / "cache" / "gguf")
    assert cache(str(tiny_model_dir)) == first and len(calls) == 1  # reused
    assert GgufCache(tmp_path / "home", "f32")(str(tiny_model_dir)) == first  # another server
    assert calls[0][1]["quantize"] == "f32"
    assert not [
        p for p in (tmp_path / "home" / "cache" / "gguf").iterdir() if p.name.startswith(".export-")
    ]


def test_changed_weights_or_quantisation_make_a_new_export(tiny_model_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    cache = GgufCache(tmp_path / "home", "f32")
    key = cache.key(str(model), model)
    assert GgufCache(tmp_path / "home", "q8_0").key(str(model), model) != key
    (model / "config.json").write_text((model / "config.json").read_text() + "\n")
    assert cache.key(str(model), model) != key


def test_what_cannot_be_exported_stays_on_torch_and_is_logged_once(tmp_path, caplog):
    cache = GgufCache(tmp_path / "home")
    with caplog.at_level(logging.INFO, logger="tunesmith.server"):
        assert cache(str(tmp_path / "no-such-model")) is None
        assert cache(str(tmp_path / "no-such-model")) is None
    assert len([r for r in caplog.records if "with torch" in r.message]) == 1


def test_the_engine_setting(tmp_path, monkeypatch):
    settings = ServerSettings(home=tmp_path, serve_engine="torch")
    assert app_module.gguf_source(settings) is None
    monkeypatch.setattr("tunesmith.inference.llamacpp.available", lambda: False)
    assert app_module.gguf_source(ServerSettings(home=tmp_path, serve_engine="auto")) is None
    with pytest.raises(TunesmithError, match="llama-cpp-python is not installed"):
        app_module.gguf_source(ServerSettings(home=tmp_path, serve_engine="llamacpp"))
    monkeypatch.setattr("tunesmith.inference.llamacpp.available", lambda: True)
    monkeypatch.setattr(app_module, "_has_gpu", lambda: False)
    found = app_module.gguf_source(ServerSettings(home=tmp_path, serve_engine="auto"))
    assert isinstance(found, GgufCache) and found.quantize == "q8_0"
    monkeypatch.setattr(app_module, "_has_gpu", lambda: True)
    assert app_module.gguf_source(ServerSettings(home=tmp_path, serve_engine="auto")) is None
    assert app_module.gguf_source(ServerSettings(home=tmp_path, serve_engine="llamacpp"))


def test_the_default_model_is_served_from_the_gguf_it_ships_as(tmp_path):
    from tunesmith.models.registry import DEFAULT_MODEL, resolve

    shipped = resolve(DEFAULT_MODEL).source
    assert shipped is not None and shipped.suffix == ".gguf"
    assert GgufCache(tmp_path / "home")(DEFAULT_MODEL) == shipped
    assert not (tmp_path / "home" / "cache").exists()  # nothing exported, nothing written
