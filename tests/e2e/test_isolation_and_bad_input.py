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
        ({"model": "tiny", "training_file": "f", "method": {"type": "dpo"}}, "training_file"),
        (
            {"model": "tiny", "training_file": "f", "method": {"type": "dpo", "supervised": {}}},
            "method.supervised",
        ),
        (
            {
                "model": "tiny",
                "training_file": "f",
                "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}},
            },
            "method.dpo.hyperparameters.beta",
        ),
        (
            {"model": "tiny", "training_file": "f", "method": {"type": "reinforcement"}},
            "method.reinforcement.grader",
        ),
        (
            {
                "model": "tiny",
                "training_file": "f",
                "method": {"type": "reinforcement", "reinforcement": {"hyperparameters": {}}},
            },
            "method.reinforcement.grader",
        ),
        (
            {
                "model": "tiny",
                "training_file": "f",
                "method": {
                    "type": "reinforcement",
                    "reinforcement": {
                        "grader": {
                            "type": "string_check",
                            "name": "s",
                            "input": "{{sample.output_text}}",
                            "reference": "{{item.answer}}",
                            "operation": "eq",
                        },
                        "hyperparameters": {"compute_multiplier": 11},
                    },
                },
            },
            "method.reinforcement.hyperparameters.compute_multiplier",
        ),
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


GRADER = {
    "type": "string_check",
    "name": "label",
    "input": "{{sample.output_json.category}}",
    "reference": "{{item.label}}",
    "operation": "eq",
}


def _openai_pairs(path: Path, n: int) -> bytes:
    """OpenAI's DPO JSONL: input.messages, preferred_output, non_preferred_output."""
    from train_helpers import write_pairs

    rows = []
    for line in write_pairs(path, n).read_text().splitlines():
        r = json.loads(line)
        rows.append(
            {
                "input": {"messages": r["prompt"]},
                "preferred_output": [{"role": "assistant", "content": r["chosen"]}],
                "non_preferred_output": [{"role": "assistant", "content": r["rejected"]}],
            }
        )
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _create(client, **body):
    return client.post("/v1/fine_tuning/jobs", headers=A, json={"model": "tiny", **body})


def test_each_method_takes_only_the_files_it_learns_from(client, tmp_path: Path) -> None:
    chat = _upload(client, write_chat(tmp_path / "chat.jsonl", 12).read_bytes()).json()
    pairs = _upload(client, _openai_pairs(tmp_path / "pairs.jsonl", 12), name="pairs.jsonl").json()
    assert chat["status"] == pairs["status"] == "processed"  # both are good data

    dpo = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}
    job = _create(client, training_file=chat["id"], method=dpo).json()
    assert job["status"] == "failed", job
    error = job["error"]
    assert error["code"] == "invalid_training_file" and error["param"] == "training_file"
    assert "'dpo'" in error["message"] and "preference pairs" in error["message"]
    assert "lines 1-12" in error["message"] and "conversations" in error["message"]
    assert job["method"] == {
        "type": "dpo",
        "dpo": {
            "hyperparameters": {
                "n_epochs": "auto",
                "batch_size": "auto",
                "learning_rate_multiplier": "auto",
                "beta": 0.2,
            }
        },
    }
    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=A).json()["data"]
    assert any(e["level"] == "error" and "preference pairs" in e["message"] for e in events)

    job = _create(client, training_file=pairs["id"]).json()  # supervised by default
    assert job["status"] == "failed" and job["error"]["code"] == "invalid_training_file"
    assert "'supervised'" in job["error"]["message"] and "'dpo'" in job["error"]["message"]

    # the validation file is held to the same rule
    job = _create(
        client, training_file=pairs["id"], validation_file=chat["id"], method={"type": "dpo"}
    ).json()
    assert job["status"] == "failed" and job["error"]["param"] == "validation_file"
    assert job["error"]["code"] == "invalid_validation_file"

    # a file gone from disk is said to be gone, without our paths
    home = Path(client.app.state.settings.files_dir)
    (home / f"{chat['id']}.jsonl").unlink()
    job = _create(client, training_file=chat["id"], method={"type": "dpo"}).json()
    assert job["status"] == "failed" and "no longer exists" in job["error"]["message"]
    assert str(home) not in job["error"]["message"]

    job = _create(client, training_file=pairs["id"], method={"type": "dpo"}).json()
    assert job["status"] == "queued" and job["method"]["dpo"]["hyperparameters"]["beta"] == "auto"
    assert job["hyperparameters"] == {
        "n_epochs": "auto",
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
    }


