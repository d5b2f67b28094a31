"""Runs in the background: a worker process takes queued runs from the run store one at a time, trains
them with the engine, streams progress and log lines into the store, and honours cancel requests at step
boundaries.

One worker per data directory (and per GPU with `gpu=N`) holds a lock file for its whole life, so a
second one exits at once and the dashboard can tell whether one is alive. A worker that dies (kill -9,
a power cut) leaves its runs 'running' with a dead process or a stale heartbeat: `recover_interrupted`
marks them interrupted, and `resume` queues them again to continue from their last checkpoint. A run that
`cnnlab train` trains in a terminal (`run_here`) is a run of the same store, with a lock file of its own.
"""
from __future__ import annotations

import fcntl
import gc
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from cnnlab.naming import dataset_label, fitted_at_once, run_method
from cnnlab.paths import data_dir, process_alive
from cnnlab.runstore import ACTIVE, RESUMABLE, STATUSES, Run, RunStore, status_phrase

HEARTBEAT_S = 2.0
STALE_AFTER_S = 30.0
LONG_STALE_S = 600.0
STEP_REPORT_S = 0.5
IDLE_POLL_S = 0.5
WORKER_IDLE_EXIT_S = 600.0  # a worker the dashboard starts leaves after this long with nothing queued


def runs_folder() -> Path:
    """The run store's folder of run folders, `data_dir()/runs`; cnnlab alone writes there."""
    return data_dir() / "runs"


def run_dir(run_id: str) -> Path:
    """Where a queued run keeps its checkpoints and metrics: `data_dir()/runs/<run id>`."""
    return runs_folder() / run_id


def worker_log() -> Path:
    """The log file of workers the dashboard starts."""
    return data_dir() / "worker.log"


def _lock_path(gpu: int | None) -> Path:
    return data_dir() / ("worker.lock" if gpu is None else f"worker-gpu{gpu}.lock")


def _command_line_lock_path() -> Path:
    return data_dir() / f"train-{os.getpid()}.lock"


@contextmanager
def _hold_lock(path: Path, wait_s: float = 2.0) -> Iterator[bool]:
    """Hold the lock file `path` (with this process id written in it) while inside; yields False, holding nothing,
    when another process keeps it for `wait_s` (a brief check by `worker_alive` is waited out)."""
    with open(path, "a+") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.1)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield True
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _held(path: Path) -> bool:
    try:
        handle = open(path)
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _locking_pids(pattern: str) -> list[int]:
    """Process ids written in the lock files matching `pattern` that are held now."""
    pids = []
    for path in sorted(data_dir().glob(pattern)):
        if _held(path):
            text = path.read_text().strip()
            pids += [int(text)] if text.isdigit() else []
    return pids


def worker_pids() -> list[int]:
    """Process ids of the workers alive for this data directory (any GPU)."""
    return _locking_pids("worker*.lock")


def command_line_pids() -> list[int]:
    """Process ids of the `cnnlab train` / `cnnlab probe` runs training in a terminal now (see `run_here`)."""
    return _locking_pids("train-*.lock")


def terminal_pid(run: Run) -> int | None:
    """The process id of the `cnnlab train` (or `probe`) training `run` in a terminal of this machine now, else
    None (a worker runs it, or it is not running)."""
    pid = _local_pid(run)
    if run.status != "running" or pid is None:
        return None
    return pid if pid in command_line_pids() else None


def _local_pid(run: Run) -> int | None:
    """The process id of the worker (or terminal) that holds `run`, when that is on this machine; else None."""
    host, _, pid = (run.worker or "").rpartition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


def worker_alive() -> bool:
    """Whether any worker (for any GPU) holds a lock in this data directory."""
    return any(_held(path) for path in data_dir().glob("worker*.lock"))


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_started_at(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch, to a second) where /proc tells, else None."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _worker_gone(run: Run, now: float, running_pids: set[int]) -> bool:
    pid = _local_pid(run)
    if pid is None:
        return run.heartbeat_at is None or now - run.heartbeat_at > STALE_AFTER_S
    # same machine: its process is gone, or holds no worker or command-line lock (its id reused by another process)
    if not process_alive(pid) or pid not in running_pids:
        return True
    started = _process_started_at(pid)
    if started is not None:  # its id reused by a worker started after the run was (after a reboot): gone
        return started > (run.started_at or 0) + 2
    # no /proc: a worker that has not beaten for far longer than any step takes; a sleeping laptop's looks the same
    return now - (run.heartbeat_at or 0) > LONG_STALE_S


