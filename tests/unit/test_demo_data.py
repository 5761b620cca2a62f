"""The demo works without a source checkout: the packaged generator writes exactly the files in
examples/demo, into the tunesmith home, once; the long prompt ships inside the package."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith import demo
from tunesmith.demo_data import LONG_PROMPT, ensure_demo_data
from tunesmith.errors import DataError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "demo"


def test_packaged_generator_writes_the_checkout_files_once(tmp_path):
    out = ensure_demo_data(tmp_path / "demo-data")
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (out / name).read_bytes() == (EXAMPLES / name).read_bytes(), name
    stamp = (out / "train.jsonl").stat().st_mtime_ns
    assert ensure_demo_data(out) == out
    assert (out / "train.jsonl").stat().st_mtime_ns == stamp  # not rewritten
    assert [p.name for p in tmp_path.iterdir()] == ["demo-data"]  # no temporary left behind


def test_without_a_checkout_the_data_is_generated_into_the_home(tmp_path):
    found = demo.find_demo_data(checkout=False)
    assert found == tmp_path / "tunesmith-home" / "demo-data"
    assert (found / "train.jsonl").read_bytes() == (EXAMPLES / "train.jsonl").read_bytes()


def test_in_a_checkout_the_examples_folder_is_used():
    assert demo.find_demo_data() == EXAMPLES


def test_a_given_directory_without_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no demo data here"):
        demo.find_demo_data(tmp_path)


def test_long_prompt_ships_in_the_package_and_a_data_dir_may_override_it(tmp_path):
    bundled = demo.long_prompt_text(tmp_path)
    assert bundled == LONG_PROMPT.read_text(encoding="utf-8") and "order_id" in bundled
    (tmp_path / "long_prompt.txt").write_text("mine", encoding="utf-8")
    assert demo.long_prompt_text(tmp_path) == "mine"


def test_a_failed_write_leaves_nothing_and_an_empty_leftover_folder_is_taken_over(
    tmp_path, monkeypatch
):
    from tunesmith import demo_data

    real = demo_data.write_jsonl

    def disk_full_on_the_second_file(path, rows):
        if path.name == "heldout.jsonl":
            raise OSError("disk full")
        real(path, rows)

    monkeypatch.setattr(demo_data, "write_jsonl", disk_full_on_the_second_file)
    out = tmp_path / "demo-data"
    with pytest.raises(OSError, match="disk full"):
        ensure_demo_data(out)
    assert list(tmp_path.iterdir()) == []  # no half-written folder, no temp left
    monkeypatch.setattr(demo_data, "write_jsonl", real)
    out.mkdir()
    assert ensure_demo_data(out) == out
    assert (out / "heldout.jsonl").read_bytes() == (EXAMPLES / "heldout.jsonl").read_bytes()


def test_another_process_finishing_first_is_kept(tmp_path, monkeypatch):
    from tunesmith import demo_data

    out = tmp_path / "demo-data"
    real = demo_data.generate

    def racing(*args, **kwargs):
        rows = real(*args, **kwargs)
        out.mkdir()  # meanwhile another process put its (identical) data in place
        for name in ("train.jsonl", "heldout.jsonl"):
            (out / name).write_text("theirs\n")
        return rows

    monkeypatch.setattr(demo_data, "generate", racing)
    assert ensure_demo_data(out) == out
    assert (out / "train.jsonl").read_text() == "theirs\n"
    assert [p.name for p in tmp_path.iterdir()] == ["demo-data"]
    (out / "heldout.jsonl").unlink()  # a folder holding something else is not taken over
    with pytest.raises(OSError):
        ensure_demo_data(out)
    assert [p.name for p in out.iterdir()] == ["train.jsonl"]
