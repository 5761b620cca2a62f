"""What the user asked to export: a run directory, an adapter directory or a full model.

Training writes a run directory with `final/` (a peft adapter, or full fine-tuned weights) and
`manifest.json` naming the base model. Users also hand us an adapter or a plain HF directory
directly. This module turns any of those into one `ExportSource`, so the exporters never guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunesmith.errors import ModelError
from tunesmith.export.common import ExportError
from tunesmith.runs import RunDir

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class ExportSource:
    """A resolved export input. `weights_dir` is the adapter dir (kind "adapter") or the full
    HF model dir (kind "full"); `base_path` is the base model's HF dir for adapters."""

    kind: Literal["adapter", "full"]
    weights_dir: Path
    tokenizer_dir: Path
    base_path: Path | None = None
    base_name: str | None = None
    adapter_type: str | None = None  # lora | dora | qlora
    run_dir: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    checkpoint_step: int | None = None  # exporting checkpoint step-N of the run, not final/

    @property
    def display_name(self) -> str:
        """A short model name for GGUF metadata and the Modelfile."""
        root = self.run_dir or self.weights_dir
        name = root.name or "model"
        return f"{name}-step-{self.checkpoint_step}" if self.checkpoint_step is not None else name


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path.name}: {exc}", where=str(path)) from None
    if not isinstance(data, dict):
        raise ExportError(f"{path.name} is not a JSON object", where=str(path))
    return data


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def _resolve_base(name: str) -> Path:
    from tunesmith.models.registry import prepare, resolve

    try:
        return prepare(resolve(name))
    except ModelError as exc:
        raise ExportError(
            f"cannot load the base model '{name}': {exc.message}",
            hint=exc.hint or "pass --base with the base model's directory or alias",
        ) from None


def _adapter_type(adapter_cfg: dict[str, Any], manifest: dict[str, Any]) -> str:
    declared = ""
    for key in ("adapter", "technique", "method"):
        value = manifest.get(key)
        if isinstance(value, str):
            declared = value.lower()
            break
    if declared == "qlora":
        return "qlora"
    if adapter_cfg.get("use_dora") or declared == "dora":
        return "dora"
    return "lora"


def _checkpoint_source(run: RunDir, ref: str, *, base: str | Path | None) -> ExportSource:
    """A checkpoint of a run, written out once as a loadable folder (models/checkpoint.py),
    exported like the run's final/ would be."""
    from dataclasses import replace

    from tunesmith.models.registry import checkpoint_dir

    step, _ = run.resolve_checkpoint(ref)
    weights = checkpoint_dir(run, ref)
    source = _from_weights(weights, run.path, _read_json(run.manifest_path), base)
    return replace(source, checkpoint_step=step)


def resolve_source(path: str | Path, *, base: str | Path | None = None) -> ExportSource:
    """Resolve a run dir, adapter dir or HF model dir into an `ExportSource`.

    The base model of an adapter is, in order: `base` (the user's override), the run manifest's
    `base_model_path`, its `base_model` (an alias or a directory), and finally the adapter's own
    `base_model_name_or_path`.
    """
    from tunesmith.runs import checkpoint_ref

    checkpoint = checkpoint_ref(path)
    if checkpoint is not None:  # RUN@step-N, RUN@best, RUN@latest, RUN/checkpoints/step-N
        return _checkpoint_source(*checkpoint, base=base)
    root = Path(path).expanduser()
    if not root.exists():
        raise ExportError(f"no such run or model directory: {root}")
    if not root.is_dir():
        raise ExportError(
            f"{root} is not a directory",
            hint="pass a training run directory, an adapter directory or a model directory",
        )
    run_dir: Path | None = None
    manifest: dict[str, Any] = {}
    weights = root
    run = RunDir(root)
    if RunDir.is_run(root) and not run.has_final() and run.complete_checkpoints():
        status = run.status
        latest = run.complete_checkpoints()[-1][0]
        raise ExportError(
            f"run {root} has no final/ directory"
            + (f" (run status: {status})" if isinstance(status, str) else ""),
            hint=f"export one of its checkpoints: {root}@step-{latest} (or {root}@best, "
            f"{root}@latest)",
        )
    if RunDir.is_run(root) or run.has_final():
        run_dir = root
        if run.manifest_path.is_file():
            manifest = _read_json(run.manifest_path)
        weights = run.final
        if not weights.is_dir():
            status = manifest.get("status")
            raise ExportError(
                f"run {root} has no final/ directory"
                + (f" (run status: {status})" if isinstance(status, str) else ""),
                hint="export once training has finished; a run writes final/ at its end",
            )
    return _from_weights(weights, run_dir, manifest, base)


def _from_weights(
    weights: Path, run_dir: Path | None, manifest: dict[str, Any], base: str | Path | None
) -> ExportSource:
    """The source for an adapter or model folder (of the run `run_dir`, when it is one)."""
    if (weights / "adapter_config.json").is_file():
        adapter_cfg = _read_json(weights / "adapter_config.json")
        if not (weights / "adapter_model.safetensors").is_file():
            raise ExportError(
                f"adapter in {weights} has no adapter_model.safetensors",
                hint="tunesmith reads adapters only as safetensors",
            )
        base_name: str | None = None
        base_path: Path | None = None
        if base is not None:
            base_name = str(base)
        else:
            recorded = manifest.get("base_model_path")
            if isinstance(recorded, str) and (Path(recorded) / "config.json").is_file():
                base_name = manifest.get("base_model") or recorded
                base_path = Path(recorded)
            elif isinstance(manifest.get("base_model"), str):
                base_name = manifest["base_model"]
            elif isinstance(adapter_cfg.get("base_model_name_or_path"), str):
                base_name = adapter_cfg["base_model_name_or_path"]
        if base_path is None:
            if not base_name:
                raise ExportError(
                    f"cannot tell which base model the adapter in {weights} belongs to",
                    hint="pass --base with the base model's directory or alias",
                )
            base_path = _resolve_base(base_name)
        tok_dir = weights if _has_tokenizer(weights) else base_path
        return ExportSource(
            kind="adapter",
            weights_dir=weights.resolve(),
            tokenizer_dir=tok_dir.resolve(),
            base_path=base_path.resolve(),
            base_name=str(base_name) if base_name else None,
            adapter_type=_adapter_type(adapter_cfg, manifest),
            run_dir=run_dir.resolve() if run_dir else None,
            manifest=manifest,
        )
    if (weights / "config.json").is_file():
        if not _has_tokenizer(weights):
            raise ExportError(
                f"model directory {weights} has no tokenizer files",
                hint="a model is exported with the tokenizer and chat template it was trained with",
            )
        return ExportSource(
            kind="full",
            weights_dir=weights.resolve(),
            tokenizer_dir=weights.resolve(),
            base_name=manifest.get("base_model")
            if isinstance(manifest.get("base_model"), str)
            else None,
            run_dir=run_dir.resolve() if run_dir else None,
            manifest=manifest,
        )
    raise ExportError(
        f"{weights} holds neither an adapter (adapter_config.json) nor a model (config.json)",
        hint="pass a training run directory, an adapter directory or a model directory",
    )