def recover_interrupted(store: RunStore) -> list[str]:
    """Mark running runs whose worker (or `cnnlab train` process) is gone (its process is dead, or on another host
    its heartbeat is older than STALE_AFTER_S) as interrupted; returns their ids."""
    running = store.runs(("running",))
    if not running:
        return []
    now, running_pids = time.time(), set(worker_pids() + command_line_pids())
    gone = [r for r in running if _worker_gone(r, now, running_pids)]
    return store.mark_interrupted([r.id for r in gone], started_at={r.id: r.started_at for r in gone})


def delete_run(run_id: str, store: RunStore | None = None) -> bool:
    """Delete a run that is over (succeeded, failed, cancelled or interrupted): its record, metrics and log in the
    store and its folder (checkpoints, exports); returns whether it had a folder. Refused (ValueError) for a queued
    or running run (cancel it first) and for a run whose model a queued or running run starts from; KeyError for no
    such run. The feature cache it filled stays: runs on the same backbone and images share it."""
    store = store or RunStore()
    recover_interrupted(store)  # a run whose worker died is over, not running
    folder = run_dir(run_id)
    for other in store.runs(ACTIVE):
        if other.id != run_id and run_id in str(other.config.get("weights", "")):
            raise ValueError(f"run {other.id} ({other.status}) starts from run {run_id}'s model: cancel it first, "
                             f"then delete run {run_id}")
    store.delete(run_id, only=tuple(s for s in STATUSES if s not in ACTIVE))
    if not folder.exists():
        return False
    shutil.rmtree(folder)
    return True


def submit(config, store: RunStore | None = None, request_key: str | None = None) -> str:
    """Queue a `RunConfig`; returns the run id (the same id again for a repeated `request_key`)."""
    return (store or RunStore()).submit(config.to_dict(), request_key)


def resume(run_id: str, store: RunStore | None = None) -> None:
    """Queue an interrupted, failed or cancelled run again; it continues from its last checkpoint. Its data and
    weights are checked first, as `submit` checks a new run's (ConfigError, DatasetError or WeightsError)."""
    from cnnlab.training import RunConfig, preflight

    store = store or RunStore()
    recover_interrupted(store)
    run = store.get(run_id)
    if run.status in RESUMABLE:  # (otherwise requeue says why not, at once)
        preflight(RunConfig.from_dict(run.config))
    store.requeue(run_id)


def cancel(run_id: str, store: RunStore | None = None) -> str:
    """Cancel a queued or interrupted run at once, or ask its worker to stop a running one at the next step;
    returns the status."""
    store = store or RunStore()
    recover_interrupted(store)
    return store.request_cancel(run_id)


def _ending(run: Run) -> str:
    """How a run ended, as the worker's log says it: 'succeeded after 12 s (8 s in earlier attempts)', with the
    error of a failed run. The seconds are those `cnnlab runs` lists."""
    seconds = run.duration_s or 0
    took = f"{seconds:.1f} s" if seconds < 90 else in_words(seconds)
    earlier = f" ({in_words(run.earlier_s)} in earlier attempts)" if run.earlier_s else ""
    error = f": {run.error}" if run.status == "failed" and run.error else ""
    return f"{run.status} after {took}{earlier}{error}"


def in_words(seconds: float) -> str:
    """A duration as people say it: '40 s', '12 min', '1.5 h'."""
    minutes = seconds / 60
    return f"{seconds:.0f} s" if seconds < 90 else f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


@dataclass(frozen=True)
class Progress:
    """How far a running run is: the fraction done, a line saying where, and the seconds left at its pace so far
    (None until it has a pace)."""

    fraction: float
    text: str
    remaining_s: float | None

    def describe(self) -> str:
        """The line, with the time left: 'epoch 2/10, train step 5/22, loss 0.4012; about 3 min left'."""
        return self.text + (f"; about {in_words(self.remaining_s)} left" if self.remaining_s is not None else "")


