"""Regression tests for issue 11 items 4, 6 and 8: the output directory is checked before
anything is written (never a root, the home folder or a file; a non-empty directory that is not
a run only with --force), every failure after the run directory exists marks it `failed` with
the reason (SIGTERM included), and config I/O problems are one-line ConfigErrors naming the
file, exit 2, no traceback."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import tempfile
import time
from pathlib import Path

import pytest
from train_helpers import base_spec, write_config

from tunesmith import api
from tunesmith.cli import main
from tunesmith.config import load_spec
from tunesmith.errors import ConfigError
from tunesmith.runs import RunDir
from tunesmith.train.run import Terminated
from tunesmith.train.setup import check_new_run_dir, check_writable


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else 0
    return code, out.out, out.err


def _train_argv(model: Path, data: Path, out: Path | str, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        str(model),
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--batch-size",
        "1",
        "--grad-accum",
        "1",
        "--max-seq-len",
        "128",
        "--max-steps",
        "1",
        "--no-progress",
        "eval.compare_base=false",
        *extra,
    ]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for a directory)."""
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


class _LoaderCalled(Exception):
    pass


@pytest.fixture
def loader_calls(monkeypatch) -> list[object]:
    """Patch the model loader to record the call and stop: a test that reaches it has passed
    every check made before the model loads; one that must not reach it asserts []."""
    calls: list[object] = []

    def fake_load_model(name, *args, **kwargs):
        calls.append(name)
        raise _LoaderCalled(str(name))

    monkeypatch.setattr("tunesmith.models.load.load_model", fake_load_model)
    return calls


@pytest.fixture
def restore_sigterm():
    old = signal.getsignal(signal.SIGTERM)
    yield old
    signal.signal(signal.SIGTERM, old)


