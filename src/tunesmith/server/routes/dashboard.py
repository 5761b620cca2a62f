"""The web dashboard at `/`: static files shipped inside the package (server/static), no build
step, nothing fetched from elsewhere (works offline). The page is a client of the public HTTP
API only — the same routes the SDK uses, with the key the user types (kept in the tab's
sessionStorage, sent as `Authorization: Bearer`) — so it needs no privileges of its own and
serving it needs no key.

A strict Content-Security-Policy (own scripts and styles only, no inline code, connections to
this origin only) makes a rendering slip with hostile data (file names, error messages, model
answers) inert rather than executable.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"
HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def install(app: FastAPI) -> None:
    """Serve the dashboard: `/` is the page, `/dashboard/*` its scripts and styles."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)

    @app.get("/dashboard", include_in_schema=False)
    def bare() -> RedirectResponse:
        return RedirectResponse("/")

    app.mount("/dashboard", StaticFiles(directory=STATIC), name="dashboard")
