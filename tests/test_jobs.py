"""The background worker: real runs on the digits, through the run store, in-process and as `cnnlab worker`."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from cnnlab import jobs, runstore
from cnnlab.charts import step_loss_figure
from cnnlab.checkpoints import latest_checkpoint
from cnnlab.naming import run_method
from cnnlab.runstore import RunStore
from cnnlab.training import LOSS_READINGS, make_config


def lenet(epochs: int, **options):
    return make_config("scratch", "lenet5", "digits", epochs=epochs, device="cpu", **options)


def wait_for(predicate, timeout: float = 90, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def start_worker_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnlab", "worker", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=dict(os.environ))


def test_a_queued_run_goes_running_then_succeeded_with_metrics():
    store = RunStore()
    run_id = jobs.submit(lenet(3), store)
    assert store.get(run_id).status == "queued"
    assert jobs.work(store, once=True) == 1
    run = store.get(run_id)
    assert run.status == "succeeded", run.error
    assert run.result["val_acc"] > 0.8 and run.result["strategy"] == "scratch"
    epochs = store.metrics(run_id, "epoch")
    assert [m["epoch"] for m in epochs] == [1, 2, 3] and epochs[-1]["val_acc"] == run.result["val_acc"]
    steps = store.metrics(run_id, "step")
    assert steps and steps[-1]["phase"] in ("train", "eval")
    start = store.metrics(run_id, "start")[0]
    steps_per_epoch = steps[0]["steps"]
    assert steps_per_epoch < 2 * LOSS_READINGS  # so its loss is read at every step, and all of them are drawn live
    drawn = step_loss_figure(steps).data[0].x
    assert len(drawn) == 3 * steps_per_epoch > len([row for row in steps if row["phase"] == "train"])
    assert start["params_trainable"] == 61_706 and start["val_size"] == 359
    assert run.checkpoint and run.checkpoint.startswith(str(jobs.run_dir(run_id)))
    assert any(line.startswith("Epoch 3/3") for line in store.logs(run_id))
    # its cost from the freeze plan: 1,131,960 MACs per training image (forward, input and weight gradients)
    assert run.result["training_macs_per_image"] == 416_520 + (416_520 - 28 * 28 * 6 * 25) + 416_520
    train, val = start["train_size"], start["val_size"]
    assert run.result["total_macs"] == 3 * (run.result["training_macs_per_image"] * train + 416_520 * val)


def test_same_request_key_makes_one_run_and_cancel_while_queued():
    store = RunStore()
    first = jobs.submit(lenet(2), store, request_key="launch-1")
    assert jobs.submit(lenet(2), store, request_key="launch-1") == first
    assert jobs.cancel(first, store) == "cancelled"
    assert jobs.work(store, once=True) == 0
    assert store.get(first).status == "cancelled" and len(store.runs()) == 1


def test_a_failing_run_is_recorded_and_the_worker_goes_on(tmp_path):
    store = RunStore()
    broken = jobs.submit(make_config("scratch", "lenet5", f"folder:{tmp_path / 'missing'}", epochs=1), store)
    fine = jobs.submit(lenet(1), store)
    assert jobs.work(store, once=True) == 2
    failed = store.get(broken)
    assert failed.status == "failed" and "missing" in failed.error and "\n" not in failed.error
    assert any("Traceback" in line for line in store.logs(broken))
    assert store.get(fine).status == "succeeded"


def test_only_one_worker_per_data_directory():
    first = start_worker_process("--idle-exit", "30")
    try:
        wait_for(jobs.worker_alive, what="the first worker to take the lock")
        second = subprocess.run([sys.executable, "-m", "cnnlab", "worker", "--once"], capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2 and f"a worker is running already (process {first.pid})" in second.stderr
    finally:
        first.terminate()
        first.wait(30)
    assert not jobs.worker_alive()


def test_cancel_while_running_stops_at_a_step():
    store = RunStore()
    # Strategy III has no epochs: only the step boundaries of its feature extraction can stop it
    config = make_config("extract", "tf_efficientnet_lite0", "digits", image_size=128, batch_size=4, device="cpu")
    run_id = jobs.submit(config, store)
    worker = start_worker_process("--once")
    try:
        wait_for(lambda: (store.last_metric(run_id, "step") or {}).get("phase") == "features", what="extraction")
        assert jobs.cancel(run_id, store) == "running"
        assert worker.wait(60) == 0
    finally:
        worker.kill()
    run = store.get(run_id)
    assert run.status == "cancelled" and run.error.startswith("Cancelled while computing features: none were kept")
    last = store.last_metric(run_id, "step")
    assert last["phase"] == "features" and last["step"] < last["steps"], "stopped in the middle of the pass"
    log = store.logs(run_id)
    assert any("cancel requested" in line for line in log)
    reading, computing = (next(i for i, line in enumerate(log) if words in line)
                          for words in ("reading digits and loading tf_efficientnet_lite0", "computing the features of "
                                                                                          "1,797 images"))
    assert reading < computing  # the log tells what happens before the first step's progress


def test_a_run_cancelled_after_an_epoch_logs_that_it_keeps_that_epochs_model():
    from cnnlab.training import Callback, run

    store = RunStore()
    config = lenet(3)
    run_id = store.start(config.to_dict(), "test")

    class CancelInEpoch2(Callback):
        def on_step(self, event):
            if event.epoch == 2:
                store.request_cancel(run_id)

    result = run(config, [CancelInEpoch2(), jobs.StoreReporter(store, run_id, report_every_s=0)],
                 out_dir=jobs.run_dir(run_id))
    assert result.stopped and result.checkpoint.endswith("ckpt-0001")
    assert "cancel requested: stopping after this step; the run keeps its model of epoch 1" in store.logs(run_id)
    store.finish(run_id, "cancelled", result=result.to_json())
    assert jobs.trained_models("lenet5", store) == {  # its model can be used: Predict, Look inside, another run
        str(jobs.run_dir(run_id)): f"I: scratch on digits · val {100 * result.val_acc:.1f}% · cancelled after "
                                   f"epoch 1 · {run_id}"}

    store.requeue(run_id)
    run(config, [jobs.StoreReporter(store, run_id, report_every_s=0)], out_dir=jobs.run_dir(run_id))  # resumed
    trained = [row["epoch"] for row in jobs.step_history(run_id, store) if row["phase"] == "train"]
    assert trained == sorted(trained) and trained.count(1) > 0, "epoch 1 from the first attempt, then the second's"
    assert trained.count(2) == trained.count(3), "the first attempt's part of epoch 2 was trained again: not drawn"


def test_cancelling_a_run_whose_worker_died_cancels_it():
    store = RunStore()
    run_id = jobs.submit(lenet(200), store)
    worker = start_worker_process("--once")
    wait_for(lambda: store.metrics(run_id, "epoch"), what="a first epoch")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(30)
    assert jobs.cancel(run_id, store) == "cancelled"  # found interrupted first, then cancelled at once
    assert store.get(run_id).status == "cancelled"


def test_kill_9_mid_run_leaves_interrupted_then_resume_finishes_it():
    store = RunStore()
    epochs = 20
    run_id = jobs.submit(lenet(epochs), store)
    worker = start_worker_process("--once")
    wait_for(lambda: len(store.metrics(run_id, "epoch")) >= 2, what="two epochs")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(30)
    assert store.get(run_id).status == "running"  # nobody has looked yet
    assert jobs.recover_interrupted(store) == [run_id]
    interrupted = store.get(run_id)
    assert interrupted.status == "interrupted" and "last checkpoint" in interrupted.error
    summary, = jobs.run_summaries([interrupted], store)  # as `cnnlab runs` shows it: its last epoch's accuracy
    assert summary["val_acc"] == store.last_metric(run_id, "epoch")["val_acc"] > 0.5
    saved = latest_checkpoint(jobs.run_dir(run_id)).epoch
    assert saved >= 2
    jobs.resume(run_id, store)
    assert jobs.work(store, once=True) == 1
    run = store.get(run_id)
    assert run.status == "succeeded", run.error
    assert [m["epoch"] for m in run.result["epochs"]] == list(range(1, epochs + 1))
    assert run.result["train_time_s"] >= sum(m["time_s"] for m in run.result["epochs"]), "the time before counts"
    resumed_at = store.metrics(run_id, "start")[-1]["start_epoch"]
    assert resumed_at == saved  # continued from the checkpoint, not from scratch
    assert f"resumed from the checkpoint saved after epoch {saved}" in "\n".join(store.logs(run_id))
    trained = [row for row in store.metrics(run_id, "step") if row["phase"] == "train"]
    assert all(row["loss"] is not None and row["loss_at"] <= row["epoch"] - 1 + row["step"] / row["steps"]
               for row in trained), "each report carries the last loss measured, and where it was measured"
    with pytest.raises(ValueError, match="only interrupted"):
        jobs.resume(run_id, store)


def test_a_run_whose_data_is_gone_fails_saying_so_and_is_not_queued_again(tmp_path, capsys):
    import shutil

    from cnnlab.cli import main
    from tests.test_training import digit_folder

    root = digit_folder(tmp_path / "digits", per_class=3)
    assert main(["submit", "--strategy", "scratch", "--arch", "lenet5", "--dataset", f"folder:{root}",
                 "--epochs", "1"]) == 0
    run_id = capsys.readouterr().out.strip()
    shutil.rmtree(root)
    assert main(["worker", "--once"]) == 0
    assert f"worker: run {run_id}: failed after " in capsys.readouterr().err
    assert main(["runs"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{run_id} (failed): {root} does not exist"
    assert main(["resume", run_id[:6]]) == 2
    assert capsys.readouterr().err == f"cnnlab: error: run {run_id} cannot resume: {root} does not exist\n"
    assert RunStore().get(run_id).status == "failed", "not queued to fail again"


def test_cli_submit_runs_cancel_resume(capsys):
    from cnnlab.cli import main

    assert main(["submit", "--strategy", "scratch", "--arch", "lenet5", "--dataset", "digits", "--epochs", "1"]) == 0
    run_id = capsys.readouterr().out.strip()
    assert main(["runs", "--json"]) == 0
    listed = capsys.readouterr().out
    assert run_id in listed and '"queued"' in listed
    assert main(["cancel", run_id]) == 0 and "cancelled" in capsys.readouterr().out
    assert main(["resume", run_id]) == 0
    assert "it starts from the beginning (it saved no checkpoint)" in capsys.readouterr().out  # cancelled while queued
    assert main(["worker", "--once"]) == 0
    said = capsys.readouterr().err.splitlines()
    assert said[0] == f"worker: run {run_id} · I: scratch · LeNet-5 on digits: started"
    assert said[1].startswith(f"worker: run {run_id}: Epoch 1/1 - ") and " - val_acc: 0." in said[1]
    assert said[2].startswith(f"worker: run {run_id}: succeeded after ")
    assert main(["runs"]) == 0
    table = capsys.readouterr().out
    assert run_id in table and "succeeded" in table and "I: scratch" in table and "progress" in table.splitlines()[0]
    assert main(["cancel", "nope"]) == 2 and "no run 'nope'" in capsys.readouterr().err
    assert main(["resume", run_id]) == 2 and f"run {run_id} succeeded; only interrupted" in capsys.readouterr().err

    assert main(["submit", "--strategy", "scratch", "--arch", "lenet5", "--dataset", "digits", "--epochs", "1"]) == 0
    queued = capsys.readouterr().out.strip()
    assert main(["delete", queued]) == 2
    assert f"run {queued} is queued: cancel it first, then delete it" in capsys.readouterr().err
    assert main(["submit", "--strategy", "finetune", "--dataset", "digits", "--weights", run_id, "--epochs", "1"]) == 0
    follower = capsys.readouterr().out.strip()
    assert main(["delete", run_id]) == 2
    assert f"run {follower} (queued) starts from run {run_id}'s model: cancel it first" in capsys.readouterr().err
    assert main(["cancel", queued]) == 0 and main(["cancel", follower]) == 0
    capsys.readouterr()
    folder = jobs.run_dir(run_id)
    assert (folder / "checkpoints").is_dir()
    assert main(["delete", run_id, "nosuchrun", queued, run_id]) == 2  # each id once; one unknown stops no other
    said = capsys.readouterr()
    assert said.out.splitlines() == [f"{run_id}: deleted, with its folder {folder}", f"{queued}: deleted"]
    assert said.err.splitlines()[-1] == "cnnlab: error: not deleted: nosuchrun" and "no run 'nosuchrun'" in said.err
    assert not folder.exists() and [r.id for r in RunStore().runs()] == [follower]
    assert not RunStore().metrics(run_id, "epoch") and not RunStore().logs(run_id), "its metrics and log too"
    assert main(["delete", run_id]) == 2
    assert capsys.readouterr().err.splitlines() == [f"cnnlab: error: no run '{run_id}'; see `cnnlab runs`"], "one line"


def test_the_start_of_a_run_id_names_the_run(capsys, monkeypatch):
    from types import SimpleNamespace

    from cnnlab.cli import main

    ids = iter(["abc123" + "0" * 26, "abc124" + "0" * 26])
    monkeypatch.setattr(runstore.uuid, "uuid4", lambda: SimpleNamespace(hex=next(ids)))
    first, second = (jobs.submit(make_config("scratch", "lenet5", "digits", epochs=e)) for e in (1, 2))
    assert (first, second) == ("abc123000000", "abc124000000")
    assert main(["cancel", "abc123"]) == 0 and capsys.readouterr().out == "abc123000000: cancelled\n"
    assert main(["cancel", "abc123"]) == 2
    assert "run abc123000000 is cancelled already; `cnnlab resume abc123000000`" in capsys.readouterr().err
    assert main(["runs"]) == 0
    table, notes = capsys.readouterr().out.split("\n\n")
    assert max(map(len, table.splitlines())) < 140, "notes are not a column that widens the table"
    assert notes.splitlines() == [f"{first} (cancelled): Resume (`cnnlab resume {first}`) continues it from the start "
                                  "(it saved no checkpoint)"]
    assert main(["mistakes", "abc123"]) == 2
    assert "run abc123000000 (scratch, cancelled) saved no model" in capsys.readouterr().err
    assert main(["cancel", "abc1"]) == 2
    assert "abc1 starts the ids of 2 runs (abc124000000, abc123000000); give more" in capsys.readouterr().err
    assert main(["delete", "abc12"]) == 2 and RunStore().get(second).status == "queued", "nothing chosen for you"
    assert main(["cancel", "ab"]) == 2
    assert "ab is too short to name a run: give at least 4 characters of its id" in capsys.readouterr().err
    assert RunStore().resolve("abd") == "abd", "no run's id starts so: left as it is (a file name, say)"


def test_cli_submit_queues_a_probe_with_its_options(capsys):
    from cnnlab.cli import main

    assert main(["submit", "--strategy", "probe", "--arch", "tf_efficientnet_lite0", "--dataset", "digits",
                 "--classifier", "svm", "--input-size", "64", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run"]
    config = RunStore().get(run_id).config
    assert (config["strategy"], config["classifier"], config["image_size"]) == ("probe", "svm", 64)
    assert main(["train", "--strategy", "probe", "--arch", "lenet5", "--dataset", "digits"]) == 2
    assert "invalid choice: 'probe'" in capsys.readouterr().err
    assert main(["submit", "--strategy", "extract", "--dataset", "digits", "--tap", "12", "--json"]) == 0
    said = capsys.readouterr()
    assert RunStore().get(json.loads(said.out)["run"]).config["tap"] == "blocks.1.0.bn3"
    assert "note: --tap 12 is layer blocks.1.0.bn3 (BatchNormAct2d, stage 2 (blocks.1))" in said.err


def test_cli_runs_take_the_default_architecture_or_the_one_of_the_run_they_start_from(capsys):
    from cnnlab.cli import main

    assert main(["submit", "--strategy", "extract", "--dataset", "digits", "--json"]) == 0
    config = RunStore().get(json.loads(capsys.readouterr().out)["run"]).config
    assert (config["arch"], config["image_size"]) == ("tf_efficientnet_lite0", 128)  # the 8x8 digits, as on Launch
    assert main(["submit", "--strategy", "extract", "--dataset", "digits", "--input-size", "224", "--json"]) == 0
    asked = RunStore().get(json.loads(capsys.readouterr().out)["run"]).config
    assert asked["image_size"] is None and run_method(asked) == "III: extract + logistic regression"  # its own, 224
    assert main(["train", "--strategy", "scratch", "--arch", "lenet5", "--dataset", "digits", "--epochs", "1",
                 "--json"]) == 0
    lenet_run = json.loads(capsys.readouterr().out)["run"]
    assert main(["submit", "--strategy", "finetune", "--dataset", "digits", "--weights", lenet_run, "--json"]) == 0
    config = RunStore().get(json.loads(capsys.readouterr().out)["run"]).config
    assert config["arch"] == "lenet5" and config["weights"].endswith(lenet_run)


def test_a_gpu_worker_sees_only_its_gpu_counted_among_the_visible_ones():
    assert jobs.gpu_visibility(1, None) == "1"
    assert jobs.gpu_visibility(1, "3,5") == "5"  # GPU 1 of the two this shell shows
    with pytest.raises(ValueError, match="there is no GPU 2"):
        jobs.gpu_visibility(2, "3,5")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the machine without a GPU")
def test_a_gpu_worker_without_that_gpu_fails_instead_of_training_on_the_cpu(isolated_data_dir):
    result = subprocess.run([sys.executable, "-m", "cnnlab", "worker", "--once", "--gpu", "0"], capture_output=True,
                            text=True, timeout=120, env=dict(os.environ))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("GPU 0 is not available: no CUDA device is visible to "
                                                           "this process")


def start_cli_train(*args: str) -> subprocess.Popen:
    """`cnnlab train` as a terminal starts it: with Ctrl-C's default handling, whatever an earlier test left in this
    process (a child inherits an ignored SIGINT, and Python then never raises KeyboardInterrupt)."""
    return subprocess.Popen([sys.executable, "-m", "cnnlab", "train", "--strategy", "scratch", "--arch", "lenet5",
                             "--dataset", "digits", "--device", "cpu", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_cli_train_is_a_run_of_the_store_with_its_result(capsys):
    from cnnlab.cli import main

    assert main(["train", "--strategy", "scratch", "--arch", "lenet5", "--dataset", "digits", "--epochs", "2",
                 "--device", "cpu", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    run = RunStore().get(printed["run"])
    assert (run.status, printed["status"]) == ("succeeded", "succeeded")
    assert run.result["val_acc"] == printed["val_acc"] > 0.5 and run.result["total_macs"] > 0
    assert run.worker == f"{jobs.socket.gethostname()}:{os.getpid()}"
    assert [m["epoch"] for m in RunStore().metrics(run.id, "epoch")] == [1, 2]
    assert latest_checkpoint(jobs.run_dir(run.id)).epoch == 2 and run.checkpoint
    assert not list(jobs.data_dir().glob("train-*.lock")), "the command line's lock file is cleaned up"
    assert main(["export", run.id, "--format", "torchscript"]) == 0, "a run id stands for its folder"
    assert "match PyTorch" in capsys.readouterr().out
    assert main(["predict", "assets/digit.png", "--weights", run.id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == str(jobs.run_dir(run.id))
    probe = jobs.submit(make_config("probe", "tf_efficientnet_lite0", "digits"))
    assert main(["mistakes", probe]) == 2
    assert f"run {probe} (probe, queued) saved no model" in capsys.readouterr().err


def test_cli_train_can_be_cancelled_from_the_store_and_is_interrupted_when_killed(capsys):
    from cnnlab.cli import main

    store = RunStore()
    cancelled = start_cli_train("--epochs", "200")
    run_id = wait_for(lambda: [r.id for r in store.runs() if store.metrics(r.id, "epoch")], what="an epoch")[0]
    assert jobs.recover_interrupted(store) == [] and store.get(run_id).status == "running", "alive: left alone"
    assert jobs.command_line_pids() == [cancelled.pid] and not jobs.worker_alive()
    assert jobs.terminal_pid(store.get(run_id)) == cancelled.pid
    assert main(["cancel", run_id]) == 0
    assert f"the `cnnlab train` running it in a terminal (process {cancelled.pid})" in capsys.readouterr().out
    _, err = cancelled.communicate(timeout=90)
    assert cancelled.returncode == 1, "a cancelled run did not complete: scripts must see it"
    assert f"run {run_id} was cancelled" in err and f"`cnnlab resume {run_id}`" in err
    assert store.get(run_id).status == "cancelled"

    killed = start_cli_train("--epochs", "200")
    run_id = wait_for(lambda: [r.id for r in store.runs(("running",)) if store.metrics(r.id, "epoch")],
                      what="an epoch")[0]
    killed.kill()
    killed.wait(30)
    assert jobs.recover_interrupted(store) == [run_id]
    assert store.get(run_id).error.startswith("The `cnnlab train` process that ran it stopped"), "not 'the worker'"
    jobs.resume(run_id, store)  # a worker can take it from its last checkpoint
    assert store.get(run_id).status == "queued"


@pytest.mark.parametrize("argv, message", [
    (["train", "--strategy", "scratch", "--arch", "lenet5", "--dataset", "nosuch"], "unknown dataset"),
    (["train", "--strategy", "finetune", "--arch", "tf_efficientnet_lite0", "--dataset", "digits",
      "--freeze", "stage:9"], "tf_efficientnet_lite0 has 5 stages"),
    (["train", "--strategy", "extract", "--arch", "tf_efficientnet_lite0", "--dataset", "digits", "--tap", "nope"],
     "has no layer 'nope'"),
    (["probe", "--arch", "lenet5", "--dataset", "digits"], "no pretrained weights exist for lenet5"),
    (["submit", "--strategy", "probe", "--arch", "lenet5", "--dataset", "digits"], "no pretrained weights"),
    (["submit", "--strategy", "finetune", "--arch", "lenet5", "--dataset", "digits", "--weights", "nothing.pth"],
     "not found"),
])
def test_refused_input_leaves_no_run_behind(capsys, argv, message):
    from cnnlab.cli import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err
    runs = jobs.data_dir() / "runs"
    assert RunStore().runs() == [] and (not runs.exists() or not any(runs.iterdir()))
    assert not list(jobs.data_dir().glob("train-*.lock")), "no lock file is left behind"


def test_ctrl_c_on_cli_train_marks_the_run_interrupted_and_says_how_to_resume():
    store = RunStore()
    process = start_cli_train("--epochs", "200")
    run_id = wait_for(lambda: [r.id for r in store.runs() if store.metrics(r.id, "epoch")], what="an epoch")[0]
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == (f"cnnlab: interrupted; `cnnlab resume {run_id}` continues run {run_id} "
                                            "from its last checkpoint")
    assert "Traceback" not in err
    run = store.get(run_id)
    assert run.status == "interrupted" and run.error.startswith("Stopped with Ctrl-C")


def test_a_live_worker_that_did_not_beat_for_hours_is_not_gone_but_its_id_reused_by_a_later_process_is():
    store = RunStore()
    run_id = store.submit({"n": 1})
    this_process = f"{socket.gethostname()}:{os.getpid()}"
    store.claim_next(this_process)
    now = time.time()
    with store._write() as db:  # the laptop slept two hours since its last heartbeat
        db.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (now - 7200, run_id))
    assert not jobs._worker_gone(store.get(run_id), now, {os.getpid()})
    assert jobs._worker_gone(store.get(run_id), now, set()), "holds no worker lock: another process now"
    with store._write() as db:  # the run started a day ago: this process, started since, only has its id
        db.execute("UPDATE runs SET started_at = ? WHERE id = ?", (now - 86400, run_id))
    assert jobs._worker_gone(store.get(run_id), now, {os.getpid()})


def test_run_progress_says_where_a_run_is_and_how_long_is_left_at_its_pace():
    def row(phase, epoch, step, at, steps=10):
        return {"phase": phase, "epoch": epoch, "epochs": 4, "step": step, "steps": steps, "loss": 0.5, "at": at}

    assert jobs.run_progress([]) is None
    alone = jobs.run_progress([row("train", 1, 1, 100.0)])
    assert alone.remaining_s is None and alone.describe() == "epoch 1/4, train step 1/10, loss 0.5000"
    # a tenth of an epoch in 2 s after the first step: 3.9 epochs to go at 20 s an epoch
    progress = jobs.run_progress([row("train", 1, 1, 100.0), row("train", 1, 2, 102.0)])
    assert progress.fraction == pytest.approx(2 / 40)
    assert progress.remaining_s == pytest.approx(20 * 3.8)
    assert progress.describe().endswith("; about 76 s left")
    # Strategy III: the features pass is timed apart from the linear head's epochs after it
    features = [dict(row("features", 1, 5, 10.0, steps=20)), dict(row("features", 1, 15, 30.0, steps=20))]
    assert jobs.run_progress(features).remaining_s == pytest.approx(10.0)
    head = features + [row("train", 1, 5, 40.0), row("train", 2, 5, 41.0)]
    assert jobs.run_progress(head).remaining_s == pytest.approx(1.0 * 2.5)
    assert [jobs.in_words(s) for s in (40, 720, 5400)] == ["40 s", "12 min", "1.5 h"]
    measured = [{**row("train", 2, 15, 50.0), "loss_epoch": e, "loss_step": s} for e, s in ((2, 15), (2, 10), (1, 10))]
    assert [jobs.run_progress([m]).text.partition("loss ")[2] for m in measured] == [
        "0.5000", "0.5000 at step 10", "0.5000 at epoch 1 step 10"], "an earlier step's loss says so"


def test_timed_metrics_say_when_each_row_was_written():
    store = RunStore()
    run_id = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=1, device="cpu"), store)
    before = time.time()
    store.add_metrics(run_id, "step", 1, {"phase": "train", "epoch": 1, "epochs": 1, "step": 1, "steps": 5})
    [row] = store.metrics(run_id, "step", timed=True)
    assert before <= row["at"] <= time.time() and "at" not in store.metrics(run_id, "step")[0]


def test_a_reader_that_goes_away_stops_the_output_not_the_run():
    """`cnnlab train ... 2>&1 | head -1`: the pipe closes after the first line; the run still trains to its end."""
    process = subprocess.Popen([sys.executable, "-m", "cnnlab", "train", "--strategy", "scratch", "--arch", "lenet5",
                                "--dataset", "digits", "--device", "cpu", "--epochs", "3"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=dict(os.environ))
    process.stdout.readline()
    process.stdout.close()
    assert process.wait(timeout=120) == 0
    [run] = RunStore().runs()
    assert (run.status, run.error) == ("succeeded", None) and [m["epoch"] for m in RunStore().metrics(run.id, "epoch")] \
        == [1, 2, 3]


def test_cli_submit_stores_the_absolute_path_of_a_folder_dataset(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from cnnlab.cli import main
    from cnnlab.data import absolute_dataset as _absolute_dataset

    for label in ("a", "b"):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (16, 16), 60 * i + (0 if label == "a" else 30)).save(tmp_path / "pets" / label / f"{i}.png")
    monkeypatch.chdir(tmp_path)  # a worker started elsewhere must still find it
    assert _absolute_dataset("digits") == "digits" and _absolute_dataset("mnist") == "mnist"
    assert main(["submit", "--strategy", "scratch", "--arch", "lenet5", "--dataset", "folder:pets", "--epochs", "1"]) == 0
    run_id = capsys.readouterr().out.strip()
    assert RunStore().get(run_id).config["dataset"] == f"folder:{tmp_path / 'pets'}"


def test_run_summaries_say_how_far_a_running_run_is():
    store = RunStore()
    run_id = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=2, device="cpu"), store)
    assert jobs.run_summaries(store.runs(), store)[0]["progress"] is None, "queued: nothing to say yet"
    store.claim_next("w")
    assert jobs.run_summaries(store.runs(), store)[0]["progress"] == "starting"
    store.add_metrics(run_id, "step", 1, {"phase": "train", "epoch": 2, "epochs": 2, "step": 5, "steps": 10,
                                          "loss": 0.25})
    [row] = jobs.run_summaries(store.runs(), store)
    assert row["progress"] == "75%: epoch 2/2, train step 5/10, loss 0.2500"
    assert store.request_cancel(run_id) == "running"
    assert jobs.run_summaries(store.runs(), store)[0]["status"] == "cancelling", "as the run's own badge says"


def test_why_a_run_draws_no_curve():
    store = RunStore()
    extract = jobs.submit(make_config("extract", "tf_efficientnet_lite0", "digits", classifier="svm"), store)
    probe = jobs.submit(make_config("probe", "tf_efficientnet_lite0", "digits"), store)
    scratch = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=2), store)
    assert jobs.why_no_curve(store.get(extract)) == "fits its classifier in one go, without epochs"
    assert "at each stage" in jobs.why_no_curve(store.get(probe))
    assert jobs.why_no_curve(store.get(scratch)) == "has not started"
    store.request_cancel(scratch)
    assert jobs.why_no_curve(store.get(scratch)) == "was cancelled before its first epoch ended"
