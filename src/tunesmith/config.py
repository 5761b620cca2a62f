"""Run specs: what a training run is, as a strict pydantic model.

Why strict: a typo in a config (`learnig_rate: 1e-3`) that is silently ignored costs a user a
whole run. Every block forbids unknown keys and the error names the file, the line and the
closest valid key. A spec comes from YAML, a dict or the CLI, plus dotted `key=value`
overrides (`lora.r=8`, `data.packing=false`). Values written `auto` are resolved once the data
and hardware are known into a `ResolvedSpec` (see `tunesmith.auto` for the rules); the
resolved spec is what gets printed and written to `RUN_DIR/config.yaml`, so a run directory
always says exactly what ran.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tunesmith.errors import ConfigError

Auto = Literal["auto"]
DEFAULT_MODEL = "smollm2-135m-instruct"
# The one default sequence length: training uses it, and `data validate` predicts with it.
DEFAULT_MAX_SEQ_LEN = 1024


def _bounded_or_auto(value: Any, low: float, *, strict: bool = False) -> Any:
    """The one check of a number that may also be `auto`: at least `low` (above it: `strict`)."""
    if isinstance(value, int | float) and not (value > low if strict else value >= low):
        text = f"> {low:g}" if strict else ("at least 1" if low == 1 else f">= {low:g}")
        raise ValueError(f"must be {text} (or auto)")
    return value


class _Strict(BaseModel):
    # allow_inf_nan=False: `learning_rate: .inf` or `warmup: nan` is a typo, never a setting.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LoraSpec(_Strict):
    r: int = Field(16, gt=0, description="LoRA rank")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = Field(
        "all-linear", description="'all-linear' (every linear layer but the LM head) or names"
    )


class DataSpec(_Strict):
    train: Path | None = None
    validation: Path | None = None
    validation_fraction: float | None = Field(None, gt=0.0, lt=1.0)
    max_seq_len: int = Field(DEFAULT_MAX_SEQ_LEN, ge=8)
    packing: bool = True
    train_on: Literal["assistant", "all", "last"] = "assistant"
    truncate: bool = False
    format: str | None = None
    mix: list[Any] = Field(default_factory=list)
    dedupe: bool = Field(
        False, description="drop exact repeats of a row (each dropped line is listed)"
    )


class EvalSpec(_Strict):
    """Validation cadence during training and the base-vs-tuned comparison at its end."""

    every_steps: int | Auto = "auto"
    compare_base: bool = True
    metrics: list[str] | str | None = Field(
        None, description="e.g. [exact_match, json_schema]; default: chosen from the references"
    )
    main_metric: str | None = None
    json_schema: str | None = Field(None, description="JSON schema file for json_schema")
    reference: str | None = Field(None, description="forgetting set: bundled, sharegpt or a file")
    forgetting_threshold: float | None = Field(None, ge=0.0)
    long_prompt: str | None = Field(None, description="the long prompt used with the base model")
    max_tokens: int | Auto = Field(
        "auto",
        description="held-out tokens each in-run validation scores (a seeded sample; auto: "
        "<= 16384 and ~15 % of the training compute); the comparison scores them all",
    )

    @field_validator("max_tokens")
    @classmethod
    def _positive_tokens(cls, value: int | str) -> int | str:
        return _bounded_or_auto(value, 1)


class EarlyStoppingSpec(_Strict):
    """Stop when validation stops improving, and keep the best weights. `auto`: on when there
    is held-out data and the run trains an adapter (tunesmith.auto)."""

    enabled: bool | Auto = "auto"
    patience: int = Field(3, ge=1, description="evaluations without improvement before stopping")
    min_delta: float | Auto = Field(
        "auto",
        description="the improvement that counts (validation loss); auto: 1 % of the best loss",
    )

    @field_validator("min_delta")
    @classmethod
    def _non_negative(cls, value: float | str) -> float | str:
        return _bounded_or_auto(value, 0.0)


class DistributedSpec(_Strict):
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"


class SupervisedMethod(_Strict):
    """Supervised fine-tuning on conversations: loss on the assistant tokens."""

    type: Literal["supervised"] = "supervised"


DEFAULT_DPO_BETA = 0.1


def _beta(value: Any) -> Any:
    """`auto` means the usual 0.1 (what DPO's paper and trl start from)."""
    return DEFAULT_DPO_BETA if value == "auto" else value


class DpoOptions(_Strict):
    """DPO's knobs. `beta` scales the implicit reward (beta x log-ratio to the reference): small
    values let the policy move further from the reference. `label_smoothing` assumes that share
    of pairs is mislabelled (conservative DPO); `loss: ipo` is IPO's squared loss, which does
    not push margins to infinity on separable data."""

    beta: float = Field(DEFAULT_DPO_BETA, gt=0.0, description="0.1 when auto")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    cache_reference: bool = Field(
        True, description="keep the reference log-probs on disk ($TUNESMITH_HOME/cache)"
    )

    @field_validator("beta", mode="before")
    @classmethod
    def _auto_beta(cls, value: Any) -> Any:
        return _beta(value)


class DpoMethod(_Strict):
    """Direct preference optimisation on chosen/rejected pairs (train/objectives/dpo.py)."""

    type: Literal["dpo"]
    dpo: DpoOptions = Field(default_factory=DpoOptions)


class OrpoOptions(_Strict):
    """ORPO's weight of the odds-ratio term added to the SFT loss on the chosen answer."""

    beta: float = Field(DEFAULT_DPO_BETA, gt=0.0, description="0.1 when auto")

    @field_validator("beta", mode="before")
    @classmethod
    def _auto_beta(cls, value: Any) -> Any:
        return _beta(value)


class OrpoMethod(_Strict):
    """Odds-ratio preference optimisation: reference-free (train/objectives/orpo.py). Not an
    OpenAI method; ours is an extension of the same `method` shape."""

    type: Literal["orpo"]
    orpo: OrpoOptions = Field(default_factory=OrpoOptions)


DEFAULT_GROUP_SIZE = 4


class ReinforcementOptions(_Strict):
    """GRPO against a grader (train/objectives/grpo.py). For each prompt the policy samples
    `samples_per_prompt` completions; the grader scores them; each completion's advantage is
    its reward minus the group's mean (divided by the group's std unless `scale_rewards` is
    off); the loss is the clipped policy-gradient objective, plus `kl_beta` x KL to the
    reference (0 by default, as current practice: no reference pass at all).

    `grader` is an OpenAI grader object (string_check, text_similarity, score_model,
    label_model, python, multi) or one of ours (json_schema, numeric); it is checked with
    `tunesmith.graders.validate_grader` before anything is loaded. A python grader also needs
    `allow_python: true` (it runs user code, in a sandboxed process).

    `eval_samples` = 1 scores one greedy completion per held-out prompt; more are sampled at
    `temperature` (seeded alike at every validation) and averaged."""

    grader: dict[str, Any] = Field(description="the grader object that scores each completion")
    samples_per_prompt: int = Field(
        DEFAULT_GROUP_SIZE, ge=2, le=64, description="completions sampled per prompt (K)"
    )
    max_new_tokens: int = Field(64, ge=1, le=4096, description="cap on a sampled completion")
    temperature: float = Field(1.0, gt=0.0, le=4.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    kl_beta: float = Field(0.0, ge=0.0, description="weight of the KL to the reference")
    clip_epsilon: float = Field(0.2, gt=0.0, lt=1.0, description="PPO-style ratio clip")
    scale_rewards: bool = Field(True, description="divide advantages by the group's std")
    eval_samples: int = Field(
        1, ge=1, le=64, description="completions per held-out prompt when scoring the model"
    )
    allow_python: bool = Field(
        False,
        description="let a python grader run (user code, sandboxed); a server sets this from "
        "its operator's setting only",
    )

    @field_validator("samples_per_prompt", mode="before")
    @classmethod
    def _auto_group(cls, value: Any) -> Any:
        return DEFAULT_GROUP_SIZE if value == "auto" else value


class ReinforcementMethod(_Strict):
    """Reinforcement fine-tuning against graders: GRPO on prompts whose extra fields are the
    grader's `item` (OpenAI's reinforcement fine-tuning data shape)."""

    type: Literal["reinforcement"]
    reinforcement: ReinforcementOptions


# Shaped like OpenAI's fine-tuning `method`: {type: supervised | dpo | reinforcement, ...}.
Method = Annotated[
    SupervisedMethod | DpoMethod | OrpoMethod | ReinforcementMethod, Field(discriminator="type")
]
# Short spellings accepted for `method:` (and the `sft` older run directories wrote).
METHOD_NAMES = {
    "sft": "supervised",
    "supervised": "supervised",
    "dpo": "dpo",
    "orpo": "orpo",
    "reinforcement": "reinforcement",
    "rft": "reinforcement",
    "grpo": "reinforcement",
}
# The methods that train on preference pairs (chosen / rejected answers), not conversations.
PREFERENCE_METHODS = ("dpo", "orpo")
# The methods the spec accepts but this version cannot train yet, and why. One table for every
# layer that has to say so: training refuses them (train/objectives), data validation says
# which methods a file can feed (data/methods.py), the server will refuse such jobs.
METHODS_NOT_YET: dict[str, str] = {}


class RunSpec(_Strict):
    """A training run as the user wrote it (values may be `auto`)."""

    model: str = DEFAULT_MODEL
    method: Method = Field(default_factory=SupervisedMethod)
    adapter: Literal["lora", "qlora", "dora", "none"] = "lora"
    lora: LoraSpec = Field(default_factory=LoraSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    epochs: int | Auto = "auto"
    batch_size: int | Auto = "auto"
    grad_accum: int | Auto = "auto"
    learning_rate: float | Auto = "auto"
    lr_multiplier: float = Field(1.0, gt=0.0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup: float = Field(0.03, ge=0.0, description="fraction of steps if < 1, else steps")
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float | None = Field(1.0, ge=0.0, description="0 or null disables clipping")
    # numpy's seed range: torch, numpy and python all accept it (10**26 would fail mid-setup)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    max_steps: int | None = Field(None, ge=1)
    time_budget: float | None = Field(
        None,
        description="seconds of training (or 5m, 90s, 1h30m): the steps are fitted to it from "
        "the measured step time, and the run says what it cut",
    )
    log_every_steps: int = Field(1, ge=1)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    save_every_steps: int | Auto = "auto"
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept (plus the best)")
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)
    output_dir: Path | None = None
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)
    gradient_checkpointing: bool = False
    compile: bool = False
    fused_lora: bool = Field(
        True, description="LoRA layers as one fused autograd function (train/fast_lora.py)"
    )
    device: str = "auto"
    dtype: str = "auto"

    @field_validator("method", mode="before")
    @classmethod
    def _method_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in METHOD_NAMES:
                raise ValueError(
                    f"unknown method {value!r}; use one of supervised, dpo, orpo, reinforcement"
                )
            return {"type": METHOD_NAMES[value]}
        return value

    @field_validator("time_budget", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @field_validator("epochs", "batch_size", "grad_accum", "save_every_steps")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        return _bounded_or_auto(value, 1)

    @field_validator("learning_rate")
    @classmethod
    def _positive_lr(cls, value: float | str) -> float | str:
        return _bounded_or_auto(value, 0.0, strict=True)


class ResolvedSpec(RunSpec):
    """A spec with every `auto` replaced by a concrete value; `auto_notes` says why each was
    chosen. This is what `RUN_DIR/config.yaml` holds and what `--resume` reads back."""

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    grad_accum: int = Field(ge=1)
    learning_rate: float = Field(gt=0.0)
    save_every_steps: int = Field(ge=1)
    eval_every_steps: int | None = None
    total_steps: int = Field(ge=1)
    world_size: int = 1
    auto_notes: dict[str, str] = Field(default_factory=dict)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(min|sec|h|m|s)?", re.IGNORECASE)


def parse_duration(value: Any) -> float:
    """Seconds from `300`, `"300s"`, `"5m"`, `"1h30m"`, `"2.5min"`; a ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("a duration like 5m, 90s or 1h30m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif not isinstance(value, str):
        raise ValueError("a duration like 5m, 90s or 1h30m")
    else:
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        if not text:
            raise ValueError("a duration like 5m, 90s or 1h30m")
        while pos < len(text):
            m = _DURATION.match(text, pos)
            if m is None or m.end() == pos:
                raise ValueError(f"{value!r} is not a duration like 5m, 90s or 1h30m")
            unit = (m.group(2) or "s").lower()
            seconds += float(m.group(1)) * {"h": 3600, "m": 60, "min": 60}.get(unit, 1)
            pos = m.end()
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("must be a positive duration like 5m, 90s or 1h30m")
    return seconds


# ---------------------------------------------------------------------------------------------
# Loading: YAML / dict + overrides, with errors that point at the line and suggest a key
# ---------------------------------------------------------------------------------------------


def load_spec(
    spec: RunSpec | dict[str, Any] | str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    cls: type[RunSpec] = RunSpec,
) -> RunSpec:
    """Build a validated spec from a `RunSpec`, a dict or a YAML file, then apply overrides."""
    source = "config"
    lines: dict[tuple[str, ...], int] = {}
    if spec is None:
        data: dict[str, Any] = {}
    elif isinstance(spec, RunSpec):
        data = spec.model_dump(mode="json", exclude_unset=True)
    elif isinstance(spec, dict):
        data = dict(spec)
    else:
        path = Path(spec)
        source = str(path)
        data, lines = read_yaml(path)
    for text in overrides or []:
        _apply_override(data, text, cls)
    return validate_spec(data, source=source, lines=lines, cls=cls)


def validate_spec(
    data: dict[str, Any],
    *,
    source: str = "config",
    lines: dict[tuple[str, ...], int] | None = None,
    cls: type[RunSpec] = RunSpec,
) -> RunSpec:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, source, lines or {}, cls) from None


# A run spec has about a hundred values. Aliases (`*name`) repeat an anchored block without
# copying it, so a few lines can stand for billions of values (a "YAML bomb"): every walk over
# the data (key lines, validation, an error quoting the value) would expand them.
MAX_YAML_VALUES = 10_000
MAX_CONFIG_BYTES = 4 << 20


def read_yaml_text(path: Path, what: str = "config file") -> str:
    """The text of a YAML file, or a ConfigError naming it: missing, a directory, unreadable,
    too big, UTF-16 or not UTF-8."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory, not a YAML file")
    if not path.exists():
        raise ConfigError(f"{what} not found: {path}")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{what} is {size >> 20} MiB; a run spec is a few KB of YAML", where=str(path)
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror or exc}", where=str(path)) from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw[:4096]:
        raise ConfigError(
            f"{what} is UTF-16 encoded (or binary), not UTF-8 text",
            where=str(path),
            hint="save it as UTF-8",
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = 1 + raw.count(b"\n", 0, exc.start)
        raise ConfigError(
            f"{what} is not valid UTF-8 (byte {exc.start})",
            where=f"{path}:{line}",
            hint="save it as UTF-8",
        ) from None


def safe_yaml(text: str, where: str) -> tuple[Any, Any]:
    """(data, composed node tree) of YAML text: no code (safe_load), and no aliases that expand
    beyond MAX_YAML_VALUES values or refer to themselves (ConfigError at `where`)."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _check_expansion(node, where)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {_short(problem)}", where=f"{where}{line}") from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", where=where) from None
    return data, node


def _check_expansion(root: Any, where: str) -> None:
    """Count the values of the tree with every alias expanded, without expanding anything:
    each node's expanded size once (memoised), children before parents, no recursion."""
    sizes: dict[int, int] = {}
    ancestors: set[int] = set()
    aliased = False
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        kids = _children(node)
        if children_done:
            ancestors.discard(key)
            sizes[key] = 1 + sum(sizes[id(k)] for k in kids)
            if sizes[key] > MAX_YAML_VALUES:
                what = "the YAML's aliases (*name) expand to" if aliased else "the YAML holds"
                raise ConfigError(
                    f"{what} more than {MAX_YAML_VALUES} values; a run spec needs a few "
                    "hundred at most",
                    where=where,
                    hint="write the values out instead of repeating anchored blocks"
                    if aliased
                    else None,
                )
            continue
        if key in sizes:
            aliased = True  # a node met a second time: an alias
            continue
        if key in ancestors:
            raise ConfigError("a YAML alias (*name) refers to the block that holds it", where=where)
        ancestors.add(key)
        stack.append((node, True))
        for k in kids:
            if id(k) in sizes:
                aliased = True
            else:
                stack.append((k, False))


def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """A YAML config file as (mapping, {dotted key path: 1-based line}); ConfigErrors name the
    file (and line) for every way it can be unusable."""
    text = read_yaml_text(path)
    data, node = safe_yaml(text, str(path))
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError("a config file must be a mapping of keys to values", where=str(path))
    lines: dict[tuple[str, ...], int] = {}
    _key_lines(node, (), lines)
    return data, lines


def _key_lines(node: Any, prefix: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    """Map every dotted key path in a composed YAML tree to its 1-based line."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            out[key] = key_node.start_mark.line + 1
            _key_lines(value_node, key, out)


def _apply_override(data: dict[str, Any], text: str, cls: type[RunSpec]) -> None:
    if "=" not in text:
        raise ConfigError(
            f"override '{text}' is not key=value", hint="for example: lora.r=8 or epochs=2"
        )
    key, _, raw = text.partition("=")
    parts = key.strip().split(".")
    _check_path(parts, cls, f"override '{text}'")
    try:
        value = safe_yaml(raw, f"override '{_short(text)}'")[0] if raw.strip() else None
    except ConfigError as exc:
        if "alias" in exc.message or "nested" in exc.message:
            raise
        value = raw  # not YAML: the text itself
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if depth == 0 and part == "method" and not isinstance(child, dict):
            # `method: dpo` (a name) or no method yet: `method.dpo.beta=0.2` keeps/implies dpo
            name = child if isinstance(child, str) else parts[1]
            child = {"type": METHOD_NAMES.get(name, name)} if name in METHOD_NAMES else {}
            node[part] = child
        elif not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _block(annotation: Any, key: str | None) -> type[BaseModel] | None:
    """The block a field holds: its model class; for a union of blocks (`method`), the member
    that has `key` (else the first member), so `method.dpo.beta=0.2` is checked as DPO's."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    import typing

    members = [
        a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)
    ]
    if not members:
        return None
    return next((m for m in members if key in m.model_fields), members[0])


def _fields_at(cls: type[BaseModel], parts: list[str]) -> tuple[type[BaseModel] | None, str]:
    """The model class that holds the last key in `parts` (None when it is not a block)."""
    model: type[BaseModel] | None = cls
    for i, part in enumerate(parts[:-1]):
        if model is None or part not in model.model_fields:
            return None, part
        model = _block(model.model_fields[part].annotation, parts[i + 1])
    return model, parts[-1]


def _check_path(parts: list[str], cls: type[RunSpec], what: str) -> None:
    prefix: list[str] = []
    model: type[BaseModel] | None = cls
    for i, part in enumerate(parts):
        if model is None:
            raise ConfigError(f"{what}: '{'.'.join(prefix)}' has no sub-keys")
        if part not in model.model_fields:
            dotted = ".".join([*prefix, part])
            raise ConfigError(f"{what}: unknown key '{dotted}'", hint=_suggest(part, model, prefix))
        nxt = parts[i + 1] if i + 1 < len(parts) else None
        model = _block(model.model_fields[part].annotation, nxt)
        prefix.append(part)


# Names other tools (peft, trl, axolotl, HF TrainingArguments) use for our keys.
_ALIASES = {
    "rank": "r",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "target": "target_modules",
    "lr": "learning_rate",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "micro_batch_size": "batch_size",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "max_length": "max_seq_len",
    "sequence_len": "max_seq_len",
    "max_seq_length": "max_seq_len",
    "lr_scheduler_type": "scheduler",
    "lr_scheduler": "scheduler",
    "warmup_ratio": "warmup",
    "warmup_steps": "warmup",
    "base_model": "model",
    "model_name_or_path": "model",
    "output": "output_dir",
    "eval_steps": "every_steps",
    "save_steps": "save_every_steps",
    "sample_packing": "packing",
    "method": "method",
}


def _suggest(key: str, model: type[BaseModel], prefix: list[str]) -> str:
    """'did you mean ...': a known alias first (here, then in a nested block), then the
    closest spelling (here, then in a nested block), else the list of valid keys."""
    names = [n for n in model.model_fields if n not in ("auto_notes",)]
    blocks = {
        n: info.annotation
        for n, info in model.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }
    alias = _ALIASES.get(key)
    found: list[str] | None = None
    if alias in names:
        found = [alias]
    for name, sub in blocks.items():
        if found is None and alias in sub.model_fields:
            found = [name, alias]
    if found is None:
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
        found = close[:1] or None
    for name, sub in blocks.items():
        inner = difflib.get_close_matches(key, list(sub.model_fields), n=1, cutoff=0.8)
        if found is None and inner:
            found = [name, inner[0]]
    if found:
        return f"did you mean '{'.'.join([*prefix, *found])}'?"
    where = f" in '{'.'.join(prefix)}'" if prefix else ""
    return f"valid keys{where}: {', '.join(names)}"


_UNION_TAGS = {"int", "float", "str", "bool", "path", "none"}
_METHOD_TAGS = {"supervised", "dpo", "orpo", "reinforcement"}
_UNION_PREFIXES = ("literal[", "list[", "function-", "lax-or-strict", "constrained-")


def _short(value: Any, limit: int = 120) -> str:
    """A bounded repr for quoting a value in an error: nested or huge values (an expanded YAML
    alias, a pasted document) are abbreviated, never rendered whole."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 6, 6
    r.maxstring, r.maxother, r.maxlong = limit, limit, 40
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _config_error(
    exc: ValidationError, source: str, lines: dict[tuple[str, ...], int], cls: type[RunSpec]
) -> ConfigError:
    """Turn pydantic's errors into one message: every problem with its line and a hint."""
    problems: list[str] = []
    hint: str | None = None
    first_line: int | None = None
    param: str | None = None
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
        # pydantic reports union members as extra path parts ("int", "literal['auto']").
        loc = [p for p in loc if p not in _UNION_TAGS and not p.startswith(_UNION_PREFIXES)]
        if loc[:1] == ["method"] and len(loc) > 1 and loc[1] in _METHOD_TAGS:
            del loc[1]  # the discriminated union's member name
        dotted = ".".join(loc) or "(top level)"
        param = param or (dotted if loc else None)
        line = lines.get(tuple(loc))
        if line is not None and first_line is None:
            first_line = line
        at = f" (line {line})" if line is not None else ""
        if err["type"] == "extra_forbidden":
            model, key = _fields_at(cls, loc)
            if hint is None and model is not None:
                hint = _suggest(key, model, loc[:-1])
            problems.append(f"unknown key '{dotted}'{at}")
        else:
            problems.append(f"'{dotted}'{at}: {err['msg']} (got {_short(err.get('input'))})")
    # Deduplicate (a union field reports once per member) while keeping order.
    seen: list[str] = []
    for p in problems:
        if p not in seen:
            seen.append(p)
    where = f"{source}:{first_line}" if first_line is not None else source
    return ConfigError("; ".join(seen), where=where, hint=hint, param=param)


def dump_spec(spec: RunSpec) -> str:
    """YAML text of a spec, in field order (paths as strings), for printing and config.yaml."""
    import yaml

    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def write_spec(spec: RunSpec, path: Path) -> None:
    from tunesmith.io import atomic_write

    atomic_write(path, dump_spec(spec))


def absolute_paths(spec: RunSpec, base: Path | None = None) -> list[str]:
    """Make the spec's file paths absolute (relative ones are taken from `base`, default the
    working directory) and return the keys changed. A run directory is read again later, from
    wherever the user is then (`--resume`, `compare RUN`): paths as typed would point
    elsewhere. Data files, mix sources that are files, and the eval files (schema, forgetting
    reference, long prompt) are resolved; names such as `bundled` or `sharegpt` stay."""
    root = Path(base) if base is not None else Path.cwd()
    changed: list[str] = []

    def absolute(value: Any) -> Any:
        if value is None or isinstance(value, bool) or not isinstance(value, (str, Path)):
            return None
        text = str(value)
        if not text or "\n" in text or len(text) > 4096:
            return None
        path = Path(text).expanduser()
        if path.is_absolute():
            return None
        full = root / path
        try:
            exists = full.exists()
        except OSError:
            return None
        # abspath, not resolve(): a symlinked data folder keeps the name the user gave it
        return Path(os.path.abspath(full)) if exists or isinstance(value, Path) else None

    data = spec.data
    for key in ("train", "validation"):
        new = absolute(getattr(data, key))
        if new is not None:
            setattr(data, key, new)
            changed.append(f"data.{key}")
    mix = []
    for i, entry in enumerate(data.mix):
        if isinstance(entry, dict):
            field = "source" if "source" in entry else "path"
            new = absolute(entry.get(field))
            entry = {**entry, field: str(new)} if new is not None else entry
        else:
            new = absolute(entry)
            entry = str(new) if new is not None else entry
        if new is not None:
            changed.append(f"data.mix[{i}]")
        mix.append(entry)
    if mix != list(data.mix):
        data.mix = mix
    for key in ("json_schema", "reference", "long_prompt"):
        new = absolute(getattr(spec.eval, key))
        if new is not None:
            setattr(spec.eval, key, str(new))
            changed.append(f"eval.{key}")
    return changed
