"""Which GGUF llama.cpp serves a target from, and when the server uses llama.cpp at all."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.server import app as app_module
from tunesmith.server.gguf_cache import GgufCache
from tunesmith.service import ServerSettings


def test_a_local_model_is_exported_once_in_the_background_then_reused(tiny_model_dir, tmp_path):
    import json
    import time

    target = str(tiny_model_dir)
    cache = GgufCache(tmp_path / "home", "f32")
    (cache.root / ".export-left-by-a-killed-server").mkdir(parents=True)
    try:
        began = time.monotonic()
        assert cache(target) is None  # asking never waits: torch serves this request
        assert time.monotonic() - began < 2.0
        assert cache(target) is None and len(cache._pending) == 1  # queued once
        found = cache.wait(target, timeout=120)
        assert found is not None and found.suffix == ".gguf" and found.read_bytes()[:4] == b"GGUF"
        assert found.is_relative_to(tmp_path / "home" / "cache" / "gguf")
        assert cache.generation == 1  # the pool re-asks the targets torch serves
        assert cache(target) == found and cache.generation == 1  # reused, not exported again
        meta = json.loads(
            (cache.root / cache.key(target, tiny_model_dir) / "meta.json").read_text()
        )
        assert (meta["target"], meta["quantize"]) == (target, "f32")
        other = GgufCache(tmp_path / "home", "f32")  # another server sharing the home
        assert other(target) == found and other.generation == 0
        leftovers = sorted(p.name for p in cache.root.iterdir() if p.name.startswith("."))
        assert leftovers == [".export.lock", ".lock"]  # no temporary folder left
    finally:
        cache.close()


def test_an_export_that_fails_stays_on_torch_and_is_logged_once(tmp_path, caplog):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    (broken / "model.safetensors").write_bytes(b"not weights")
    cache = GgufCache(tmp_path / "home", "f32")
    try:
        with caplog.at_level(logging.INFO, logger="tunesmith.server"):
            assert cache.wait(str(broken), timeout=120) is None
            assert cache(str(broken)) is None and not cache._pending  # not queued again
        stays = [r.message for r in caplog.records if "with torch" in r.message]
        assert len(stays) == 1 and str(broken) in stays[0]
        assert cache.generation == 0
        assert sorted(p.name for p in cache.root.iterdir()) == [".export.lock"]  # nothing half-made
    finally:
        cache.close()


def test_a_killed_export_is_tried_again_later_and_lands(tiny_model_dir, tmp_path, caplog):
    import time

    target = str(tiny_model_dir)
    cache = GgufCache(tmp_path / "home", "f32", retry_after_s=(0.2,))
    real = cache._run_child
    runs: list[int | None] = []

    def killed_once(work: Path) -> int | None:
        if not runs:
            runs.append(-9)  # the kernel's OOM killer: no result.json
            return -9
        runs.append(code := real(work))
        return code

    cache._run_child = killed_once  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.INFO, logger="tunesmith.server"):
            assert cache.wait(target, timeout=30) is None  # the killed try: torch serves it
            assert cache(target) is None  # not queued again before the retry is due
            deadline = time.monotonic() + 120
            while cache.generation == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
        assert runs == [-9, 0] and cache.generation == 1  # the pool moves it to llama.cpp
        assert cache(target) is not None
        warned = [r.message for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 1 and "killed (code -9" in warned[0] and "again in" in warned[0]
        assert not [r for r in caplog.records if "with torch, not llama.cpp" in r.message]
    finally:
        cache.close()


def test_an_export_killed_every_time_stays_on_torch_after_its_tries(tmp_path, caplog):
    import time

    from tunesmith.server import gguf_cache

    cache = GgufCache(tmp_path / "home", retry_after_s=(0.05, 0.05))
    runs: list[Path] = []
    cache._run_child = lambda work: runs.append(work) or None  # type: ignore[method-assign,func-returns-value]
    folder = cache.root / "would-be"
    try:
        with caplog.at_level(logging.INFO, logger="tunesmith.server"):
            cache._enqueue("/runs/a", folder)
            deadline = time.monotonic() + 60
            while "/runs/a" not in cache._failed and time.monotonic() < deadline:
                time.sleep(0.02)
        assert len(runs) == gguf_cache.TRIES and "/runs/a" in cache._failed
        stays = [r.message for r in caplog.records if "with torch, not llama.cpp" in r.message]
        assert len(stays) == 1 and f"{gguf_cache.TRIES} times" in stays[0]
        assert not folder.exists()
    finally:
        cache.close()


def test_forgetting_a_model_cancels_its_retry(tmp_path):
    import time

    cache = GgufCache(tmp_path / "home", retry_after_s=(0.2,))
    runs: list[Path] = []
    cache._run_child = lambda work: runs.append(work) or -9  # type: ignore[method-assign,func-returns-value]
    try:
        cache._enqueue("/runs/a", cache.root / "would-be").wait(10)
        assert runs and "/runs/a" in cache._retries
        cache.forget("/runs/a")
        time.sleep(0.5)
        assert len(runs) == 1 and not cache._retries
    finally:
        cache.close()


def test_the_export_child_runs_below_the_server_s_priority():
    import os
    import subprocess
    import sys

    from tunesmith.server import gguf_cache

    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.nice(0))"],
        preexec_fn=gguf_cache._background, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert int(out.stdout) == min(19, os.nice(0) + gguf_cache.NICE)


def _fake_export(cache: GgufCache, name: str, target: str, size: int, used: float) -> Path:
    import json
    import os

    folder = cache.root / name
    (folder / "out").mkdir(parents=True)
    (folder / "out" / f"{name}.gguf").write_bytes(b"GGUF" + b"\0" * (size - 4))
    (folder / "meta.json").write_text(json.dumps({"target": target, "quantize": "q8_0"}))
    (folder / "used").touch()
    os.utime(folder / "used", (used, used))
    return folder


def test_the_cache_deletes_the_least_recently_served_exports_beyond_its_size(tmp_path):
    cache = GgufCache(tmp_path / "home", max_bytes=2_500)
    old = _fake_export(cache, "a", "/runs/a", 1_000, used=1_000)
    recent = _fake_export(cache, "b", "/runs/b", 1_000, used=3_000)
    newest = _fake_export(cache, "c", "/runs/c", 1_000, used=2_000)  # just made, served least
    cache._evict(keep=newest)
    assert not old.exists() and recent.exists() and newest.exists()
    cache.max_bytes = 10
    cache._evict(keep=newest)
    assert not recent.exists() and newest.exists()  # the one just made is never deleted
    assert [p.name for p in cache.root.iterdir()] == ["c"]  # no trash left behind


def test_a_served_export_counts_as_recently_used(tmp_path):
    cache = GgufCache(tmp_path / "home")
    folder = _fake_export(cache, "a", "/runs/a", 100, used=1_000)
    cache.used(tmp_path / "elsewhere" / "x.gguf")  # not one of the cache's: nothing
    assert (folder / "used").stat().st_mtime == 1_000
    cache.used(folder / "out" / "a.gguf")  # what the pool says for every request it serves
    assert (folder / "used").stat().st_mtime > 1_000_000


def test_forgetting_a_deleted_model_removes_its_exports_only(tmp_path):
    cache = GgufCache(tmp_path / "home")
    gone = _fake_export(cache, "a", "/runs/a", 100, used=1)
    checkpoint = _fake_export(cache, "b", "/runs/a@step-4", 100, used=1)
    assert cache.forget("/runs/a") == 1
    assert not gone.exists() and checkpoint.exists()
    assert cache.forget("/runs/nothing") == 0


def test_forgetting_neither_waits_for_an_export_nor_lets_a_queued_one_run(tmp_path):
    import fcntl
    import time

    cache = GgufCache(tmp_path / "home")
    made = _fake_export(cache, "a", "/runs/a", 100, used=1)
    with (cache.root / ".export.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another server is exporting something for minutes
        began = time.monotonic()
        assert cache.forget("/runs/a") == 1 and not made.exists()
        assert time.monotonic() - began < 2.0
    try:
        done = cache._enqueue("/runs/a", cache.root / "would-be")  # queued before the delete
        assert done.wait(10) and not (cache.root / "would-be").exists()  # skipped
    finally:
        cache.close()


def test_a_job_that_succeeds_is_exported_right_away(tmp_path):
    import threading
    import time

    from tunesmith.store import repo
    from tunesmith.store.db import Store

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    cache = GgufCache(tmp_path / "home")
    asked: list[str] = []
    seen = threading.Event()

    def prepare(target: str) -> threading.Event:
        asked.append(target)
        seen.set()
        return seen

    cache.prepare = prepare  # type: ignore[method-assign]
    try:
        before = repo.create_job(store, "p", model="m", training_file="file-1")
        repo.update_job(store, before.id, run_dir=str(tmp_path / "old"))
        repo.transition(store, before.id, "succeeded", finished_at=int(time.time()) - 60)
        cache.watch(store, every_s=0.05)
        job = repo.create_job(store, "q", model="m", training_file="file-1")
        repo.update_job(store, job.id, run_dir=str(tmp_path / "run"))
        assert repo.transition(store, job.id, "succeeded") is not None
        assert seen.wait(5.0)
        time.sleep(0.3)  # a few more looks: asked once
        assert asked == [str(tmp_path / "run")]  # of any project; not the one from before
    finally:
        cache.close()
        store.close()


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


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # peft saving
def test_deleting_a_fine_tuned_model_deletes_its_llama_cpp_export(client, tmp_path, tiny_model_dir):
    from route_helpers import A
    from test_exports import succeeded_job

    job = succeeded_job(client, tmp_path, tiny_model_dir)
    cache = GgufCache(tmp_path / "home")
    kept = _fake_export(cache, "other", "/runs/other", 100, used=1)
    made = _fake_export(cache, "ours", str(job.run_dir), 100, used=1)
    client.app.state.gguf = cache  # as on a server that serves through llama.cpp
    r = client.delete(f"/v1/models/{job.fine_tuned_model}", headers=A)
    assert r.status_code == 200, r.text
    assert not made.exists() and kept.exists()


def test_a_server_on_llama_cpp_answers_the_first_request_while_it_exports(
    tmp_path, tiny_model_dir, monkeypatch
):
    """The wiring: the server's cache watches the store, a chat request for a model with no
    export yet is answered at once (by torch), the export lands in the background, and a model
    llama.cpp then fails to open is still answered (by torch) — never a 5xx."""
    from fastapi.testclient import TestClient
    from route_helpers import A, make_server_settings

    from tunesmith.server import create_app

    def cannot_open(path, context):
        raise ValueError(f"Failed to load model from file: {path}")

    monkeypatch.setattr("tunesmith.inference.llamacpp.available", lambda: True)
    monkeypatch.setattr("tunesmith.inference.llamacpp.open_llama", cannot_open)
    monkeypatch.setattr(app_module, "_has_gpu", lambda: False)
    settings = make_server_settings(tmp_path / "home", tiny_model_dir, serve_engine="llamacpp")
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        cache = client.app.state.gguf
        assert isinstance(cache, GgufCache) and client.app.state.pool.gguf_of is cache
        assert any(t.name == "gguf-watch" and t.is_alive() for t in cache._threads)
        pool, target = client.app.state.pool, str(tiny_model_dir)
        first = client.post("/v1/chat/completions", headers=A, json=body)
        assert first.status_code == 200, first.text
        assert pool.get(target).model.engine == "torch"  # no export yet: torch answered
        assert cache.wait(target, timeout=120) is not None and cache.generation == 1
        # llama.cpp cannot open the export (forced here): torch answers, once asked again
        second = client.post("/v1/chat/completions", headers=A, json=body)
        assert second.status_code == 200, second.text
        assert pool.get(target).model.engine == "torch" and target in pool._not_gguf
    assert not any(t.is_alive() for t in cache._threads)  # stopped with the server
