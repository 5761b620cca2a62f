"""Training on top of an earlier adapter (`--model RUN_DIR` of an SFT run): fold, then combine.

Why fold: DPO after SFT must start from the SFT model and leave the SFT adapter exactly as it
is. The earlier adapter (A1, B1 at scaling s1) is merged into the frozen weights in memory
(W + s1 B1 A1, by peft in the weights' dtype: float32 on a CPU), so the model holds one copy of
the base, the earlier adapter cannot change (it is no parameter any more), and the new adapter
trains on top. The earlier adapter's files are only ever read.

Why combine for final/: a LoRA update is s B A, and two of them on the same layers add up to one
LoRA of rank r1 + r2: s1 [B1, (s2 / s1) B2] [A1; A2]. So final/ holds one plain peft adapter on
the original base — loadable by peft, the engine, merge and export unchanged, with no chain of
adapters to follow — whose first r1 ranks are the earlier adapter's tensors, bit for bit. The
new adapter alone is kept in final/new_adapter/ and final/stack.json notes what was stacked on
what (with the earlier adapter's SHA-256).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError, ModelError

STACK_NOTE = "stack.json"
NEW_ADAPTER_DIR = "new_adapter"
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class BaseAdapter:
    """The adapter a run trains on top of: its folder, weights' SHA-256 and peft config."""

    path: Path
    sha256: str
    config: dict[str, Any]

    def to_manifest(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "r": self.config.get("r"),
            "lora_alpha": self.config.get("lora_alpha"),
            "target_modules": self.config.get("target_modules"),
        }


def read_base_adapter(path: Path) -> BaseAdapter:
    from tunesmith.runs import sha256_file

    path = Path(path).resolve()
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable adapter config in {path}: {exc}") from None
    if not (path / WEIGHTS).is_file():
        raise ModelError(f"adapter {path} has no {WEIGHTS}")
    return BaseAdapter(path, sha256_file(path / WEIGHTS), config)


def check_stackable(base: BaseAdapter, adapter: str) -> None:
    """A ConfigError, before any model loads, when a new `adapter` cannot train on `base`."""
    cfg = base.config
    what = f"the model's adapter ({base.path})"
    problem = None
    if str(cfg.get("peft_type", "")).upper() != "LORA":
        problem = f"{what} is a {cfg.get('peft_type')} adapter, not LoRA"
    elif cfg.get("use_dora"):
        problem = f"{what} is a DoRA adapter, which cannot be stacked on"
    elif cfg.get("rank_pattern") or cfg.get("alpha_pattern") or cfg.get("modules_to_save"):
        problem = f"{what} uses rank/alpha patterns or modules_to_save, which cannot be stacked on"
    elif adapter in ("dora", "qlora"):
        problem = (
            f"adapter '{adapter}' cannot train on top of {what}: it is folded into the base "
            "weights, which a 4-bit base or a DoRA adapter cannot take"
        )
    if problem:
        raise ConfigError(
            problem,
            param="model",
            hint="train with adapter: lora (or none) on top of a LoRA run, or export the run "
            "as a merged model (tunesmith export RUN --format hf) and train on that",
        )


def fold(model: Any, base: BaseAdapter) -> Any:
    """`model` with the adapter merged into its weights in memory (the files stay as they are)."""
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(
            model, str(base.path), is_trainable=False, local_files_only=True
        )
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"could not load the adapter {base.path}: {first}") from None
    return peft_model.merge_and_unload(safe_merge=True)


def scaling(cfg: dict[str, Any]) -> float:
    r = int(cfg["r"])
    return float(cfg["lora_alpha"]) / (math.sqrt(r) if cfg.get("use_rslora") else r)


def _modules(tensors: dict[str, Any], where: Path) -> set[str]:
    names = {k.removesuffix(".lora_A.weight") for k in tensors if k.endswith(".lora_A.weight")}
    expected = {f"{m}.lora_{x}.weight" for m in names for x in "AB"}
    if set(tensors) != expected:
        extra = sorted(set(tensors) - expected)[:2]
        raise ModelError(f"adapter {where} holds more than plain LoRA weights (e.g. {extra})")
    return names


def combine(base: BaseAdapter, new_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, adapter config) of the one adapter equal to `base` plus the adapter in
    `new_dir` (see the module docstring); `base`'s tensors are copied unchanged."""
    import torch
    from safetensors.torch import load_file

    old = load_file(str(base.path / WEIGHTS))
    new = load_file(str(Path(new_dir) / WEIGHTS))
    new_cfg = json.loads((Path(new_dir) / CONFIG).read_text(encoding="utf-8"))
    mods = _modules(old, base.path)
    if _modules(new, new_dir) != mods:
        raise ConfigError(
            "the new adapter must adapt the same layers as the one it trains on top of "
            f"({base.path})",
            param="lora.target_modules",
            hint=f"set lora.target_modules to {base.config.get('target_modules')}",
        )
    s1, s2 = scaling(base.config), scaling(new_cfg)
    out: dict[str, Any] = {}
    for m in sorted(mods):
        a1, b1 = old[f"{m}.lora_A.weight"], old[f"{m}.lora_B.weight"]
        a2, b2 = new[f"{m}.lora_A.weight"], new[f"{m}.lora_B.weight"]
        b2 = b2 if s2 == s1 else b2.float() * (s2 / s1)
        out[f"{m}.lora_A.weight"] = torch.cat([a1, a2.to(a1.dtype)], dim=0).contiguous()
        out[f"{m}.lora_B.weight"] = torch.cat([b1, b2.to(b1.dtype)], dim=1).contiguous()
    cfg = dict(base.config)
    r = int(base.config["r"]) + int(new_cfg["r"])
    alpha = s1 * (math.sqrt(r) if base.config.get("use_rslora") else r)
    cfg["r"], cfg["lora_alpha"] = r, int(alpha) if float(alpha).is_integer() else alpha
    return out, cfg


def write_stacked(out_dir: Path, base: BaseAdapter, *, note: dict[str, Any] | None = None) -> None:
    """Turn `out_dir` — a saved adapter trained on top of `base` (with tokenizer files) — into
    the combined adapter: the new adapter moves to new_adapter/, the combined one takes its
    place, stack.json says what was stacked. Without an adapter in `out_dir` (full fine-tuning
    on the folded weights) only the note is written."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    info: dict[str, Any] = {"base_adapter": base.to_manifest(), **(note or {})}
    if (out_dir / WEIGHTS).is_file():
        alone = out_dir / NEW_ADAPTER_DIR
        alone.mkdir()
        for name in (WEIGHTS, CONFIG):
            shutil.move(str(out_dir / name), str(alone / name))
        tensors, cfg = combine(base, alone)
        save_file(tensors, str(out_dir / WEIGHTS), metadata={"format": "pt"})
        (out_dir / CONFIG).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        info["combined"] = (
            f"one LoRA of rank {cfg['r']} on the base model: ranks 0..{base.config['r'] - 1} "
            f"are the base adapter's tensors unchanged, the rest the new adapter "
            f"({NEW_ADAPTER_DIR}/, trained on top of the base adapter)"
        )
        info["new_adapter"] = NEW_ADAPTER_DIR
    else:
        info["combined"] = "full fine-tuning on the base weights with the base adapter merged in"
    (out_dir / STACK_NOTE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
