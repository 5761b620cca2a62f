"""Exports of a succeeded job (/v1/fine_tuning/jobs/{id}/exports): a background task per job
and format, polled for status, downloaded as one file (the GGUF, or a zip of the merged
model); owner only, idempotent, errors in OpenAI's envelope, no server paths."""

from __future__ import annotations

import io
import json
import sys
import time
import zipfile
from pathlib import Path

import pytest
from route_helpers import A, B, chat_rows, error_of, upload

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from export_helpers import make_run

# peft, saving the test's adapters, calls a transformers method that is going away
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")


def succeeded_job(client, tmp_path: Path, tiny: Path, *, status: str = "succeeded", run=None):
    """A job of project A as the worker leaves it: its run directory holds a trained adapter."""
    from tunesmith.store import repo

    store, settings = client.app.state.store, client.app.state.settings
    f = upload(client, chat_rows(12))
    job = repo.create_job(
        store, "proj-a", model="tiny", training_file=f["id"], validation_file=None, suffix="t",
        seed=0, metadata={}, method={"type": "supervised"}, hyperparameters={},
    )  # fmt: skip
    run_dir = run or make_run(tiny, settings.jobs_dir / job.id / "run")
    repo.update_job(store, job.id, run_dir=str(run_dir))
    if status != "validating_files":
        job = repo.transition(store, job.id, status, fine_tuned_model=f"ft:tiny:t:{job.id}")
    return job


