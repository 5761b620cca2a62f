"""Every error in OpenAI's envelope: `{"error": {"message", "type", "param", "code"}}`.

User mistakes are 4xx with `x-should-retry: false` where a retry cannot help (the official SDK
retries 408/409/429/5xx otherwise); a 5xx means a bug of ours, and its body says nothing
internal. `ApiError` is what route code raises; `TunesmithError`s from the library map onto
400 (or 404 for a missing model).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.errors import ModelError, TunesmithError

log = logging.getLogger("tunesmith.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def not_found(kind: str, ident: str, param: str | None = None) -> ApiError:
    return ApiError(404, f"No such {kind}: {ident!r}", code=f"{kind}_not_found", param=param)


def model_not_offered(model: str, offered: Any, use: str) -> ApiError:
    """The 400 for a model the operator does not offer (`use`: what it cannot be used for)."""
    names = ", ".join(sorted(offered))
    return ApiError(
        400,
        f"model {model!r} cannot be {use} here (offered: {names})",
        code="model_not_available",
        param="model",
    )


def envelope(
    status: int, message: str, *, code: str | None = None, param: str | None = None
) -> JSONResponse:
    body = {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error"),
            "param": param,
            "code": code,
        }
    }
    headers = {"x-should-retry": "false"} if 400 <= status < 500 and status != 429 else {}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errs = exc.errors()
    if not errs:
        return "invalid request", None
    first: dict[str, Any] = errs[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
    param = ".".join(loc) or None
    msg = str(first.get("msg", "invalid value"))
    text = f"{param}: {msg}" if param else msg
    if len(errs) > 1:
        text += f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})"
    return text, param


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return envelope(exc.status, exc.message, code=exc.code, param=exc.param)

    @app.exception_handler(TunesmithError)
    async def _user(_: Request, exc: TunesmithError) -> JSONResponse:
        status = 404 if isinstance(exc, ModelError) and exc.code == "model_not_found" else 400
        return envelope(status, str(exc), code=exc.code, param=exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        text, param = _validation_message(exc)
        return envelope(400, text, code="invalid_request", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return envelope(exc.status_code, message)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")  # the traceback goes to the log, never to the client
        return envelope(500, "internal server error", code="internal_error")
