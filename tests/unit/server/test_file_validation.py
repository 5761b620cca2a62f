"""GET /v1/files/{id}/validation: the validator's whole report, owner only, no server paths;
with ?model= the token statistics and the trained-token preview under that model."""

from __future__ import annotations

import json

from route_helpers import GOOD_ROW, A, B, chat_rows, error_of, upload

BAD = (
    json.dumps(GOOD_ROW)
    + "\n"
    + json.dumps({"messages": [{"role": "robot", "content": "x"}]})
    + "\n"
    + json.dumps(GOOD_ROW)
    + "\n"
    + "not json\n"
).encode()


def test_every_bad_line_with_its_file_field_and_reason(client) -> None:
    f = upload(client, BAD, name="tickets.jsonl")
    assert f["status"] == "error"
    r = client.get(f"/v1/files/{f['id']}/validation", headers=A)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["object"] == "file.validation" and report["file_id"] == f["id"]
    assert report["ok"] is False and report["rows_read"] == 4 and report["rows_rejected"] == 2
    lines = {e["line"]: e for e in report["errors"]}
    assert set(lines) == {2, 4, None}  # None: file-level (too few usable rows)
    assert lines[2]["file"] == "tickets.jsonl" and lines[2]["field"] == "messages[0].role"
    assert "robot" in lines[2]["message"] and lines[2]["code"] == "unknown_role"
    assert lines[4]["code"] == "invalid_json"
    assert report["model"] is None and report.get("preview") is None  # structure only
    home = str(client.app.state.settings.home)
    assert home not in r.text and "path" not in report["errors"][0]


def test_token_statistics_and_preview_under_a_model(client) -> None:
    f = upload(client, chat_rows(12))
    r = client.get(f"/v1/files/{f['id']}/validation?model=tiny", headers=A)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ok"] and report["model"] == "tiny"
    tokens = report["stats"]["tokens"]
    assert tokens["total"]["sum"] > tokens["trained"]["sum"] > 0
    assert report["settings"]["model"] == "tiny" and report["settings"]["max_seq_len"] == 128
    preview = report["preview"]
    assert len(preview) == 3 and preview[0]["line"] == 1
    trained = "".join(s["text"] for s in preview[0]["spans"] if s["trained"])
    untrained = "".join(s["text"] for s in preview[0]["spans"] if not s["trained"])
    assert "delivery" in trained and "Classify" in untrained and "Classify" not in trained
    assert str(client.app.state.settings.home) not in r.text
    assert str(client.app.state.settings.models["tiny"]) not in r.text
    # kept: asked again, the same report, from the cache
    cache = client.app.state.settings.home / "reports" / f["id"]
    assert len(list(cache.iterdir())) == 1
    assert client.get(f"/v1/files/{f['id']}/validation?model=tiny", headers=A).json() == report
    # deleting the file deletes its reports
    assert client.delete(f"/v1/files/{f['id']}", headers=A).status_code == 200
    assert not cache.exists()


def test_a_bad_file_previews_the_rows_before_its_first_bad_line(client) -> None:
    f = upload(client, BAD)
    report = client.get(f"/v1/files/{f['id']}/validation?model=tiny", headers=A).json()
    assert {e["line"] for e in report["errors"]} == {2, 4, None}
    assert [p["line"] for p in report["preview"]] == [1]
    assert report["stats"]["tokens"]["total"]["sum"] > 0  # the good rows are counted


def test_not_a_data_file_is_one_error_naming_the_file(client) -> None:
    from types import SimpleNamespace

    from tunesmith.server.filecheck import public_report

    f = upload(client, b"\x80\x04\x95 pickle bytes", name="data.pkl")
    report = client.get(f"/v1/files/{f['id']}/validation", headers=A).json()
    assert report["ok"] is False and report["errors"][0]["file"] == "data.pkl"
    assert report["errors"][0]["message"]
    # an upload the validator could not read at all has no report: its reason is the error
    settings = client.app.state.settings
    record = SimpleNamespace(
        path=str(settings.files_dir / "file-x.jsonl"), filename="x.jsonl",
        status_details=f"cannot read {settings.files_dir}/file-x.jsonl",
    )  # fmt: skip
    got = public_report(record, None, settings, None)
    assert got["ok"] is False and got["error_count"] == 1 and got["rows_read"] == 0
    assert got["errors"][0]["message"] == "cannot read x.jsonl"
    assert got["errors"][0]["line"] is None and got["errors"][0]["file"] == "x.jsonl"


def test_only_the_owner_reads_it_and_unknown_models_are_400(client) -> None:
    f = upload(client, BAD)
    for path in (f"/v1/files/{f['id']}/validation", "/v1/files/file-nope/validation"):
        assert error_of(client.get(path, headers=B if "nope" not in path else A), 404)["code"] == (
            "file_not_found"
        )
    assert error_of(client.get(f"/v1/files/{f['id']}/validation"), 401)
    e = error_of(client.get(f"/v1/files/{f['id']}/validation?model=../../etc", headers=A), 400)
    assert e["param"] == "model" and e["code"] == "model_not_available"
