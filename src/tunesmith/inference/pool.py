"""The serving engine behind `/v1/chat/completions`: models in memory and who generates for them.

`ModelPool.get(target)` turns anything the registry loads (a model name or dir, a run dir, an
adapter dir, `RUN@step-N`) into a `Served`: the tokenizer to render prompts with and a
`submit` that queues a request on the scheduler (scheduler.py) of the model that runs it.
- A plain LoRA adapter does not get a model of its own: it is loaded into the one peft model of
  its base (adapters.py), which the base model's own requests use too (`__base__` rows), so a
  base in memory serves it and any number of sibling adapters, batched together.
- A DoRA adapter is merged into a copy of its base and served as a model of its own (peft
  cannot mix DoRA adapters in a batch); a full fine-tune is a model of its own anyway.
Models are kept least recently used first, up to `capacity` (a model with requests in flight
or a pinned target's model is never evicted); adapters per base up to `max_adapters`.
Loading happens outside the pool's lock, one load per model however many requests wait for it.

With `gguf_of` (the server passes one when llama-cpp-python is installed and its engine setting
allows it), a target that has a GGUF file is served by llama.cpp instead (llamacpp.py): its own
model keyed `gguf:FILE`, the adapter already merged into the file, our tokenizer for prompts
and text; the same LRU, pinning and eviction rules apply to it. A target without one yet is
served by torch; when the source's `generation` moves (an export landed), the next request for
a torch-served target asks again and moves it over to llama.cpp, torch finishing what it has.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tunesmith.inference.adapters import AdapterSet, batchable
from tunesmith.inference.batch import BASE
from tunesmith.inference.completion import Completion, TextStream
from tunesmith.inference.engine import GenerationSettings
from tunesmith.inference.layout import transpose_linear_storage
from tunesmith.inference.llamacpp import Factory, LlamaCppScheduler
from tunesmith.inference.loading import LOADING
from tunesmith.inference.packed import Precision, choose, pack_linears
from tunesmith.inference.sampling import Sampler
from tunesmith.inference.scheduler import Closed, Request, Scheduler, Sink, results
from tunesmith.models.load import LoadedModel, load_model, load_tokenizer, stop_token_ids

log = logging.getLogger("tunesmith.server")


@dataclass(eq=False)
class _Model:
    """One model in memory with its lock, its adapters and its generation thread."""

    key: str
    loaded: LoadedModel
    scheduler: Scheduler | LlamaCppScheduler
    adapters: AdapterSet | None  # None: a GGUF model served by llama.cpp (no adapters on it)
    lock: threading.Lock
    stop_ids: list[int] = field(default_factory=list)  # a GGUF model's (torch ones: per target)

    @property
    def busy(self) -> bool:
        return self.scheduler.busy or (self.adapters is not None and self.adapters.in_use)

    @property
    def engine(self) -> str:
        return "llama.cpp" if isinstance(self.scheduler, LlamaCppScheduler) else "torch"


@dataclass(eq=False)
class Served:
    """A target ready to answer: render prompts with `tokenizer`, then `submit`/`complete`/
    `stream` token ids. `context` is the model's context length (0 when unknown)."""

    target: str
    tokenizer: Any
    context: int
    stop_ids: list[int]
    model: _Model
    adapter_dir: Path | None = None
    pool: ModelPool | None = field(default=None, repr=False)
    gguf_generation: int = 0  # the GGUF source's generation when torch was chosen for it

    def submit(
        self,
        ids: list[int],
        settings: GenerationSettings,
        stops: Sequence[str] = (),
        *,
        sink: Sink | None = None,
        tag: Any = 0,
    ) -> Request:
        """Queue one sequence; its pieces and its `Completion` arrive in `sink` as (tag, item)."""
        if self.model.scheduler.closed and self.pool is not None:  # evicted since `get`
            return self.pool.get(self.target).submit(ids, settings, stops, sink=sink, tag=tag)
        name, done = BASE, None
        adapters = self.model.adapters
        if self.adapter_dir is not None and adapters is not None:
            name = adapters.acquire(self.adapter_dir)
            done = partial(adapters.release, name)
        text = TextStream(
            self.tokenizer, prompt_tokens=len(ids), max_tokens=settings.max_new_tokens,
            stops=stops, stop_ids=self.stop_ids,
        )  # fmt: skip
        sampler = Sampler(settings.temperature, settings.top_p, settings.seed)
        request = Request(list(ids), text, sampler, name, sink or queue.Queue(), tag, done)
        try:
            return self.model.scheduler.submit(request)
        except Closed:  # unloaded between the check above and now: its successor takes it
            if done is not None:
                done()
            if self.pool is None:
                raise
            return self.pool.get(self.target).submit(ids, settings, stops, sink=sink, tag=tag)
        except BaseException:
            if done is not None:
                done()
            raise

    def complete(
        self, ids: list[int], settings: GenerationSettings, stops: Sequence[str] = ()
    ) -> Completion:
        """Generate one reply and wait for it."""
        sink: queue.Queue[Any] = queue.Queue()
        request = self.submit(ids, settings, stops, sink=sink)
        try:
            return next(c for _, c in results(sink, 1) if isinstance(c, Completion))
        finally:
            request.cancel()

    def stream(
        self, ids: list[int], settings: GenerationSettings, stops: Sequence[str] = ()
    ) -> Iterator[str | Completion]:
        """Text pieces as they are generated, then the `Completion`; closing it early cancels."""
        sink: queue.Queue[Any] = queue.Queue()
        request = self.submit(ids, settings, stops, sink=sink)
        try:
            for _, item in results(sink, 1):
                yield item
        finally:
            request.cancel()