def _done_fraction(step: dict) -> float:
    if step["phase"] == "features":
        return step["step"] / step["steps"]
    done_in_epoch = 1.0 if step["phase"] == "eval" else step["step"] / step["steps"]  # eval follows the training
    return min((step["epoch"] - 1 + done_in_epoch) / step["epochs"], 1.0)


def _loss_words(step: dict) -> str:
    """', loss 0.4012', saying which step measured it when that was an earlier one (losses are read every few
    steps): ', loss 0.4012 at step 40', or 'at epoch 1 step 42' when measured in the epoch before."""
    if step.get("loss") is None:
        return ""
    where = (step.get("loss_epoch"), step.get("loss_step"))
    if where[1] is None or where == (step["epoch"], step["step"]) or step["phase"] != "train":
        return f", loss {step['loss']:.4f}"
    at = f"step {where[1]}" if where[0] == step["epoch"] else f"epoch {where[0]} step {where[1]}"
    return f", loss {step['loss']:.4f} at {at}"


def run_progress(steps: list[dict]) -> Progress | None:
    """A running run's progress from its step rows (`RunStore.metrics(..., "step", timed=True)`, oldest first).
    The time left is the pace between the first and the last row of the current phase, the features pass of
    Strategy III or the epochs, counted apart; None for no rows."""
    if not steps:
        return None
    last = steps[-1]
    features = last["phase"] == "features"
    if features:
        text = f"computing features: batch {last['step']}/{last['steps']}"
    else:
        text = (f"epoch {last['epoch']}/{last['epochs']}, {last['phase']} step {last['step']}/{last['steps']}"
                f"{_loss_words(last)}")
    first = next(row for row in steps if (row["phase"] == "features") == features)
    done, started = _done_fraction(last), _done_fraction(first)
    remaining = None
    if "at" in last and done > started and last["at"] > first["at"]:
        remaining = (last["at"] - first["at"]) / (done - started) * (1 - done)
    return Progress(done, text, remaining)


def run_label(run: Run) -> str:
    """A short name for a run: its id, strategy (with the lecture's numeral), architecture and dataset."""
    from cnnlab.registry import arch_title

    config = run.config
    return (f"{run.id} · {method_of(run)} · {arch_title(config.get('arch'))} on "
            f"{dataset_label(config.get('dataset', ''))}")


def result_accuracy(result: dict) -> float | None:
    """A finished run's validation accuracy; a probe's is its best stage's. None before a result."""
    return result.get("val_acc", max((s["val_acc"] for s in result.get("stages", [])), default=None))


def run_accuracy(run: Run, store: RunStore) -> float | None:
    """A run's validation accuracy as it stands: its result's; for a run still going, or killed (interrupted, with no
    result of this attempt), its last finished epoch's; None before either."""
    if run.result is not None and run.status != "interrupted":
        return result_accuracy(run.result)
    epoch = store.last_metric(run.id, "epoch")  # of its latest attempt
    return epoch["val_acc"] if epoch else result_accuracy(run.result or {})


def why_no_curve(run: Run) -> str:
    """Why a run has no per-epoch curve: 'fits its classifier in one go' (Strategy III with a scikit-learn
    classifier, a probe), or where it stands ('was cancelled before its first epoch ended')."""
    config = run.config
    if config.get("strategy") == "probe":
        return "fits a classifier at each stage in one go, without epochs"
    if fitted_at_once(config.get("strategy"), config.get("classifier")):
        return "fits its classifier in one go, without epochs"
    if run.status == "queued":
        return "has not started"
    if run.status == "running":
        return "is in its first epoch"
    return f"{status_phrase(run.status)} before its first epoch ended"


def step_history(run_id: str, store: RunStore) -> list[dict]:
    """The step rows of a run's training as its model went through it: each attempt's, cut where the next one
    resumed (what an attempt trained beyond the checkpoint the next one started from was trained again)."""
    starts = store.metrics(run_id, "start", timed=True)
    steps = store.metrics(run_id, "step", timed=True)
    history: list[dict] = []
    for number, start in enumerate(starts):
        begins = start["at"] if number else 0.0
        ends = starts[number + 1]["at"] if number + 1 < len(starts) else float("inf")
        history = [row for row in history if row["epoch"] <= start["start_epoch"]]
        history += [row for row in steps if begins <= row["at"] < ends]
    return history


