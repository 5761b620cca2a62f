"""Tenant isolation and hostile input: every mistake is a 4xx in OpenAI's envelope with a
clear message (`x-should-retry: false`), never a 5xx; uploads never touch a user-given path."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from live import make_settings
from train_helpers import write_chat

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}


@pytest.fixture
def client(tmp_path: Path, tiny_model_dir: Path):
    from tunesmith.server import create_app

    settings = make_settings(tmp_path / "home", tiny_model_dir, max_upload_bytes=200_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert response.headers.get("x-should-retry") == "false"
    return body["error"]


def _upload(client, content: bytes, name: str = "train.jsonl", headers=A, purpose="fine-tune"):
    return client.post(
        "/v1/files",
        headers=headers,
        data={"purpose": purpose},
        files={"file": (name, content, "application/jsonl")},
    )


def test_keys_are_required_and_projects_never_meet(client, tmp_path: Path) -> None:
    good = write_chat(tmp_path / "t.jsonl", 20).read_bytes()
    assert _error(client.get("/v1/files"), 401)["code"] == "invalid_api_key"
    assert _error(client.get("/v1/files", headers={"Authorization": "Bearer nope"}), 401)
    f = _upload(client, good).json()
    job = client.post(
        "/v1/fine_tuning/jobs", headers=A, json={"model": "tiny", "training_file": f["id"]}
    ).json()
    assert job["status"] == "queued"
    # B sees nothing of A's and cannot touch it
    assert client.get("/v1/files", headers=B).json()["data"] == []
    assert client.get("/v1/fine_tuning/jobs", headers=B).json()["data"] == []
    for method, path in [
        ("get", f"/v1/files/{f['id']}"),
        ("get", f"/v1/files/{f['id']}/content"),
        ("delete", f"/v1/files/{f['id']}"),
        ("get", f"/v1/fine_tuning/jobs/{job['id']}"),
        ("post", f"/v1/fine_tuning/jobs/{job['id']}/cancel"),
        ("get", f"/v1/fine_tuning/jobs/{job['id']}/events"),
        ("get", f"/v1/fine_tuning/jobs/{job['id']}/checkpoints"),
    ]:
        _error(getattr(client, method)(path, headers=B), 404)
    # B cannot use A's file for a job, nor chat with A's model names
    r = client.post(
        "/v1/fine_tuning/jobs", headers=B, json={"model": "tiny", "training_file": f["id"]}
    )
    assert _error(r, 400)["param"] == "training_file"
    r = client.post(
        "/v1/chat/completions",
        headers=B,
        json={"model": f"ft:tiny:{job['id']}", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert _error(r, 404)["code"] == "model_not_found"
    assert client.get(f"/v1/files/{f['id']}", headers=A).status_code == 200  # still A's


def test_uploads_are_checked_and_stored_under_generated_ids(client, tmp_path: Path) -> None:
    home = Path(client.app.state.settings.files_dir)
    f = _upload(
        client, write_chat(tmp_path / "t.jsonl", 12).read_bytes(), name="../../../../etc/passwd"
    ).json()
    assert f["filename"] == "passwd" and f["id"].startswith("file-")
    assert sorted(p.name for p in home.iterdir()) == [f["id"] + ".jsonl"]  # generated name only
    assert not (tmp_path / "etc").exists()

    bad = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}\n'
    f = _upload(client, bad * 3 + b"not json\n").json()
    assert f["status"] == "error"
    assert "line 1: messages[1].role: unknown role 'robot'" in f["status_details"]
    assert "line 4" in f["status_details"]
    f = _upload(client, pickle.dumps({"messages": []}), name="data.pkl").json()
    assert f["status"] == "error" and f["status_details"]
    assert str(home) not in f["status_details"]  # our paths never reach the client
    # a job on a bad file fails in validating_files with the lines named
    job = client.post(
        "/v1/fine_tuning/jobs", headers=A, json={"model": "tiny", "training_file": f["id"]}
    ).json()
    assert job["status"] == "failed" and job["error"]["code"] == "invalid_training_file"
    assert job["error"]["param"] == "training_file"

    e = _error(_upload(client, b"x" * 300_000), 413)
    assert e["code"] == "file_too_large"
    assert sorted(p.name for p in home.iterdir() if p.name.startswith(".")) == []  # no partial
    assert _error(_upload(client, b"{}", purpose="batch"), 400)["param"] == "purpose"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-4o", "training_file": "file-x"}, "model"),
        ({"model": "../../etc", "training_file": "file-x"}, "model"),
        ({"model": "tiny", "training_file": "file-missing"}, "training_file"),
        ({"model": "tiny", "training_file": "f", "method": {"type": "ppo"}}, "method.type"),
        ({"model": "tiny", "training_file": "f", "method": {"type": "dpo"}}, "method.type"),
        (
            {"model": "tiny", "training_file": "f", "hyperparameters": {"n_epochs": 0}},
            "hyperparameters.n_epochs",
        ),
        (
            {"model": "tiny", "training_file": "f", "metadata": {str(i): "v" for i in range(17)}},
            "metadata",
        ),
        ({"model": "tiny", "training_file": "f", "surprise": 1}, "surprise"),
        ({"model": "tiny"}, "training_file"),
    ],
)
def test_bad_job_requests_are_400s_naming_the_parameter(client, body, param) -> None:
    assert _error(client.post("/v1/fine_tuning/jobs", headers=A, json=body), 400)["param"] == param


def test_bad_bodies_and_unknown_things(client) -> None:
    r = client.post(
        "/v1/fine_tuning/jobs",
        headers={**A, "content-type": "application/json"},
        content=b"{not json",
    )
    _error(r, 400)
    _error(client.get("/v1/fine_tuning/jobs/ftjob-nope", headers=A), 404)
    _error(client.get("/v1/models/nope", headers=A), 404)
    r = client.post(
        "/v1/chat/completions",
        headers=A,
        json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
    )
    assert _error(r, 404)["param"] == "model"
    r = client.post(
        "/v1/chat/completions",
        headers=A,
        json={"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6},
    )
    assert _error(r, 400)["param"] == "max_tokens"
    r = client.post("/v1/chat/completions", headers=A, json={"model": "tiny", "messages": []})
    assert _error(r, 400)["param"] == "messages"
    _error(client.delete("/v1/models/tiny", headers=A), 403)
    assert json.loads(client.get("/openapi.json").text)["paths"]["/v1/files"]
