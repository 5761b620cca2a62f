"""The public Python API. The CLI and the server call only this module.

Functions import their heavy dependencies lazily so `import tunesmith.api` stays cheap.
Each area of the product has its own section below; the implementation lives in its package.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

# ---------------------------------------------------------------------------------------------
# Models and inference
# ---------------------------------------------------------------------------------------------

if TYPE_CHECKING:
    from tunesmith.events import Reporter
    from tunesmith.models.load import LoadedModel
    from tunesmith.models.registry import ModelInfo


def list_models() -> list[ModelInfo]:
    """Aliases and cached models (`tunesmith models list`)."""
    from tunesmith.models.registry import list_models as _list

    return _list()


def pull_model(name: str, *, on_event: Reporter | None = None) -> Path:
    """Prepare the local cache for `name` (de-quantise a packaged GGUF once) and return its dir.
    The conversion reports `progress` events (phase `pull`, percent done) to `on_event`."""
    from tunesmith.models.load import resolve_path

    return resolve_path(name, on_event=on_event)


def load_model(
    name: str | Path,
    *,
    device: str | None = None,
    dtype: str | None = None,
    on_event: Reporter | None = None,
) -> LoadedModel:
    """Load model and tokenizer for anything the registry resolves (a first use of a packaged
    GGUF converts it once, reporting `progress` events of phase `pull` to `on_event`)."""
    from tunesmith.models.load import load_model as _load

    return _load(name, device=device, dtype=dtype, on_event=on_event)


@overload
def generate(  # type: ignore[overload-overlap]  # a str is a Sequence[str] too: first wins
    model: str | Path | LoadedModel | MergedModel,
    prompts: str | Sequence[dict[str, str]],
    *,
    max_new_tokens: int = ...,
    temperature: float = ...,
    seed: int | None = ...,
    system: str | None = ...,
    device: str | None = ...,
    dtype: str | None = ...,
) -> str: ...


@overload
def generate(
    model: str | Path | LoadedModel | MergedModel,
    prompts: Sequence[str] | Sequence[Sequence[dict[str, str]]],
    *,
    max_new_tokens: int = ...,
    temperature: float = ...,
    seed: int | None = ...,
    system: str | None = ...,
    device: str | None = ...,
    dtype: str | None = ...,
) -> list[str]: ...


def generate(
    model: str | Path | LoadedModel | MergedModel,
    prompts: Any,
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    seed: int | None = 0,
    system: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> str | list[str]:
    """Answer through the model's chat template: one prompt (a string, or one conversation as
    a list of message dicts) gives one answer, a string; a list of prompts (strings or
    conversations) gives a list of answers, in order (generated as one batch).

    `model` is a name the registry resolves, an already loaded `LoadedModel`, or a
    `MergedModel` (`merge_adapter`).
    """
    from tunesmith.inference import GenerationSettings
    from tunesmith.inference import generate as _generate

    lm = load_model(model, device=device, dtype=dtype) if isinstance(model, (str, Path)) else model
    single = isinstance(prompts, str) or _is_conversation(prompts)
    items = [prompts] if single else list(prompts)
    conversations = [_as_messages(p, system) for p in items]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    answers = _generate(lm.model, lm.tokenizer, conversations, settings)
    return answers[0] if single else answers


def _is_conversation(value: Any) -> bool:
    """One conversation: a non-empty list of message dicts (not a list of prompts)."""
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(m, dict) and "role" in m for m in value)
    )


def stream_chat(
    loaded: LoadedModel,
    messages: Sequence[dict[str, str]],
    *,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    seed: int | None = None,
) -> Iterator[str]:
    """Stream the reply to a conversation, piece by piece."""
    from tunesmith.inference import GenerationSettings, stream

    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    return stream(loaded.model, loaded.tokenizer, messages, settings)


def _as_messages(prompt: Any, system: str | None) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system and not (messages and messages[0].get("role") == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


# ---------------------------------------------------------------------------------------------
# Data (tunesmith.data)
# ---------------------------------------------------------------------------------------------

DEFAULT_DATA_MODEL = "smollm2-135m-instruct"

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tunesmith.data.convert import ConvertResult
    from tunesmith.data.prepare import PreparedData
    from tunesmith.data.preview import PreviewExample
    from tunesmith.data.split import SplitResult
    from tunesmith.data.validate import ValidationReport


def load_data_tokenizer(
    model: str | Path | PreTrainedTokenizerBase = DEFAULT_DATA_MODEL,
) -> tuple[PreTrainedTokenizerBase, Path | None]:
    """The tokenizer (with chat template) of `model` and its directory; accepts a loaded one."""
    if hasattr(model, "apply_chat_template"):
        return model, None
    from tunesmith.errors import ModelError, TunesmithError
    from tunesmith.models.load import load_tokenizer, resolve_path

    try:
        path = resolve_path(model)
        return load_tokenizer(path), path
    except TunesmithError:
        raise
    except Exception as exc:  # a broken model folder: transformers raises OSError/ValueError/...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(
            f"cannot load the tokenizer of '{model}': {reason}",
            hint="pass a Hugging Face model directory with tokenizer files, a .gguf file or "
            "an alias (see `tunesmith models list`)",
        ) from None


def validate_data(
    path: str | Path,
    *,
    model: str | Path | PreTrainedTokenizerBase | None = DEFAULT_DATA_MODEL,
    validation: str | Path | None = None,
    max_seq_len: int | None = None,
    truncate: bool = False,
    format: str | None = None,
    train_on: str = "assistant",
    adapter: str = "lora",
    estimate: bool = True,
    method: str | None = "supervised",
    dedupe: bool = False,
    time_budget: str | float | None = None,
    on_event: Reporter | None = None,
) -> ValidationReport:
    """Validate a data file (`tunesmith data validate`) and return its `ValidationReport`.

    With a model (the default), every example is rendered with its chat template and tokenized
    (token counts, over-long rows), and the automatic hyperparameters and a training-time
    estimate are filled in; `model=None` checks structure only. Reading reports `progress`
    events (bytes read; phases `validate:train`, `validate:validation`) to `on_event`.
    `max_seq_len` defaults to training's (`data.max_seq_len`), so the prediction is the run.
    `report.methods` says which training methods can use the data; the one training would use
    (`method`, supervised by default; None: no judgement) must fit, else it is an error.
    Exact duplicates are warnings; `dedupe=True` drops the repeats as training would.
    The estimate covers the run (setup, steps, in-run validation) and the comparison after it;
    with `time_budget` (seconds or "5m") it says what the budget cuts.
    """
    from tunesmith.config import DEFAULT_MAX_SEQ_LEN
    from tunesmith.data.methods import method_type
    from tunesmith.data.validate import add_estimates, check_options, count_parameters, validate

    if max_seq_len is None:
        max_seq_len = DEFAULT_MAX_SEQ_LEN
    if method is not None:
        method = method_type(method)

    # Bad options or a missing file fail before the (slow) tokenizer is loaded.
    check_options(
        format=format,
        train_on=train_on,
        max_seq_len=max_seq_len,
        path=Path(path),
        validation=Path(validation) if validation else None,
    )
    from tunesmith.config import validate_spec

    # what the estimate plans with: training's own spec (a bad adapter or budget fails here)
    spec = validate_spec(
        {"adapter": adapter, "time_budget": time_budget, "data": {"max_seq_len": max_seq_len}},
        source="options",
    )
    tokenizer, model_dir = (None, None) if model is None else load_data_tokenizer(model)
    report, state = validate(
        Path(path),
        tokenizer,
        validation=Path(validation) if validation else None,
        format=format,
        max_seq_len=max_seq_len,
        truncate=truncate,
        train_on=train_on,
        model=None if model is None else str(getattr(model, "name_or_path", model)),
        on_event=on_event,
        method=method,
        dedupe=dedupe,
    )
    # GRPO's cost is sampling (samples_per_prompt x max_new_tokens), not the SFT rules' rows
    sft_like = report.settings.get("method") != "reinforcement"
    if estimate and sft_like and report.files and report.files[0].rows_ok:
        import json

        config: dict[str, Any] = {}
        if model_dir is not None and (model_dir / "config.json").is_file():
            try:
                config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                config = {}  # only feeds the time estimate; the tokenizer loaded fine
        device = "cpu"
        if tokenizer is not None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        from tunesmith.models import speed

        n_params = count_parameters(model_dir)
        measured = None
        if n_params:
            key = speed.speed_key(n_params, adapter, device, spec.dtype, max_seq_len)
            measured = speed.lookup(key)
        add_estimates(
            report,
            n_params=n_params,
            lengths=state.stats.total,
            val_lengths=state.val_lengths,
            adapter=adapter,
            max_seq_len=max_seq_len,
            device_type=device,
            model_config=config,
            measured=measured,
            spec=spec,
        )
    return report


def preview_data(
    path: str | Path,
    *,
    model: str | Path | PreTrainedTokenizerBase = DEFAULT_DATA_MODEL,
    n: int = 3,
    format: str | None = None,
    train_on: str = "assistant",
    show_tokens: bool = False,
) -> list[PreviewExample]:
    """The first `n` examples rendered through the chat template, trained runs marked."""
    from tunesmith.data.preview import check_preview_options, preview_file

    check_preview_options(Path(path), n, format, train_on)
    tokenizer, _ = load_data_tokenizer(model)
    return preview_file(
        Path(path), tokenizer, n=n, format=format, train_on=train_on, show_tokens=show_tokens
    )


def convert_data(
    src: str | Path, dst: str | Path, *, to: str = "chat", format: str | None = None
) -> ConvertResult:
    """Convert any supported data file to canonical chat JSONL (`ConvertResult`)."""
    from tunesmith.data.convert import convert_file

    return convert_file(Path(src), Path(dst), to=to, format=format)


def split_data(
    src: str | Path,
    *,
    val: float = 0.1,
    seed: int = 0,
    train_out: str | Path | None = None,
    validation_out: str | Path | None = None,
    format: str | None = None,
) -> SplitResult:
    """Split a data file into training and validation files (`SplitResult`)."""
    from tunesmith.data.split import split_file

    return split_file(
        Path(src),
        fraction=val,
        seed=seed,
        format=format,
        train_out=Path(train_out) if train_out else None,
        validation_out=Path(validation_out) if validation_out else None,
    )


def prepare_sft(
    train: str | Path, tokenizer: PreTrainedTokenizerBase, **kwargs: Any
) -> PreparedData:
    """Validated, tokenized (and split / mixed) SFT data (`tunesmith.data.prepare.prepare_sft`;
    `on_event` gets its validation's `progress` events)."""
    from tunesmith.data.prepare import prepare_sft as _prepare

    return _prepare(Path(train), tokenizer, **kwargs)


# ---------------------------------------------------------------------------------------------
# Training (tunesmith.train, tunesmith.config)
# ---------------------------------------------------------------------------------------------

if TYPE_CHECKING:
    from tunesmith.config import RunSpec
    from tunesmith.events import Event
    from tunesmith.train.run import RunResult


def load_run_spec(spec: Any = None, overrides: list[str] | None = None) -> RunSpec:
    """Validate a run spec (YAML path, dict or RunSpec) plus `key=value` overrides (`RunSpec`).

    Raises `ConfigError` naming the file, line and closest valid key."""
    from tunesmith.config import load_spec

    return load_spec(spec, overrides)


def train(
    spec: RunSpec | dict[str, Any] | str | Path,
    overrides: list[str] | None = None,
    *,
    on_event: Reporter | None = None,
    compare_base: bool | None = None,
    force: bool = False,
) -> RunResult:
    """Train a model (`RunResult`: .run_dir, .final_dir, .metrics, .status), then, when the
    run has held-out data and `eval.compare_base` is on (or `compare_base=True`), compare the
    tuned model with its base model (RUN_DIR/eval/).

    `spec` is a RunSpec, a dict or a YAML path; `overrides` are dotted `key=value` strings.
    `output_dir` must be new, empty or a run to refuse; `force=True` writes into an existing
    non-empty directory that is not a run (never into a filesystem root or the home folder).
    Progress, metrics and messages arrive as events through `on_event`. Works the same under
    `torchrun` (DDP/FSDP). Code graders in the spec's `eval.metrics` are the caller's own and
    are imported for the end-of-run comparison (announced as a message event)."""
    from tunesmith.train.run import train as _train

    result = _train(spec, overrides, on_event=on_event, force=force)
    _compare_after_training(result, on_event, compare_base, trusted=True)
    return result


def resume(
    run_dir: str | Path, *, on_event: Reporter | None = None, compare_base: bool | None = None
) -> RunResult:
    """Continue a run from its latest complete checkpoint (`RunResult`), then compare as
    `train` does."""
    from tunesmith.train.run import resume as _resume

    result = _resume(run_dir, on_event=on_event)
    _compare_after_training(result, on_event, compare_base, trusted=False)
    return result


def _compare_after_training(
    result: RunResult, on_event: Reporter | None, compare_base: bool | None, *, trusted: bool
) -> None:
    """The end-of-run verdict. A failed comparison never loses the trained model: it is
    reported as a warning and the run stays as it finished. `trusted`: the run's config is
    the spec this caller just gave (a fresh run), not one read back from the directory
    (resume), so its code graders may be imported."""
    from tunesmith import events

    report = events.reporter(on_event)
    wanted = (
        compare_base
        if compare_base is not None
        else bool(result.spec is not None and result.spec.eval.compare_base)
    )
    if not (wanted and result.has_validation and result.is_main and result.status != "cancelled"):
        return
    report(events.message("comparing the tuned model with the base model on held-out data ..."))
    from tunesmith.eval.report import summary_events

    try:
        comparison = compare(result.run_dir, on_event=on_event, trust_run_config=trusted)
        # the verdict, every warning and the report's path: what the user must see
        summary = summary_events(comparison) if comparison is not None else []
    except Exception as exc:  # the trained model is safe on disk; report, do not lose the run
        report(events.message(f"base-vs-tuned comparison failed: {exc}", level="warning"))
        return
    result.comparison = comparison
    for event in summary:
        report(event)


def cancel(run_dir: str | Path) -> None:
    """Ask a running training to stop: it saves a checkpoint and exits cleanly."""
    from tunesmith.runs import RunDir

    RunDir.open(run_dir).request_cancel()


def read_events(run_dir: str | Path, *, after: int = 0) -> list[Event]:
    """The events a run has written so far (RUN_DIR/events.jsonl), from line `after` on."""
    from tunesmith.events import read_events as _read
    from tunesmith.runs import RunDir

    return _read(RunDir(run_dir).events, after=after)


# ---------------------------------------------------------------------------------------------
# Evaluation (tunesmith.eval) and the demo
# ---------------------------------------------------------------------------------------------


if TYPE_CHECKING:
    from tunesmith.eval.results import ComparisonResult


def evaluate(
    model: str | Path | Any,
    data: str | Path,
    *,
    baseline: str | Path | Any | None = None,
    metrics: Sequence[str] | None = None,
    output_dir: str | Path | None = None,
    on_event: Reporter | None = None,
    trust_run_config: bool = False,
    force: bool = False,
    **options: Any,
) -> ComparisonResult:
    """Evaluate a model (alias, dir, run dir, a run's checkpoint `RUN@step-N`) on held-out
    data, against `baseline` when given (`tunesmith eval`). A run dir or checkpoint without a
    baseline is compared with its run's base model (a code grader its config names is
    imported only with `trust_run_config=True`); its reports go to a new folder of their own,
    `RUN/evals/<data>-<time>/` (the training-time report in RUN/eval is never replaced).
    Returns a `ComparisonResult`; with `output_dir`, writes results.json/report.md/report.html
    there — refused when it already holds a report, unless `force`.
    Options: main_metric, schema (dict or JSON file), max_new_tokens, batch_size, seed, loss,
    reference (None/'bundled'/'sharegpt'/path/False), forgetting_threshold, long_prompt, limit.
    Progress goes to `on_event` as `progress` events, one phase per step.
    """
    from tunesmith.eval.compare import compare_models, compare_run, load_schema
    from tunesmith.eval.report import check_report_dir
    from tunesmith.runs import RunDir, checkpoint_ref

    if output_dir is not None:
        check_report_dir(Path(output_dir), force=force)
    if isinstance(options.get("schema"), (str, Path)):
        options["schema"] = load_schema(options["schema"])
    named = isinstance(model, (str, Path))
    checkpoint = checkpoint_ref(model) if named else None
    run = RunDir(model) if named and RunDir.is_run(model) else None
    if (run is not None or checkpoint is not None) and baseline is None:
        return compare_run(
            model, data, metrics=metrics, output_dir=output_dir, on_event=on_event,
            trust_run_config=trust_run_config, **options,
        )  # fmt: skip
    owner = checkpoint[0] if checkpoint is not None else run
    if owner is not None and output_dir is None:  # against another baseline: a new folder too
        output_dir = owner.new_eval_dir(data)
    if run is not None and run.has_final():
        model = run.final
    return compare_models(
        model, baseline, data, metrics=metrics, output_dir=output_dir, on_event=on_event, **options
    )


def compare(
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    output_dir: str | Path | None = None,
    on_event: Reporter | None = None,
    trust_run_config: bool = False,
    **options: Any,
) -> ComparisonResult:
    """Base vs tuned for a finished run (`tunesmith compare`): defaults to the run's base model
    and validation data; reports go to the run's eval/. Returns a `ComparisonResult`.

    A run directory may be someone else's: a code grader (`file.py:function`) its config names
    under `eval.metrics` is imported only with `trust_run_config=True` (else a ConfigError
    says so); `metrics=` given here are always used."""
    from tunesmith.eval.compare import compare_run

    return compare_run(
        run_dir, data, output_dir=output_dir, on_event=on_event,
        trust_run_config=trust_run_config, **options,
    )  # fmt: skip


def read_evaluation(run_dir: str | Path) -> dict[str, Any] | None:
    """The base-vs-tuned results a run's comparison wrote (RUN_DIR/eval), or None."""
    import json

    from tunesmith.eval.report import results_path
    from tunesmith.runs import RunDir

    path = results_path(RunDir(run_dir).eval_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_comparison_report(result: ComparisonResult, out_dir: str | Path) -> dict[str, Path]:
    """(Re)write results.json, report.md and report.html of a comparison into `out_dir`."""
    from tunesmith.eval.report import write_reports

    return write_reports(result, Path(out_dir))


# ---------------------------------------------------------------------------------------------
# Graders (tunesmith.graders): OpenAI grader objects, for evaluation and rewards
# ---------------------------------------------------------------------------------------------


def validate_grader(
    grader: dict[str, Any], *, allow_python: bool = False, judges: dict[str, Any] | None = None
) -> list[str]:
    """Every problem of an OpenAI-shaped grader object, field first (empty: usable)."""
    from tunesmith.graders import validate_grader as _validate
    from tunesmith.graders.judge import LocalJudges

    return _validate(grader, allow_python=allow_python, judges=LocalJudges(judges or {}))


def run_grader(
    grader: dict[str, Any],
    model_sample: str,
    item: dict[str, Any] | None = None,
    *,
    allow_python: bool = False,
    judges: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Grade one sample against one item: OpenAI's `graders/run` answer (reward,
    sub_rewards, metadata.errors). `judges`: the models a score_model grader may use."""
    from tunesmith.graders.judge import LocalJudges
    from tunesmith.graders.run import run_grader as _run

    return _run(
        grader, model_sample, item, allow_python=allow_python, judges=LocalJudges(judges or {})
    )


# ---------------------------------------------------------------------------------------------
# Export (tunesmith.export)
# ---------------------------------------------------------------------------------------------

if TYPE_CHECKING:
    from tunesmith.export.merge import MergedModel
    from tunesmith.export.pipeline import ExportResult


def export_model(
    path: str | Path,
    *,
    format: str = "gguf",
    quantize: str | None = None,
    out: str | Path | None = None,
    base: str | Path | None = None,
    name: str | None = None,
    force: bool = False,
    verify: bool = True,
    on_event: Reporter | None = None,
) -> ExportResult:
    """Export a run dir (or adapter / model dir) as merged HF safetensors or GGUF + Modelfile.

    `quantize`: f32|f16|bf16 for hf (default f32); f32|f16|bf16|q8_0|q5_1|q5_0|q4_1|q4_0 for gguf
    (default q8_0). With `verify` the export is reloaded and compared with the merged model
    before it is put in place; returns an `ExportResult` (files, notes, round-trip numbers).
    Reports `progress` events (phase `export`, percent done) to `on_event`.
    """
    from tunesmith.export import export_model as _export

    return _export(
        path, fmt=format, quantize=quantize, out=out, base=base, name=name, force=force,
        verify=verify, on_event=on_event,
    )  # fmt: skip


def merge_adapter(path: str | Path, *, base: str | Path | None = None) -> MergedModel:
    """Load a run / adapter dir with its adapter merged at float32 (`MergedModel`: model,
    tokenizer), e.g. to compare it with the exported model."""
    from tunesmith.export.merge import load_merged
    from tunesmith.export.source import resolve_source

    return load_merged(resolve_source(path, base=base))