def best_probe_stage(run: Run) -> dict | None:
    """The stage whose accuracy a finished probe reports as its own (the best; of stages tied, the latest); None
    for other runs."""
    stages = (run.result or {}).get("stages") if run.config.get("strategy") == "probe" else None
    return max(reversed(stages), key=lambda stage: stage["val_acc"]) if stages else None


def method_of(run: Run, size: bool = True) -> str:
    """`run_method` of the run's config, and for a finished probe, which stage its accuracy is: 'probe of every
    stage + SVM, best: stage 4' (not one model's accuracy beside the others')."""
    best = best_probe_stage(run)
    return run_method(run.config, size) + (f", best: stage {best['stage']}" if best else "")


def run_summaries(runs: list[Run], store: RunStore) -> list[dict]:
    """One row per run, as the Runs table and `cnnlab runs` show them (a probe's accuracy: its best stage's; a run
    going or killed: its last finished epoch's; a running run's `progress` as `Progress.describe` says it)."""
    rows = []
    for run in runs:
        config = run.config
        duration = run.duration_s
        rows.append({"id": run.id, "status": run.shown_status, "strategy": config.get("strategy"),
                     "method": method_of(run),
                     "epochs": None if fitted_at_once(config.get("strategy"), config.get("classifier"))
                     else config.get("epochs"),
                     "arch": config.get("arch"), "dataset": dataset_label(config.get("dataset", "")),
                     "val_acc": run_accuracy(run, store),
                     "duration_s": round(duration, 1) if duration else None,
                     "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.created_at)),
                     "progress": _progress_words(run, store), "error": run.error})
    return rows


def _progress_words(run: Run, store: RunStore) -> str | None:
    if run.status != "running":
        return None
    progress = run_progress(store.metrics(run.id, "step", since=run.started_at, timed=True))
    return f"{progress.fraction:.0%}: {progress.describe()}" if progress else "starting"


def trained_models(arch: str, store: RunStore | None = None) -> dict[str, str]:
    """The runs of `arch` that have ended and saved a whole model, newest first: {run folder: short label with
    accuracy} ('III: extract on digits · val 96.7% · d777f64f8469': what it learned first, the run's id last, where
    a narrow box cuts it; the architecture is the caller's). A run stopped on the way (cancelled, failed,
    interrupted) offers the model of its last checkpoint: '... · val 80.1% · cancelled after epoch 1 · d777f64f8469'.

    A run folder is what `weights.load_weights` takes to load the trained model with its class names."""
    from cnnlab.checkpoints import checkpoint_epoch

    store = store or RunStore()
    found = {}
    for run in store.runs(("succeeded", *RESUMABLE)):
        if run.config.get("arch") != arch or not run.checkpoint or not Path(run.checkpoint).is_dir():
            continue
        accuracy = run_accuracy(run, store)
        shown = f" · val {100 * accuracy:.1f}%" if accuracy is not None else ""
        kept = checkpoint_epoch(run.checkpoint)
        stopped = f" · {run.status} after epoch {kept}" if run.status != "succeeded" and kept else ""
        found[str(run_dir(run.id))] = f"{run_method(run.config)} on {dataset_label(run.config.get('dataset', ''))}" \
                                      f"{shown}{stopped} · {run.id}"
    return found


def transfer_results(store: RunStore | None = None) -> dict[str, dict]:
    """For each architecture, its best finished run (highest validation accuracy): what the Compare page
    shows beside the published ImageNet numbers."""
    best: dict[str, dict] = {}
    for run in (store or RunStore()).runs(("succeeded",)):
        result = run.result or {}
        arch, accuracy = run.config.get("arch"), result.get("val_acc")
        if accuracy is None or (arch in best and best[arch]["val_acc"] >= accuracy):
            continue
        best[arch] = {"val_acc": accuracy, "strategy": run.config.get("strategy"), "method": run_method(run.config),
                      "dataset": dataset_label(run.config.get("dataset", "")), "run": run.id}
    return best


