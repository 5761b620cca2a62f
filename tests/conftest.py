"""Shared fixtures. Tests never touch the network; the tiny model is built once per run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama (2 layers, hidden 64) with a real BPE tokenizer and a ChatML template."""
    from tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    from tunesmith.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> None:
    """Each test gets its own TUNESMITH_HOME unless it uses the real default model; servers
    decode with torch whether or not llama-cpp-python is installed here (the tests of the
    llama.cpp engine ask for it by name)."""
    monkeypatch.setenv("TUNESMITH_SERVE_ENGINE", "torch")
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "tunesmith-home"))


# -- PostgreSQL for the store and queue tests ----------------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the whole session (tests/pg.py);
    the tests that need it skip, saying why, where PostgreSQL cannot be had."""
    import pg

    try:
        cluster = pg.start()
    except pg.Unavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_url(pg_cluster) -> str:
    """`postgresql://postgres@127.0.0.1:PORT/tunesmith` on the throwaway cluster."""
    return pg_cluster.create_database("tunesmith")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path):
    """A fresh, empty database URL per test, on each backend: a SQLite file in tmp_path, or a
    new database (`t_<hex>`) on the throwaway cluster, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    cluster = request.getfixturevalue("pg_cluster")
    with cluster.fresh_database() as url:
        yield url
