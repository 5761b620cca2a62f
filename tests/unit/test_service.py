"""tunesmith.service: the operator's settings, above all the key -> project table."""

from __future__ import annotations

from pathlib import Path

from tunesmith.service import ServerSettings


def test_keys_map_to_projects_from_env_and_file(tmp_path: Path, monkeypatch) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# a comment\nteam-b:key-b\n\nkey-c\n", encoding="utf-8")
    monkeypatch.setenv("TUNESMITH_API_KEYS", "team-a:key-a, key-x")
    s = ServerSettings(home=tmp_path, api_keys_file=keys)
    assert s.keys() == {
        "key-a": "team-a",
        "key-x": "default",
        "key-b": "team-b",
        "key-c": "default",
    }
    assert ServerSettings(home=tmp_path, api_keys=None).keys() == {}  # authentication off


def test_paths_and_database_default_to_the_home(tmp_path: Path) -> None:
    s = ServerSettings(home=tmp_path / "h")
    assert s.db_url == f"sqlite:///{tmp_path / 'h' / 'tunesmith.db'}"
    assert s.files_dir == tmp_path / "h" / "files" and s.jobs_dir == tmp_path / "h" / "jobs"
    assert ServerSettings(home=tmp_path, db="postgresql://x/y").db_url == "postgresql://x/y"


def test_openmp_workers_spin_briefly_for_the_torch_engine_not_for_llama_cpp(monkeypatch):
    import importlib.util

    from tunesmith.service import OPENMP_SPINS, openmp_env

    def spins_briefly(engine: str) -> bool:
        spin = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": OPENMP_SPINS}
        return openmp_env(engine, {}) == spin

    assert spins_briefly("torch") and openmp_env("llamacpp", {}) == {}
    assert openmp_env("torch", {"OMP_WAIT_POLICY": "PASSIVE"}) == {}  # the user's choice stays
    assert openmp_env("torch", {"GOMP_SPINCOUNT": "0"}) == {}
    real = importlib.util.find_spec
    for installed in (True, False):
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a, on=installed: (
                (object() if on else None) if name == "llama_cpp" else real(name, *a)
            ),
        )
        assert spins_briefly("auto") is (not installed)  # auto decodes with llama.cpp if it can
