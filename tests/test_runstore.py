import multiprocessing
import subprocess
import sys
import time

import pytest

from cnnlab.runstore import RunStore

WRITERS, ROWS = 6, 40


def write_many(path, run_id, writer):
    store = RunStore(path)
    for step in range(ROWS):
        store.add_metrics(run_id, "step", writer * ROWS + step, {"loss": 1.0 / (step + 1), "writer": writer})
        store.log(run_id, f"writer {writer} step {step}")


def read_many(path, run_id):
    """Poll until every row is there; fail if a read ever sees fewer rows than the one before."""
    store = RunStore(path)
    deadline, last = time.time() + 30, 0
    while time.time() < deadline:
        count = len(store.metrics(run_id, "step"))
        if count < last:
            raise AssertionError(f"rows went from {last} to {count}")
        last = count
        if count == WRITERS * ROWS:
            return
    raise AssertionError(f"only {last} rows after 30 s")


def test_concurrent_writers_and_readers_lose_nothing(tmp_path):
    path = tmp_path / "runs.sqlite3"
    store = RunStore(path)
    run_id = store.submit({"arch": "lenet5"})
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=write_many, args=(path, run_id, w)) for w in range(WRITERS)]
    processes += [context.Process(target=read_many, args=(path, run_id)) for _ in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
        assert p.exitcode == 0, "a writer or reader failed (e.g. 'database is locked')"
    rows = store.metrics(run_id, "step")
    assert sorted(r["step"] for r in rows) == list(range(WRITERS * ROWS))
    assert len(store.logs(run_id, limit=10_000)) == WRITERS * ROWS


def test_lifecycle_and_same_launch_twice(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite3")
    first = store.submit({"arch": "lenet5"}, request_key="click-1")
    assert store.submit({"arch": "lenet5"}, request_key="click-1") == first
    assert len(store.runs()) == 1
    run = store.claim_next("worker-a")
    assert run.id == first and run.status == "running"
    assert store.claim_next("worker-b") is None
    store.add_metrics(first, "epoch", 1, {"val_acc": 0.9})
    store.finish(first, "succeeded", result={"val_acc": 0.9})
    run = store.get(first)
    assert run.status == "succeeded" and run.result == {"val_acc": 0.9}
    assert store.metrics(first) == [{"step": 1, "val_acc": 0.9}]


def test_cancel_queued_and_running(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite3")
    running, queued = store.submit({"n": 1}), store.submit({"n": 2})
    store.claim_next("w")  # claims the older one
    assert store.get(running).status == "running"
    assert store.request_cancel(queued) == "cancelled"
    assert store.request_cancel(running) == "running"
    assert store.get(running).cancel_requested


def test_only_the_owning_worker_closes_a_run_and_a_resume_starts_clean(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite3")
    run_id = store.submit({"n": 1})
    store.claim_next("old-worker")
    store.finish(run_id, "cancelled", result={"val_acc": 0.5}, worker="old-worker")
    store.requeue(run_id)
    assert store.get(run_id).result is None  # the old result does not linger while it runs again
    store.claim_next("new-worker")
    assert not store.finish(run_id, "failed", error="late", worker="old-worker")  # it lost the run
    assert store.get(run_id).status == "running"
    assert store.finish(run_id, "succeeded", result={"val_acc": 0.9}, worker="new-worker")
    assert store.get(run_id).result == {"val_acc": 0.9}
    for step in (5, 1):  # a resumed run counts its steps from 1 again: the latest row is the last written
        store.add_metrics(run_id, "step", step, {"step_seen": step})
    assert store.last_metric(run_id, "step")["step_seen"] == 1
    assert store.last_metric(run_id, "step", since=time.time() + 1) is None  # nothing since a later (re)start


def test_a_resumed_run_that_ends_without_a_new_result_shows_its_earlier_one(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite3")
    run_id = store.submit({"n": 1})
    store.claim_next("w")
    store.finish(run_id, "cancelled", result={"val_acc": 0.5}, worker="w")
    store.requeue(run_id)
    assert store.get(run_id).result is None
    assert store.request_cancel(run_id) == "cancelled"  # cancelled again before a worker took it
    assert store.get(run_id).result == {"val_acc": 0.5}
    store.requeue(run_id)
    store.claim_next("w")
    store.finish(run_id, "failed", error="out of memory", worker="w")
    run = store.get(run_id)
    assert (run.status, run.error, run.result) == ("failed", "out of memory", {"val_acc": 0.5})


def test_dead_worker_runs_become_interrupted_and_requeue(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite3")
    run_id = store.submit({"n": 1})
    store.claim_next("w")
    store.set_checkpoint(run_id, "/tmp/ckpt")
    first_attempt = {run_id: store.get(run_id).started_at}
    assert store.mark_interrupted(["not-a-run"]) == []
    assert store.mark_interrupted([run_id]) == [run_id]
    assert store.mark_interrupted([run_id]) == []  # only running runs change
    run = store.get(run_id)
    assert run.status == "interrupted" and run.checkpoint == "/tmp/ckpt"
    assert f"Resume (`cnnlab resume {run_id}`) continues it from its last checkpoint" in run.error
    assert run.error.startswith("The worker stopped")
    store.requeue(run_id)
    assert store.get(run_id).status == "queued"
    with pytest.raises(ValueError, match="only interrupted"):
        store.requeue(run_id)
    store.claim_next("w2")  # resumed by another worker after the first one was found gone
    assert store.mark_interrupted([run_id], started_at=first_attempt) == []
    assert store.get(run_id).status == "running"


def test_a_resumed_run_keeps_its_creation_time_and_queues_behind_the_others(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite3")
    resumed = store.submit({"n": 1})
    store.claim_next("w")
    store.finish(resumed, "cancelled", worker="w")
    created, first_attempt = store.get(resumed).created_at, store.get(resumed).duration_s
    waiting = store.submit({"n": 2})
    store.requeue(resumed)
    run = store.get(resumed)
    assert (run.created_at, run.started_at) == (created, None)
    assert run.duration_s == pytest.approx(first_attempt), "queued again: the first attempt's time so far"
    assert store.queue_position(waiting) == (1, 2) and store.queue_position(resumed) == (2, 2)
    assert store.claim_next("w").id == waiting, "queued before the resume: first"
    assert store.claim_next("w").id == resumed
    store.finish(resumed, "succeeded", worker="w")
    run = store.get(resumed)
    assert run.duration_s == pytest.approx(first_attempt + run.finished_at - run.started_at), "both attempts count"


@pytest.mark.parametrize("openers", [1, 8], ids=["one process", "several processes at once"])
def test_a_database_from_before_queued_at_is_upgraded(tmp_path, openers):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, config TEXT NOT NULL, status TEXT NOT NULL, request_key "
                   "TEXT UNIQUE, created_at REAL NOT NULL, started_at REAL, finished_at REAL, worker TEXT, heartbeat_at "
                   "REAL, cancel_requested INTEGER NOT NULL DEFAULT 0, error TEXT, result TEXT, checkpoint TEXT, "
                   "checkpoint_at REAL)")
        db.execute("INSERT INTO runs (id, config, status, created_at) VALUES ('old', '{}', 'queued', 1.0)")
    if openers > 1:  # the dashboard and a worker starting together: each upgrades it, one after the other
        script = f"from cnnlab.runstore import RunStore; RunStore({str(path)!r})"
        opening = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
                   for _ in range(openers)]
        assert all(process.wait(60) == 0 for process in opening), [p.stderr.read() for p in opening]
    store = RunStore(path)
    fresh = store.submit({"n": 1})
    assert [store.claim_next("w").id, store.claim_next("w").id] == ["old", fresh]


def test_an_interrupted_run_lasts_until_its_last_heartbeat_not_until_it_was_found_gone(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite3")
    run_id = store.submit({"n": 1})
    started = store.claim_next("w").started_at
    with store._write() as db:  # it beat for a minute, then its machine went away two hours ago
        db.execute("UPDATE runs SET started_at = ?, heartbeat_at = ? WHERE id = ?",
                   (started - 7260, started - 7200, run_id))
    store.mark_interrupted([run_id])
    assert store.get(run_id).duration_s == pytest.approx(60)
    store.requeue(run_id)
    assert store.get(run_id).earlier_s == pytest.approx(60)


def test_a_worker_that_lost_its_run_records_no_checkpoint_for_it(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite3")
    run_id = store.submit({"n": 1})
    store.claim_next("w")
    store.set_checkpoint(run_id, "/runs/ckpt-0001", worker="w")
    store.mark_interrupted([run_id])
    store.requeue(run_id)
    store.claim_next("w2")  # resumed elsewhere; the first worker, still going, saves its next epoch
    store.set_checkpoint(run_id, "/runs/ckpt-0002", worker="w")
    assert store.get(run_id).checkpoint == "/runs/ckpt-0001"
    store.set_checkpoint(run_id, "/runs/ckpt-0002", worker="w2")
    assert store.get(run_id).checkpoint == "/runs/ckpt-0002"
