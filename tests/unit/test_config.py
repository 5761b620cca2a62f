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
    assert spec.eval.compare_base is True and spec.early_stopping.enabled is False


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
    # 8 rows, >= 10 steps per epoch impossible -> 1 row per step; small set -> ~100 steps
    assert resolved.batch_size == 1 and resolved.grad_accum == 1
    assert resolved.epochs == 13 and resolved.total_steps == 104
    assert resolved.learning_rate == pytest.approx(2e-4)
    assert resolved.eval_every_steps == 11
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
    # 16384 tokens / 1024 per row = 16 rows per step over 2 processes -> 8 accumulated each
    assert big.grad_accum == 8 and big.epochs == 2
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