class ModelPool:
    def __init__(
        self,
        capacity: int = 4,
        pinned: set[str] | None = None,
        *,
        max_adapters: int = 8,
        max_batch: int = 16,
        wait_ms: float = 5.0,
        fused_lora: bool = True,
        precision: Precision = "float32",
        gguf_of: Callable[[str], Path | None] | None = None,
        gguf_context: int = 4096,
        gguf_factory: Factory | None = None,
        **load_kwargs: Any,
    ):
        self.capacity = max(1, capacity)
        self.pinned = set(pinned or ())
        self.max_adapters = max_adapters
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self.fused_lora = fused_lora  # False: peft's own mixed-adapter inference (adapter_names)
        self.precision = precision  # int8 base weights on a CPU (packed.py), or float32
        self._models: OrderedDict[str, _Model] = OrderedDict()
        self._targets: dict[str, Served] = {}
        self._lock = threading.Lock()
        self._gates: dict[str, threading.Lock] = {}
        self._load_kwargs = load_kwargs
        # target -> its GGUF file (or None: served by torch); called once per target and load
        self.gguf_of = gguf_of
        self.gguf_context = gguf_context
        self.gguf_factory = gguf_factory  # tests: a stand-in for llama_cpp.Llama
        self._not_gguf: set[str] = set()  # targets whose GGUF llama.cpp could not load

    def __contains__(self, target: str) -> bool:
        return target in self._targets

    def names(self) -> list[str]:
        return list(self._targets)

    def models(self) -> list[str]:
        """Keys of the models in memory (a base's path, or `merged:ADAPTER` for DoRA)."""
        return list(self._models)

    def get(self, target: str) -> Served:
        """`target` ready to serve (a `TunesmithError` when it cannot be loaded)."""
        served = self._ready(target)
        if served is not None:
            self._used(served)
            return served
        with self._lock:
            gate = self._gates.setdefault(target, threading.Lock())
        with gate:
            served = self._ready(target)  # loaded, or moved over, while this one waited
            if served is not None:
                return served
            with self._lock:
                current = self._targets.get(target)  # a torch binding asking again, or None
            generation = self._gguf_generation()
            gguf = None
            if self.gguf_of is not None and target not in self._not_gguf:
                gguf = self.gguf_of(target)
            if gguf is not None:
                try:
                    moved = self._serve_gguf(target, gguf)
                except Exception as exc:  # a file llama.cpp cannot load: torch serves it
                    log.warning("llama.cpp cannot load %s (%s): serving %s with torch",
                                gguf, exc, target)  # fmt: skip
                    self._not_gguf.add(target)  # asked once, not on every request
                else:
                    if current is not None and current.model.engine == "torch":
                        self._retire(current)  # its export has landed: torch finishes its part
                    return moved
            with self._lock:  # asked again because an export landed, but not this target's
                still = self._targets.get(target)
                if still is not None and still.model.key in self._models:
                    still.gguf_generation = generation
                    self._gates.pop(target, None)
                    return still
            key, adapter, merge = self._plan(target)
            model = self._model(key, target if merge else key, merge)
            tokenizer = model.loaded.tokenizer
            if adapter is not None:
                assert model.adapters is not None  # a torch model (GGUF ones returned above)
                if target in self.pinned:
                    model.adapters.pin(adapter)
                model.adapters.release(model.adapters.acquire(adapter))  # load now, errors here
                if (adapter / "tokenizer_config.json").is_file():  # trained with its own template
                    tokenizer = load_tokenizer(adapter)
            config = getattr(model.loaded.model, "config", None)
            served = Served(
                target, tokenizer, int(getattr(config, "max_position_embeddings", 0) or 0),
                stop_token_ids(tokenizer, getattr(model.loaded.model, "generation_config", None)),
                model, adapter, self, generation,
            )  # fmt: skip
            return self._remember(served)

    def _ready(self, target: str) -> Served | None:
        """`target`'s binding when it is loaded and need not ask the GGUF source again."""
        with self._lock:
            served = self._targets.get(target)
            if served is not None and served.model.key in self._models and not self._ask(served):
                self._models.move_to_end(served.model.key)
                return served
        return None

    def _used(self, served: Served) -> None:
        """Tell the GGUF source its file is in use (it keeps recently served exports)."""
        used = getattr(self.gguf_of, "used", None)
        if used is not None and served.model.key.startswith("gguf:"):
            used(Path(served.model.key[len("gguf:") :]))

    def _retire(self, old: Served) -> None:
        """`old`, the torch binding its target left for llama.cpp: what only it used leaves
        memory once its requests in flight have finished (a base other targets still use,
        or an adapter another target names, stays)."""
        model = old.model
        with self._lock:
            users = [s for s in self._targets.values() if s.model is model]
            if old.adapter_dir is not None:
                if any(s.adapter_dir == old.adapter_dir for s in users):
                    return
            elif users or self._models.get(model.key) is not model:
                return
            else:
                del self._models[model.key]
        if old.adapter_dir is not None:
            if model.adapters is not None:
                model.adapters.drop(old.adapter_dir)
        else:
            model.scheduler.close()

    def _gguf_generation(self) -> int:
        """How many exports the GGUF source has made so far (0 for a plain function)."""
        return int(getattr(self.gguf_of, "generation", 0))

    def _ask(self, served: Served) -> bool:
        """Whether a torch-served target should ask the GGUF source again: an export has
        landed since it last asked (its own, maybe)."""
        return (
            self.gguf_of is not None
            and served.model.engine == "torch"
            and served.target not in self._not_gguf
            and served.gguf_generation != self._gguf_generation()
        )

    def _serve_gguf(self, target: str, gguf: Path) -> Served:
        """`target` through llama.cpp (called under the target's gate)."""
        key = f"gguf:{gguf}"
        model = self._model(key, target, False, gguf=gguf)
        scheduler = model.scheduler
        context = scheduler.context if isinstance(scheduler, LlamaCppScheduler) else 0
        served = Served(
            target, model.loaded.tokenizer, context,
            model.stop_ids, model, None, self,
        )  # fmt: skip
        return self._remember(served)

    def _remember(self, served: Served) -> Served:
        """Keep `served` for its target's next `get` (and retire the target's load gate)."""
        with self._lock:
            self._targets[served.target] = served
            self._gates.pop(served.target, None)
        return served

    def drop(self, target: str) -> None:
        """Forget `target` (its model was deleted): its adapter, or its own model, leaves memory
        once its requests in flight have finished."""
        with self._lock:
            served = self._targets.pop(target, None)
            if served is None:
                return
            model = served.model
            if served.adapter_dir is not None or model.adapters is None:  # shared model
                for name, other in list(self._targets.items()):
                    if other.adapter_dir == served.adapter_dir and other.model is model:
                        del self._targets[name]
            elif self._models.get(model.key) is model:
                del self._models[model.key]
                self._forget(model)
        if served.adapter_dir is not None and model.adapters is not None:
            model.adapters.drop(served.adapter_dir)
        elif model.adapters is None:  # a GGUF: other targets may name the same file
            with self._lock:
                if any(s.model is model for s in self._targets.values()):
                    return
                if self._models.get(model.key) is model:
                    del self._models[model.key]
            model.scheduler.close()
        else:
            model.scheduler.close()

    def close(self, timeout: float = 10.0) -> None:
        """Unload everything: each engine thread finishes what it was given and ends, waited
        for (at most `timeout` seconds in all), so none is still inside torch or llama.cpp
        while the interpreter shuts down (a native thread alive at exit can abort the
        process)."""
        with self._lock:
            models = list(self._models.values())
            self._models.clear()
            self._targets.clear()
        for model in models:
            model.scheduler.close()
        deadline = time.monotonic() + timeout
        for model in models:
            model.scheduler.close(wait=True, timeout=max(0.0, deadline - time.monotonic()))

    # -- loading ----------------------------------------------------------------------------------

    def _plan(self, target: str) -> tuple[str, Path | None, bool]:
        """(model key, adapter dir to load into it, whether the key is a merged DoRA model)."""
        from tunesmith.models.registry import prepare, resolve

        ref = resolve(target)
        if ref.kind == "adapter" and ref.adapter is not None and ref.base is not None:
            if batchable(ref.adapter):
                return str(prepare(ref.base)), ref.adapter, False
            return f"merged:{ref.adapter}", None, True
        return str(prepare(ref)), None, False

    def _model(self, key: str, load_name: str, merge: bool, gguf: Path | None = None) -> _Model:
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            gate = self._gates.setdefault(f"model:{key}", threading.Lock())
        with gate:
            with self._lock:
                model = self._models.get(key)
            if model is None:
                if gguf is not None:
                    model = self._load_gguf(key, load_name, gguf)
                else:
                    model = self._load(key, load_name, merge)
                with self._lock:
                    self._models[key] = model
                    victims = self._victims(keep=key)
                for victim in victims:
                    victim.scheduler.close()
            with self._lock:
                self._gates.pop(f"model:{key}", None)
            return model

    def _load(self, key: str, load_name: str, merge: bool) -> _Model:
        with LOADING:  # one load at a time in this process (loading.py)
            loaded = load_model(load_name, **self._load_kwargs)
            if merge:  # DoRA: its own model, the adapter folded into the weights
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    loaded.model = loaded.model.merge_and_unload()
                loaded.model.eval()
            if choose(self.precision, loaded.device):  # int8 weights: decoding reads 1/4 the bytes
                pack_linears(loaded.model)
            transpose_linear_storage(loaded.model)  # CPU only: faster batched decoding (layout.py)
        lock = threading.Lock()
        adapters = AdapterSet(
            loaded.model, lock=lock, capacity=self.max_adapters, fused=self.fused_lora
        )
        pad = loaded.tokenizer.pad_token_id
        scheduler = Scheduler(
            adapters, lock=lock, pad_id=int(pad) if pad is not None else 0,
            max_batch=self.max_batch, wait_s=self.wait_s, name=Path(key).name,
        )  # fmt: skip
        return _Model(key, loaded, scheduler, adapters, lock)

    def _load_gguf(self, key: str, target: str, gguf: Path) -> _Model:
        """llama.cpp on the file; our tokenizer of `target` (its base's, or the adapter's own
        when it was trained with its own chat template) renders prompts and decodes."""
        from tunesmith.models.registry import prepare, resolve

        ref = resolve(target)
        tokenizer_dir = ref.adapter if ref.kind == "adapter" and ref.adapter is not None else None
        if tokenizer_dir is None or not (tokenizer_dir / "tokenizer_config.json").is_file():
            tokenizer_dir = prepare(ref.base if ref.kind == "adapter" and ref.base else ref)
        tokenizer = load_tokenizer(tokenizer_dir)
        base_dir = prepare(ref.base if ref.kind == "adapter" and ref.base else ref)
        config = _read_config(base_dir)
        context = min(self.gguf_context, int(config.get("max_position_embeddings") or 0) or 2048)
        scheduler = LlamaCppScheduler(
            gguf, context=context, name=gguf.stem, factory=self.gguf_factory
        )
        loaded = LoadedModel(None, tokenizer, ref, gguf, "cpu", None)
        stops = stop_token_ids(tokenizer, _generation_config(base_dir))
        return _Model(key, loaded, scheduler, None, threading.Lock(), stops)

    def _pinned_keys(self) -> set[str]:
        return {s.model.key for t, s in self._targets.items() if t in self.pinned}

    def _victims(self, keep: str) -> list[_Model]:
        """Least recently used idle, unpinned models beyond capacity (called under the lock)."""
        out: list[_Model] = []
        pinned = self._pinned_keys() | {keep}
        for key in list(self._models):
            if len(self._models) <= self.capacity:
                break
            model = self._models[key]
            if key in pinned or model.busy:
                continue
            del self._models[key]
            self._forget(model)
            out.append(model)
        return out

    def _forget(self, model: _Model) -> None:
        for name, served in list(self._targets.items()):
            if served.model is model:
                del self._targets[name]


def _read_config(model_dir: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _generation_config(model_dir: Path) -> Any:
    """The model dir's generation config (None when it has none)."""
    if not (model_dir / "generation_config.json").is_file():
        return None
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_dir)
    except (OSError, ValueError):
        return None
