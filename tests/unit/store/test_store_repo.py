"""Files, jobs, events, checkpoints and models: CRUD, project scoping, cursor pages, the
status rules. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tunesmith.store import ACTIVE, STATUSES, TERMINAL, Store, queue, repo
from tunesmith.store.records import JobRecord


def _file(store: Store, project: str = "a", **kw: Any):
    args = {
        "filename": "train.jsonl",
        "purpose": "fine-tune",
        "bytes": 10,
        "path": "/data/x",
        "sha256": "ab" * 32,
        "status": "processed",
    }
    return repo.create_file(store, project, **{**args, **kw})


def _job(store: Store, project: str = "a", **kw: Any) -> JobRecord:
    return repo.create_job(store, project, **{"model": "base", "training_file": "file-1", **kw})


def _walk(fetch, page_size: int) -> list[str]:
    """Every page, the SDK's way: `after` = the last id seen, until has_more is False."""
    seen: list[str] = []
    after = None
    for _ in range(100):
        items, more = fetch(after=after, limit=page_size)
        assert len(items) <= page_size
        seen.extend(i.id for i in items)
        if not more:
            return seen
        after = items[-1].id
    raise AssertionError("pages never ended")


def _to_status(store: Store, job: JobRecord, status: str) -> JobRecord:
    """Drive a fresh job to `status` the way the service does."""
    if status == "validating_files":
        return job
    if status == "paused":
        return repo.pause_job(store, job.project, job.id)
    assert repo.transition(store, job.id, "queued", expect={"validating_files"})
    if status == "queued":
        return repo.get_job(store, job.project, job.id)
    claimed = queue.claim(store, "w", lease_s=600)
    assert claimed is not None and claimed.id == job.id
    if status == "running":
        return claimed
    if status == "pausing":
        return repo.pause_job(store, job.project, job.id)
    return queue.finish(store, job.id, "w", status)


# -- files --------------------------------------------------------------------------------------


def test_files_round_trip(store: Store) -> None:
    f = _file(store, status="error", status_details="line 7: bad role", report={"rows": 3})
    assert f.id.startswith("file-") and f.status == "error" and f.report == {"rows": 3}
    assert repo.get_file(store, "a", f.id) == f
    assert repo.delete_file(store, "a", f.id) == f
    assert repo.get_file(store, "a", f.id) is None
    assert repo.delete_file(store, "a", f.id) is None
    assert repo.list_files(store, "a") == ([], False)
    with pytest.raises(ValueError):
        _file(store, status="weird")


def test_a_project_never_sees_another_projects_files(store: Store) -> None:
    mine = _file(store, "a")
    theirs = _file(store, "b")
    assert repo.get_file(store, "a", theirs.id) is None
    assert repo.delete_file(store, "a", theirs.id) is None
    assert repo.get_file(store, "b", theirs.id) == theirs  # not deleted by a
    assert [f.id for f in repo.list_files(store, "a")[0]] == [mine.id]
    assert repo.list_files(store, "a", after=theirs.id) == ([], False)  # not a cursor for a


def test_file_pages_walk_every_file_in_both_orders(store: Store) -> None:
    ids = [_file(store, filename=f"{i}.jsonl").id for i in range(23)]
    _file(store, "b")
    _file(store, purpose="evals")
    for order, expected in (("desc", ids[::-1]), ("asc", ids)):
        walked = _walk(
            lambda order=order, **kw: repo.list_files(
                store, "a", purpose="fine-tune", order=order, **kw
            ),
            5,
        )
        assert walked == expected
    assert len(repo.list_files(store, "a")[0]) == 20  # default limit
    assert len(repo.list_files(store, "a", limit=100)[0]) == 24
    with pytest.raises(ValueError):
        repo.list_files(store, "a", order="sideways")


def test_a_file_deleted_mid_walk_still_anchors_the_cursor(store: Store) -> None:
    ids = [_file(store).id for _ in range(6)]
    page, more = repo.list_files(store, "a", limit=3)
    assert more and [f.id for f in page] == ids[:2:-1]
    repo.delete_file(store, "a", page[-1].id)
    rest, more = repo.list_files(store, "a", after=page[-1].id, limit=3)
    assert [f.id for f in rest] == ids[2::-1] and not more


# -- jobs ---------------------------------------------------------------------------------------