class StoreReporter:
    """A training callback that writes a run's events into the store and stops the run on a cancel request."""

    def __init__(self, store: RunStore, run_id: str, worker: str | None = None, report_every_s: float = STEP_REPORT_S):
        from cnnlab.training import StopRun

        self.store, self.run_id, self.worker, self.report_every_s = store, run_id, worker, report_every_s
        self._stop_run = StopRun
        self._last_report = 0.0
        self._steps = 0
        self._epochs_done = 0  # the last epoch with a checkpoint: what a cancelled run keeps
        self._measured: dict = {"loss": None}  # the last training loss read, and where: the step rows repeat it
        self._unreported: list[list[float]] = []  # [where, loss] of each loss read since the last row written

    def _check_cancel(self) -> None:
        run = self.store.get(self.run_id)
        if run.cancel_requested:
            self.store.log(self.run_id, "cancel requested: stopping after this step; " + (
                f"the run keeps its model of epoch {self._epochs_done}" if self._epochs_done else
                "a run stopped before its first epoch ends is evaluated once, so that it has a result"))
            raise self._stop_run()
        if self.worker is not None and (run.status != "running" or run.worker != self.worker):
            raise self._stop_run()  # marked interrupted (and perhaps resumed elsewhere): this worker lets go

    def on_run_start(self, event) -> None:
        if self.store.metrics(self.run_id, "start"):
            self.store.log(self.run_id, f"resumed from the checkpoint saved after epoch {event.start_epoch}: an epoch "
                                        "left unfinished is trained again" if event.start_epoch else
                           "resumed with no finished epoch to go on from: training starts again at epoch 1")
        self.store.log(self.run_id, event.summary())
        self._epochs_done = event.start_epoch
        self.store.forget_metrics(self.run_id, "epoch", event.start_epoch)  # to be trained again
        self.store.add_metrics(self.run_id, "start", event.start_epoch, {
            "device": event.device, "classes": list(event.classes), "train_size": event.train_size,
            "val_size": event.val_size, "params_trainable": event.params_trainable,
            "params_frozen": event.params_frozen, "start_epoch": event.start_epoch, "world_size": event.world_size})

    def on_step(self, event) -> None:
        self._steps += 1
        if event.loss is not None:  # measured on this step (every few steps: reading it waits for the GPU)
            self._measured = {"loss": event.loss, "loss_at": event.epoch - 1 + event.step / event.steps,
                              "loss_epoch": event.epoch, "loss_step": event.step}
            self._unreported.append([self._measured["loss_at"], event.loss])
        now = time.monotonic()
        if now - self._last_report < self.report_every_s and event.step < event.steps:
            return
        self._last_report = now
        self.store.add_metrics(self.run_id, "step", self._steps, {
            "phase": event.phase, "epoch": event.epoch, "epochs": event.epochs, "step": event.step,
            "steps": event.steps, **(self._measured if event.phase == "train" else {"loss": event.loss}),
            "losses": self._unreported, "lr": event.lr})
        self._unreported = []
        self._check_cancel()

    def on_message(self, text: str) -> None:
        self.store.log(self.run_id, text)

    def on_epoch_end(self, metrics) -> None:
        self._epochs_done = metrics.epoch
        self.store.add_metrics(self.run_id, "epoch", metrics.epoch, asdict(metrics))
        self.store.log(self.run_id, metrics.keras_line())
        from cnnlab.checkpoints import latest_checkpoint

        saved = latest_checkpoint(run_dir(self.run_id))
        if saved is not None:
            self.store.set_checkpoint(self.run_id, str(saved.path), self.worker)
        self._check_cancel()

    def on_run_end(self, result) -> None:
        from cnnlab.training import guessing_note

        self.store.log(self.run_id, f"val_acc: {result.val_acc:.4f} in {result.train_time_s:.1f}s")
        if note := guessing_note(result.confusion, result.classes):
            self.store.log(self.run_id, f"warning: {note}")


