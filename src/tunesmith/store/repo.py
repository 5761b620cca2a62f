"""Reads and writes of files, jobs, events, checkpoints and models — each call one transaction.

This is the one door the server and the worker use (`from tunesmith.store import repo`); the
work lives in `files`, `jobs`, `events` and `checkpoints`. Every function a request can reach
takes the caller's `project` and filters by it: another project's id reads as absent (None),
exactly like an id that never existed, so the server answers 404 for both and leaks nothing.
The worker's functions (`get_job_any`, `update_job`, `transition`, events, checkpoints) take
a job id it got from the queue. Lists are cursor pages in OpenAI's style: `after` names the
last item the caller saw, `has_more` says whether to ask again.
"""

from __future__ import annotations

from tunesmith.store.checkpoints import (
    add_checkpoint,
    delete_model,
    find_model,
    list_checkpoints,
    list_models,
)
from tunesmith.store.events import add_events, events_since, list_events
from tunesmith.store.files import create_file, delete_file, get_file, list_files
from tunesmith.store.jobs import (
    cancel_job,
    create_job,
    get_job,
    get_job_any,
    list_jobs,
    pause_job,
    resume_job,
    succeeded_since,
    transition,
    update_job,
)

__all__ = [
    "add_checkpoint",
    "add_events",
    "cancel_job",
    "create_file",
    "create_job",
    "delete_file",
    "delete_model",
    "events_since",
    "find_model",
    "get_file",
    "get_job",
    "get_job_any",
    "list_checkpoints",
    "list_events",
    "list_files",
    "list_jobs",
    "list_models",
    "pause_job",
    "resume_job",
    "succeeded_since",
    "transition",
    "update_job",
]
