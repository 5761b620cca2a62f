"""Request bodies (pydantic, strict where OpenAI is) and the objects we answer with.

The response shapes follow OpenAI's (`file`, `fine_tuning.job`, `fine_tuning.job.event`,
`fine_tuning.job.checkpoint`, `model`, `list`); extra fields are ours and safe (the SDK
parses unknown fields loosely), missing ones are not — every field the SDK types is set.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunesmith.store.records import CheckpointRecord, EventRecord, FileRecord, JobRecord

AutoInt = int | Literal["auto"]
AutoFloat = float | Literal["auto"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(_Body):
    n_epochs: AutoInt | None = Field(None, description="epochs (1-50) or auto")
    batch_size: AutoInt | None = None
    learning_rate_multiplier: AutoFloat | None = None

    @field_validator("n_epochs")
    @classmethod
    def _epochs(cls, v: Any) -> Any:
        if isinstance(v, int) and not 1 <= v <= 50:
            raise ValueError("must be between 1 and 50, or 'auto'")
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: Any) -> Any:
        if isinstance(v, int) and not 1 <= v <= 256:
            raise ValueError("must be between 1 and 256, or 'auto'")
        return v

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _lr(cls, v: Any) -> Any:
        if isinstance(v, float | int) and not isinstance(v, bool) and not 0 < v <= 100:
            raise ValueError("must be > 0 and at most 100, or 'auto'")
        return v


class SupervisedMethod(_Body):
    hyperparameters: Hyperparameters | None = None


class DpoHyperparameters(Hyperparameters):
    beta: AutoFloat | None = Field(None, description="DPO's beta (0 < beta <= 2) or auto (0.1)")

    @field_validator("beta")
    @classmethod
    def _beta(cls, v: Any) -> Any:
        if isinstance(v, float | int) and not isinstance(v, bool) and not 0 < v <= 2:
            raise ValueError("must be > 0 and at most 2, or 'auto'")
        return v


class DpoMethod(_Body):
    hyperparameters: DpoHyperparameters | None = None


REASONING_EFFORTS = ("default", "low", "medium", "high")


class ReinforcementHyperparameters(Hyperparameters):
    compute_multiplier: AutoFloat | None = Field(
        None, description="completions sampled per prompt = clamp(round(4 x this), 2, 64)"
    )
    eval_interval: AutoInt | None = Field(None, description="training steps between evaluations")
    eval_samples: AutoInt | None = Field(None, description="completions per held-out prompt")
    reasoning_effort: Literal["default", "low", "medium", "high"] | None = Field(
        None, description="accepted for compatibility; our models have no reasoning mode"
    )

    @field_validator("compute_multiplier")
    @classmethod
    def _compute(cls, v: Any) -> Any:
        if isinstance(v, float | int) and not isinstance(v, bool) and not 0.00001 < v <= 10:
            raise ValueError("must be > 0.00001 and at most 10, or 'auto'")
        return v

    @field_validator("eval_interval")
    @classmethod
    def _interval(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be at least 1, or 'auto'")
        return v

    @field_validator("eval_samples")
    @classmethod
    def _samples(cls, v: Any) -> Any:
        if isinstance(v, int) and not 1 <= v <= 64:
            raise ValueError("must be between 1 and 64, or 'auto'")
        return v


class ReinforcementMethod(_Body):
    grader: dict[str, Any] = Field(description="an OpenAI grader object (see graders/validate)")
    hyperparameters: ReinforcementHyperparameters | None = None


class Method(_Body):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    reinforcement: ReinforcementMethod | None = None


# The hyperparameters each method's job object shows (OpenAI's names), "auto" until resolved.
COMMON_HYPER = ("n_epochs", "batch_size", "learning_rate_multiplier")
METHOD_HYPER: dict[str, tuple[str, ...]] = {
    "supervised": COMMON_HYPER,
    "dpo": (*COMMON_HYPER, "beta"),
    "reinforcement": (
        *COMMON_HYPER,
        "compute_multiplier",
        "eval_interval",
        "eval_samples",
        "reasoning_effort",
    ),
}


class JobCreate(_Body):
    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=128)
    validation_file: str | None = Field(None, max_length=128)
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None  # the legacy top-level form
    integrations: list[Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        if len(v) > 16:
            raise ValueError("at most 16 key-value pairs")
        for key, value in v.items():
            if len(key) > 64 or len(value) > 512:
                raise ValueError("keys are at most 64 characters, values at most 512")
        return v

    @property
    def method_type(self) -> str:
        return self.method.type if self.method is not None else "supervised"

    def hyper(self) -> dict[str, Any]:
        """The method's hyperparameters wherever the request put them (the method's block, else
        the legacy top-level form), every one the method has named: "auto" when unset
        (reasoning_effort: "default", as OpenAI shows it)."""
        kind = self.method_type
        block = getattr(self.method, kind, None) if self.method is not None else None
        chosen: Hyperparameters | None = getattr(block, "hyperparameters", None)
        source = chosen or self.hyperparameters
        given = source.model_dump(exclude_none=True) if source is not None else {}
        out = {name: given.get(name, "auto") for name in METHOD_HYPER[kind]}
        if "reasoning_effort" in out and out["reasoning_effort"] == "auto":
            out["reasoning_effort"] = "default"
        return out


class ExportCreate(_Body):
    """Our extension: `POST /v1/fine_tuning/jobs/{id}/exports`. `hf` is the merged model as
    safetensors (float32, downloaded as one zip), `gguf` a q8_0 GGUF with its Ollama
    Modelfile — the CLI's defaults; `tunesmith export` offers the other quantisations."""

    format: Literal["hf", "gguf"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # the SDK sends fields we do not use
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)
    prompt: str | list[str]
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False


