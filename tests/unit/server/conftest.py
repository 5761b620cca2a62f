"""Fixtures of the server route tests: the app in-process (TestClient) over the tiny model
(helpers in route_helpers.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from route_helpers import make_server_settings


@pytest.fixture
def client(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from tunesmith.server import create_app

    app = create_app(make_server_settings(tmp_path / "home", tiny_model_dir))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
