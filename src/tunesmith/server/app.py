"""`create_app(settings)`: the FastAPI application of `tunesmith serve`.

The app owns the store (SQLite file under the home by default, PostgreSQL by URL), the API-key
table and the model pool; routes read them from `app.state`. Training never runs in the web
process: jobs are queued in the store and run by workers (`tunesmith worker`, or the ones
`tunesmith serve --workers N` starts beside the server).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from tunesmith import __version__
from tunesmith.errors import TunesmithError
from tunesmith.server import errors
from tunesmith.server.gguf_cache import GgufCache
from tunesmith.server.routes import chat, dashboard, exports, files, fine_tuning, graders, models
from tunesmith.service import ServerSettings


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    from tunesmith.inference.pool import ModelPool
    from tunesmith.server.exports import Exports
    from tunesmith.store.db import Store

    settings = settings or ServerSettings()
    settings.home.mkdir(parents=True, exist_ok=True)
    store = Store(settings.db_url)
    gguf = gguf_source(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if gguf is not None:
            gguf.watch(store)  # a job that succeeds is exported for llama.cpp right away
        yield
        app.state.exports.close()
        if gguf is not None:
            gguf.close()
        app.state.pool.close()
        store.close()

    app = FastAPI(
        title="tunesmith",
        version=__version__,
        description="Self-hosted fine-tuning with OpenAI's files, fine-tuning and chat APIs.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.keys = settings.keys()
    app.state.pool = ModelPool(
        settings.max_loaded_models,
        pinned=set(settings.pinned_models),
        max_adapters=settings.max_loaded_adapters,
        max_batch=settings.max_batch,
        precision=settings.serve_precision,
        gguf_of=gguf,
    )
    app.state.gguf = gguf
    app.state.started = time.time()
    app.state.estimates = {}  # recent job estimates (server/estimates.py)
    app.state.exports = Exports(settings)
    errors.install(app)
    for module in (files, fine_tuning, exports, graders, models, chat):
        app.include_router(module.router, prefix="/v1")
    dashboard.install(app)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "store": store.dialect}

    return app


def gguf_source(settings: ServerSettings) -> GgufCache | None:
    """Where the pool finds GGUF files for llama.cpp, or None: everything runs on torch."""
    from tunesmith.inference.llamacpp import available

    engine = settings.serve_engine
    if engine == "torch":
        return None
    if not available():
        if engine == "llamacpp":
            raise TunesmithError(
                "serve_engine is 'llamacpp' but llama-cpp-python is not installed",
                hint="pip install 'tunesmith[llamacpp]', or set serve_engine to auto or torch",
            )
        return None
    if engine == "auto" and _has_gpu():
        return None
    return GgufCache(
        settings.home,
        settings.serve_gguf_quantize,
        max_bytes=int(settings.serve_gguf_cache_gb * 1024**3),
    )


def _has_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())
