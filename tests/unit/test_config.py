"""The run spec is strict: unknown keys fail with the line and the closest valid key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.config import ResolvedSpec, RunSpec, dump_spec, load_spec, write_spec
from tunesmith.errors import ConfigError


def test_defaults_match_the_documented_spec():
    spec = RunSpec()
    assert spec.model == "smollm2-135m-instruct"
    assert spec.adapter == "lora" and spec.lora.target_modules == "all-linear"
    assert spec.data.packing is True and spec.data.max_seq_len == 1024
    assert spec.epochs == spec.batch_size == spec.learning_rate == "auto"
    assert spec.eval.compare_base is True and spec.early_stopping.enabled == "auto"
    assert spec.eval.max_tokens == "auto" and spec.time_budget is None


def test_unknown_top_level_key_in_yaml_names_line_and_suggests(tmp_path: Path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: tiny\nadapter: lora\nlearnig_rate: 0.001\n")
    with pytest.raises(ConfigError) as exc:
        load_spec(cfg)
    text = str(exc.value)
    assert f"{cfg}:3" in text
    assert "unknown key 'learnig_rate'" in text
    assert "did you mean 'learning_rate'?" in text


def test_unknown_nested_key_suggests_within_its_block(tmp_path: Path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("lora:\n  r: 8\n  alpah: 16\n")
    with pytest.raises(ConfigError) as exc:
        load_spec(cfg)
    assert "unknown key 'lora.alpah'" in str(exc.value)
    assert "did you mean 'lora.alpha'?" in str(exc.value)
    assert f"{cfg}:3" in str(exc.value)


def test_unknown_override_key_suggests():
    with pytest.raises(ConfigError) as exc:
        load_spec({}, ["data.max_seq_length=512"])
    assert "did you mean 'data.max_seq_len'?" in str(exc.value)


def test_bad_value_names_field_and_line(tmp_path: Path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("adapter: lora\nepochs: many\n")
    with pytest.raises(ConfigError) as exc:
        load_spec(cfg)
    assert "'epochs' (line 2)" in str(exc.value)
    with pytest.raises(ConfigError, match="adapter"):
        load_spec({"adapter": "lorax"})
    with pytest.raises(ConfigError, match=r"lora\.r"):
        load_spec({}, ["lora.r=0"])


def test_overrides_are_typed_and_win_over_the_file(tmp_path: Path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("lora: {r: 8}\ndata: {train: a.jsonl}\nlearning_rate: 0.1\n")
    spec = load_spec(cfg, ["lora.r=4", "data.packing=false", "learning_rate=1e-4", "epochs=auto"])
    assert spec.lora.r == 4 and spec.lora.alpha == 32
    assert spec.data.packing is False and spec.data.train == Path("a.jsonl")
    assert spec.learning_rate == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="not key=value"):
        load_spec({}, ["epochs"])


def test_invalid_yaml_points_at_the_line(tmp_path: Path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: a\nlora: [r: 1\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_spec(cfg)


def test_resolved_spec_round_trips_through_config_yaml(tmp_path: Path):
    from tunesmith.auto import resolve_spec

    spec = load_spec({"data": {"train": "t.jsonl", "max_seq_len": 512}})
    resolved = resolve_spec(
        spec,
        n_examples=40,
        n_rows=8,
        n_val_rows=2,
        world_size=1,
        device_type="cpu",
        hidden=64,
        layers=2,
        weight_bytes=0,
    )
    # 40 examples: 120 passes, ~1 example per step -> 1 row (5 examples) per step, 8 per
    # epoch; 3 epochs = 24 steps is under the 30-step floor -> 30 steps (4 epochs)
    assert resolved.batch_size == 1 and resolved.grad_accum == 1
    assert resolved.epochs == 4 and resolved.total_steps == 30
    assert resolved.learning_rate == pytest.approx(2e-4)
    assert resolved.eval_every_steps == 5 and resolved.early_stopping.enabled is True
    assert resolved.eval.max_tokens == 2048
    assert "epochs" in resolved.auto_notes and "learning_rate" in resolved.auto_notes
    write_spec(resolved, tmp_path / "config.yaml")
    again = load_spec(tmp_path / "config.yaml", cls=ResolvedSpec)
    assert again == resolved
    text = dump_spec(again)
    for key in ("epochs", "batch_size", "grad_accum", "learning_rate", "save_every_steps"):
        assert f"\n{key}: auto" not in text


def test_auto_rules_for_large_sets_and_max_steps():
    from tunesmith.auto import resolve_spec

    big = resolve_spec(
        load_spec({"adapter": "none"}),
        n_examples=50_000,
        n_rows=20_000,
        n_val_rows=0,
        world_size=2,
        device_type="cpu",
        hidden=64,
        layers=2,
        weight_bytes=0,
    )
    # 50k examples: one epoch; 500 examples per step wanted, capped at 16384 tokens = 16
    # full rows per step over 2 processes -> 8 accumulated each
    assert big.grad_accum == 8 and big.epochs == 1 and big.total_steps == 1250
    assert big.learning_rate == pytest.approx(2e-5) and big.eval_every_steps is None
    capped = resolve_spec(
        load_spec({"max_steps": 30}),
        n_examples=40,
        n_rows=4,
        n_val_rows=0,
        world_size=1,
        device_type="cpu",
        hidden=64,
        layers=2,
        weight_bytes=0,
    )
    assert capped.total_steps == 30 and capped.epochs == 8
    assert big.early_stopping.enabled is False  # no held-out data


def test_names_from_other_tools_and_misplaced_nested_keys_get_suggestions():
    with pytest.raises(ConfigError, match=r"did you mean 'lora\.r'"):
        load_spec({"lora": {"rank": 8}})
    with pytest.raises(ConfigError, match=r"did you mean 'grad_accum'"):
        load_spec({"gradient_accumulation_steps": 8})
    with pytest.raises(ConfigError, match=r"did you mean 'data\.max_seq_len'"):
        load_spec({"max_seq_length": 512})


def test_eval_block_takes_comparison_options_and_suggests_typos() -> None:
    from tunesmith.config import load_spec
    from tunesmith.errors import ConfigError

    spec = load_spec({"eval": {"metrics": ["json_fields"], "main_metric": "json_fields"}})
    assert spec.eval.metrics == ["json_fields"] and spec.eval.main_metric == "json_fields"
    with pytest.raises(ConfigError, match=r"did you mean 'eval\.metrics'"):
        load_spec({"eval": {"metric": "x"}})


# -- hostile configs: bombs, bad bytes, bad files, values that cannot train -------------------


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from tunesmith.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return (exc.value.code if isinstance(exc.value.code, int) else 0), out.out + out.err


def _bomb(levels: int = 9, leaf: str = "x") -> list[str]:
    lines = [f"l0: &l0 [{', '.join([leaf] * 10)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return lines


@pytest.mark.parametrize(
    "tail",
    [
        "lora: {r: *l8}\n",  # in a typed field: would be expanded into the error message
        "eval: {metrics: *l8}\n",  # under any key: _key_lines / validation would walk it
        "data: {mix: [*l8, *l8]}\n",
    ],
)
def test_yaml_alias_bombs_are_refused_fast_and_cleanly(tail, tmp_path: Path, capsys):
    import time

    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("\n".join(_bomb()) + "\n" + tail)
    start = time.perf_counter()
    code, printed = _cli(["train", str(cfg), "--output-dir", str(tmp_path / "run")], capsys)
    assert time.perf_counter() - start < 5
    assert code == 2 and str(cfg) in printed and "Traceback" not in printed
    assert "aliases (*name) expand to more than" in printed
    assert not (tmp_path / "run").exists()


def test_recursive_and_deeply_nested_yaml_are_config_errors(tmp_path: Path):
    cfg = tmp_path / "self.yaml"
    cfg.write_text("lora: &a {r: *a}\n")
    with pytest.raises(ConfigError, match="refers to the block that holds it"):
        load_spec(cfg)
    cfg.write_text("seed: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_spec(cfg)


def test_a_small_alias_is_still_fine(tmp_path: Path):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("lora: &l {r: 8, alpha: 16}\neval: {metrics: &m [exact_match]}\n")
    assert load_spec(cfg).lora.r == 8


def test_values_quoted_in_errors_are_capped(tmp_path: Path):
    cfg = tmp_path / "big.yaml"
    nested = ", ".join(["[1, 2, 3]"] * 500)
    cfg.write_text("seed: " + "9" * 50_000 + "x\nlora: {r: [" + nested + "]}\n")
    with pytest.raises(ConfigError) as exc:
        load_spec(cfg)
    text = str(exc.value)
    assert "'seed'" in text and "'lora.r'" in text and len(text) < 1500


@pytest.mark.parametrize(
    ("name", "write", "expect"),
    [
        ("utf16", lambda p: p.write_bytes("model: tiny\n".encode("utf-16")), "UTF-16"),
        ("utf16le", lambda p: p.write_bytes("model: tiny\n".encode("utf-16-le")), "UTF-16"),
        ("latin1", lambda p: p.write_bytes("model: tiny\n# caf\xe9\n".encode("latin-1")), "UTF-8"),
        ("dir", lambda p: p.mkdir(), "is a directory"),
        ("missing", lambda p: None, "not found"),
    ],
)
def test_config_file_io_problems_exit_2_naming_the_file(name, write, expect, tmp_path, capsys):
    cfg = tmp_path / f"{name}.yaml"
    write(cfg)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, printed = _cli(["train", str(cfg), "--no-progress"], capsys)
    assert code == 2 and expect in printed and str(cfg) in printed
    assert "Traceback" not in printed
    if name == "latin1":
        assert f"{cfg}:2" in printed  # the line of the bad byte
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_unreadable_config_exits_2_naming_the_file(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "locked.yaml"
    cfg.write_text("model: tiny\n")
    real = Path.read_bytes

    def denied(self):  # chmod 000 does not stop root, so refuse the read the way the OS would
        if self == cfg:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    code, printed = _cli(["train", str(cfg), "--no-progress"], capsys)
    assert code == 2 and "Permission denied" in printed and str(cfg) in printed
    assert "Traceback" not in printed


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("learning_rate=inf", "learning_rate"),
        ("learning_rate=.nan", "learning_rate"),
        ("lr_multiplier=.inf", "lr_multiplier"),
        ("max_grad_norm=-1", "max_grad_norm"),
        ("max_grad_norm=.nan", "max_grad_norm"),
        ("warmup=.inf", "warmup"),
        ("seed=100000000000000000000000000", "seed"),
        ("seed=-1", "seed"),
    ],
)
def test_values_that_cannot_train_are_config_errors(override, field, tmp_path, capsys):
    code, printed = _cli(
        ["train", override, "--output-dir", str(tmp_path / "run"), "--no-progress"], capsys
    )
    assert code == 2 and f"'{field}'" in printed and "Traceback" not in printed
    assert not (tmp_path / "run").exists()


def test_null_and_zero_still_disable_clipping():
    assert load_spec(None, ["max_grad_norm=0"]).max_grad_norm == 0
    assert load_spec(None, ["max_grad_norm=null"]).max_grad_norm is None
