"""Which precision the frozen base's matrix products run in when training on a CPU.

Why measure: CPUs with bf16 matrix units (Intel AMX, AVX-512-BF16) multiply bf16 matrices
4-5x faster than float32 ones at training shapes (2 cores, torch 2.13: 1,165 vs 245 GFLOP/s
for 1024^2), while on AVX2-only CPUs bf16 is emulated and several times *slower*. CPU flags
say what exists, not what torch's kernels make of it on this build, so `dtype: auto` times one
float32 and one bf16 product of a training shape (a fraction of a second) and uses bf16 only
where it is clearly faster (`FASTER_BY`). The result is cached per machine and torch version
under `$TUNESMITH_HOME/cache/precision.json`, so later runs do not pay for it again.

What bf16 changes (train/fast_lora.py): only the frozen base weights' products, forward and
the gradient towards the input, run in bf16 (fp32 accumulation inside the kernel, results
back to float32). LoRA weights, their gradients, the optimizer state, norms, attention and the
loss stay float32, so quality holds (bench/train_throughput.py reports held-out loss against
the float32 run). A model narrower than `MIN_WIDTH` stays float32 without a probe: its
products are too small for the matrix units to pay for the casts.

`dtype: float32` (or fp32) forces today's float32 path; `dtype: bf16` on a CPU forces the bf16
base products without a probe.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FASTER_BY = 1.5  # bf16 is used when its product is at least this much faster than float32
MIN_WIDTH = 256  # hidden sizes below this stay float32 (tiny products: casts dominate)
PROBE_SHAPE = (1024, 1024, 1024)  # rows x in x out: one packed 1k-token row through a layer
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512f", "avx2")


@dataclass
class Probe:
    """One measurement: seconds of the best of a few products of PROBE_SHAPE."""

    fp32_s: float
    bf16_s: float

    @property
    def speedup(self) -> float:
        return self.fp32_s / self.bf16_s if self.bf16_s > 0 else 0.0

    def gflops(self, seconds: float) -> float:
        m, k, n = PROBE_SHAPE
        return 2.0 * m * k * n / seconds / 1e9 if seconds > 0 else 0.0


@dataclass
class Choice:
    """What the frozen base computes in, and why (printed and written to the manifest)."""

    compute: str  # "bfloat16" | "float32"
    reason: str
    cpu: str = ""
    flags: list[str] = field(default_factory=list)
    fp32_gflops: float | None = None
    bf16_gflops: float | None = None
    cached: bool = False

    @property
    def bf16(self) -> bool:
        return self.compute == "bfloat16"

    def to_manifest(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        speed = ""
        if self.fp32_gflops and self.bf16_gflops:
            speed = (
                f" (matmul {self.fp32_gflops:.0f} GFLOP/s float32, {self.bf16_gflops:.0f} "
                f"bf16{', cached probe' if self.cached else ''})"
            )
        return f"frozen base products in {self.compute}: {self.reason}{speed}"


def cpu_info(path: str = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """(CPU model name, the bf16-related flags it has) from /proc/cpuinfo; ("", []) elsewhere."""
    import platform

    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), []
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model or platform.machine(), [f for f in BF16_FLAGS if f in flags]


def cpu_id(path: str = "/proc/cpuinfo") -> str:
    """Which CPU this is beyond its name: vendor, family, model and stepping ("AuthenticAMD
    25/17/1"). Two machines can share a model name and flags and still differ 2x in bf16 speed
    (seen here: two "AMD EPYC" with avx512_bf16, 374 vs 750 GFLOP/s), and workers can share one
    home, so cached measurements are keyed by this too. "" where there is no /proc/cpuinfo."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("vendor_id", "cpu family", "model", "stepping") and key not in found:
            found[key] = value.strip()
        if not line.strip() and found:  # the first processor is enough
            break
    numbers = "/".join(found.get(k, "?") for k in ("cpu family", "model", "stepping"))
    return f"{found.get('vendor_id', '?')} {numbers}" if found else ""


def decide(probe: Probe, faster_by: float = FASTER_BY) -> bool:
    """Whether bf16 is clearly faster: at least `faster_by` times the float32 speed."""
    return probe.bf16_s > 0 and probe.bf16_s * faster_by <= probe.fp32_s


def measure(rounds: int = 3, repeats: int = 3) -> Probe:
    """Best-of-`rounds` time of `repeats` products of PROBE_SHAPE in each dtype, alternating
    the two so that a burst of load elsewhere hurts both alike (about 0.2 s with AMX)."""
    import torch
    import torch.nn.functional as F

    m, k, n = PROBE_SHAPE
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen)
    w16 = w.to(torch.bfloat16)

    def fp32() -> None:
        F.linear(x, w)

    def bf16() -> None:  # as the training path does it: cast in, bf16 product, float32 out
        F.linear(x.to(torch.bfloat16), w16).float()

    best = {"fp32": float("inf"), "bf16": float("inf")}
    fns: dict[str, Callable[[], None]] = {"fp32": fp32, "bf16": bf16}
    try:
        for fn in fns.values():
            fn()  # warm-up: kernel selection, first-touch pages
        for _ in range(rounds):
            for name, fn in fns.items():
                start = time.perf_counter()
                for _ in range(repeats):
                    fn()
                best[name] = min(best[name], (time.perf_counter() - start) / repeats)
    except (RuntimeError, NotImplementedError):  # no bf16 kernel on this build
        return Probe(fp32_s=best["fp32"] if best["fp32"] < float("inf") else 1.0, bf16_s=0.0)
    return Probe(fp32_s=best["fp32"], bf16_s=best["bf16"])