class EpochLines:
    """A training callback that says each finished epoch of a run as one Keras-style line, and the run's notes
    (a worker's log)."""

    def __init__(self, run_id: str, say: Callable[[str], None]):
        self.run_id, self.say = run_id, say

    def on_epoch_end(self, metrics) -> None:
        self.say(f"run {self.run_id}: {metrics.keras_line()}")

    def on_message(self, text: str) -> None:
        """A run's notes (unreadable files skipped, a schedule changed), as the terminal shows them."""
        self.say(f"run {self.run_id}: {text}")


def user_errors() -> tuple[type[Exception], ...]:
    """The errors whose message is meant for the user as it is: bad options, data, weights or checkpoints."""
    from cnnlab.checkpoints import CheckpointError
    from cnnlab.data import DatasetError
    from cnnlab.training import ConfigError
    from cnnlab.weights import WeightsError

    return ConfigError, DatasetError, WeightsError, CheckpointError


def readable_error(error: BaseException) -> str:
    """One line a user can act on, for an exception raised by a run."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return "CUDA out of memory: try a smaller batch size or a smaller architecture"
    if isinstance(error, user_errors()):
        return str(error)
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


def execute(store: RunStore, run: Run, worker: str | None = None, callbacks: tuple = (), reraise: bool = False) -> str:
    """Run one claimed run to its end and record how it ended; returns the final status. A failing run's error is
    stored, with its traceback in the run's log, and raised again only with `reraise`. With `worker`, the
    outcome is recorded only while that worker still owns the run. `callbacks` see the run's events too."""
    from cnnlab.training import RunConfig, StopRun
    from cnnlab.training import run as run_config

    import torch

    status = "failed"
    try:
        config = RunConfig.from_dict(run.config)
        out_dir = None if config.strategy == "probe" else run_dir(run.id)
        result = run_config(config, [*callbacks, StoreReporter(store, run.id, worker)], out_dir)
        status = "cancelled" if getattr(result, "stopped", False) else "succeeded"
        if getattr(result, "checkpoint", None):
            store.set_checkpoint(run.id, result.checkpoint, worker)
        store.finish(run.id, status, result=result.to_json(), worker=worker)
    except StopRun:  # cancelled outside fit's epoch loop (feature extraction)
        status = "cancelled"
        store.finish(run.id, status, worker=worker,
                     error="Cancelled while computing features: none were kept, so a resume computes them again.")
    except Exception as error:  # a failing run must not take the worker down
        store.log(run.id, traceback.format_exc().rstrip())
        store.finish(run.id, "failed", error=readable_error(error), worker=worker)
        if reraise:
            raise
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return status


class _Heartbeat(threading.Thread):
    """Beats the current run's heartbeat every HEARTBEAT_S, also during long steps and feature extraction."""

    def __init__(self, store: RunStore):
        super().__init__(daemon=True, name="cnnlab-heartbeat")
        self.store, self.run_id = store, None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(HEARTBEAT_S):
            run_id = self.run_id
            if run_id is not None:
                try:
                    self.store.heartbeat(run_id)
                except Exception:  # a busy database once is not a reason to die; the next beat retries
                    pass

    def stop(self) -> None:
        self._stop_event.set()