def _send_sigterm(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(200):  # the Python-level handler runs at the next bytecode boundary
        time.sleep(0.01)
    raise AssertionError("SIGTERM was not turned into an exception")


# -- item 4: directories that are not runs -------------------------------------------------------


def _user_dir(path: Path) -> Path:
    """A directory of someone's files that happen to share a run's names."""
    path.mkdir()
    (path / "config.yaml").write_text("mine: true\n")
    (path / "metrics.jsonl").write_text('{"mine": 1}\n')
    (path / "final").mkdir()
    (path / "final" / "keep.txt").write_text("precious")
    (path / "notes.txt").write_text("notes")
    return path


def test_non_empty_dir_that_is_not_a_run_is_refused_and_untouched(
    tmp_path, capsys, tiny_model_dir, chat_file, loader_calls
):
    out = _user_dir(tmp_path / "mine")
    before = _snapshot(out)
    code, _, err = _cli(_train_argv(tiny_model_dir, chat_file, out), capsys)
    assert code == 2
    assert f"output_dir {out} is not empty and is not a tunesmith run" in err
    assert "config.yaml, final, metrics.jsonl and 1 more" in err
    assert "--force" in err
    assert "Traceback" not in err
    assert _snapshot(out) == before
    assert loader_calls == []


def test_api_train_refuses_a_non_empty_dir_without_force(tmp_path, tiny_model_dir, chat_file):
    out = _user_dir(tmp_path / "mine")
    before = _snapshot(out)
    with pytest.raises(ConfigError, match="is not empty and is not a tunesmith run") as exc:
        api.train(base_spec(tiny_model_dir, chat_file, out, max_steps=1))
    assert exc.value.param == "output_dir"
    assert "force=True" in str(exc.value)
    assert _snapshot(out) == before


def test_cli_force_trains_into_a_non_empty_dir(tmp_path, capsys, tiny_model_dir, chat_file):
    out = _user_dir(tmp_path / "mine")
    code, stdout, err = _cli(_train_argv(tiny_model_dir, chat_file, out, "--force"), capsys)
    assert code == 0, err
    assert "done (completed)" in stdout
    assert RunDir(out).status == "completed"
    assert (out / "notes.txt").read_text() == "notes"  # files a run does not write stay


def test_api_force_true_trains_into_a_non_empty_dir(tmp_path, tiny_model_dir, chat_file):
    out = _user_dir(tmp_path / "mine")
    result = api.train(base_spec(tiny_model_dir, chat_file, out, max_steps=1), force=True)
    assert result.status == "completed"
    assert RunDir(out).status == "completed"
    assert (out / "notes.txt").read_text() == "notes"


def test_dir_holding_only_a_lock_and_cancel_counts_as_empty(
    tmp_path, tiny_model_dir, chat_file, loader_calls
):
    out = tmp_path / "leftover"
    out.mkdir()
    (out / ".lock").touch()
    (out / "CANCEL").touch()
    with pytest.raises(_LoaderCalled):  # got past the directory check without force
        api.train(base_spec(tiny_model_dir, chat_file, out, max_steps=1))
    assert [Path(c) for c in loader_calls] == [tiny_model_dir]


@pytest.mark.parametrize("via", ["cli", "api"])
def test_filesystem_root_is_refused_even_with_force(
    via, tmp_path, capsys, tiny_model_dir, chat_file, loader_calls
):
    before = sorted(os.listdir("/"))
    if via == "cli":
        code, _, err = _cli(_train_argv(tiny_model_dir, chat_file, "/", "--force"), capsys)
        assert code == 2
        assert "output_dir / is a filesystem root" in err
        assert "Traceback" not in err
    else:
        with pytest.raises(ConfigError, match="is a filesystem root"):
            api.train(base_spec(tiny_model_dir, chat_file, Path("/"), max_steps=1), force=True)
    assert sorted(os.listdir("/")) == before  # nothing new appeared in /
    assert loader_calls == []


def test_home_folder_is_refused_even_with_force(
    tmp_path, monkeypatch, capsys, tiny_model_dir, chat_file, loader_calls
):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# mine\n")
    monkeypatch.setenv("HOME", str(home))
    assert Path.home() == home
    before = _snapshot(home)
    code, _, err = _cli(_train_argv(tiny_model_dir, chat_file, home, "--force"), capsys)
    assert code == 2
    assert f"output_dir {home} is your home folder" in err
    assert "Traceback" not in err
    assert _snapshot(home) == before
    # "~" names it too
    with pytest.raises(ConfigError, match="is your home folder"):
        check_new_run_dir(RunDir("~"), force=True)
    assert loader_calls == []


def test_output_dir_that_is_a_file_is_refused(
    tmp_path, capsys, tiny_model_dir, chat_file, loader_calls
):
    target = tmp_path / "a-file"
    target.write_text("not a directory")
    code, _, err = _cli(_train_argv(tiny_model_dir, chat_file, target, "--force"), capsys)
    assert code == 2
    assert f"output_dir {target} is a file, not a directory" in err
    assert "Traceback" not in err
    assert target.read_text() == "not a directory"
    assert loader_calls == []


# -- item 6: nothing stuck in "running" ----------------------------------------------------------


@pytest.mark.parametrize("seed", [-1, 2**32, 10**26])
def test_seed_out_of_range_is_a_config_error(seed, tmp_path, capsys, tiny_model_dir, chat_file):
    out = tmp_path / "run"
    code, _, err = _cli(_train_argv(tiny_model_dir, chat_file, out, f"seed={seed}"), capsys)
    assert code == 2
    assert "'seed'" in err and f"(got {seed})" in err
    assert "Traceback" not in err
    assert not out.exists()
    with pytest.raises(ConfigError) as exc:
        load_spec({"model": "x", "seed": seed})
    assert exc.value.param == "seed"


def test_seed_bounds_are_inclusive():
    assert load_spec({"model": "x", "seed": 0}).seed == 0
    assert load_spec({"model": "x", "seed": 2**32 - 1}).seed == 2**32 - 1


def test_early_stopping_without_validation_is_refused_before_the_run_dir(
    tmp_path, capsys, tiny_model_dir, chat_file, loader_calls
):
    out = tmp_path / "run"
    code, _, err = _cli(
        _train_argv(tiny_model_dir, chat_file, out, "early_stopping.enabled=true"), capsys
    )
    assert code == 2
    assert "early stopping needs validation data" in err
    assert "early_stopping.enabled" in err and "data.validation" in err
    assert "Traceback" not in err
    assert not out.exists()
    assert loader_calls == []  # refused before the model loads


def test_early_stopping_with_validation_gets_past_the_check(
    tmp_path, tiny_model_dir, chat_file, val_file, loader_calls
):
    spec = base_spec(
        tiny_model_dir,
        chat_file,
        tmp_path / "run",
        max_steps=1,
        early_stopping={"enabled": True},
        data={"validation": str(val_file)},
    )
    with pytest.raises(_LoaderCalled):
        api.train(spec)
    assert [Path(c) for c in loader_calls] == [tiny_model_dir]


def _failed_run(out: Path, model: Path, data: Path) -> dict:
    """A run that fails after its directory exists: a target module the model lacks."""
    spec = base_spec(model, data, out, max_steps=1, lora={"target_modules": ["no_such_proj"]})
    with pytest.raises(ConfigError, match=r"lora\.target_modules") as exc:
        api.train(spec)
    assert exc.value.where == "lora.target_modules"
    return RunDir(out).manifest()


def test_failure_after_the_run_dir_exists_marks_it_failed(tmp_path, tiny_model_dir, chat_file):
    out = tmp_path / "run"
    manifest = _failed_run(out, tiny_model_dir, chat_file)
    assert manifest["status"] == "failed"
    assert "lora.target_modules" in manifest["error"] and "no_such_proj" in manifest["error"]
    assert manifest.get("finished")
    assert not (out / "final").exists()


def test_retry_into_a_failed_run_says_how_it_ended_and_how_to_resume(
    tmp_path, capsys, tiny_model_dir, chat_file
):
    out = tmp_path / "run"
    _failed_run(out, tiny_model_dir, chat_file)
    before = _snapshot(out)
    code, _, err = _cli(_train_argv(tiny_model_dir, chat_file, out, "--force"), capsys)
    assert code == 2
    assert f"output directory {out} holds an earlier attempt that failed" in err
    assert "no_such_proj" in err  # the reason it failed
    assert f"tunesmith train --resume {out}" in err
    assert "already holds a run" not in err
    assert "Traceback" not in err
    assert _snapshot(out) == before


def test_retry_into_a_running_or_cancelled_run_says_so(tmp_path):
    for status, expected in [
        ("running", "reads 'running'"),
        ("cancelled", "was cancelled at step 3"),
        ("completed", "already holds a finished run (completed)"),
    ]:
        run = RunDir(tmp_path / status)
        run.path.mkdir()
        run.write_manifest({"status": status, "cancelled_at_step": 3})
        with pytest.raises(ConfigError, match=re.escape(expected)) as exc:
            check_new_run_dir(run, force=True)
        if status != "completed":
            assert f"tunesmith train --resume {run.path}" in str(exc.value)


def test_sigterm_during_model_load_raises_terminated_and_leaves_nothing_running(
    tmp_path, monkeypatch, tiny_model_dir, chat_file, restore_sigterm
):
    out = tmp_path / "run"
    monkeypatch.setattr("tunesmith.models.load.load_model", _send_sigterm)
    with pytest.raises(Terminated) as exc:
        api.train(base_spec(tiny_model_dir, chat_file, out, max_steps=1))
    assert isinstance(exc.value, KeyboardInterrupt)
    assert str(exc.value) == "terminated (SIGTERM)"
    # The model loads before the run directory is made: there is no run to read "running".
    assert not out.exists()
    assert signal.getsignal(signal.SIGTERM) == restore_sigterm  # the handler was put back


def test_sigterm_after_the_run_dir_exists_marks_it_failed_terminated(
    tmp_path, monkeypatch, tiny_model_dir, chat_file, restore_sigterm
):
    out = tmp_path / "run"
    monkeypatch.setattr("tunesmith.train.adapters.apply_adapter", _send_sigterm)
    with pytest.raises(Terminated):
        api.train(base_spec(tiny_model_dir, chat_file, out, max_steps=1))
    manifest = RunDir(out).manifest()
    assert manifest["status"] == "failed"
    assert manifest["error"] == "terminated (SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) == restore_sigterm


def test_sigterm_through_the_cli_exits_130_without_traceback(
    tmp_path, monkeypatch, capsys, tiny_model_dir, chat_file, restore_sigterm
):
    out = tmp_path / "run"
    monkeypatch.setattr("tunesmith.train.adapters.apply_adapter", _send_sigterm)
    code, _, err = _cli(_train_argv(tiny_model_dir, chat_file, out), capsys)
    assert code == 130
    # typer turns KeyboardInterrupt into a silent Exit(130): no message, and no traceback
    assert "Traceback" not in err
    assert RunDir(out).manifest()["error"] == "terminated (SIGTERM)"


# -- item 8: config I/O --------------------------------------------------------------------------


def _config_text(tmp_path: Path, model: Path, data: Path) -> str:
    return (
        f"model: {json.dumps(str(model))}\n"
        f"data:\n  train: {json.dumps(str(data))}\n"
        f"output_dir: {json.dumps(str(tmp_path / 'run'))}\n"
        "max_steps: 1\n"
    )


def _cli_config_error(cfg: Path, capsys, tmp_path: Path) -> str:
    code, _, err = _cli(["train", str(cfg), "--no-progress"], capsys)
    assert code == 2
    assert str(cfg) in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()
    return err


def test_utf16_config_is_refused_naming_the_file(tmp_path, capsys, tiny_model_dir, chat_file):
    cfg = tmp_path / "run.yaml"
    cfg.write_bytes(_config_text(tmp_path, tiny_model_dir, chat_file).encode("utf-16"))
    err = _cli_config_error(cfg, capsys, tmp_path)
    assert "UTF-16" in err and "save it as UTF-8" in err


def test_utf16_without_bom_is_refused(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_bytes("model: x\n".encode("utf-16-le"))
    with pytest.raises(ConfigError, match="UTF-16") as exc:
        load_spec(cfg)
    assert exc.value.where == str(cfg)


def test_latin1_config_names_the_line(tmp_path, capsys, tiny_model_dir, chat_file):
    cfg = tmp_path / "run.yaml"
    text = _config_text(tmp_path, tiny_model_dir, chat_file) + "# caf\u00e9 au lait\n"
    cfg.write_bytes(text.encode("latin-1"))
    bad_line = text.count("\n")  # the comment is the last line
    err = _cli_config_error(cfg, capsys, tmp_path)
    assert f"{cfg}:{bad_line}: config file is not valid UTF-8" in err
    assert "save it as UTF-8" in err


def test_utf8_with_bom_is_accepted(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_bytes("model: x\nseed: 7\n".encode("utf-8-sig"))
    assert load_spec(cfg).seed == 7


def test_directory_given_as_config(tmp_path, capsys):
    cfg = tmp_path / "configs"
    cfg.mkdir()
    err = _cli_config_error(cfg, capsys, tmp_path)
    assert f"config file {cfg} is a directory, not a YAML file" in err
    assert "not found" not in err


def test_missing_config(tmp_path, capsys):
    cfg = tmp_path / "nope.yaml"
    err = _cli_config_error(cfg, capsys, tmp_path)
    assert f"config file not found: {cfg}" in err


def test_unreadable_config(tmp_path, monkeypatch, capsys, tiny_model_dir, chat_file):
    cfg = write_config(tmp_path / "run.yaml", base_spec(tiny_model_dir, chat_file, tmp_path / "r"))
    real_read_bytes = Path.read_bytes

    def read_bytes(self):
        if self == cfg:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    err = _cli_config_error(cfg, capsys, tmp_path)
    assert f"{cfg}: cannot read config file: Permission denied" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("how", ["access", "read-only mount"])
def test_unwritable_output_dir_is_refused_before_the_model_loads(
    how, tmp_path, monkeypatch, capsys, tiny_model_dir, chat_file, loader_calls
):
    parent = tmp_path / "locked"
    parent.mkdir()
    out = parent / "run"
    if how == "access":
        real_access = os.access

        def access(path, mode, *args, **kwargs):
            if Path(path) == parent:
                return False
            return real_access(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)
        reason = "Permission denied"
    else:  # root passes access(); the probe folder fails, as on a read-only filesystem
        real_mkdtemp = tempfile.mkdtemp

        def mkdtemp(*args, **kwargs):
            if kwargs.get("dir") is not None and Path(kwargs["dir"]) == parent:
                raise OSError(errno.EROFS, "Read-only file system")
            return real_mkdtemp(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
        reason = "Read-only file system"
    code, _, err = _cli(_train_argv(tiny_model_dir, chat_file, out), capsys)
    assert code == 2
    assert f"output_dir {out} cannot be written" in err
    assert f"{parent}, where it would be created, is not writable ({reason})" in err
    assert "Traceback" not in err
    assert loader_calls == []  # found before the model loaded
    assert list(parent.iterdir()) == []


def test_writability_check_creates_and_removes_a_probe_folder(tmp_path, monkeypatch):
    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        path = real_mkdtemp(*args, **kwargs)
        made.append(Path(path))
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    (tmp_path / "keep.txt").write_text("x")
    check_writable(tmp_path / "new" / "run")  # probes the nearest existing folder
    assert len(made) == 1 and made[0].parent == tmp_path
    assert made[0].name.startswith(".tunesmith-write-check-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert not (tmp_path / "new").exists()
