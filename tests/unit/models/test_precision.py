"""The dtype probe decides from measured timings (mocked here both ways), caches them per
machine, and only measures where the answer is not already fixed by the spec or the model."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith.models import precision
from tunesmith.models.precision import Probe, choose, decide

CPU = torch.device("cpu")


class FakeMeasure:
    def __init__(self, fp32_s: float, bf16_s: float):
        self.probe = Probe(fp32_s=fp32_s, bf16_s=bf16_s)
        self.calls = 0

    def __call__(self) -> Probe:
        self.calls += 1
        return self.probe


def test_decide_needs_bf16_clearly_faster():
    assert decide(Probe(fp32_s=1.0, bf16_s=0.2))  # AMX: 5x
    assert decide(Probe(fp32_s=1.5, bf16_s=1.0))  # exactly FASTER_BY
    assert not decide(Probe(fp32_s=1.0, bf16_s=0.9))  # a little faster is not enough
    assert not decide(Probe(fp32_s=1.0, bf16_s=4.0))  # AVX2: emulated bf16 is slower
    assert not decide(Probe(fp32_s=1.0, bf16_s=0.0))  # no bf16 kernel


def test_auto_takes_bf16_where_measured_faster_and_says_the_numbers():
    fast = FakeMeasure(fp32_s=0.010, bf16_s=0.002)
    choice = choose("auto", CPU, adapter="lora", hidden=576, measure_fn=fast)
    assert choice.bf16 and choice.compute == "bfloat16" and fast.calls == 1
    m, k, n = precision.PROBE_SHAPE
    assert choice.fp32_gflops == pytest.approx(2 * m * k * n / 0.010 / 1e9, rel=1e-3)
    assert choice.bf16_gflops == pytest.approx(5 * choice.fp32_gflops, rel=1e-3)
    assert "5.0x faster" in choice.describe() and "GFLOP/s" in choice.describe()
    manifest = choice.to_manifest()
    assert manifest["compute"] == "bfloat16" and manifest["cached"] is False
    assert json.loads(json.dumps(manifest)) == manifest  # the manifest is JSON


def test_auto_stays_float32_where_bf16_is_not_faster():
    slow = FakeMeasure(fp32_s=0.010, bf16_s=0.030)
    choice = choose("auto", CPU, adapter="lora", hidden=576, measure_fn=slow)
    assert not choice.bf16 and choice.compute == "float32" and slow.calls == 1
    assert "needs 1.5x" in choice.reason


def test_the_probe_is_cached_per_machine_and_torch_version(monkeypatch):
    first = FakeMeasure(fp32_s=0.010, bf16_s=0.002)
    assert choose("auto", CPU, adapter="lora", hidden=576, measure_fn=first).bf16
    again = FakeMeasure(fp32_s=0.010, bf16_s=0.030)  # would say float32 if it ran
    choice = choose("auto", CPU, adapter="lora", hidden=576, measure_fn=again)
    assert choice.bf16 and choice.cached and again.calls == 0
    monkeypatch.setattr(torch, "__version__", "9.9.9")  # another torch: measured again
    choice = choose("auto", CPU, adapter="lora", hidden=576, measure_fn=again)
    assert not choice.bf16 and again.calls == 1


def test_an_unreadable_cache_only_costs_a_new_probe():
    path = precision._cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json", encoding="utf-8")
    fake = FakeMeasure(fp32_s=0.010, bf16_s=0.002)
    assert choose("auto", CPU, adapter="lora", hidden=576, measure_fn=fake).bf16
    assert fake.calls == 1 and json.loads(path.read_text())  # rewritten whole


@pytest.mark.parametrize(
    ("dtype", "device", "adapter", "hidden", "fused", "bf16"),
    [
        ("float32", CPU, "lora", 576, True, False),  # forced float32
        ("fp32", CPU, "lora", 576, True, False),
        ("bf16", CPU, "lora", 64, True, True),  # forced bf16, even on a tiny model
        ("auto", CPU, "lora", 64, True, False),  # too narrow to pay
        ("auto", CPU, "dora", 576, True, False),  # peft's own layers
        ("auto", CPU, "none", 576, True, False),  # full fine-tuning
        ("auto", CPU, "lora", 576, False, False),  # fused path off (compile, fused_lora off)
        ("auto", torch.device("meta"), "lora", 576, True, False),  # not a CPU
    ],
)
def test_no_probe_where_the_answer_is_fixed(dtype, device, adapter, hidden, fused, bf16):
    fake = FakeMeasure(fp32_s=0.010, bf16_s=0.002)
    got = choose(dtype, device, adapter=adapter, hidden=hidden, fused=fused, measure_fn=fake)
    assert got.bf16 is bf16 and fake.calls == 0


@pytest.mark.parametrize("method", ["dpo", "orpo", "reinforcement"])
def test_auto_keeps_methods_with_no_grad_reference_passes_in_float32(method):
    fake = FakeMeasure(fp32_s=0.010, bf16_s=0.002)
    got = choose("auto", CPU, adapter="lora", hidden=576, method=method, measure_fn=fake)
    assert not got.bf16 and fake.calls == 0 and method in got.reason
    forced = choose("bf16", CPU, adapter="lora", hidden=576, method=method, measure_fn=fake)
    assert forced.bf16


def test_cpu_info_reads_model_and_bf16_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Example CPU 9000\n"
        "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Example CPU 9000\nflags\t\t: fpu\n",
        encoding="utf-8",
    )
    model, flags = precision.cpu_info(str(cpuinfo))
    assert model == "Example CPU 9000"
    assert flags == ["avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2"]


def test_cpu_id_tells_apart_cpus_that_share_a_name_and_flags(tmp_path, monkeypatch):
    def cpuinfo(model: str) -> str:
        path = tmp_path / f"cpuinfo-{model}"
        path.write_text(
            "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n"
            f"model\t\t: {model}\nmodel name\t: AMD EPYC\nstepping\t: 1\n"
            "flags\t\t: avx2 avx512f avx512_bf16\n\n"
            "processor\t: 1\nvendor_id\t: AuthenticAMD\ncpu family\t: 99\n",
            encoding="utf-8",
        )
        return str(path)

    zen4, other = cpuinfo("17"), cpuinfo("2")
    assert precision.cpu_id(zen4) == "AuthenticAMD 25/17/1"  # the first processor's
    assert precision.cpu_info(zen4) == precision.cpu_info(other)  # same name, same flags
    assert precision.cpu_id(other) != precision.cpu_id(zen4)
    assert precision.cpu_id(str(tmp_path / "none")) == ""
    real, keys = precision.cpu_id, set()
    for path in (zen4, other):
        monkeypatch.setattr(precision, "cpu_id", lambda path=path: real(path))
        keys.add(precision.machine_key())
    assert len(keys) == 2  # cached probes and speeds of one are not taken for the other


def test_measure_returns_positive_timings():
    probe = precision.measure(rounds=1, repeats=1)
    assert probe.fp32_s > 0 and probe.bf16_s >= 0
