"""API keys -> projects. With keys configured, every request needs `Authorization: Bearer KEY`
(401 otherwise); the key's project scopes every object it can see. Keys are compared in
constant time and never logged."""

from __future__ import annotations

import hmac

from fastapi import Request

from tunesmith.server.errors import ApiError


def project_of(request: Request) -> str:
    keys: dict[str, str] = request.app.state.keys
    if not keys:
        return "default"
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "missing API key (send Authorization: Bearer KEY)", code="invalid_api_key"
        )
    token = token.strip()
    found = None
    for key, project in keys.items():  # no early exit: the time does not tell which key is near
        if hmac.compare_digest(key.encode(), token.encode()):
            found = project
    if found is None:
        raise ApiError(401, "invalid API key", code="invalid_api_key")
    return found