def gpu_visibility(gpu: int, visible: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES value that shows only GPU `gpu`, counted among those `visible` already shows
    (all of the machine's when unset). ValueError when there is no such GPU."""
    if not visible:
        return str(gpu)
    ids = [device.strip() for device in visible.split(",") if device.strip()]
    if gpu >= len(ids):
        raise ValueError(f"there is no GPU {gpu}: CUDA_VISIBLE_DEVICES={visible} shows {len(ids)}")
    return ids[gpu]


def _own_gpu(gpu: int) -> None:
    """Make GPU `gpu` the only one this process sees, or ValueError when it cannot see it (a worker asked for a
    GPU must not fall back to the CPU without a word)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu_visibility(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"GPU {gpu} is not available: no CUDA device is visible to this process")


def work(store: RunStore | None = None, once: bool = False, idle_exit_s: float | None = None,
         gpu: int | None = None, say: Callable[[str], None] = lambda line: None) -> int:
    """The worker loop: claim the oldest queued run, execute it, repeat. `once`: stop when the queue is
    empty; `idle_exit_s`: stop after that long with nothing queued; `say` gets a line as each run starts, finishes an
    epoch and ends.
    Returns the number of runs executed, or -1 when another worker already holds this data directory (and GPU)."""
    if gpu is not None:
        _own_gpu(gpu)
    store = store or RunStore()
    with _hold_lock(_lock_path(gpu)) as locked:
        if not locked:
            return -1
        recover_interrupted(store)
        worker, done, idle_since = _worker_id(), 0, time.monotonic()
        heartbeat = _Heartbeat(store)
        heartbeat.start()
        try:
            while True:
                run = store.claim_next(worker)
                if run is None:
                    if once or (idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s):
                        return done
                    time.sleep(IDLE_POLL_S)
                    continue
                heartbeat.run_id = run.id
                store.log(run.id, f"started by worker {worker}")
                say(f"run {run_label(run)}: started")
                status = execute(store, run, worker, (EpochLines(run.id, say),))
                say(f"run {run.id}: {_ending(store.get(run.id))}")
                heartbeat.run_id = None
                done, idle_since = done + 1, time.monotonic()
        finally:
            heartbeat.stop()


def run_here(config, callbacks: tuple = (), store: RunStore | None = None) -> Run:
    """Train `config` in this process (what `cnnlab train` does) as a run of the store, so that the dashboard
    lists it, shows it live and can cancel it, and marks it interrupted if this process dies (it can then be
    resumed by a worker). Returns the finished run; a failing run's error is recorded, then raised (a run refused
    before it began, for its options or data, is not kept). Ctrl-C marks the run interrupted at once and raises
    KeyboardInterrupt with the run's id as `run_id`."""
    store = store or RunStore()
    worker = _worker_id()
    lock = _command_line_lock_path()
    with _hold_lock(lock) as locked:
        if not locked:
            raise RuntimeError(f"{lock} is held by another process")
        run_id = store.start(config.to_dict(), worker)
        store.log(run_id, f"started from the command line (process {os.getpid()})")
        heartbeat = _Heartbeat(store)
        heartbeat.run_id = run_id
        heartbeat.start()
        try:
            execute(store, store.get(run_id), worker, callbacks, reraise=True)
        except user_errors():
            if not store.metrics(run_id, "start"):  # refused before it began: not a run worth keeping
                store.delete(run_id)
                shutil.rmtree(run_dir(run_id), ignore_errors=True)
            raise
        except KeyboardInterrupt as stop:  # Ctrl-C in the terminal: resumable, like a worker that died
            store.mark_interrupted([run_id], "Stopped with Ctrl-C in the terminal")
            stop.run_id = run_id
            raise
        finally:
            heartbeat.stop()
            lock.unlink(missing_ok=True)  # this process's own lock file: gone however the run ends
    return store.get(run_id)


_started: dict[Path, subprocess.Popen] = {}
_starting = threading.Lock()  # the dashboard's sessions, each a thread, may all start one at once


def start_worker(idle_exit_s: float = WORKER_IDLE_EXIT_S) -> subprocess.Popen | None:
    """Start a background worker (`python -m cnnlab worker`) unless one is alive, or one this process started
    is still starting up; it outlives the caller and exits after `idle_exit_s` with nothing to do. Returns the
    process, or None when no new one was needed."""
    home = data_dir()
    with _starting:
        earlier = _started.get(home)
        if (earlier is not None and earlier.poll() is None) or worker_alive():  # any worker, any GPU, takes the queue
            return None
        with open(worker_log(), "a") as log:
            _started[home] = subprocess.Popen(
                [sys.executable, "-m", "cnnlab", "worker", "--idle-exit", str(idle_exit_s)], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env=dict(os.environ, CNNLAB_HOME=str(home)))
        return _started[home]


__all__ = ["run_label", "run_accuracy", "run_summaries", "transfer_results", "run_dir", "worker_log", "worker_alive",
           "worker_pids", "command_line_pids", "terminal_pid", "run_here", "user_errors",
           "recover_interrupted", "delete_run", "submit", "resume", "cancel", "StoreReporter", "readable_error",
           "execute", "work", "gpu_visibility", "start_worker", "HEARTBEAT_S", "STALE_AFTER_S"]
