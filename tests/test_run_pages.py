"""Launch, Runs and Compare runs pages through AppTest, with real runs on the digits and a real worker."""
import json
import os
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cnnlab import jobs
from cnnlab.charts import step_loss_figure
from cnnlab.mistakes import validation_examples
from cnnlab.planner import freeze_plan, suggest_strategy
from cnnlab.registry import build_model, get_spec
from cnnlab.runstore import RunStore
from cnnlab.training import count_params, freeze_layers, make_config, probe_reading

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(autouse=True)
def no_worker_left_behind():
    """Stop the workers the pages started in this test's data directory (and only those)."""
    yield
    import os
    import signal

    for pid in jobs.worker_pids():
        os.kill(pid, signal.SIGTERM)


def open_page(path: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page(path)
    at.run()
    assert not at.exception, at.exception
    return at


def open_run(run_id: str) -> AppTest:
    """The Runs page as a link to one run opens it (`?run=ID`)."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["run"] = run_id
    at.run()
    at.switch_page("pages/runs.py")
    at.run()
    return at


def wait_status(run_id: str, statuses: tuple[str, ...], timeout: float = 120) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = RunStore().get(run_id).status
        if status in statuses:
            return status
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} still {status} after {timeout}s")


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.mark.parametrize("arch,freeze", [("resnet18", "stage:2"), ("tf_efficientnet_lite0", "stage:3"),
                                         ("vgg16", "all-but:4"), ("googlenet", "body")])
def test_freeze_plan_counts_what_the_engine_freezes(arch, freeze):
    plan = freeze_plan(arch, "finetune", freeze, 7)
    model = build_model(arch, 7)
    freeze_layers(model, get_spec(arch), freeze)
    assert (plan.params_trainable, plan.params_frozen) == count_params(model)
    assert sum(p.params for p in plan.parts) == plan.params_trainable + plan.params_frozen
    assert plan.parts[-1].name == "classifier" and plan.parts[-1].state == "trained"
    everything = freeze_plan(arch, "scratch", "none", 7)
    assert plan.forward_macs == everything.forward_macs
    assert plan.training_macs < everything.training_macs  # freezing saves backward work


def test_the_lecture_vgg16_recipe_counts_the_slides_trainable_parameters():
    # Keras: vgg_conv.layers[:-4] frozen (block 5's three 3x3 convs of 512 train), then Flatten, Dense(1024),
    # Dropout, Dense(3): 3 x (3*3*512 + 1) x 512 + (7*7*512 + 1) x 1024 + (1024 + 1) x 3
    slide = 3 * (3 * 3 * 512 + 1) * 512 + (7 * 7 * 512 + 1) * 1024 + (1024 + 1) * 3
    config = make_config("finetune", "vgg16", "digits")
    plan = freeze_plan("vgg16", "finetune", config.freeze, 3, head=config.head)
    assert plan.params_trainable == slide == 32_773_635
    assert [(p.name, p.state) for p in plan.parts[-3:]] == [
        ("stage 5 (features.24 … features.30)", "trained"), ("after the last stage", "trained"),
        ("classifier", "trained")]
    own = freeze_plan("vgg16", "finetune", config.freeze, 3, head="own")
    assert own.params_trainable - plan.params_trainable == (25088 * 4096 + 4096 * 4096 + 4096 * 3) - (
        25088 * 1024 + 1024 * 3) + 4096 + 4096 - 1024


def test_plan_parts_name_the_modules_they_span():
    parts = [p.name for p in freeze_plan("tf_efficientnet_lite0", "finetune", "stage:3", 10).parts]
    assert parts == ["stage 1 (conv_stem … blocks.0)", "stage 2 (blocks.1)", "stage 3 (blocks.2)",
                     "stage 4 (blocks.3 … blocks.4)", "stage 5 (blocks.5 … bn2)", "classifier"]
    resnet = [p.name for p in freeze_plan("resnet18", "finetune", "stage:2", 10).parts]
    assert resnet[:2] == ["stage 1 (conv1 … relu)", "stage 2 (maxpool … layer1)"]
    lenet = freeze_plan("lenet5", "scratch", "none", 10)
    assert [p.name for p in lenet.parts][:2] == ["stage 1 (c1)", "stage 3 (c3)"]
    assert lenet.stages_without_params == ["stage 2 (s2)", "stage 4 (s4)"], "the pooling stages the plan leaves out"


def test_an_early_tap_counts_only_the_layers_that_run():
    from cnnlab.profiling import profile_model
    from cnnlab.registry import build_model, example_input, get_spec

    whole = freeze_plan("tf_efficientnet_lite0", "extract", "body", 10, 96)
    early = freeze_plan("tf_efficientnet_lite0", "extract", "body", 10, 96, tap="blocks.1")
    rows = profile_model(build_model("tf_efficientnet_lite0", 10),
                         example_input(get_spec("tf_efficientnet_lite0"), 96)).rows
    last = max(i for i, row in enumerate(rows) if row.name.startswith("blocks.1.") and row.calls)
    assert early.forward_macs == sum(row.macs for row in rows[:last + 1]) < whole.forward_macs / 3
    assert [p.state for p in early.parts] == ["frozen", "frozen"] + ["not run"] * 4
    assert all(p.runs for p in whole.parts)


def test_training_macs_follow_the_formula():
    lenet = freeze_plan("lenet5", "scratch", "none", 10)
    # every layer trains: weight gradients cost one forward; input gradients are skipped for the first conv only
    first_conv = 28 * 28 * 6 * 5 * 5 * 1
    assert lenet.weight_grad_macs == lenet.forward_macs == 416_520
    assert lenet.input_grad_macs == lenet.forward_macs - first_conv
    extract = freeze_plan("tf_efficientnet_lite0", "extract", "none", 10)
    assert extract.training_macs == extract.forward_macs and extract.params_trainable == 1280 * 10 + 10
    head_only = freeze_plan("resnet18", "finetune", "body", 10)
    assert head_only.weight_grad_macs == 512 * 10 and head_only.input_grad_macs == 0


def test_the_quadrant_suggests_each_strategy():
    quadrant = {(large, similar): suggest_strategy(large, similar, "resnet18")
                for large in (False, True) for similar in (False, True)}
    assert {cell: (s.strategy, s.freeze) for cell, s in quadrant.items()} == {
        (False, True): ("extract", "body"), (True, False): ("scratch", "none"),
        (False, False): ("finetune", "stage:2"), (True, True): ("finetune", "stage:4")}
    # small, different data fine-tunes deeper than large, similar data (Marcelino's quadrants 3 and 2)
    assert suggest_strategy(False, False, "tf_efficientnet_lite0").freeze == "stage:2"  # half of its 5 stages
    assert suggest_strategy(True, True, "lenet5").freeze == "stage:5"  # all but the last of its 6 stages


def test_launch_page_plans_and_the_suggestion_sets_the_strategy():
    at = open_page("pages/launch.py")
    assert at.radio(key="launch_strategy").value == "extract"
    assert metric(at, "Trainable parameters") == "12.8K"  # Lite0's 1280 features into 10 digits
    assert any(c.value.startswith("Strategy III, chosen below, is where the form starts") for c in at.caption), \
        "the digits' quadrant says II while the form starts on III: the page says why"
    at.radio(key="launch_size").set_value("large").run()
    at.radio(key="launch_similarity").set_value("different").run()
    at.button[0].click().run()
    assert at.radio(key="launch_strategy").value == "scratch"
    at.selectbox(key="launch_dataset").set_value("zip").run()
    assert (at.radio(key="launch_size").value, at.radio(key="launch_similarity").value) == (None, None), \
        "your own images: the answers are yours to give, not the digits'"
    assert any(i.value == "Answer both questions for a suggestion." for i in at.info)
    at.selectbox(key="launch_dataset").set_value("cifar10").run()
    assert (at.radio(key="launch_size").value, at.radio(key="launch_similarity").value) == ("large", "similar")
    at.selectbox(key="launch_dataset").set_value("digits").run()
    at.radio(key="launch_strategy").set_value("finetune").run()
    at.selectbox(key="launch_arch").set_value("resnet18").run()
    assert not at.exception, at.exception
    at.selectbox(key="launch_freeze_resnet18").set_value("stage:3").run()
    plan = freeze_plan("resnet18", "finetune", "stage:3", 10)
    assert metric(at, "Trainable parameters") == "10.5M" == f"{plan.params_trainable / 1e6:.1f}M"
    states = at.dataframe[0].value.set_index("Part")["State"]
    assert states["stage 3 (layer2)"] == "frozen" and states["stage 4 (layer3)"] == "trained"
    at.selectbox(key="launch_arch").set_value("vgg16").run()  # the lecture's recipe: its freeze and its new head
    assert at.radio(key="launch_head_vgg16_finetune").value == "lecture"
    assert metric(at, "Trainable parameters") == "32.8M"
    at.radio(key="launch_head_vgg16_finetune").set_value("own").run()
    assert metric(at, "Trainable parameters") == "126.7M"


def test_launch_page_reads_flattened_features_from_a_stage_as_the_lecture_does():
    at = open_page("pages/launch.py")
    at.number_input(key="launch_size_tf_efficientnet_lite0_small").set_value(64).run()
    assert at.radio(key="launch_pooling_tf_efficientnet_lite0").disabled  # the classifier's input is a vector
    at.selectbox(key="launch_tap_tf_efficientnet_lite0").set_value("bn2").run()
    at.radio(key="launch_pooling_tf_efficientnet_lite0").set_value("flatten").run()
    assert not at.exception, at.exception
    assert metric(at, "Trainable parameters") == "51.2K"  # (1280 x 2 x 2 + 1) x 10 digits
    assert any("1280 x 2 x 2 = 5,120 features per image (bn2, flattened)" in c.value for c in at.caption)
    assert any("keep no model" in i.value and "flattened, do not fit" in i.value for i in at.info)
    next(b for b in at.button if b.label == "Launch").click().run()
    config = RunStore().runs()[0].config
    assert (config["strategy"], config["tap"], config["tap_pooling"]) == ("extract", "bn2", "flatten")


def test_launch_starts_the_tiny_images_of_the_digits_at_a_smaller_input_size():
    at = open_page("pages/launch.py")
    assert at.number_input(key="launch_size_tf_efficientnet_lite0_small").value == 128  # 8x8 digits: not 224
    at.selectbox(key="launch_dataset").set_value("folder").run()
    assert not at.exception, at.exception
    assert at.number_input(key="launch_size_tf_efficientnet_lite0").value == 224  # photos: the network's own size
    at.selectbox(key="launch_dataset").set_value("digits").run()
    at.selectbox(key="launch_arch").set_value("lenet5").run()
    assert at.number_input(key="launch_size_lenet5_small").value == 32  # a fixed input stays as it is


def test_launch_warns_of_a_learning_rate_that_usually_diverges():
    at = open_page("pages/launch.py")
    at.radio(key="launch_strategy").set_value("scratch").run()
    assert not any("usually diverges" in w.value for w in at.warning)
    at.number_input(key="launch_lr_scratch").set_value(0.5).run()
    assert any(w.value.startswith("A learning rate of 0.5 is more than 10 times this strategy's default (0.002)")
               for w in at.warning)


def test_launch_estimates_a_runs_time_by_timing_its_network():
    at = open_page("pages/launch.py")
    next(b for b in at.button if b.label == "Estimate time").click().run()
    assert not at.exception, at.exception
    extract = next(i.value for i in at.info if "for 1,797 images:" in i.value)
    at.radio(key="launch_strategy").set_value("scratch").run()
    next(b for b in at.button if b.label == "Estimate time").click().run()
    scratch = next(i.value for i in at.info if "for 1,438 training and 359 validation images x 15 epochs:" in i.value)
    assert extract.startswith("**About ") and scratch.startswith("**About ") and "cpu" in scratch
    assert re.search(r"and fitting the classifier \((about \d+ s|under a second), timed on 1,000 made-up feature "
                     r"vectors and scaled to these images\)", extract) and "fitting" not in scratch
    assert re.search(r"Probe every stage: about \d+ (s|min) on cpu, \d threads, its 5 fits taking (about \d+ s|under a "
                     r"second) in all\.$", extract), extract
    assert "Probe" not in scratch, "the probe's estimate comes with Strategy III's, on the same backbone"
    at.number_input(key="launch_epochs_scratch_None").set_value(3).run()
    assert not any("15 epochs" in i.value for i in at.info), "a changed setting's estimate is not shown as current"
    assert any(c.value.startswith("Estimated before your last change of settings: About ") for c in at.caption)


def test_launch_estimate_says_a_busy_machine_makes_it_uncertain(monkeypatch):
    monkeypatch.setattr("cnnlab.latency.cpu_load", lambda: 1.4)  # other work on every core, no run of cnnlab's
    at = open_page("pages/launch.py")
    next(b for b in at.button if b.label == "Estimate time").click().run()
    assert not at.exception, at.exception
    assert any(w.value.startswith("This machine is busy (its processors 100% loaded over the last minute): timings "
                                  "made now can be off either way") for w in at.warning)
    assert any(i.value.startswith("**About ") for i in at.info), "still estimated"


def test_launch_estimate_knows_when_strategy_iii_finds_its_features_cached():
    at = open_page("pages/launch.py")
    next(b for b in at.button if b.label == "Launch").click().run()
    run = RunStore().runs()[0]
    assert wait_status(run.id, ("succeeded", "failed"), timeout=300) == "succeeded", RunStore().get(run.id).error
    at = open_page("pages/launch.py")
    next(b for b in at.button if b.label == "Estimate time").click().run()
    assert not at.exception, at.exception
    # '**A few seconds**', or on a busy machine the classifier's fit in words ('**About 6 s**')
    assert any(re.match(r"\*\*(A few seconds|About \d+ s)\*\*: the features of these 1,797 images are cached", i.value)
               for i in at.info), [i.value for i in at.info]
    at.selectbox(key="launch_tap_tf_efficientnet_lite0").set_value("blocks.2").run()
    next(b for b in at.button if b.label == "Estimate time").click().run()
    assert any(i.value.startswith("**About ") for i in at.info), "another tap's features are not cached"


def test_launch_does_not_time_a_run_smaller_than_its_timing():
    from cnnlab.data import image_folders_root
    from cnnlab.latency import TIMED_IMAGES
    from tests.test_training import digit_folder

    digit_folder(image_folders_root() / "digits", per_class=4)  # 40 images: Strategy III passes each once
    at = open_page("pages/launch.py")
    at.selectbox(key="launch_dataset").set_value("folder").run()
    next(b for b in at.button if b.label == "Estimate time").click().run()
    assert not at.exception, at.exception
    assert [i.value for i in at.info if "quicker" in i.value] == [
        "**No quicker to time than to run**: this run passes only 40 images through the network, fewer than an "
        "estimate times, so launch it and watch its progress."]
    at.radio(key="launch_strategy").set_value("scratch").run()  # 15 epochs of 40: more than a timing's
    next(b for b in at.button if b.label == "Estimate time").click().run()
    assert 15 * 40 > TIMED_IMAGES and any(i.value.startswith("**About ") for i in at.info)


def test_launch_says_before_the_run_when_strategy_iii_keeps_no_model():
    at = open_page("pages/launch.py")
    assert at.selectbox(key="launch_classifier").value == "logreg"
    at.selectbox(key="launch_classifier").set_value("svm").run()
    assert not any("keep no model" in i.value for i in at.info), "an SVM on the classifier's input is a whole model"
    at.selectbox(key="launch_tap_tf_efficientnet_lite0").set_value("blocks.4").run()
    assert any("keep no model" in i.value and "features read before the classifier's input" in i.value
               for i in at.info)


def test_probe_every_stage_from_the_launch_page_charts_accuracy_by_depth():
    at = open_page("pages/launch.py")
    at.number_input(key="launch_size_tf_efficientnet_lite0_small").set_value(64).run()
    at.selectbox(key="launch_classifier").set_value("linear").run()  # the probe fits scikit-learn's per stage
    next(b for b in at.button if b.label == "Probe every stage").click().run()
    assert not at.exception, at.exception
    run = RunStore().runs()[0]
    assert (run.config["strategy"], run.config["classifier"], run.config["image_size"]) == ("probe", "logreg", 64)
    assert wait_status(run.id, ("succeeded", "failed"), timeout=300) == "succeeded", RunStore().get(run.id).error
    stages = RunStore().get(run.id).result["stages"]
    assert [s["layer"] for s in stages] == list(get_spec("tf_efficientnet_lite0").stages)
    assert max(s["val_acc"] for s in stages) > 0.8 and stages[0]["dim"] < stages[-1]["dim"]
    page = open_run(run.id)
    assert not page.exception, page.exception
    assert any(h.value == "Accuracy per stage" for h in page.subheader)
    assert any("validation accuracy" in c.proto.spec for c in page.get("plotly_chart"))
    assert any(c.value.startswith("Strategy III with logistic regression on each stage") and
               probe_reading(stages, 359, "tf_efficientnet_lite0") in c.value for c in page.caption)
    assert RunStore().get(run.id).result["val_size"] == 359 and not page.warning, "359 images: no warning"
    assert any(c.value.startswith("Left out, as this run never read them: body_lr_scale, compile, epochs, freeze")
               for c in page.caption), "a probe's configuration shows what it used"
    assert page.dataframe[0].value["val_acc"].iloc[0] == pytest.approx(100 * max(s["val_acc"] for s in stages))  # in %


def test_launch_refuses_weights_it_cannot_download(monkeypatch):
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(Path(os.environ["CNNLAB_HOME"]) / "torch"))  # nothing cached
    at = open_page("pages/launch.py")
    at.radio(key="launch_strategy").set_value("finetune").run()
    at.selectbox(key="launch_arch").set_value("resnet18").run()
    assert not at.exception, at.exception
    assert any("need a download and cannot be fetched now" in w.value for w in at.warning)
    assert next(b for b in at.button if b.label == "Launch").disabled


def test_launch_queues_one_run_that_a_worker_finishes_and_the_pages_show_it():
    at = open_page("pages/launch.py")
    at.radio(key="launch_strategy").set_value("scratch").run()
    at.selectbox(key="launch_arch").set_value("lenet5").run()
    at.number_input(key="launch_epochs_scratch_None").set_value(3).run()
    assert "Launch runs it with 3 epochs · batch 64 · learning rate 0.002 · 32 px." in [c.value for c in at.caption]
    launch = next(b for b in at.button if b.label == "Launch")
    launch.click().run()
    assert not at.exception, at.exception
    runs = RunStore().runs()
    assert len(runs) == 1 and runs[0].config["epochs"] == 3 and runs[0].config["arch"] == "lenet5"
    assert wait_status(runs[0].id, ("running", "succeeded", "failed")), "launching starts a worker"
    assert wait_status(runs[0].id, ("succeeded", "failed")) == "succeeded"

    page = open_page("pages/runs.py")  # a fresh session on the same store
    assert page.dataframe[0].value["status"].tolist() == ["succeeded"]
    assert float(metric(page, "Validation accuracy").rstrip("%")) > 80
    assert len(page.get("plotly_chart")) == 5  # loss by step, loss and accuracy by epoch, confusion, per class
    assert any(m.value == "**Training loss, step by step**" for m in page.markdown), "a short run's most telling curve"
    assert any(b.label == "Download checkpoint" for b in page.get("download_button"))
    next(b for b in page.button if b.label == "Export").click().run()
    assert not page.exception, page.exception
    assert any("model.onnx: its outputs match" in str(s.value) for s in page.success)
    page.run()  # any other click: the export and its download stay
    assert any("model.onnx: its outputs match" in str(s.value) for s in page.success)
    assert any(b.label == "Download model.onnx" for b in page.get("download_button"))

    compare = open_page("pages/compare.py")
    table = compare.dataframe[0].value.set_index("Architecture")
    column = "Yours: best val acc on digits"  # one dataset among your runs: named
    assert table.loc["LeNet-5", column] == pytest.approx(100 * RunStore().runs()[0].result["val_acc"])
    assert list(table.columns[:3]) == ["ImageNet top-1 %", "ImageNet top-5 %", column], "ImageNet's, then yours"

    again = open_page("pages/launch.py")  # Strategy II from the model that run trained
    again.radio(key="launch_strategy").set_value("finetune").run()
    again.selectbox(key="launch_arch").set_value("lenet5").run()
    weights = again.selectbox(key="launch_weights_lenet5")
    assert weights.value == str(jobs.run_dir(runs[0].id))
    assert re.fullmatch(rf"Your run · I: scratch on digits · val \d+\.\d% · {runs[0].id}", weights.options[0])
    next(b for b in again.button if b.label == "Launch").click().run()
    assert not again.exception, again.exception
    assert RunStore().runs()[0].config["weights"] == str(jobs.run_dir(runs[0].id))


def test_runs_page_shows_a_running_run_and_cancels_it():
    store = RunStore()
    run_id = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=300, device="cpu"), store)
    jobs.start_worker()
    wait_status(run_id, ("running",))
    deadline = time.time() + 120  # until two losses were measured: the chart needs two points
    while len(step_loss_figure(store.metrics(run_id, "step")).data[0].x) < 2 and time.time() < deadline:
        time.sleep(0.3)
    at = open_page("pages/runs.py")
    assert any(":blue-badge[running]" in str(m.value) for m in at.markdown)
    assert at.get("progress"), "a running run shows its progress"
    text = at.get("progress")[0].proto.text
    assert re.fullmatch(r"epoch \d+/300, (train|eval) step \d+/\d+(, loss [\d.]+( at (epoch \d+ )?step \d+)?)?; about \d+(\.\d)? (s|min|h) left",
                        text), text
    assert any(m.value == "**Training loss, step by step (live)**" for m in at.markdown), "before any epoch ends"
    assert any('"Epochs done"' in c.proto.spec for c in at.get("plotly_chart"))
    next(b for b in at.button if b.label == "Cancel").click().run()
    assert wait_status(run_id, ("cancelled", "succeeded", "failed")) == "cancelled"
    at = open_page("pages/runs.py")
    assert any(b.label == "Resume" for b in at.button)
    assert any(m.value == "**Training loss, step by step (until it stopped)**" for m in at.markdown), "kept"
    kept = len(store.get(run_id).result["epochs"])
    ending = (f"its checkpoint after epoch {kept} of 300." if kept else
              "part of the way through its first epoch, which it did not keep.")
    assert any(c.value.startswith("The run stopped before it finished") and c.value.endswith(ending)
               for c in at.caption)
    assert any(b.label == "Predict with it" for b in at.button) == bool(kept), "the model it kept can be used"
    split = kept and len(step_loss_figure(jobs.step_history(run_id, store), kept).data) == 2
    steps_chart = next(c.proto.spec for c in at.get("plotly_chart") if '"Epochs done"' in c.proto.spec)
    assert ("not kept" in steps_chart) == bool(split), "steps after the checkpoint it kept are drawn apart"


def test_a_killed_run_shows_the_accuracy_of_its_last_finished_epoch():
    import signal

    store = RunStore()
    run_id = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=300, device="cpu"), store)
    jobs.start_worker()
    deadline = time.time() + 120
    while not store.metrics(run_id, "epoch") and time.time() < deadline:
        time.sleep(0.3)
    for pid in jobs.worker_pids():
        os.kill(pid, signal.SIGKILL)
    while jobs.worker_alive() and time.time() < deadline:
        time.sleep(0.1)
    at = open_run(run_id)
    last = store.last_metric(run_id, "epoch")
    assert store.get(run_id).status == "interrupted" and store.get(run_id).result is None
    assert any(c.value == f"When it stopped it had finished epoch {last['epoch']} of 300, at {last['val_acc']:.1%} "
                          "validation accuracy (the curves below)." for c in at.caption)
    table = at.dataframe[0].value
    assert table.loc[table["id"] == run_id, "val_acc"].item() == pytest.approx(100 * last["val_acc"])
    finished = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=1, device="cpu"), store)
    jobs.work(store, once=True)
    at.switch_page("pages/run_compare.py")
    at.run()
    at.multiselect[0].set_value([finished, run_id]).run()
    assert any(c.value.startswith("Not in the chart, as they have no training time yet") and c.value.endswith(
        f": {run_id}.") for c in at.caption), "the killed run is in the table, and why it is not in the chart is said"


def test_a_run_asked_to_cancel_shows_cancelling_until_its_worker_stops_it():
    store = RunStore()
    run_id = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=300, device="cpu"), store)
    store.claim_next("another-machine:4242")  # a worker elsewhere, beating: it stops the run at its next step
    store.heartbeat(run_id)
    jobs.cancel(run_id, store)
    at = open_page("pages/runs.py")
    assert any(":orange-badge[cancelling]" in str(m.value) for m in at.markdown)
    assert next(b for b in at.button if b.label == "Cancel").disabled
    assert list(at.dataframe[0].value["status"]) == ["cancelling"], "the table says what the badge says"
    assert any("at its next step, before its first checkpoint, so Resume" in c.value for c in at.caption)


def test_a_run_is_deleted_from_its_page_and_leaves_the_comparison():
    store = RunStore()
    kept, deleted, elsewhere = (jobs.submit(make_config("scratch", "lenet5", "digits", epochs=1, device="cpu",
                                                         seed=s), store) for s in (0, 1, 2))
    jobs.work(store, once=True)
    at = open_page("pages/runs.py")
    at.selectbox(key="runs_selected").set_value(elsewhere).run()
    jobs.delete_run(elsewhere)  # from another tab or a terminal, while this tab shows it
    at.run()
    assert not at.exception, at.exception
    assert any(w.value.startswith(f"Run {elsewhere} was deleted") for w in at.warning)
    assert at.selectbox(key="runs_selected").value in (kept, deleted)
    at = open_page("pages/run_compare.py")
    assert sorted(at.multiselect[0].value) == sorted([kept, deleted])
    at.switch_page("pages/runs.py")
    at.run()
    at.selectbox(key="runs_selected").set_value(deleted).run()
    next(b for b in at.button if b.label == "Delete this run").click().run()
    assert not at.exception, at.exception
    assert [r.id for r in RunStore().runs()] == [kept] and not jobs.run_dir(deleted).exists()
    assert at.selectbox(key="runs_selected").options == [jobs.run_label(RunStore().get(kept))]
    assert at.selectbox(key="runs_selected").value == kept and "run" not in at.query_params
    at.switch_page("pages/run_compare.py")
    at.run()
    assert not at.exception, at.exception
    assert at.multiselect[0].value == [kept] and len(at.dataframe[0].value) == 1
    at.switch_page("pages/runs.py")
    at.run()
    next(b for b in at.button if b.label == "Delete this run").click().run()
    assert not RunStore().runs() and any(i.value == "No runs yet." for i in at.info)


def test_a_run_deleted_elsewhere_leaves_the_comparison_and_the_weights_it_was_chosen_as_and_the_page_says_so():
    store = RunStore()
    first, second = (jobs.submit(make_config("scratch", "lenet5", "digits", epochs=1, device="cpu", seed=s), store)
                     for s in (0, 1))
    jobs.work(store, once=True)
    at = open_page("pages/run_compare.py")
    assert sorted(at.multiselect[0].value) == sorted([first, second]) and not at.warning
    jobs.delete_run(second)  # from another tab or a terminal
    at.run()
    assert not at.exception, at.exception
    assert at.multiselect[0].value == [first] and len(at.dataframe[0].value) == 1
    assert [w.value for w in at.warning] == [f"Run {second} was deleted (on the Runs page, another tab or `cnnlab "
                                             "delete`), so the comparison leaves it out."]

    at.switch_page("pages/predict.py")
    at.run()
    at.selectbox(key="predict_arch").set_value("lenet5").run()
    at.selectbox(key="predict_weights_lenet5").set_value(str(jobs.run_dir(first))).run()
    assert not at.warning, [w.value for w in at.warning]
    jobs.delete_run(first)
    at.run()
    assert not at.exception, at.exception
    weights = at.selectbox(key="predict_weights_lenet5")
    assert weights.value == "none" and not any("Your run" in o for o in weights.options)
    assert any(w.value.startswith(f"Run {first}, whose model was chosen here, was deleted") and
               w.value.endswith(f"the weights are {weights.format_func('none')} now.") for w in at.warning)


def test_compare_runs_says_why_a_strategy_iii_run_draws_no_curves():
    store = RunStore()
    run_id = jobs.submit(make_config("extract", "tf_efficientnet_lite0", "digits", image_size=64, device="cpu"), store)
    jobs.work(store, once=True)
    at = open_page("pages/run_compare.py")
    assert not at.exception, at.exception
    assert at.multiselect[0].value == [run_id] and len(at.get("plotly_chart")) == 1, "accuracy against compute only"
    assert any(c.value.startswith(f"No curves to overlay: {run_id} fits its classifier in one go") for c in at.caption)
    assert at.dataframe[0].value["image_size"].tolist() == [64] and at.dataframe[0].value["epochs"].isna().all()
    cancelled = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=2, device="cpu"), store)
    store.request_cancel(cancelled)
    at.multiselect[0].set_value([run_id, cancelled]).run()
    reason = next(c.value for c in at.caption if c.value.startswith("No curves to overlay"))
    assert f"{cancelled} was cancelled before its first epoch ended" in reason, reason


def test_compare_runs_overlays_finished_runs():
    store = RunStore()
    ids = [jobs.submit(make_config("scratch", "lenet5", "digits", epochs=e, device="cpu"), store) for e in (2, 3)]
    jobs.work(store, once=True)
    at = open_page("pages/run_compare.py")
    assert sorted(at.multiselect[0].value) == sorted(ids)
    table = at.dataframe[0].value
    assert len(table) == 2 and (table["val_acc"] > 50).all()  # in percent
    assert table["total_gmacs"].iloc[0] != table["total_gmacs"].iloc[1]  # 2 and 3 epochs cost differently
    assert sorted(table["epochs"]) == [2, 3] and (table["image_size"] == 32).all(), "the settings, side by side"
    assert any(c.value.startswith(":material/info: These runs differ in epochs (2, 3), not only in strategy") for c
               in at.caption), "a gap in accuracy may come from the epochs"
    assert len(at.get("plotly_chart")) == 3  # accuracy against time, loss curves, accuracy curves
    at.segmented_control(key="compare_cost").set_value("total_gmacs").run()
    assert not at.exception, at.exception
    assert "GMACs" in at.get("plotly_chart")[0].proto.spec
    waiting = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=1, device="cpu"), store)
    at.multiselect[0].set_value(ids + [waiting]).run()
    assert not at.exception, at.exception
    assert any("1 of these runs is still going: this page follows them" in c.value for c in at.caption)
    names = [trace["name"] for trace in json.loads(at.get("plotly_chart")[1].proto.spec)["data"]]
    assert not any(name.endswith("digits training loss") for name in names), "one dataset: labels need not name it"


def test_compare_runs_says_a_probes_accuracy_is_its_best_stages_and_keeps_it_out_of_the_chart():
    store = RunStore()
    extract = store.start({"strategy": "extract", "arch": "tf_efficientnet_lite0", "dataset": "digits",
                           "classifier": "svm"}, worker="test")
    store.finish(extract, "succeeded", result={"val_acc": 0.9, "train_time_s": 12.0})
    probe = store.start({"strategy": "probe", "arch": "tf_efficientnet_lite0", "dataset": "digits",
                         "classifier": "svm"}, worker="test")
    stages = [{"stage": 1, "layer": "blocks.0", "val_acc": 0.7}, {"stage": 2, "layer": "bn2", "val_acc": 0.95}]
    store.finish(probe, "succeeded", result={"stages": stages, "time_s": 15.0})
    at = open_page("pages/run_compare.py")
    at.multiselect[0].set_value([extract, probe]).run()
    assert not at.exception, at.exception
    methods = at.dataframe[0].value.set_index("run")["method"]
    assert methods[probe] == "probe of every stage + SVM, best: stage 2" and methods[extract] == "III: extract + SVM"
    shown = [c.value for c in at.caption]
    assert any(c.startswith(f"Not in the chart: {probe}, a probe fits a classifier at every stage") for c in shown)
    assert not any("no training time yet" in c for c in shown), "a finished probe is neither going nor killed"
    assert any(c.startswith(f"No curves to overlay: {extract} fits its classifier in one go") for c in shown)


def test_compare_runs_names_the_data_of_runs_on_different_data(tmp_path):
    folder = tmp_path / "three"
    for name, data in digit_pngs((0, 1, 2)).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    store = RunStore()
    ids = [jobs.submit(make_config("scratch", "lenet5", dataset, epochs=1, device="cpu"), store)
           for dataset in ("digits", f"folder:{folder}")]
    jobs.work(store, once=True)
    at = open_page("pages/run_compare.py")
    assert at.multiselect[0].value == [ids[1]], "preselected: the newest run's data only"
    at.multiselect[0].set_value(ids).run()
    assert not at.exception, at.exception
    names = " | ".join(trace["name"] for trace in json.loads(at.get("plotly_chart")[1].proto.spec)["data"])
    assert f"{ids[0]} · I: scratch · LeNet-5 · digits" in names
    assert f"{ids[1]} · I: scratch · LeNet-5 · three/" in names
    assert any(w.value.startswith("These runs learned different data (digits, three/)") for w in at.warning)


def test_shootout_queues_the_three_strategies_on_one_backbone(monkeypatch):
    import cnnlab.data

    at = open_page("pages/launch.py")
    at.number_input(key="launch_size_tf_efficientnet_lite0_small").set_value(64).run()
    assert metric(at, "MACs per image, once") != "383.9M"  # the planner follows the input size
    at.radio(key="launch_strategy").set_value("finetune").run()
    at.number_input(key="launch_epochs_finetune_None").set_value(2).run()
    reads = []
    monkeypatch.setattr(cnnlab.data, "check_dataset", lambda name: reads.append(name))
    next(b for b in at.button if b.label.startswith("Strategy shootout")).click().run()
    assert reads == ["digits"], "the three runs share one dataset: it is checked once when queueing"
    assert not at.exception, at.exception
    runs = RunStore().runs()
    queued = [r.config["strategy"] for r in sorted(runs, key=lambda r: r.created_at)]
    assert queued == ["extract", "finetune", "scratch"], "the quickest first: a result comes in minutes"
    assert {(r.config["arch"], r.config["dataset"], r.config["image_size"]) for r in runs} == {
        ("tf_efficientnet_lite0", "digits", 64)}
    assert {r.config["strategy"]: r.config["weights"] for r in runs} == {
        "scratch": "none", "finetune": "shipped", "extract": "shipped"}
    assert {r.config["strategy"]: r.config["epochs"] for r in runs} == {"scratch": 2, "finetune": 2, "extract": 1}, \
        "I trains as many epochs as the II the form set, not its own default of 15"
    assert at.title[0].value == "Compare runs"  # the shootout takes the user to the comparison
    assert sorted(at.multiselect[0].value) == sorted(r.id for r in runs)
    for run in runs:
        jobs.cancel(run.id)
    for run in runs:
        assert wait_status(run.id, ("cancelled", "succeeded", "failed")) in ("cancelled", "succeeded")


def test_strategy_one_offers_the_shootout_only_where_pretrained_weights_can_load(monkeypatch):
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    at = open_page("pages/launch.py")
    at.radio(key="launch_strategy").set_value("scratch").run()
    at.selectbox(key="launch_arch").set_value("resnet18").run()
    assert not at.exception, at.exception
    for label in ("Strategy shootout: launch I, II and III", "Probe every stage"):
        button = next(b for b in at.button if b.label == label)
        assert button.disabled and "only as a download, which cannot be fetched now" in button.help
    assert any(c.value.startswith("Strategy shootout and Probe every stage: Needs pretrained weights; ResNet-18")
               for c in at.caption), "said on the page too: a disabled button's help does not open on a phone"
    assert not next(b for b in at.button if b.label == "Launch").disabled  # Strategy I itself needs no weights
    at.selectbox(key="launch_arch").set_value("tf_efficientnet_lite0").run()
    next(b for b in at.button if b.label.startswith("Strategy shootout")).click().run()
    runs = RunStore().runs()
    assert {r.config["strategy"]: r.config["weights"] for r in runs} == {
        "scratch": "none", "finetune": "shipped", "extract": "shipped"}
    for run in runs:
        jobs.cancel(run.id)
    for run in runs:
        assert wait_status(run.id, ("cancelled", "succeeded", "failed")) in ("cancelled", "succeeded")


def test_the_run_picker_switches_runs_and_a_link_opens_one():
    store = RunStore()
    first, second = (jobs.submit(make_config("scratch", "lenet5", "digits", epochs=e, device="cpu"), store)
                     for e in (1, 2))
    jobs.work(store, once=True)
    at = open_run(first)
    assert at.selectbox(key="runs_selected").value == first
    assert any(f"**{first} · I: scratch" in str(m.value) for m in at.markdown)
    at.selectbox(key="runs_selected").set_value(second).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="runs_selected").value == second
    assert any(f"**{second} · I: scratch" in str(m.value) for m in at.markdown)
    assert at.query_params["run"] == [second] or at.query_params["run"] == second
    assert not at.warning
    stale = open_run("0123456789ab")  # a link from another data directory, or to a run deleted since
    assert "No run 0123456789ab here" in stale.warning[0].value and "the newest run" in stale.warning[0].value
    assert stale.selectbox(key="runs_selected").value == second


def test_a_finished_run_predicts_and_shows_its_insides_with_its_own_classes():
    store = RunStore()
    run_id = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=6, device="cpu"), store)
    jobs.work(store, once=True)
    at = open_run(run_id)
    assert any(f"`cnnlab predict IMAGE --weights {run_id}`" in c.value for c in at.caption)
    assert not any("validation images: each one moves" in w.value for w in at.warning)  # 359 of them
    assert any(c.value.startswith("Validation scores above training (") for c in at.caption), \
        "a first epoch's training accuracy is averaged while the model learns: below validation's, and explained"
    from pages.common import SIDEBAR_CHOICES

    at.session_state[SIDEBAR_CHOICES] = 1  # the sidebar's network was changed before Predict was ever opened
    next(b for b in at.button if b.label == "Predict with it").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Predict"
    at.switch_page("pages/predict.py")  # AppTest's next run would go back to the page it last opened itself
    assert at.selectbox(key="predict_arch").value == "lenet5"
    weights = at.selectbox(key="predict_weights_lenet5")
    assert weights.value == str(jobs.run_dir(run_id))
    named = rf"Your run · I: scratch on digits · val \d+\.\d% · {run_id}"
    assert any(re.fullmatch(named, o) for o in weights.options)
    samples = at.selectbox(key="predict_image_sample")
    assert samples.value == "val-0", "a run opens on one of its own validation images, not the cat"
    assert [samples.format_func(o) for o in samples.options[:2]] == [
        f"From its validation set: '{c}', image {i}" for c, i, _ in validation_examples(jobs.run_dir(run_id), 2)]
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    assert at.metric[0].value == "0"
    samples.set_value("digit").run()
    assert at.metric[0].value == "3"
    assert any("Classes: the 10 classes it was trained on" in c.value for c in at.caption)
    assert any(c.value.startswith("A classifier trained on these 10 classes (0, 1, 2") for c in at.caption)
    assert any("on digits (10 classes)" in i.value for i in at.info)
    at.selectbox(key="predict_weights_lenet5").set_value("none").run()
    assert not at.metric, "no headline for random weights' guess"
    assert re.search(rf"Pick your run under Weights \(the newest: I: scratch on digits · val [\d.]+% · {run_id}\)",
                     at.warning[0].value)

    at.switch_page("pages/inside.py")
    at.run()
    at.selectbox(key="inside_arch").set_value("lenet5").run()
    assert at.selectbox(key="inside_weights_lenet5").value == str(jobs.run_dir(run_id)), "its run, not random init"
    assert at.selectbox(key="inside_image_sample").value == "val-0", "the run's weights bring its own images"
    at.selectbox(key="inside_image_sample").set_value("digit").run()
    assert not at.exception, at.exception
    assert any("Top prediction:** 3" in m.value for m in at.markdown), [m.value for m in at.markdown]
    assert any(c.value.startswith("c1.0: 6 filters of 5x5x1") and "Learned from scratch by your run on digits" in
               c.value for c in at.caption), "the filters tab says whose filters these are"


def test_a_finished_run_shows_its_mistakes_on_request():
    store = RunStore()
    run_id = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=1, device="cpu"), store)
    jobs.work(store, once=True)
    matrix = RunStore().get(run_id).result["confusion_matrix"]
    wrong = sum(sum(row) for row in matrix) - sum(matrix[i][i] for i in range(len(matrix)))
    at = open_run(run_id)
    assert not at.get("image"), "nothing runs until asked"
    at.toggle(key=f"runs_mistakes_{run_id}").set_value(True).run()
    assert not at.exception, at.exception
    assert any(c.value.startswith(f"{wrong} wrong among all 359 validation images") for c in at.caption)
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert len(captions) == min(wrong, 24) and all(" → " in c and c.endswith("%)") for c in captions)


def test_a_knn_run_is_a_model_to_look_inside_without_a_class_activation_map():
    store = RunStore()
    run_id = jobs.submit(make_config("extract", "tf_efficientnet_lite0", "digits", classifier="knn", image_size=48,
                                     device="cpu"), store)
    jobs.work(store, once=True)
    at = open_run(run_id)
    assert any(b.label == "Predict with it" for b in at.button), "k-NN on the classifier's input: a whole model"
    at.switch_page("pages/inside.py")
    at.run()
    at.selectbox(key="inside_weights_tf_efficientnet_lite0").set_value(str(jobs.run_dir(run_id))).run()
    assert not at.exception, at.exception
    assert any("votes among its nearest training examples" in i.value for i in at.info)
    assert any(m.value.startswith(f"**EfficientNet-Lite0** (your run {run_id})") for m in at.markdown), \
        "Side by side: the run's model beside the others"
    assert any(c.value.startswith("No class activation map: this model's NearestNeighboursHead") for c in at.caption)


def test_a_run_that_kept_no_model_says_why_it_shows_no_mistakes():
    store = RunStore()
    run_id = jobs.submit(make_config("extract", "tf_efficientnet_lite0", "digits", classifier="knn", image_size=48,
                                     tap="blocks.4", device="cpu"), store)
    jobs.work(store, once=True)
    at = open_run(run_id)
    assert not at.exception, at.exception
    assert not [t for t in at.toggle if t.key == f"runs_mistakes_{run_id}"]
    assert any(c.value.startswith("This run kept no whole model") for c in at.caption)


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def digit_pngs(classes: tuple[int, ...], per_class: int = 6, top: str = "") -> dict[str, bytes]:
    import io

    import numpy as np
    from PIL import Image

    from cnnlab.data import load_dataset

    digits = load_dataset("digits")
    entries = {}
    for label in classes:
        for i in np.flatnonzero(digits.targets == label)[:per_class]:
            buffer = io.BytesIO()
            Image.fromarray(digits[int(i)][0].squeeze(0).numpy()).resize((32, 32)).save(buffer, format="PNG")
            entries[f"{top}{label}/{i}.png"] = buffer.getvalue()
    return entries


def test_launch_checks_an_uploaded_zip_before_anything_is_queued():
    at = open_page("pages/launch.py")
    at.radio(key="launch_strategy").set_value("extract").run()
    at.selectbox(key="launch_dataset").set_value("zip").run()
    launch = lambda: next(b for b in at.button if b.label == "Launch")
    assert launch().disabled, "nothing to train on yet"

    at.file_uploader(key="launch_zip").set_value(("only zeros.zip", zip_bytes(digit_pngs((0,))), "")).run()
    assert not at.exception, at.exception
    assert any(e.value.startswith("only zeros.zip needs one folder per class, at least 2") for e in at.error)
    assert launch().disabled

    at.file_uploader(key="launch_zip").set_value(("three.zip", zip_bytes(digit_pngs((0, 1, 2), top="digits/")),
                                                  "")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(c.value == "three.zip: 18 images in 3 classes (0, 1, 2), typically 32 px on their shorter side."
               for c in at.caption)
    assert at.number_input(key="launch_size_tf_efficientnet_lite0_small").value == 128, "tiny images: not 224"
    table = at.dataframe[0].value
    assert table["Params"].iloc[-1] == (1280 + 1) * 3, "logistic regression sized for the three classes found"
    assert not any("Counted for a 10-class head" in c.value for c in at.caption)
    launch().click().run()
    run = RunStore().runs()[0]
    assert jobs.run_label(run).endswith("· III: extract + logistic regression, 128 px · EfficientNet-Lite0 on three.zip")
    assert wait_status(run.id, ("succeeded", "failed")) == "succeeded", RunStore().get(run.id).error
    page = open_run(run.id)
    assert any(w.value.startswith("Only 4 validation images: each one moves the accuracy by 25.0%")
               for w in page.warning), [w.value for w in page.warning]

    again = open_page("pages/launch.py")  # a later visit: the uploader is empty, the archives are not lost
    again.selectbox(key="launch_dataset").set_value("zip").run()
    earlier = again.selectbox(key="launch_zip_earlier")
    assert earlier.value.endswith("/three.zip") and [o.split(" · ")[0] for o in earlier.options] == \
        ["three.zip", "only zeros.zip"], "the newest first"
    assert any(c.value.startswith("three.zip: 18 images in 3 classes") for c in again.caption)
    assert not next(b for b in again.button if b.label == "Launch").disabled


@pytest.mark.parametrize("online", [False, True])
def test_launch_says_before_queueing_whether_mnist_is_here_or_downloads(monkeypatch, online):
    import cnnlab.weights

    monkeypatch.setattr(cnnlab.weights, "host_reachable", lambda url: online)
    import streamlit as st

    st.cache_data.clear()  # the page keeps a dataset's check a minute; this test changes the network under it
    at = open_page("pages/launch.py")
    at.selectbox(key="launch_dataset").set_value("mnist").run()
    assert not at.exception, at.exception
    launch = next(b for b in at.button if b.label == "Launch")
    if online:
        assert any("mnist is not on this machine yet: the run downloads it first" in c.value for c in at.caption)
        assert not launch.disabled
        assert not any("Counted for a 10-class head" in c.value for c in at.caption), "MNIST has 10 classes"
    else:
        assert any("cannot be downloaded now (offline?). Copy torchvision's MNIST/raw folder" in e.value
                   for e in at.error), [e.value for e in at.error]
        assert launch.disabled


def test_a_run_lists_the_first_files_it_skipped(tmp_path):
    from tests.test_training import digit_folder

    root = digit_folder(tmp_path / "digits", per_class=8)
    for i in range(25):
        (root / "3" / f"broken_{i:02d}.png").write_bytes(b"not a png")
    store = RunStore()
    run_id = jobs.submit(make_config("scratch", "lenet5", f"folder:{root}", epochs=1, device="cpu"), store)
    jobs.work(store, once=True)
    at = open_run(run_id)
    assert not at.exception, at.exception
    [warning] = [w.value for w in at.warning if "skipped" in w.value]
    assert warning.startswith("25 unreadable files were skipped: 3/broken_00.png, 3/broken_01.png")
    assert warning.endswith("3/broken_19.png, ...")


def test_launch_checks_the_data_again_when_queueing_and_queues_nothing_if_it_changed():
    import shutil

    from cnnlab.data import image_folders_root
    from tests.test_training import digit_folder

    root = digit_folder(image_folders_root() / "digits", per_class=8)
    at = open_page("pages/launch.py")
    at.selectbox(key="launch_dataset").set_value("folder").run()
    assert any("10 classes" in c.value for c in at.caption), [c.value for c in at.caption]
    for name in list(root.iterdir())[1:]:  # the folder loses all classes but one after the page read it
        shutil.rmtree(name)
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Launch a run" and "needs one folder per class, at least 2" in at.error[0].value
    assert RunStore().runs() == []


def test_runs_opens_on_the_run_being_trained_and_launch_warns_its_estimate_shares_the_machine():
    store = RunStore()
    running = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=300, device="cpu"), store)
    store.claim_next("another-machine:4242")  # a worker elsewhere, beating
    store.heartbeat(running)
    newer = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=2, device="cpu"), store)
    jobs.cancel(newer, store)  # cancelled while queued: listed first, being the newest
    at = open_page("pages/runs.py")
    assert at.selectbox(key="runs_selected").value == running, "not the newest run"
    assert any(c.value.startswith("Worker: ") for c in at.caption)
    launch = open_page("pages/launch.py")
    next(b for b in launch.button if b.label == "Estimate time").click().run()
    assert any("A run is training on this machine now" in w.value for w in launch.warning)
    jobs.cancel(running, store)