def wait_done(client, job_id: str, export_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/v1/fine_tuning/jobs/{job_id}/exports/{export_id}", headers=A)
        assert r.status_code == 200, r.text
        if r.json()["status"] in ("succeeded", "failed"):
            return dict(r.json())
        time.sleep(0.3)
    raise AssertionError(f"export {export_id} still {r.json()['status']}")


def test_gguf_export_downloads_with_its_modelfile(client, tmp_path, tiny_model_dir) -> None:
    job = succeeded_job(client, tmp_path, tiny_model_dir)
    url = f"/v1/fine_tuning/jobs/{job.id}/exports"
    first = client.post(url, headers=A, json={"format": "gguf"})
    assert first.status_code == 200, first.text
    export = first.json()
    assert export["object"] == "fine_tuning.job.export" and export["id"].startswith("ftexport-")
    assert export["status"] in ("queued", "running") and export["format"] == "gguf"
    again = client.post(url, headers=A, json={"format": "gguf"}).json()
    assert again["id"] == export["id"]  # one export per job and format at a time
    done = wait_done(client, job.id, export["id"])
    assert done["status"] == "succeeded", done
    assert done["download"]["name"].endswith("-q8_0.gguf") and "path" not in done["download"]
    assert {"Modelfile", "README.md", "export.json"} <= {f["name"] for f in done["files"]}
    assert done["roundtrip"]["tokens_match"] and done["progress"]["percent"] == 100
    # done: asking again is the same export, not a new one
    assert client.post(url, headers=A, json={"format": "gguf"}).json()["id"] == export["id"]

    got = client.get(f"{url}/{export['id']}/content", headers=A)
    assert got.status_code == 200 and got.content[:4] == b"GGUF"
    assert done["download"]["name"] in got.headers["content-disposition"]
    assert len(got.content) == done["download"]["bytes"]
    modelfile = client.get(f"{url}/{export['id']}/content?file=Modelfile", headers=A)
    assert modelfile.status_code == 200 and f"FROM ./{done['download']['name']}" in modelfile.text
    for name in ("../state.json", "../../run/manifest.json", "/etc/passwd", "out"):
        e = error_of(
            client.get(f"{url}/{export['id']}/content", params={"file": name}, headers=A), 404
        )
        assert e["param"] == "file"
    text = json.dumps(client.get(url, headers=A).json())
    assert str(client.app.state.settings.home) not in text

    # another project sees none of it
    for method, path in [
        ("get", url),
        ("post", url),
        ("get", f"{url}/{export['id']}"),
        ("get", f"{url}/{export['id']}/content"),
        ("delete", f"{url}/{export['id']}"),
    ]:
        kw = {"json": {"format": "gguf"}} if method == "post" else {}
        assert error_of(getattr(client, method)(path, headers=B, **kw), 404)["code"] == (
            "job_not_found"
        )
    # deleted: its files go, and the list is empty
    assert client.delete(f"{url}/{export['id']}", headers=A).json()["deleted"] is True
    assert client.get(url, headers=A).json()["data"] == []
    assert error_of(client.get(f"{url}/{export['id']}", headers=A), 404)["code"] == (
        "export_not_found"
    )


def test_merged_safetensors_download_as_one_zip(client, tmp_path, tiny_model_dir) -> None:
    job = succeeded_job(client, tmp_path, tiny_model_dir)
    url = f"/v1/fine_tuning/jobs/{job.id}/exports"
    export = client.post(url, headers=A, json={"format": "hf"}).json()
    done = wait_done(client, job.id, export["id"])
    assert done["status"] == "succeeded", done
    got = client.get(f"{url}/{export['id']}/content", headers=A)
    assert got.status_code == 200 and done["download"]["name"].endswith("-hf-f32.zip")
    names = zipfile.ZipFile(io.BytesIO(got.content)).namelist()
    folder = done["download"]["name"][: -len(".zip")]
    assert f"{folder}/model.safetensors" in names and f"{folder}/config.json" in names
    assert f"{folder}/tokenizer_config.json" in names
    assert [e["format"] for e in client.get(url, headers=A).json()["data"]] == ["hf"]


def test_a_failed_export_says_why_and_is_replaced(client, tmp_path, tiny_model_dir) -> None:
    run = make_run(tiny_model_dir, tmp_path / "run-of-a-gone-base")
    manifest = {"base_model": str(tmp_path / "gone"), "base_model_path": str(tmp_path / "gone")}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    job = succeeded_job(client, tmp_path, tiny_model_dir, run=run)
    url = f"/v1/fine_tuning/jobs/{job.id}/exports"
    export = client.post(url, headers=A, json={"format": "gguf"}).json()
    done = wait_done(client, job.id, export["id"])
    assert done["status"] == "failed" and done["error"]["message"], done
    assert str(client.app.state.settings.home) not in done["error"]["message"]
    assert done["error"]["code"] == "export_failed" and "base model" in done["error"]["message"]
    retry = client.post(url, headers=A, json={"format": "gguf"}).json()
    assert retry["id"] != export["id"]  # a failed export does not block a new attempt
    wait_done(client, job.id, retry["id"])
    assert [e["id"] for e in client.get(url, headers=A).json()["data"]] == [retry["id"]]


@pytest.mark.parametrize("status", ["validating_files", "failed", "cancelled"])
def test_only_a_succeeded_job_exports(client, tmp_path, tiny_model_dir, status) -> None:
    job = succeeded_job(client, tmp_path, tiny_model_dir, status=status)
    r = client.post(f"/v1/fine_tuning/jobs/{job.id}/exports", headers=A, json={"format": "gguf"})
    assert error_of(r, 400)["code"] == "invalid_job_state"


def test_bad_requests_are_4xx(client, tmp_path, tiny_model_dir) -> None:
    job = succeeded_job(client, tmp_path, tiny_model_dir)
    url = f"/v1/fine_tuning/jobs/{job.id}/exports"
    for body in ({"format": "exe"}, {}, {"format": "gguf", "out": "/etc"}):
        assert error_of(client.post(url, headers=A, json=body), 400)["code"] == "invalid_request"
    assert error_of(client.get(f"{url}/ftexport-nope", headers=A), 404)["code"] == (
        "export_not_found"
    )
    missing = "/v1/fine_tuning/jobs/ftjob-nope/exports"
    assert error_of(client.post(missing, headers=A, json={"format": "hf"}), 404)
    assert error_of(client.post(url, json={"format": "hf"}), 401)


def test_an_export_its_server_stopped_running_reads_as_interrupted(tmp_path) -> None:
    from types import SimpleNamespace

    from tunesmith.io import atomic_write_json
    from tunesmith.server.exports import STALE_S, Exports

    exports = Exports(SimpleNamespace(jobs_dir=tmp_path / "jobs", home=tmp_path, models={}))
    job = SimpleNamespace(id="ftjob-x", run_dir=None, fine_tuned_model=None)
    work = exports.root(job) / "ftexport-abc"
    work.mkdir(parents=True)
    state = {"id": "ftexport-abc", "format": "gguf", "status": "running", "created_at": 1,
             "heartbeat_at": time.time() - STALE_S - 1}  # fmt: skip
    atomic_write_json(work / "state.json", state)
    got = exports.get(job, "ftexport-abc")
    assert got is not None and got["status"] == "failed"
    assert got["error"]["code"] == "export_interrupted"
    fresh = {**state, "id": "ftexport-def", "heartbeat_at": time.time()}
    (exports.root(job) / "ftexport-def").mkdir()
    atomic_write_json(exports.root(job) / "ftexport-def" / "state.json", fresh)
    assert exports.get(job, "ftexport-def")["status"] == "running"  # another server's, alive