# -- objects ------------------------------------------------------------------------------------


def file_object(f: FileRecord) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": f.created_at,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": f.status,
        "status_details": f.status_details,
        "expires_at": None,
    }


def job_object(j: JobRecord) -> dict[str, Any]:
    """A job as OpenAI shows it: `method` echoes the type, its block (a reinforcement job's
    grader) and the method's hyperparameters — "auto" until the run resolves them, then the
    values it trains with; the top-level `hyperparameters` (the legacy form) the common ones."""
    kind = (j.method or {}).get("type", "supervised")
    hyper = dict(j.hyperparameters or {})
    block = {**((j.method or {}).get(kind) or {}), "hyperparameters": hyper}
    method = {"type": kind, kind: block}
    return {
        "id": j.id,
        "object": "fine_tuning.job",
        "created_at": j.created_at,
        "error": j.error,
        "fine_tuned_model": j.fine_tuned_model,
        "finished_at": j.finished_at,
        "hyperparameters": {k: hyper.get(k, "auto") for k in COMMON_HYPER},
        "model": j.model,
        "organization_id": j.project,
        "result_files": list(j.result_files or []),
        "seed": j.seed,
        "status": j.status,
        "trained_tokens": j.trained_tokens,
        "training_file": j.training_file,
        "validation_file": j.validation_file,
        "estimated_finish": j.estimated_finish,
        "integrations": [],
        "metadata": j.metadata or None,
        "method": method,
        "suffix": j.suffix,
        "user_provided_suffix": j.suffix,
    }


def event_object(e: EventRecord) -> dict[str, Any]:
    return {
        "id": e.id,
        "object": "fine_tuning.job.event",
        "created_at": e.created_at,
        "level": e.level,
        "message": e.message,
        "type": e.type,
        "data": e.data,
    }


def checkpoint_object(c: CheckpointRecord) -> dict[str, Any]:
    return {
        "id": c.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": c.created_at,
        "fine_tuned_model_checkpoint": c.fine_tuned_model_checkpoint,
        "fine_tuning_job_id": c.job_id,
        "metrics": c.metrics,
        "step_number": c.step,
    }


def model_object(name: str, created: int, owned_by: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": owned_by}


def page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "has_more": has_more,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
    }