def _cache_file() -> Path:
    from tunesmith.models.registry import tunesmith_home

    return tunesmith_home() / "cache" / "precision.json"


def machine_key() -> str:
    """What the measurement depends on: CPU model, identity and flags, torch version, thread
    count."""
    import torch

    cpu, flags = cpu_info()
    text = (
        f"{cpu}|{cpu_id()}|{','.join(flags)}|torch {torch.__version__}"
        f"|threads {torch.get_num_threads()}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_probe(measure_fn: Callable[[], Probe] = measure) -> tuple[Probe, bool]:
    """(probe, whether it came from the cache). A cache that cannot be read or written is
    only a missed shortcut: the probe runs again."""
    from tunesmith.io import atomic_write_json

    path, key = _cache_file(), machine_key()
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        hit = entries.get(key) if isinstance(entries, dict) else None
        if isinstance(hit, dict):
            return Probe(fp32_s=float(hit["fp32_s"]), bf16_s=float(hit["bf16_s"])), True
    except (OSError, ValueError, KeyError, TypeError):
        entries = {}
    probe = measure_fn()
    if not isinstance(entries, dict):
        entries = {}
    entries[key] = {"fp32_s": probe.fp32_s, "bf16_s": probe.bf16_s}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, entries, indent=1)
    except OSError:
        pass
    return probe, False


def choose(
    dtype: str | None,
    device: Any,
    *,
    adapter: str,
    hidden: int,
    fused: bool = True,
    method: str = "supervised",
    measure_fn: Callable[[], Probe] | None = None,
) -> Choice:
    """The precision of the frozen base's products for a run with `dtype` on `device`.

    bf16 applies to plain LoRA on the fused path (train/fast_lora.py) on a CPU; everything else
    keeps what train/setup.dtypes gives it (float32 on a CPU). `dtype` auto measures (cached),
    bf16 forces, float32 forbids. auto takes bf16 for supervised runs only: DPO, ORPO and GRPO
    compare the policy's log-probs with no-grad passes (reference, rollout) that run float32,
    and bf16 rounding in one of the two would show up as a spurious difference."""
    cpu, flags = cpu_info()

    def made(compute: str, reason: str, probe: Probe | None = None, cached: bool = False) -> Choice:
        choice = Choice(compute=compute, reason=reason, cpu=cpu, flags=flags, cached=cached)
        if probe is not None:
            choice.fp32_gflops = round(probe.gflops(probe.fp32_s), 1)
            choice.bf16_gflops = round(probe.gflops(probe.bf16_s), 1) if probe.bf16_s else None
        return choice

    requested = str(dtype or "auto").lower()
    if getattr(device, "type", str(device)) != "cpu":
        return made("float32", "not a CPU run (GPUs use autocast)")
    if adapter != "lora" or not fused:
        return made("float32", "the bf16 base path is for plain LoRA on the fused path")
    if requested in ("float32", "fp32"):
        return made("float32", "dtype float32 asked for")
    if requested in ("bf16", "bfloat16"):
        return made("bfloat16", "dtype bf16 asked for")
    if requested != "auto":
        return made("float32", f"dtype {requested} is not a CPU training precision")
    if method != "supervised":  # their losses compare log-probs with no-grad float32 passes
        return made(
            "float32", f"auto keeps {method} in float32 (its no-grad log-probs are float32)"
        )
    if hidden < MIN_WIDTH:
        return made("float32", f"model width {hidden} < {MIN_WIDTH}: too small for bf16 to pay")
    if os.environ.get("TUNESMITH_NO_PRECISION_PROBE"):
        return made("float32", "probe disabled (TUNESMITH_NO_PRECISION_PROBE)")
    probe, cached = cached_probe(measure_fn or measure)
    if decide(probe):
        return made("bfloat16", f"measured {probe.speedup:.1f}x faster", probe, cached)
    why = f"measured only {probe.speedup:.1f}x" if probe.bf16_s else "no bf16 kernel"
    return made("float32", f"bf16 {why} (needs {FASTER_BY}x)", probe, cached)
