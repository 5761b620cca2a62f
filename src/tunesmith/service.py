"""Service settings, shared by the server and its workers: `TUNESMITH_…` env vars and flags.

Everything the operator decides lives here: where data goes, which database, which API keys map
to which projects, which base models may be fine-tuned, upload limits, and whether user code
(python graders) may run. Nothing a request says can widen these.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tunesmith.config import DEFAULT_MODEL


def _home() -> Path:
    from tunesmith.models.registry import tunesmith_home

    return tunesmith_home()


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNESMITH_", extra="ignore")

    home: Path = Field(default_factory=_home, description="data root (files, jobs, database)")
    db: str | None = Field(None, description="database URL; default: SQLite under home")
    api_keys: str | None = Field(
        None,
        description="comma-separated API keys; 'project:key' names the key's project "
        "(a bare key is project 'default'); none = no authentication",
    )
    api_keys_file: Path | None = Field(None, description="one 'project:key' or key per line")
    models: dict[str, str] = Field(
        default_factory=lambda: {DEFAULT_MODEL: DEFAULT_MODEL},
        description="base models the API offers: public name -> registry name or local path",
    )
    max_upload_bytes: int = Field(512 * 1024 * 1024, gt=0)
    lease_s: float = Field(
        30.0, gt=0, description="a worker's lease on a job; renewed by heartbeat"
    )
    heartbeat_s: float = Field(5.0, gt=0)
    allow_python_graders: bool = False
    max_loaded_models: int = Field(4, ge=1, description="models kept in memory for inference")
    max_loaded_adapters: int = Field(8, ge=1, description="LoRA adapters kept on each base")
    max_batch: int = Field(16, ge=1, le=256, description="requests generated together")
    serve_precision: Literal["auto", "float32", "int8"] = Field(
        "auto",
        description="weights of models served on a CPU: int8 (faster decoding, a quarter of the "
        "bytes per step, slightly different answers), float32 (exact), or auto: int8 where "
        "this CPU runs the int8 kernel clearly faster than float32 (inference/packed.py)",
    )
    serve_engine: Literal["auto", "torch", "llamacpp"] = Field(
        "auto",
        description="what decodes chat completions: torch (our engine; batches concurrent "
        "requests and any LoRA adapters of one base together), llamacpp (llama-cpp-python, the "
        "'llamacpp' extra: a GGUF of each model, exported once, one request at a time, several "
        "times faster per stream on a CPU), or auto: llamacpp when it is installed and no GPU "
        "is, else torch",
    )
    serve_gguf_quantize: Literal["q8_0", "f16", "bf16", "f32"] = Field(
        "q8_0", description="weights of the GGUF a fine-tune is exported to for llama.cpp"
    )
    serve_gguf_cache_gb: float = Field(
        20.0,
        gt=0,
        description="the most disk the GGUF exports made for llama.cpp take under "
        "home/cache/gguf; beyond it the least recently served are deleted",
    )
    pinned_models: list[str] = Field(
        default_factory=list, description="load targets never evicted from memory"
    )
    max_tokens_limit: int = Field(4096, ge=1, description="the most max_tokens a request may ask")
    gpus_per_job: int = Field(
        1, ge=1, le=64, description="processes (GPUs) per job; above 1 a job runs under torchrun"
    )
    job_defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="run-spec keys merged into every job's spec (operator only), e.g. "
        "{'data': {'max_seq_len': 512}, 'save_every_steps': 20}",
    )

    @field_validator("home")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return Path(value).expanduser().resolve()

    @property
    def db_url(self) -> str:
        if self.db:
            return self.db
        return f"sqlite:///{self.home / 'tunesmith.db'}"

    @property
    def files_dir(self) -> Path:
        return self.home / "files"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    def keys(self) -> dict[str, str]:
        """API key -> project. Empty: authentication is off (a single 'default' project)."""
        lines: list[str] = []
        if self.api_keys:
            lines.extend(self.api_keys.split(","))
        if self.api_keys_file is not None:
            lines.extend(self.api_keys_file.read_text(encoding="utf-8").splitlines())
        out: dict[str, str] = {}
        for raw in lines:
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            project, sep, key = entry.rpartition(":")
            if not sep:
                project, key = "default", entry
            out[key.strip()] = project.strip() or "default"
        return out


OPENMP_SPINS = "2000"  # busy-wait iterations of an idle OpenMP worker before it sleeps


def openmp_env(serve_engine: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The OpenMP settings `tunesmith serve` gives itself (before torch loads; nothing where
    the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT).
    - Our torch engine decodes: workers spin briefly, then sleep (`GOMP_SPINCOUNT`
      OPENMP_SPINS, tens of microseconds). A decoding step is hundreds of small parallel
      operations back to back: a worker that sleeps after each one (PASSIVE) pays a wake-up
      per operation; one that spins for milliseconds (libgomp's default) takes the cores the
      web threads need (measured under load: up to 5x slower steps). Measured in-process on 2
      cores, default model, 4 adapters: float32 15.1 -> 22.3 tokens/s for one stream and 29.5
      -> 50.2 for 8 concurrent ones, int8 19.6 -> 27.9 and 42.7 -> 79.0, PASSIVE -> the short
      spin.
    - llama.cpp decodes (`serve_engine` llamacpp, or auto with llama-cpp-python installed):
      left as it is: its barriers after each operation want spinning workers (measured through
      the server and the SDK: 31 tokens/s with PASSIVE, 87 without).
    On a GPU machine under auto the CPU threads hardly run either way."""
    import importlib.util

    environ = dict(os.environ) if environ is None else environ
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return {}
    torch_decodes = serve_engine == "torch" or (
        serve_engine != "llamacpp" and importlib.util.find_spec("llama_cpp") is None
    )
    return {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": OPENMP_SPINS} if torch_decodes else {}
