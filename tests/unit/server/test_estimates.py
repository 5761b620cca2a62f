"""POST /v1/tunesmith/fine_tuning/estimates: the job-creation body in, the automatic
hyperparameters with their reasons, what the request or the operator fixes, and the time
estimate out — checked as creating the job checks it, errors in OpenAI's envelope."""

from __future__ import annotations

import json

import pytest
from route_helpers import A, B, chat_rows, error_of, upload

from tunesmith.server.estimates import fixed_values, shape

URL = "/v1/tunesmith/fine_tuning/estimates"


def test_auto_resolved_explained_and_timed_before_launch(client) -> None:
    train = upload(client, chat_rows(24))
    val = upload(client, chat_rows(10, start=100), name="val.jsonl")
    body = {"model": "tiny", "training_file": train["id"], "validation_file": val["id"]}
    r = client.post(URL, headers=A, json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["object"] == "tunesmith.fine_tuning.estimate" and got["method"] == "supervised"
    assert got["ok"] is True and got["problems"] == []
    assert got["requested"] == {
        "n_epochs": "auto",
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
    }
    plan = got["hyperparameters"]
    assert isinstance(plan["epochs"], int) and plan["epochs"] >= 1
    assert plan["max_seq_len"] == 128  # the operator's data settings, as training reads them
    assert got["estimate"]["seconds"] > 0 and got["seconds"] == got["estimate"]["seconds"]
    assert got["data"]["rows_ok"] == 34 and got["data"]["tokens"]["total"]["sum"] > 0
    assert got["fixed"] == {}
    text = r.text
    for secret in (str(client.app.state.settings.home), client.app.state.settings.models["tiny"]):
        assert secret not in text
    # the same body again: answered from the recent estimates
    assert client.post(URL, headers=A, json=body).json() == got


def test_values_the_request_fixes_are_said_and_the_time_follows_them(client) -> None:
    train = upload(client, chat_rows(24))
    auto = client.post(URL, headers=A, json={"model": "tiny", "training_file": train["id"]})
    auto_epochs = auto.json()["hyperparameters"]["epochs"]
    epochs = auto_epochs + 2
    body = {
        "model": "tiny",
        "training_file": train["id"],
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": epochs, "batch_size": 2}},
        },
    }
    got = client.post(URL, headers=A, json=body).json()
    assert got["requested"]["n_epochs"] == epochs
    assert got["fixed"]["epochs"] == {"value": epochs, "by": "request", "auto": auto_epochs}
    assert got["fixed"]["batch_size"]["by"] == "request"
    est = got["estimate"]  # the validator's, for the automatic epochs: the training share scales
    share = min(est.get("train_seconds", est["seconds"]), est["seconds"])
    assert got["seconds"] == pytest.approx(est["seconds"] + share * 2 / auto_epochs, abs=0.11)
    assert any("epochs" in n for n in got["notes"])


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "gpt-4o", "training_file": "TRAIN"}, 400, "model"),
        ({"model": "tiny", "training_file": "file-missing"}, 400, "training_file"),
        (
            {"model": "tiny", "training_file": "TRAIN", "method": {"type": "dpo"}},
            400,
            "training_file",
        ),
        (
            {"model": "tiny", "training_file": "TRAIN", "method": {"type": "ppo"}},
            400,
            "method.type",
        ),
        ({"model": "tiny", "training_file": "TRAIN", "bogus": 1}, 400, "bogus"),
        (
            {"model": "tiny", "training_file": "TRAIN", "hyperparameters": {"n_epochs": 0}},
            400,
            "hyperparameters.n_epochs",
        ),
    ],
)
def test_mistakes_are_400s_naming_the_field(client, body, status, param) -> None:
    train = upload(client, chat_rows(12))
    body = json.loads(json.dumps(body).replace("TRAIN", train["id"]))
    assert error_of(client.post(URL, headers=A, json=body), status)["param"] == param


def test_another_projects_file_is_not_found_and_a_key_is_needed(client) -> None:
    train = upload(client, chat_rows(12))
    body = {"model": "tiny", "training_file": train["id"]}
    assert error_of(client.post(URL, headers=B, json=body), 400)["param"] == "training_file"
    assert error_of(client.post(URL, json=body), 401)["code"] == "invalid_api_key"


def test_reinforcement_says_why_it_has_no_time(client) -> None:
    rows = [
        {"messages": [{"role": "user", "content": f"Classify: parcel {i} is late"}], "label": "x"}
        for i in range(12)
    ]
    prompts = upload(client, "\n".join(json.dumps(r) for r in rows).encode())
    grader = {
        "type": "string_check", "name": "label", "operation": "eq",
        "input": "{{sample.output_text}}", "reference": "{{item.label}}",
    }  # fmt: skip
    body = {
        "model": "tiny",
        "training_file": prompts["id"],
        "method": {"type": "reinforcement", "reinforcement": {"grader": grader}},
    }
    r = client.post(URL, headers=A, json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["method"] == "reinforcement" and got["seconds"] is None
    assert any("reinforcement" in n for n in got["notes"])
    assert "compute_multiplier" in got["requested"]


def test_no_estimate_says_why() -> None:
    report = {"ok": True, "hyperparameters": None, "estimate": None, "stats": {"kind": "prompt"}}
    got = shape(report, method="reinforcement", hyper={}, job_defaults={})
    assert got["seconds"] is None and any("reinforcement" in n for n in got["notes"])


def test_reasons_the_validator_gives_are_lifted_and_new_fields_pass_through() -> None:
    report = {
        "ok": True,
        "hyperparameters": {
            "epochs": 4,
            "new_field": 7,
            "notes": {"epochs": "why four"},
            "why": ["one sentence"],
        },
        "estimate": {"seconds": 100.0, "train_seconds": 80.0, "something_new": "x"},
    }
    got = shape(report, method="supervised", hyper={"n_epochs": 2}, job_defaults={})
    assert got["hyperparameters"] == {"epochs": 4, "new_field": 7}
    assert got["explanations"] == {"epochs": "why four"} and "one sentence" in got["notes"]
    assert got["estimate"]["something_new"] == "x"
    assert got["seconds"] == 60.0  # 20 s not training + 80 s x 2/4 epochs


def test_the_operator_defaults_count_as_fixed_unless_the_request_fixes_them() -> None:
    fixed = fixed_values({"batch_size": 1, "grad_accum": 2, "epochs": "auto"}, {"n_epochs": 3})
    assert fixed == {
        "batch_size": {"value": 1, "by": "server"},
        "grad_accum": {"value": 2, "by": "server"},
        "epochs": {"value": 3, "by": "request"},
    }
    assert fixed_values({"epochs": 5}, {"n_epochs": 2})["epochs"]["by"] == "request"