def test_jobs_round_trip(store: Store) -> None:
    job = _job(
        store,
        validation_file="file-2",
        suffix="mine",
        seed=7,
        metadata={"team": "x"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        hyperparameters={"n_epochs": 2},
    )
    assert job.id.startswith("ftjob-") and job.status == "validating_files"
    assert (job.seed, job.metadata, job.hyperparameters) == (7, {"team": "x"}, {"n_epochs": 2})
    assert job.attempts == 0 and not job.cancel_requested and job.result_files == []
    assert job.error is None and job.finished_at is None and job.lease_owner is None
    assert repo.get_job(store, "a", job.id) == job == repo.get_job_any(store, job.id)
    assert isinstance(_job(store).seed, int)  # a seed is always chosen
    updated = repo.update_job(
        store, job.id, trained_tokens=123, result_files=["file-r"], run_dir="/r"
    )
    assert (updated.trained_tokens, updated.result_files, updated.run_dir) == (
        123,
        ["file-r"],
        "/r",
    )
    assert updated.status == "validating_files"
    with pytest.raises(TypeError, match="transition"):
        repo.update_job(store, job.id, status="succeeded")
    with pytest.raises(TypeError, match="not a writable job field"):
        repo.update_job(store, job.id, colour="red")
    with pytest.raises(LookupError):
        repo.update_job(store, "ftjob-nope", trained_tokens=1)


def test_a_project_never_sees_or_changes_another_projects_jobs(store: Store) -> None:
    theirs = _job(store, "b")
    _job(store, "a")
    assert repo.get_job(store, "a", theirs.id) is None
    for action in (repo.cancel_job, repo.pause_job, repo.resume_job):
        assert action(store, "a", theirs.id) is None
    assert repo.get_job(store, "b", theirs.id).status == "validating_files"
    assert [j.project for j in repo.list_jobs(store, "a", limit=100)[0]] == ["a"]
    assert repo.list_jobs(store, "a", after=theirs.id) == ([], False)


def test_job_pages_walk_every_job_newest_first(store: Store) -> None:
    ids = [_job(store).id for _ in range(25)]
    _job(store, "b")
    assert _walk(lambda **kw: repo.list_jobs(store, "a", **kw), 4) == ids[::-1]
    assert repo.list_jobs(store, "a", limit=0)[0] == [repo.get_job(store, "a", ids[-1])]


def test_the_metadata_filter_keeps_jobs_with_every_pair(store: Store) -> None:
    tagged = []
    for i in range(30):
        meta = {"team": "x" if i % 3 == 0 else "y", 'we"ird key': "v"}
        if i % 6 == 0:
            meta["env"] = "prod"
        job = _job(store, metadata=meta)
        if i % 6 == 0:
            tagged.append(job.id)
    _job(store, "b", metadata={"team": "x", "env": "prod"})
    want = {"team": "x", "env": "prod", 'we"ird key': "v"}
    walked = _walk(lambda **kw: repo.list_jobs(store, "a", metadata=want, **kw), 2)
    assert walked == tagged[::-1]
    assert (
        len(_walk(lambda **kw: repo.list_jobs(store, "a", metadata={"team": "x"}, **kw), 3)) == 10
    )
    assert repo.list_jobs(store, "a", metadata={"team": "z"}) == ([], False)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_statuses_never_change(store: Store, terminal: str) -> None:
    job = _to_status(store, _job(store), terminal)
    assert job.status == terminal and job.finished_at is not None
    for to in sorted(STATUSES):
        assert repo.transition(store, job.id, to) is None
        assert repo.transition(store, job.id, to, expect=set(STATUSES)) is None
        assert queue.finish(store, job.id, "w", to) is None
    for action in (repo.cancel_job, repo.pause_job, repo.resume_job):
        assert action(store, "a", job.id).status == terminal
    assert queue.claim(store, "w2", lease_s=1) is None
    after = repo.get_job(store, "a", job.id)
    assert after.status == terminal and after.finished_at == job.finished_at


def test_transitions_are_refused_when_the_expected_status_does_not_hold(store: Store) -> None:
    job = _job(store)
    assert repo.transition(store, job.id, "queued", expect={"paused"}) is None
    assert repo.get_job(store, "a", job.id).status == "validating_files"
    moved = repo.transition(
        store, job.id, "queued", expect={"validating_files"}, estimated_finish=5
    )
    assert moved.status == "queued" and moved.estimated_finish == 5
    assert repo.transition(store, job.id, "queued", expect={"validating_files"}) is None
    failed = repo.transition(
        store, job.id, "failed", error={"code": "x", "message": "m", "param": None}
    )
    assert failed.status == "failed" and failed.error["code"] == "x" and failed.finished_at
    assert repo.transition(store, "ftjob-nope", "queued") is None
    with pytest.raises(ValueError):
        repo.transition(store, job.id, "exploded")


# user actions: (status before, action) -> status after
ACTIONS = {
    "cancel_job": {s: "cancelled" for s in ACTIVE},
    "pause_job": {"validating_files": "paused", "queued": "paused", "running": "pausing",
                  "pausing": "pausing", "paused": "paused"},
    "resume_job": {"paused": "queued", "validating_files": "validating_files", "queued": "queued",
                   "running": "running", "pausing": "pausing"},
}  # fmt: skip


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_cancel_pause_and_resume_from_every_live_status(store: Store, action: str) -> None:
    for before, after in sorted(ACTIONS[action].items()):
        job = _to_status(store, _job(store), before)
        assert job.status == before
        result = getattr(repo, action)(store, "a", job.id)
        assert result.status == after, (action, before)
        if action == "cancel_job":
            assert result.cancel_requested and result.finished_at is not None
        repo.cancel_job(store, "a", job.id)  # out of the queue before the next round
    assert getattr(repo, action)(store, "a", "ftjob-nope") is None


# -- events -------------------------------------------------------------------------------------


def test_events_are_numbered_per_job_and_page_newest_first(store: Store) -> None:
    job, other = _job(store), _job(store)
    added = []
    for i in range(0, 25, 5):
        added += repo.add_events(
            store,
            job.id,
            [{"level": "info", "message": f"e{i + k}", "type": "message"} for k in range(5)],
        )
    repo.add_events(store, other.id, [{"message": "elsewhere"}])
    assert [e.seq for e in added] == list(range(1, 26))
    assert repo.get_job_any(store, job.id).event_seq == 25
    walked = _walk(lambda **kw: repo.list_events(store, job.id, **kw), 7)
    assert walked == [e.id for e in added[::-1]]
    assert [e.message for e in repo.events_since(store, job.id, 22)] == ["e22", "e23", "e24"]
    assert [e.seq for e in repo.events_since(store, job.id, 0, limit=2)] == [1, 2]
    assert repo.list_events(store, job.id, after=repo.list_events(store, other.id)[0][0].id) == (
        [],
        False,
    )


def test_event_fields_round_trip(store: Store) -> None:
    job = _job(store)
    [m] = repo.add_events(
        store,
        job.id,
        [
            {
                "level": "warn",
                "message": "step 1",
                "type": "metrics",
                "data": {"step": 1, "train_loss": 1.5},
                "created_at": 1234,
            }
        ],
    )
    assert (m.level, m.type, m.data, m.created_at) == (
        "warn",
        "metrics",
        {"step": 1, "train_loss": 1.5},
        1234,
    )
    assert repo.list_events(store, job.id)[0] == [m]
    assert repo.add_events(store, job.id, []) == []
    with pytest.raises(ValueError):
        repo.add_events(store, job.id, [{"message": "x", "type": "shout"}])
    with pytest.raises(LookupError):
        repo.add_events(store, "ftjob-nope", [{"message": "x"}])


# -- checkpoints and models ---------------------------------------------------------------------


def _ckpt(store: Store, job: JobRecord, step: int, **metrics: float):
    return repo.add_checkpoint(
        store,
        job.id,
        step=step,
        metrics=metrics,
        fine_tuned_model_checkpoint=f"ft:base:x:{job.id}:ckpt-step-{step}",
        path=f"/runs/{job.id}/step-{step}",
    )


def test_checkpoints_are_idempotent_per_step_and_page_newest_first(store: Store) -> None:
    job = _job(store)
    first = _ckpt(store, job, 10, train_loss=1.0)
    again = _ckpt(store, job, 10, train_loss=9.9)
    assert (
        again == first and first.id.startswith("ftckpt_") and first.metrics == {"train_loss": 1.0}
    )
    for step in (20, 30, 40, 50):
        _ckpt(store, job, step)
    items, more = repo.list_checkpoints(store, job.id)
    assert [c.step for c in items] == [50, 40, 30, 20, 10] and not more
    walked = _walk(lambda **kw: repo.list_checkpoints(store, job.id, **kw), 2)
    assert walked == [c.id for c in items]
    with pytest.raises(LookupError):
        _ckpt(store, JobRecord(**{**job.__dict__, "id": "ftjob-nope"}), 1)


def test_find_model_answers_for_jobs_and_checkpoints_of_the_project_only(store: Store) -> None:
    job = _to_status(store, _job(store), "running")
    ckpt = _ckpt(store, job, 5)
    done = queue.finish(store, job.id, "w", "succeeded", fine_tuned_model="ft:base:x:" + job.id)
    assert repo.find_model(store, "a", done.fine_tuned_model) == (done, None)
    found_job, found_ckpt = repo.find_model(store, "a", ckpt.fine_tuned_model_checkpoint)
    assert found_job.id == job.id and found_ckpt == ckpt
    assert repo.find_model(store, "b", done.fine_tuned_model) is None
    assert repo.find_model(store, "b", ckpt.fine_tuned_model_checkpoint) is None
    assert repo.find_model(store, "a", "ft:nothing") is None
    assert repo.list_models(store, "a") == [(done, None), (done, ckpt)]
    assert repo.list_models(store, "b") == []

    assert not repo.delete_model(store, "b", done.fine_tuned_model)
    assert not repo.delete_model(store, "b", ckpt.fine_tuned_model_checkpoint)
    assert repo.delete_model(store, "a", ckpt.fine_tuned_model_checkpoint)
    assert repo.find_model(store, "a", ckpt.fine_tuned_model_checkpoint) is None
    assert repo.delete_model(store, "a", done.fine_tuned_model)
    assert repo.find_model(store, "a", done.fine_tuned_model) is None
    assert not repo.delete_model(store, "a", done.fine_tuned_model)
    kept = repo.get_job(store, "a", job.id)
    assert kept.model_deleted and kept.fine_tuned_model == done.fine_tuned_model  # history stays
    assert repo.list_models(store, "a") == []
