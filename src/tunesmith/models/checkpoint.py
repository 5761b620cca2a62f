"""A training checkpoint used as a model (`RUN@step-N`, `RUN@best`, `RUN@latest`,
`RUN/checkpoints/step-N`; the server's `ft:...:ckpt-step-N` resolves to the same).

A checkpoint holds only what trained (`trainable.safetensors`): the adapter's weights for
LoRA/DoRA/QLoRA, every weight for full fine-tuning. Used as a model it means base model + those
weights, so the first use rebuilds exactly that — the base from the run's manifest, for an
adapter the same peft adapter the run trained (from its config.yaml) — loads the checkpoint
into it and writes the result once as a plain folder, the same shape as `final/` (a peft
adapter, or a full model, with tokenizer and chat template). From then on every command that
takes a model (generate, chat, eval, compare, export, the server) loads that folder like any
other; nothing downstream knows it came from a checkpoint. Only safetensors are read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tunesmith.errors import ModelError
from tunesmith.io import atomic_dir
from tunesmith.models.adapters import lora_config
from tunesmith.runs import CHECKPOINT_WEIGHTS, RunDir

MARKER = "tunesmith-checkpoint.json"  # written last inside the folder: what it was made from


def is_written(out: Path) -> bool:
    return (Path(out) / MARKER).is_file()


def cache_name(checkpoint: Path, step: int) -> str:
    """A folder name for the copy kept outside a run directory that cannot be written to:
    changes whenever the checkpoint's weights file does."""
    weights = Path(checkpoint) / CHECKPOINT_WEIGHTS
    stat = weights.stat()
    key = f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return f"step-{step}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def run_spec(run: RunDir) -> Any:
    """The run's resolved spec (what trained); a ModelError when config.yaml cannot say."""
    from tunesmith.config import ResolvedSpec, load_spec
    from tunesmith.errors import TunesmithError

    if not run.config.is_file():
        raise ModelError(f"run {run.path} has no {run.config.name}: its checkpoints cannot be used")
    try:
        return load_spec(run.config, cls=ResolvedSpec)
    except TunesmithError as exc:
        raise ModelError(
            f"cannot read how run {run.path} trained: {exc}",
            hint="a checkpoint is used with the adapter settings of its run's config.yaml",
        ) from None


def _weights(checkpoint: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    path = Path(checkpoint) / CHECKPOINT_WEIGHTS
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # truncated or garbage file: safetensors raises its own errors
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(
            f"cannot read the checkpoint's weights: {reason}", where=str(path)
        ) from None
    if not tensors:
        raise ModelError("the checkpoint holds no weights", where=str(path))
    # the loop checkpoints the objective's loss module, which holds the model as `.model`
    if all(k.startswith("model.") for k in tensors):
        tensors = {k.removeprefix("model."): v for k, v in tensors.items()}
    return tensors


def write_model(run: RunDir, step: int, checkpoint: Path, base_dir: Path, out: Path) -> Path:
    """Write checkpoint `step` of `run` as a loadable folder at `out` (atomically); `base_dir`
    is the base model's HF directory. Returns `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = run_spec(run)
    weights = _weights(checkpoint)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(base_dir), dtype=torch.float32, trust_remote_code=False, use_safetensors=True
        )
        tokenizer = AutoTokenizer.from_pretrained(str(base_dir), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot load the run's base model from {base_dir}: {reason}") from None
    stacked = (run.manifest().get("base_adapter") or {}).get("path")
    base_adapter = None
    if stacked:  # the run trained on top of an adapter: rebuild that start (models/stacking.py)
        from tunesmith.models.stacking import fold, read_base_adapter

        base_adapter = read_base_adapter(Path(stacked))
        model = fold(model, base_adapter)
    if spec.adapter != "none":
        import warnings

        from peft import get_peft_model

        try:
            with warnings.catch_warnings():  # peft asks transformers for a renamed property
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
                model = get_peft_model(model, lora_config(spec))
        except ValueError as exc:
            raise ModelError(
                f"cannot rebuild the adapter run {run.path} trained: {exc}".splitlines()[0],
                where=str(run.config),
            ) from None
    hint = "was config.yaml edited after training? the lora settings must be the run's own"
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # a shape that differs (another lora.r, another base model)
        first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
        raise ModelError(
            f"checkpoint step-{step} does not fit the model its run's config.yaml describes: "
            f"{first}",
            where=str(Path(checkpoint) / CHECKPOINT_WEIGHTS),
            hint=hint,
        ) from None
    unexpected = list(result.unexpected_keys)
    trained = (
        {n for n, _ in model.named_parameters() if "lora_" in n}
        if spec.adapter != "none"
        else set()
    )
    missed = sorted(trained & set(result.missing_keys))
    if unexpected or missed:
        raise ModelError(
            f"checkpoint step-{step} does not fit the adapter its run's config.yaml describes "
            f"(e.g. {(unexpected or missed)[:2]})",
            where=str(Path(checkpoint) / CHECKPOINT_WEIGHTS),
            hint=hint,
        )
    if spec.adapter == "none" and getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        with atomic_dir(out) as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True)
            if base_adapter is not None:  # one adapter on the base, as final/ is
                from tunesmith.models.stacking import write_stacked

                write_stacked(tmp, base_adapter)
            tokenizer.save_pretrained(str(tmp))
            template = getattr(tokenizer, "chat_template", None)
            if isinstance(template, str) and not (tmp / "chat_template.jinja").exists():
                (tmp / "chat_template.jinja").write_text(template, encoding="utf-8")
            made = {"run": str(run.path.resolve()), "step": step, "adapter": spec.adapter,
                    "base_model": str(base_dir)}  # fmt: skip
            (tmp / MARKER).write_text(json.dumps(made, indent=2) + "\n", encoding="utf-8")
    except FileExistsError:  # another process wrote it first: the same weights
        pass
    return out
