"""kill -9 of a worker mid-job: another worker finishes the job from its checkpoint. kill -9 of
the server: restarted on the same store, every file, job and event is still there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from live import KEYS, Live, free_port, wait_for
from train_helpers import write_chat

pytestmark = pytest.mark.filterwarnings("ignore")


def _env(live_home: Path, tiny: Path, settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNESMITH_")}
    env.update(
        TUNESMITH_HOME=str(live_home),
        TUNESMITH_API_KEYS=KEYS,
        TUNESMITH_MODELS=json.dumps({"tiny": str(tiny)}),
        TUNESMITH_JOB_DEFAULTS=json.dumps(settings.job_defaults),
        TUNESMITH_LEASE_S="3",
        TUNESMITH_HEARTBEAT_S="0.5",
    )
    return env


def _worker(env: dict[str, str], db: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tunesmith.cli", "worker", "--db", db]
    return subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def test_a_killed_worker_s_job_is_finished_by_another_from_its_checkpoint(
    live: Live, tiny_model_dir: Path, tmp_path: Path
) -> None:
    client = live.client()
    with open(write_chat(tmp_path / "train.jsonl", 48), "rb") as fh:
        train = client.files.create(file=fh, purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=train,
        seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
    )
    env = _env(live.settings.home, tiny_model_dir, live.settings)
    first = _worker(env, live.settings.db_url)
    second = None
    try:
        wait_for(lambda: list(client.fine_tuning.jobs.checkpoints.list(job.id)), timeout=180)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # nobody knows yet
        second = _worker(env, live.settings.db_url)
        done = wait_for(
            lambda: (
                (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed")
                and j
            ),
            timeout=240,
        )
        assert done.status == "succeeded", done.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=200)]
        assert any(m.startswith("Resuming from the last checkpoint") for m in messages)
        steps = {
            e.data["step"]
            for e in client.fine_tuning.jobs.list_events(job.id, limit=200)
            if e.type == "metrics"
        }
        total = max(steps)
        assert steps == set(range(1, total + 1))  # every step reported, none lost
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(timeout=60)


def test_a_killed_server_restarts_on_an_intact_store(tiny_model_dir: Path, tmp_path: Path) -> None:
    from live import make_settings

    home = tmp_path / "home"
    settings = make_settings(home, tiny_model_dir)
    env = _env(home, tiny_model_dir, settings)
    port = free_port()
    cmd = [sys.executable, "-m", "tunesmith.cli", "serve", "--port", str(port)]
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer key-a"}

    def start() -> subprocess.Popen:
        p = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                return httpx.get(url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=60, every=0.2)
        return p

    server = start()
    try:
        body = write_chat(tmp_path / "t.jsonl", 20).read_bytes()
        f = httpx.post(
            url + "/v1/files",
            headers=auth,
            data={"purpose": "fine-tune"},
            files={"file": ("t.jsonl", body)},
        ).json()
        job = httpx.post(
            url + "/v1/fine_tuning/jobs",
            headers=auth,
            json={"model": "tiny", "training_file": f["id"]},
        ).json()
        before = httpx.get(url + f"/v1/fine_tuning/jobs/{job['id']}/events", headers=auth).json()
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        time.sleep(0.2)
        server = start()
        assert httpx.get(url + f"/v1/files/{f['id']}", headers=auth).json()["id"] == f["id"]
        again = httpx.get(url + f"/v1/fine_tuning/jobs/{job['id']}", headers=auth).json()
        assert again["status"] == "queued" and again["training_file"] == f["id"]
        after = httpx.get(url + f"/v1/fine_tuning/jobs/{job['id']}/events", headers=auth).json()
        assert [e["id"] for e in after["data"]] == [e["id"] for e in before["data"]]
        got = httpx.get(url + f"/v1/files/{f['id']}/content", headers=auth).content
        assert got == body
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
