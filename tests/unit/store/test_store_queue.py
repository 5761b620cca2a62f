"""The queue: claims, leases, heartbeats, takeover of a dead worker's job, and no job ever
run twice when workers race (threads and processes, on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tunesmith.store import Store, queue, repo
from tunesmith.store.records import JobRecord

CHILD = Path(__file__).with_name("store_child.py")


def _queued(store: Store, n: int = 1, project: str = "a") -> list[JobRecord]:
    jobs = []
    for _ in range(n):
        job = repo.create_job(store, project, model="base", training_file="file-1")
        jobs.append(repo.transition(store, job.id, "queued", expect={"validating_files"}))
    return jobs


def test_claim_takes_the_oldest_queued_job_and_leases_it(store: Store) -> None:
    repo.create_job(store, "a", model="base", training_file="file-1")  # validating: not claimable
    paused = _queued(store)[0]
    repo.pause_job(store, "a", paused.id)
    first, second = _queued(store, 2)
    claimed = queue.claim(store, "w1", lease_s=60)
    assert claimed.id == first.id and claimed.status == "running"
    assert claimed.lease_owner == "w1" and claimed.attempts == 1 and claimed.started_at
    assert claimed.lease_expires_at == pytest.approx(time.time() + 60, abs=5)
    assert queue.claim(store, "w2", lease_s=60).id == second.id
    assert queue.claim(store, "w3", lease_s=60) is None


def test_heartbeat_extends_only_the_owners_lease_and_shows_cancel_and_pause(store: Store) -> None:
    job = _queued(store)[0]
    claimed = queue.claim(store, "w1", lease_s=5)
    beat = queue.heartbeat(store, job.id, "w1", lease_s=100)
    assert beat.lease_expires_at > claimed.lease_expires_at + 50 and beat.status == "running"
    assert queue.heartbeat(store, job.id, "w2", lease_s=100) is None
    assert queue.heartbeat(store, "ftjob-nope", "w1", lease_s=100) is None
    repo.pause_job(store, "a", job.id)
    assert queue.heartbeat(store, job.id, "w1", lease_s=100).status == "pausing"
    repo.cancel_job(store, "a", job.id)
    seen = queue.heartbeat(store, job.id, "w1", lease_s=100)
    assert seen.status == "cancelled" and seen.cancel_requested
    assert queue.finish(store, job.id, "w1", "succeeded") is None  # cancelled stays cancelled
    assert repo.get_job(store, "a", job.id).status == "cancelled"


def test_an_expired_lease_is_taken_over_and_the_old_owner_is_locked_out(store: Store) -> None:
    job = _queued(store)[0]
    assert queue.claim(store, "dead", lease_s=0.3).attempts == 1
    assert queue.claim(store, "w2", lease_s=60) is None  # the lease still holds
    time.sleep(0.5)
    taken = queue.claim(store, "w2", lease_s=60)
    assert taken.id == job.id and taken.lease_owner == "w2" and taken.attempts == 2
    assert taken.status == "running" and taken.started_at is not None
    assert queue.heartbeat(store, job.id, "dead", lease_s=60) is None
    assert queue.finish(store, job.id, "dead", "failed") is None
    assert queue.release(store, job.id, "dead") is None
    done = queue.finish(store, job.id, "w2", "succeeded", trained_tokens=42)
    assert done.status == "succeeded" and done.trained_tokens == 42 and done.finished_at
    assert done.lease_owner is None and done.lease_expires_at is None


def test_a_pausing_job_taken_over_stays_pausing_and_is_released_as_paused(store: Store) -> None:
    job = _queued(store)[0]
    queue.claim(store, "dead", lease_s=0.3)
    repo.pause_job(store, "a", job.id)
    time.sleep(0.5)
    taken = queue.claim(store, "w2", lease_s=60)
    assert taken.status == "pausing" and taken.attempts == 2
    paused = queue.release(store, job.id, "w2", to="paused")
    assert paused.status == "paused" and paused.lease_owner is None
    assert queue.claim(store, "w3", lease_s=60) is None
    assert repo.resume_job(store, "a", job.id).status == "queued"
    again = queue.claim(store, "w3", lease_s=60)
    assert again.status == "running" and again.attempts == 3
    assert again.started_at == taken.started_at  # set once, on the first claim
    with pytest.raises(ValueError, match="finish"):
        queue.release(store, job.id, "w3", to="succeeded")
    assert queue.release(store, job.id, "w3").status == "queued"  # back in the queue


def _check_each_ran_once(store: Store, jobs: list[JobRecord], runs: list[list[str]]) -> None:
    claimed = [job_id for run in runs for job_id in run]
    assert sorted(claimed) == sorted(j.id for j in jobs), runs  # all, and none twice
    for job in jobs:
        final = repo.get_job_any(store, job.id)
        assert final.status == "succeeded" and final.attempts == 1


def test_two_threads_racing_over_ten_jobs_run_each_exactly_once(store: Store) -> None:
    jobs = _queued(store, 10)
    start = threading.Barrier(2, timeout=30)
    runs: dict[str, list[str]] = {"t1": [], "t2": []}
    errors: list[BaseException] = []

    def work(worker: str) -> None:
        try:
            start.wait()
            while (job := queue.claim(store, worker, lease_s=600)) is not None:
                runs[worker].append(job.id)
                time.sleep(0.005)
                assert queue.finish(store, job.id, worker, "succeeded") is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    _check_each_ran_once(store, jobs, list(runs.values()))


def test_two_processes_racing_over_ten_jobs_run_each_exactly_once(store: Store) -> None:
    jobs = _queued(store, 10)
    procs = [
        subprocess.Popen(
            [sys.executable, str(CHILD), "claim", store.url, f"proc{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        for p in procs:  # both have opened the store: start them together
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    _check_each_ran_once(store, jobs, [json.loads(out.strip().splitlines()[-1]) for out, _ in outs])
