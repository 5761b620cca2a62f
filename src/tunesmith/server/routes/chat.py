"""/v1/chat/completions and /v1/completions over the serving engine (`app.state.pool`).

Any model /v1/models lists works: a base model, a fine-tuned `ft:…` model (base + adapter), or a
checkpoint `…:ckpt-step-N`. Sampling follows OpenAI's defaults (temperature 1, top_p 1);
`temperature: 0` is greedy. `stop`, `seed`, `n`, `max_tokens` and usage counts are honoured;
`stream: true` answers with Server-Sent Events chunks ending in `data: [DONE]`.
Every choice of a call is queued on the engine at once, so the `n` choices (and concurrent
calls, for any adapter of the same base) are generated in one batch; streamed choices arrive
interleaved, each chunk naming its `index`. A client that goes away cancels its rows.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from tunesmith.server.auth import project_of
from tunesmith.server.errors import ApiError
from tunesmith.server.routes.models import target
from tunesmith.server.schemas import ChatMessage, ChatRequest, CompletionRequest

router = APIRouter()
DEFAULT_MAX_TOKENS = 512


def _text(message: ChatMessage) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") not in ("text", "input_text") or not isinstance(part.get("text"), str):
            raise ApiError(
                400,
                "only text content parts are supported",
                code="invalid_content",
                param="messages",
            )
        parts.append(part["text"])
    return "".join(parts)


def _stops(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4:
        raise ApiError(400, "at most 4 stop sequences", code="invalid_stop", param="stop")
    return [s for s in stops if s]


def _settings(request: Request, body: Any, max_tokens: int | None) -> Any:
    from tunesmith.inference import GenerationSettings

    limit = request.app.state.settings.max_tokens_limit
    wanted = max_tokens or min(DEFAULT_MAX_TOKENS, limit)
    if wanted > limit:
        raise ApiError(
            400,
            f"max_tokens is at most {limit} here (got {wanted})",
            code="invalid_max_tokens",
            param="max_tokens",
        )
    temperature = 1.0 if body.temperature is None else body.temperature
    return GenerationSettings(
        max_new_tokens=wanted,
        temperature=temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        batch_size=1,
    )


def _served(request: Request, project: str, model: str) -> Any:
    from tunesmith.errors import TunesmithError
    from tunesmith.server.errors import log

    name = target(request, project, model)
    try:
        return request.app.state.pool.get(name)
    except TunesmithError as exc:  # the detail names server paths: it goes to the log only
        log.warning("model %s could not be loaded: %s", model, exc)
        raise _unavailable(model) from None


def _unavailable(model: str) -> ApiError:
    return ApiError(
        503, f"model {model!r} cannot be loaded right now", code="model_unavailable", param="model"
    )


def _check_context(served: Any, ids: list[int], settings: Any) -> None:
    limit = served.context
    if limit and len(ids) + settings.max_new_tokens > limit:
        raise ApiError(
            400,
            f"the prompt ({len(ids)} tokens) plus max_tokens "
            f"({settings.max_new_tokens}) exceed the model's context of {limit}",
            code="context_length_exceeded",
            param="messages",
        )


def _submit(
    served: Any,
    model: str,
    jobs: list[tuple[Any, list[int], Any]],
    stops: list[str],
    sink: Any,
) -> list[Any]:
    """Queue every (tag, ids, settings) on the engine at once, so the choices of one call (and
    the calls of other clients) are generated in one batch, into the shared `sink`. Returns the
    requests (cancel them when the client goes away)."""
    from tunesmith.errors import TunesmithError
    from tunesmith.server.errors import log

    requests: list[Any] = []
    try:
        for tag, ids, settings in jobs:
            requests.append(served.submit(ids, settings, stops, sink=sink, tag=tag))
    except TunesmithError as exc:  # an adapter evicted since and now failing to load again
        _cancel(requests)
        log.warning("model %s could not be loaded: %s", model, exc)
        raise _unavailable(model) from None
    except BaseException:
        _cancel(requests)
        raise
    return requests


def _cancel(requests: list[Any]) -> None:
    for r in requests:
        r.cancel()


def _gather(
    served: Any, model: str, jobs: list[tuple[Any, list[int], Any]], stops: list[str]
) -> dict[Any, Any]:
    """Run the jobs and wait: the `Completion` of every request, by tag. (A plain handler runs
    in Starlette's thread pool: blocking on a queue here is fine.)"""
    import queue

    from tunesmith.inference.completion import Completion
    from tunesmith.inference.scheduler import results

    sink: queue.Queue[Any] = queue.Queue()
    requests = _submit(served, model, jobs, stops, sink)
    try:
        return {
            tag: item for tag, item in results(sink, len(requests)) if isinstance(item, Completion)
        }
    finally:
        _cancel(requests)


def _stream(
    served: Any, model: str, jobs: list[tuple[Any, list[int], Any]], stops: list[str]
) -> tuple[Any, list[Any]]:
    """Queue the jobs for a streamed answer: their pieces go to an `AsyncSink` that the
    response reads on the event loop (no thread waits per stream). The handler runs in
    Starlette's thread pool, so the sink is made on the loop."""
    import anyio.from_thread

    from tunesmith.server.streaming import AsyncSink

    sink = anyio.from_thread.run_sync(AsyncSink)
    return sink, _submit(served, model, jobs, stops, sink)


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


def _seed(settings: Any, i: int) -> Any:
    """The i-th of n choices: its own seed (same request seed -> the same n answers)."""
    from dataclasses import replace

    base = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
    return replace(settings, seed=base + i)


@router.post("/chat/completions", response_model=None)
def chat(
    request: Request, body: ChatRequest, project: str = Depends(project_of)
) -> dict[str, Any] | StreamingResponse:
    from tunesmith.inference import prompt_ids
    from tunesmith.inference.completion import Completion
    from tunesmith.server.streaming import aresults

    settings = _settings(request, body, body.max_completion_tokens or body.max_tokens)
    stops = _stops(body.stop)
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": _text(m)}
        for m in body.messages
    ]
    served = _served(request, project, body.model)
    try:
        ids = prompt_ids(served.tokenizer, messages)
    except Exception as exc:  # the model's chat template refused the conversation
        raise ApiError(
            400,
            f"messages cannot be rendered by the model's chat template: {exc}",
            code="invalid_messages",
            param="messages",
        ) from None
    _check_context(served, ids, settings)
    n = body.n or 1
    cid, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
    head = {"id": cid, "created": created, "model": body.model, "system_fingerprint": None}
    jobs = [(i, ids, _seed(settings, i)) for i in range(n)]

    def chunk(i: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        choice = {"index": i, "delta": delta, "finish_reason": reason, "logprobs": None}
        return {**head, "object": "chat.completion.chunk", "choices": [choice]}

    if body.stream:
        usage_wanted = bool((body.stream_options or {}).get("include_usage"))
        sink, requests = _stream(served, body.model, jobs, stops)

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            completion = 0
            try:
                for i in range(n):
                    yield chunk(i, {"role": "assistant", "content": ""})
                async for i, item in aresults(sink, n):  # the choices' pieces as they come
                    if isinstance(item, Completion):
                        completion += item.completion_tokens
                        yield chunk(i, {}, item.finish_reason)
                    else:
                        yield chunk(i, {"content": item})
            finally:
                _cancel(requests)
            if usage_wanted:
                yield {
                    **head,
                    "object": "chat.completion.chunk",
                    "choices": [],
                    "usage": _usage(len(ids), completion),
                }

        return _sse(chunks())

    done = _gather(served, body.model, jobs, stops)
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": done[i].text, "refusal": None},
            "finish_reason": done[i].finish_reason,
            "logprobs": None,
        }
        for i in range(n)
    ]
    completion_tokens = sum(c.completion_tokens for c in done.values())
    return {
        **head,
        "object": "chat.completion",
        "choices": choices,
        "usage": _usage(len(ids), completion_tokens),
    }


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@router.post("/completions", response_model=None)
def completions(
    request: Request, body: CompletionRequest, project: str = Depends(project_of)
) -> dict[str, Any] | StreamingResponse:
    from tunesmith.inference.completion import Completion
    from tunesmith.server.streaming import aresults

    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not prompts or len(prompts) > 16:
        raise ApiError(
            400, "prompt must be a string or 1 to 16 strings", code="invalid_prompt", param="prompt"
        )
    settings = _settings(request, body, body.max_tokens)
    stops = _stops(body.stop)
    served = _served(request, project, body.model)
    tok = served.tokenizer
    encoded = [list(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    for ids in encoded:
        if not ids:
            raise ApiError(400, "prompt is empty", code="invalid_prompt", param="prompt")
        _check_context(served, ids, settings)
    n = body.n or 1
    cid, created = f"cmpl-{secrets.token_hex(12)}", int(time.time())
    head = {"id": cid, "object": "text_completion", "created": created, "model": body.model}
    jobs = [(p * n + i, ids, _seed(settings, i)) for p, ids in enumerate(encoded) for i in range(n)]

    def choice(index: int, text: str, reason: str | None) -> dict[str, Any]:
        return {"text": text, "index": index, "logprobs": None, "finish_reason": reason}

    if body.stream:
        sink, requests = _stream(served, body.model, jobs, stops)

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            try:
                async for index, item in aresults(sink, len(jobs)):
                    if isinstance(item, Completion):
                        yield {**head, "choices": [choice(index, "", item.finish_reason)]}
                    else:
                        yield {**head, "choices": [choice(index, item, None)]}
            finally:
                _cancel(requests)

        return _sse(chunks())
    done = _gather(served, body.model, jobs, stops)
    choices = [choice(k, done[k].text, done[k].finish_reason) for k in range(len(jobs))]
    prompt_tokens = sum(len(ids) for ids in encoded)  # each prompt once, whatever n
    completion_tokens = sum(c.completion_tokens for c in done.values())
    return {**head, "choices": choices, "usage": _usage(prompt_tokens, completion_tokens)}
