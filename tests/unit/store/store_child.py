"""A second process for the store tests (run as a script, not collected by pytest).

store_child.py claim URL WORKER_ID   print "ready", wait for a line on stdin, then claim
                                     and finish jobs until none is left; print their ids
                                     as one JSON list
store_child.py write URL JOB_ID      add one event and one file per transaction, printing
                                     each id after its commit, until killed
store_child.py open URL              open (and so migrate) the store, print "ok"
"""

from __future__ import annotations

import json
import sys
import time

from tunesmith.store import Store, queue, repo


def claim(url: str, worker: str) -> None:
    store = Store(url)
    print("ready", flush=True)
    sys.stdin.readline()
    got = []
    while True:
        job = queue.claim(store, worker, lease_s=600)
        if job is None:
            break
        got.append(job.id)
        time.sleep(0.005)  # "work", so the other worker's claims interleave
        assert queue.finish(store, job.id, worker, "succeeded") is not None
    store.close()
    print(json.dumps(got), flush=True)


def write(url: str, job_id: str) -> None:
    store = Store(url)
    i = 0
    while True:
        i += 1
        [event] = repo.add_events(store, job_id, [{"message": f"event {i}", "type": "message"}])
        print(f"event {event.id}", flush=True)
        f = repo.create_file(
            store,
            "p",
            filename=f"f{i}.jsonl",
            purpose="fine-tune",
            bytes=i,
            path=f"/nowhere/{i}",
            sha256="0" * 64,
            status="processed",
        )
        print(f"file {f.id}", flush=True)


if __name__ == "__main__":
    mode, url, *rest = sys.argv[1:]
    if mode == "claim":
        claim(url, rest[0])
    elif mode == "write":
        write(url, rest[0])
    elif mode == "open":
        Store(url).close()
        print("ok", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")
