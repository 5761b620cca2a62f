"""`compare RUN` reads its defaults from the run directory, and a run directory may be someone
else's: a code grader named in its config.yaml is never imported unless the user typed it or
passed --trust-run-config; when it is imported, a message event names the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunesmith import api
from tunesmith.cli import main
from tunesmith.eval import compare as compare_mod
from tunesmith.events import Event


class _Stop(Exception):
    """Raised where the models would load: the graders are built by then."""


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def shared_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run directory as someone might share it: its config names their grader file, which
    leaves a marker when it is imported. Returns (run dir, marker path)."""
    run = tmp_path / "downloaded-run"
    run.mkdir()
    marker = tmp_path / "grader-was-imported"
    (run / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\n\ndef score(prediction, reference):\n"
        "    return 1.0\n"
    )
    heldout = tmp_path / "heldout.jsonl"
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    heldout.write_text(json.dumps(row) + "\n")
    config = {
        "model": "some-base",
        "data": {"validation": str(heldout)},
        "eval": {"metrics": ["exact_match", f"{run / 'evil.py'}:score"]},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "manifest.json").write_text(
        json.dumps({"kind": "tunesmith-run", "base_model": "some-base", "status": "completed"})
    )
    return run, marker


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return (exc.value.code if isinstance(exc.value.code, int) else 0), out.out + out.err


@pytest.mark.parametrize("command", ["compare", "eval"])
def test_a_run_directorys_code_grader_is_refused(command, shared_run, tmp_path, capsys):
    run, marker = shared_run
    before = _snapshot(tmp_path)
    argv = [command, str(run), "--no-progress"]
    if command == "eval":
        argv += ["--data", str(tmp_path / "heldout.jsonl")]
    code, printed = _cli(argv, capsys)
    assert code == 2, printed
    assert "evil.py:score" in printed and "--trust-run-config" in printed
    assert "config.yaml [eval.metrics]" in printed
    assert "Traceback" not in printed
    assert not marker.exists()  # the grader's code never ran
    assert _snapshot(tmp_path) == before  # nothing written (no eval/ report), nothing lost


def _stop_before_models(monkeypatch) -> None:
    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(compare_mod, "load_for_eval", stop)


def test_trust_run_config_imports_it_and_says_which_file(shared_run, monkeypatch):
    run, marker = shared_run
    _stop_before_models(monkeypatch)
    seen: list[Event] = []
    with pytest.raises(_Stop):
        api.compare(run, on_event=seen.append, trust_run_config=True)
    assert marker.exists()
    said = [e.message for e in seen if e.kind == "message"]
    assert any("importing user grader code" in m and str(run / "evil.py") in m for m in said)


def test_a_grader_typed_by_the_user_needs_no_flag(shared_run, monkeypatch):
    run, marker = shared_run
    _stop_before_models(monkeypatch)
    seen: list[Event] = []
    with pytest.raises(_Stop):
        api.compare(run, metrics=[f"{run / 'evil.py'}:score"], on_event=seen.append)
    assert marker.exists()
    assert any(str(run / "evil.py") in e.message for e in seen)


def test_builtin_metrics_from_the_run_config_need_no_flag(shared_run, monkeypatch):
    run, marker = shared_run
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["eval"]["metrics"] = "exact_match,regex:^y,json_key:a"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    _stop_before_models(monkeypatch)
    with pytest.raises(_Stop):
        api.compare(run)
    assert not marker.exists()


def test_the_comparison_after_a_resume_does_not_trust_the_run_config(shared_run):
    """A resumed run's config was read back from the directory: its code graders are refused
    (a warning: the trained model is kept), while a fresh run's own spec is trusted."""
    from types import SimpleNamespace

    run, marker = shared_run
    result = SimpleNamespace(
        run_dir=run,
        spec=SimpleNamespace(eval=SimpleNamespace(compare_base=True)),
        has_validation=True,
        is_main=True,
        status="completed",
    )
    seen: list[Event] = []
    api._compare_after_training(result, seen.append, None, trusted=False)  # type: ignore[arg-type]
    warnings = [e.message for e in seen if e.level == "warning"]
    assert warnings and "--trust-run-config" in warnings[0]
    assert not marker.exists()


def test_a_yaml_bomb_in_the_run_config_is_refused_quickly(shared_run, capsys):
    run, _ = shared_run
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    (run / "config.yaml").write_text("\n".join(levels) + "\neval: {metrics: *i}\n")
    code, printed = _cli(["compare", str(run), "--no-progress"], capsys)
    assert code == 2 and "aliases" in printed and "config.yaml" in printed
    assert "Traceback" not in printed