def test_reinforcement_jobs_check_their_grader_first(client, tmp_path: Path) -> None:
    from tunesmith.config import METHODS_NOT_YET

    chat = _upload(client, write_chat(tmp_path / "chat.jsonl", 12).read_bytes()).json()

    def rl(grader, **hyper):
        body = {"grader": grader, "hyperparameters": hyper}
        return _create(
            client,
            training_file=chat["id"],
            method={"type": "reinforcement", "reinforcement": body},
        )

    e = _error(rl({**GRADER, "operation": "contains"}), 400)
    assert e["code"] == "invalid_grader"
    assert e["param"] == "method.reinforcement.grader.operation"
    assert "method.reinforcement.grader.operation" in e["message"]
    e = _error(rl({"type": "multi", "name": "m", "graders": {"a": {"type": "nope"}}}), 400)
    assert e["param"].startswith("method.reinforcement.grader.")
    code = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"}
    e = _error(rl(code), 400)  # user code: refused unless the operator enabled it
    assert e["param"] == "method.reinforcement.grader.type"
    assert "TUNESMITH_ALLOW_PYTHON_GRADERS" in e["message"]
    judge = {
        "type": "score_model",
        "name": "judge",
        "model": "tiny",
        "input": [{"role": "user", "content": "Score {{sample.output_text}} from 0 to 1"}],
        "range": [0, 1],
    }
    from tunesmith.config import ReinforcementOptions

    if "judges" not in ReinforcementOptions.model_fields:  # training cannot load judges yet
        e = _error(rl(judge), 400)
        assert e["param"] == "method.reinforcement.grader.model"
        assert "cannot load judge models yet" in e["message"]
    e = _error(rl(GRADER, reasoning_effort="extreme"), 400)
    assert e["param"] == "method.reinforcement.hyperparameters.reasoning_effort"

    r = rl(GRADER, compute_multiplier=2, eval_samples=2, reasoning_effort="low")
    if "reinforcement" in METHODS_NOT_YET:  # until GRPO lands: refused, saying why
        e = _error(r, 400)
        assert e["code"] == "unsupported_method" and e["param"] == "method.type"
        assert METHODS_NOT_YET["reinforcement"] in e["message"]
        return
    job = r.json()
    assert r.status_code == 200 and job["method"]["type"] == "reinforcement", job
    block = job["method"]["reinforcement"]
    assert block["grader"] == GRADER
    assert block["hyperparameters"]["compute_multiplier"] == 2
    assert block["hyperparameters"]["reasoning_effort"] == "low"
    assert block["hyperparameters"]["eval_interval"] == "auto"
    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=A).json()["data"]
    assert any("reasoning_effort 'low' changes nothing" in e["message"] for e in events)
    # a chat file holds the answers the model should write: not prompts, line by line
    assert job["status"] == "failed" and job["error"]["code"] == "invalid_training_file"
    assert "line 1:" in job["error"]["message"] and "'reinforcement'" in job["error"]["message"]

    prompts = b"".join(
        json.dumps(
            {"messages": [{"role": "user", "content": f"sum {i} 1"}], "answer": i + 1}
        ).encode()
        + b"\n"
        for i in range(12)
    )
    f = _upload(client, prompts, name="prompts.jsonl").json()
    assert f["status"] == "processed", f  # prompts are good data (for reinforcement)
    body = {"grader": {**GRADER, "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}}
    method = {"type": "reinforcement", "reinforcement": body}
    job = _create(client, training_file=f["id"], method=method).json()
    assert job["status"] == "queued", job
    job = _create(client, training_file=f["id"]).json()  # supervised: prompts have no answers
    assert job["status"] == "failed" and job["error"]["code"] == "invalid_training_file"
    assert "line 1:" in job["error"]["message"]


def test_python_graders_in_jobs_follow_the_operators_setting(
    tmp_path: Path, tiny_model_dir
) -> None:
    from tunesmith.config import METHODS_NOT_YET
    from tunesmith.server import create_app

    if "reinforcement" in METHODS_NOT_YET:
        pytest.skip(f"reinforcement jobs wait for GRPO: {METHODS_NOT_YET['reinforcement']}")
    settings = make_settings(tmp_path / "home", tiny_model_dir, allow_python_graders=True)
    code = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"}
    rows = b"".join(
        json.dumps({"messages": [{"role": "user", "content": f"q{i}"}], "answer": i}).encode()
        + b"\n"
        for i in range(12)
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        f = _upload(c, rows, name="prompts.jsonl").json()
        method = {"type": "reinforcement", "reinforcement": {"grader": code}}
        r = _create(c, training_file=f["id"], method=method)
        assert r.status_code == 200 and r.json()["status"] == "queued", r.text
