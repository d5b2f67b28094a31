"""The training engine end to end on sklearn's digits: scratch, finetune, extract, probe, resume, CLI; and the
CUDA runtime's options (channels_last, bf16 autocast, fused AdamW, torch.compile) exercised on the CPU."""
from dataclasses import asdict, dataclass, replace
import functools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnlab import training
from cnnlab.checkpoints import export_checkpoint, latest_checkpoint, model_from_checkpoint
from cnnlab.cli import main
from cnnlab.data import TransformedSubset, load_dataset, stratified_split, transforms_for
from cnnlab.paths import data_dir
from cnnlab.naming import run_method
from cnnlab.planner import describe_freeze
from cnnlab.profiling import profile_arch
from cnnlab.registry import build_model, fit_head, get_spec
from cnnlab.training import (Callback, ConfigError, ConsoleProgress, EpochMetrics, RunConfig, Runtime, StopRun,
                             count_params, features_cached, freeze_layers, keeps_model, make_config, parse_freeze,
                             probe_reading, run, train_one_epoch)
from cnnlab.weights import create_model

LITE0 = "tf_efficientnet_lite0"


class Recorder(Callback):
    def __init__(self):
        self.start, self.steps, self.epochs, self.end, self.messages = None, [], [], None, []

    def on_run_start(self, event):
        self.start = event

    def on_step(self, event):
        self.steps.append(event)

    def on_epoch_end(self, metrics):
        self.epochs.append(metrics)

    def on_run_end(self, result):
        self.end = result

    def on_message(self, text):
        self.messages.append(text)


@pytest.mark.parametrize("steps, loss_every_s, shown_at", [
    (200, 60.0, [*range(1, 200, 10), 200]),
    (25, 60.0, list(range(1, 26))),  # a short epoch: every step, so that its loss is read at least 20 times
    (200, 0.0, list(range(1, 201))),  # 0 s: as if every step took longer than LOSS_EVERY_S
])
def test_step_events_carry_the_loss_every_ten_steps_or_when_steps_are_slow(monkeypatch, steps, loss_every_s,
                                                                            shown_at):
    monkeypatch.setattr(training, "LOSS_EVERY_S", loss_every_s)
    digits = load_digits()
    data = TensorDataset(torch.tensor(digits.data[:4 * steps], dtype=torch.float32),
                         torch.tensor(digits.target[:4 * steps]))
    model = nn.Linear(64, 10)
    optimizer = torch.optim.SGD([{"params": model.parameters(), "lr_scale": 1.0}], lr=0.1)
    recorder = Recorder()
    train_one_epoch(model, DataLoader(data, batch_size=4), optimizer, lambda step: 0.1, 0, Runtime(torch.device("cpu")),
                    callbacks=[recorder])
    assert [e.step for e in recorder.steps if e.loss is not None] == shown_at


def test_inception_v3_trains_below_its_299_px_without_the_auxiliary_classifier_that_cannot_run_there():
    from cnnlab.training import drop_aux_head_too_small

    spec = get_spec("inception_v3")
    assert not drop_aux_head_too_small(fit_head(build_model("inception_v3", 3), spec, "own", 3), spec, 299)
    model = fit_head(build_model("inception_v3", 3), spec, "own", 3)
    assert drop_aux_head_too_small(model, spec, 128) and model.AuxLogits is None  # the digits' default size
    data = TensorDataset(torch.randn(4, 3, 128, 128), torch.tensor([0, 1, 2, 0]))
    optimizer = torch.optim.SGD([{"params": model.parameters(), "lr_scale": 1.0}], lr=0.01)
    recorder = Recorder()
    stats = train_one_epoch(model, DataLoader(data, batch_size=4), optimizer, lambda step: 0.01, 0,
                            Runtime(torch.device("cpu")), callbacks=[recorder])
    assert stats.images == 4 and math.isfinite(recorder.steps[-1].loss)
    from cnnlab.latency import estimate_run  # the Launch page's estimate times training steps the same way

    config = make_config("finetune", "inception_v3", "digits", image_size=128, device="cpu")
    assert estimate_run(config, load_dataset("digits"), steps=1, budget_s=0.1).train_ms_per_image > 0


def test_configs_take_strategy_defaults_and_refuse_nonsense():
    scratch = make_config("scratch", "lenet5", "digits")
    assert (scratch.weights, scratch.freeze) == ("none", "none")
    finetune = make_config("finetune", LITE0, "digits")
    assert (finetune.weights, finetune.freeze) == ("default", "stage:2")
    vgg = make_config("finetune", "vgg16", "digits")
    assert vgg.freeze == "stage:4" and "vgg_conv.layers[:-4]" in describe_freeze("vgg16", vgg.freeze)  # the slide's
    assert RunConfig.from_dict(json.loads(json.dumps(finetune.to_dict()))) == finetune
    assert finetune.same_run(make_config("finetune", LITE0, "digits", epochs=30, device="cpu"))
    assert not finetune.same_run(make_config("finetune", LITE0, "digits", lr=0.1))
    for bad, message in [(dict(strategy="scratch", classifier="svm"), "does not apply"),
                         (dict(strategy="finetune", weights="none"), "needs pretrained"),
                         (dict(strategy="scratch", weights="shipped"), "scratch trains from random weights"),
                         (dict(strategy="extract", classifier="knn", epochs=3), "applies only to the linear"),
                         (dict(strategy="finetune", freeze="stage:x"), "bad freeze"),
                         (dict(strategy="extract", classifier="forest"), "unknown classifier"),
                         (dict(strategy="extract", image_size=8), "too small"),
                         (dict(strategy="teleport"), "unknown strategy")]:
        with pytest.raises(ConfigError, match=message):
            make_config(bad.pop("strategy"), LITE0, "digits", **bad)
    assert parse_freeze("all-but:4") == ("all-but", 4)


def test_freeze_plans_follow_stages_and_layers():
    spec = get_spec(LITE0)
    model = create_model(LITE0, "shipped", num_classes=10)
    total = sum(p.numel() for p in model.parameters())
    frozen = freeze_layers(model, spec, "stage:2")
    assert "conv_stem" in frozen and "blocks.1.0.conv_pw" in frozen and "blocks.2.0.conv_pw" not in frozen
    assert not model.blocks[1][0].conv_pw.weight.requires_grad and model.blocks[2][0].conv_pw.weight.requires_grad
    trainable, frozen_count = count_params(model)
    assert trainable + frozen_count == total and 0 < frozen_count < trainable

    freeze_layers(model, spec, "all-but:4")
    trainable_layers = [n for n, m in model.named_modules()
                        if any(p.requires_grad for p in m.parameters(recurse=False))]
    assert trainable_layers == ["blocks.6.0.bn3", "conv_head", "bn2", "classifier"]

    freeze_layers(model, spec, "body")
    assert count_params(model)[0] == 1280 * 10 + 10
    freeze_layers(model, spec, "none")
    assert count_params(model) == (total, 0)
    with pytest.raises(ConfigError, match="stage:6 does not exist"):
        freeze_layers(model, spec, "stage:6")


def test_scratch_lenet5_learns_digits(tmp_path):
    recorder = Recorder()
    config = make_config("scratch", "lenet5", "digits", epochs=6, device="cpu")
    result = run(config, [recorder], out_dir=tmp_path / "run")
    assert result.val_acc >= 0.93
    assert recorder.start.params_trainable == 61_706 and recorder.start.params_frozen == 0
    assert [m.epoch for m in recorder.epochs] == list(range(1, 7)) and recorder.end is result
    assert recorder.epochs[-1].val_acc == result.val_acc and recorder.epochs[-1].loss < recorder.epochs[0].loss
    assert {s.phase for s in recorder.steps} == {"train", "eval"}
    matrix = np.asarray(result.confusion)
    assert matrix.shape == (10, 10) and matrix.sum() == recorder.start.val_size == 359
    assert np.trace(matrix) / matrix.sum() == pytest.approx(result.val_acc)
    assert min(result.per_class_acc.values()) > 0.7
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["val_acc"] == result.val_acc and len(saved["epochs"]) == 6
    assert result.checkpoint.endswith("ckpt-0006")


@pytest.mark.parametrize("lr, where", [(1e9, "step 6 of 22"), (1000, "on the validation images")])
def test_a_diverging_run_fails_naming_the_learning_rate_and_keeps_no_diverged_checkpoint(tmp_path, lr, where):
    from cnnlab import jobs
    from cnnlab.runstore import RunStore

    store = RunStore(tmp_path / "runs.sqlite3")
    run_id = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=2, lr=lr, device="cpu"), store)
    assert jobs.execute(store, store.claim_next("w"), "w") == "failed"
    error = store.get(run_id).error
    assert error.startswith("the loss became ") and f"in epoch 1, {where} (learning rate " in error
    assert error.endswith("lower it (--lr) and train again")
    assert latest_checkpoint(jobs.run_dir(run_id)) is None


def test_finetune_trains_only_unfrozen_layers_and_beats_scratch(tmp_path):
    recorder = Recorder()
    config = make_config("finetune", LITE0, "digits", epochs=1, image_size=64, freeze="stage:2", device="cpu")
    result = run(config, [recorder], out_dir=tmp_path / "finetune")
    assert result.val_acc >= 0.8
    assert recorder.start.params_frozen > 0 and recorder.start.params_trainable == result.params_trainable
    trained, _ = model_from_checkpoint(tmp_path / "finetune")
    pretrained = create_model(LITE0, "shipped", num_classes=10).state_dict()
    after = trained.state_dict()
    for key in ("conv_stem.weight", "bn1.weight", "bn1.running_mean", "blocks.0.0.conv_dw.weight",
                "blocks.1.1.bn3.running_var"):
        assert torch.equal(after[key], pretrained[key]), key
    for key in ("blocks.2.0.conv_pw.weight", "blocks.5.0.bn1.running_mean", "conv_head.weight"):
        assert not torch.equal(after[key], pretrained[key]), key

    scratch = run(make_config("scratch", LITE0, "digits", epochs=1, image_size=64, device="cpu"))
    assert result.val_acc > scratch.val_acc + 0.2


def test_head_first_then_unfreeze(tmp_path):
    config = make_config("finetune", LITE0, "digits", epochs=2, head_epochs=1, image_size=64, freeze="stage:4",
                         body_lr_scale=0.1, device="cpu")
    result = run(config, out_dir=tmp_path / "run")
    assert result.val_acc > 0.5
    trained, _ = model_from_checkpoint(tmp_path / "run")
    pretrained = create_model(LITE0, "shipped", num_classes=10).state_dict()
    assert torch.equal(trained.state_dict()["blocks.4.0.conv_pw.weight"], pretrained["blocks.4.0.conv_pw.weight"])
    assert not torch.equal(trained.state_dict()["conv_head.weight"], pretrained["conv_head.weight"])


def test_a_runs_model_is_the_start_of_another_run(tmp_path):
    first = run(make_config("scratch", "lenet5", "digits", epochs=3, device="cpu"), out_dir=tmp_path / "first")
    config = make_config("finetune", "lenet5", "digits", weights=str(tmp_path / "first"), freeze="stage:2",
                         epochs=2, device="cpu")
    second = run(config, out_dir=tmp_path / "second")
    assert second.val_acc > first.val_acc - 0.02 and second.params_frozen > 0
    before, _ = model_from_checkpoint(tmp_path / "first")
    after, _ = model_from_checkpoint(tmp_path / "second")
    assert torch.equal(after.c1[0].weight, before.c1[0].weight), "frozen: the first run's weights, unchanged"
    assert not torch.equal(after.output.weight, before.output.weight)


def test_the_lecture_vgg16_head_trains_saves_resumes_and_carries_on(tmp_path):
    # the slide's recipe: block 5 and a new Flatten, Dense(1024), Dropout, Dense head train; blocks 1-4 are frozen
    root = digit_folder(tmp_path / "digits", per_class=4)
    torch.save(build_model("vgg16").state_dict(), tmp_path / "vgg16.pth")  # a stand-in for ImageNet's, offline
    config = make_config("finetune", "vgg16", f"folder:{root}", weights=str(tmp_path / "vgg16.pth"), epochs=2,
                         batch_size=8, image_size=32, device="cpu")
    assert (config.head, config.freeze) == ("lecture", "stage:4")
    stopped = run(config, [StopAfter(1)], out_dir=tmp_path / "vgg")
    assert stopped.params_trainable == 3 * (3 * 3 * 512 + 1) * 512 + (25088 + 1) * 1024 + (1024 + 1) * 10
    resumed = run(config, out_dir=tmp_path / "vgg")
    assert [m.epoch for m in resumed.history] == [1, 2]
    model, checkpoint = model_from_checkpoint(tmp_path / "vgg")
    assert [type(m).__name__ for m in model.classifier] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert model.get_submodule(get_spec("vgg16").classifier).out_features == 10
    assert run_method(checkpoint.config) == "II: finetune + lecture head, 32 px"
    again = create_model("vgg16", str(tmp_path / "vgg"), 10)
    assert torch.equal(fit_head(again, get_spec("vgg16"), "lecture", 10).classifier[0].weight,
                       model.classifier[0].weight), "a run carried on from it keeps the head it trained"
    with pytest.raises(ConfigError, match="no new head for ResNet-18"):
        make_config("finetune", "resnet18", "digits", head="lecture")


def test_a_probe_reading_weighs_the_gap_against_chance():
    def stages(*accuracies):
        return [{"stage": k, "layer": f"blocks.{k}", "dim": 16 * 2 ** k, "val_acc": a}
                for k, a in enumerate(accuracies, 1)]

    dip = stages(0.727, 0.841, 0.894, 0.975, 0.958)  # Lite0 on the digits: 6 of 359 images
    reading = probe_reading(dip, 359, LITE0)
    assert reading.startswith("Stage 4 (blocks.3 … blocks.4) does best (97.5%)"), "named as the freeze plan names it"
    assert "within chance of it on 359 validation images (1.7 percentage points apart, ±2.8)" in reading
    # all right on 6 images is not certain: the margin is smoothed (Laplace), never ±0.0%
    few = probe_reading(stages(0.5, 1.0, 5 / 6), 6, LITE0)
    assert "on 6 validation images (16.7 percentage points apart, ±44.5)" in few
    assert "too specific" in probe_reading(dip, 5000, LITE0) and "more than chance allows" in probe_reading(dip, 5000, LITE0)
    assert "32 at stage 1 (conv_stem … blocks.0)" in reading
    climb = probe_reading(stages(0.5, 0.7, 0.9), 359, LITE0)
    assert climb.startswith("Accuracy is highest at the last stage, stage 3 (blocks.2), with 90.0%")
    assert "not known" in probe_reading(dip, None, LITE0)
    assert probe_reading(stages(1.0, 1.0, 1.0), 20, LITE0).startswith("Every stage scores 100.0%: these data are too")
    assert probe_reading(stages(0.5, 0.9, 0.9), 359, LITE0).startswith("Accuracy is highest at the last stage")
    assert "like the data its weights learned from" in probe_reading(stages(0.5, 0.9), 359, LITE0, "runs/abc")
    assert "like ImageNet" in probe_reading(stages(0.5, 0.9), 359, LITE0, "shipped")


def test_a_model_that_learned_nothing_usable_is_told_apart():
    from cnnlab.training import guessing_note

    assert guessing_note([[5, 1], [1, 5]], ("cat", "dog")) is None
    assert guessing_note([[6, 0], [6, 0]], ("cat", "dog")).startswith("It answers class cat for every validation")
    assert guessing_note([[8, 2], [2, 0]], ("cat", "dog")).startswith(
        "Its 66.7% is no better than always answering the commonest class, class cat (83.3%)")


def test_runs_compared_are_told_which_settings_differ_beyond_strategy():
    from cnnlab.training import differing_settings

    lenet = asdict(make_config("scratch", "lenet5", "digits", epochs=2))
    lite0 = asdict(make_config("finetune", LITE0, "digits", epochs=2, image_size=64))
    extract = asdict(make_config("extract", LITE0, "digits", image_size=128))
    assert differing_settings([lenet, lenet]) is None
    assert differing_settings([lenet, lite0, extract]) == "input size (32, 64, 128 px)", "III fits in one go: no epochs"
    assert differing_settings([lenet, asdict(make_config("scratch", "lenet5", "digits", epochs=3))]) == "epochs (2, 3)"


def test_validation_ahead_of_training_is_explained_only_when_it_happens():
    from cnnlab.training import validation_ahead_note

    def epochs(*pairs):
        return [{"epoch": i, "acc": acc, "val_acc": val} for i, (acc, val) in enumerate(pairs, 1)]

    assert validation_ahead_note(epochs((0.5, 0.4), (0.9, 0.9))) is None, "level is not ahead"
    assert validation_ahead_note(epochs((0.5, 0.8), (0.9, 0.85))).startswith("Validation scores above training "
                                                                               "(epoch 1): the training figures")
    assert "(2 of 3 epochs)" in validation_ahead_note(epochs((0.5, 0.8), (0.9, 0.95), (0.99, 0.95)))
    assert "(every epoch)" in validation_ahead_note(epochs((0.5, 0.8), (0.9, 0.95)))
    assert validation_ahead_note([{"epoch": 1, "acc": 0.5, "val_acc": None}]) is None, "a run without validation"


class StopAfter(Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, metrics):
        if metrics.epoch == self.epochs:
            raise StopRun


def test_a_stopped_run_resumes_to_the_same_weights(tmp_path):
    config = make_config("scratch", "lenet5", "digits", epochs=3, device="cpu")
    straight = run(config, out_dir=tmp_path / "straight")
    stopped = run(config, [StopAfter(1)], out_dir=tmp_path / "resumed")
    assert stopped.stopped and stopped.checkpoint.endswith("ckpt-0001")
    assert stopped.total_macs == straight.total_macs // 3, "one of three epochs"
    recorder = Recorder()
    resumed = run(config, [recorder], out_dir=tmp_path / "resumed")
    assert recorder.start.start_epoch == 1 and [m.epoch for m in recorder.epochs] == [2, 3]
    assert resumed.val_acc == straight.val_acc
    assert [m.loss for m in resumed.history] == [m.loss for m in straight.history]
    a = load_file(f"{straight.checkpoint}/model.safetensors")
    b = load_file(f"{resumed.checkpoint}/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="different run"):
        run(make_config("scratch", "lenet5", "digits", epochs=3, lr=0.5), out_dir=tmp_path / "resumed")
    shorter = run(replace(config, epochs=2), [recorder := Recorder()], out_dir=tmp_path / "shorter")
    assert [m.epoch for m in shorter.history] == [1, 2] and recorder.messages == []
    longer = run(replace(config, epochs=4), [recorder := Recorder()], out_dir=tmp_path / "shorter")
    assert recorder.messages[-1].startswith("This run was set for 2 epochs and now trains to 4: from epoch 3 its "
                                            "learning rate follows the 4-epoch warmup and cosine, at 0.001")
    assert recorder.messages[-1].endswith("(the 2-epoch schedule would be at 4e-05).")
    longer = run(replace(config, epochs=5), [recorder := Recorder()], out_dir=tmp_path / "resumed")
    assert recorder.start.start_epoch == 3 and [m.epoch for m in longer.history] == [1, 2, 3, 4, 5]
    assert longer.checkpoint.endswith("ckpt-0005"), "a finished run trains on to a larger --epochs"
    again = run(replace(config, epochs=5), [recorder := Recorder()], out_dir=tmp_path / "resumed")
    saved_time = latest_checkpoint(tmp_path / "resumed").metrics["train_time_s"]
    assert recorder.epochs == [] and again.val_acc == longer.val_acc and again.train_time_s == saved_time
    assert recorder.start.summary().endswith("it already trained its 5 epochs: its saved model is evaluated again")


class StopAtFirstStep(Callback):
    def on_step(self, event):
        raise StopRun


def test_a_run_stopped_in_its_first_epoch_does_not_claim_an_epochs_compute(tmp_path):
    config = make_config("scratch", "lenet5", "digits", epochs=3, device="cpu")
    stopped = run(config, [StopAtFirstStep()], out_dir=tmp_path / "run")
    assert stopped.stopped and stopped.history == () and stopped.checkpoint is None
    assert stopped.total_macs is None and stopped.training_macs_per_image > 0


def test_a_resumed_run_stopped_before_its_next_epoch_ends_reports_the_model_it_keeps(tmp_path):
    config = make_config("scratch", "lenet5", "digits", epochs=3, device="cpu")
    first = run(config, [StopAfter(1)], out_dir=tmp_path / "run")
    again = run(config, [StopAtFirstStep()], out_dir=tmp_path / "run")  # one step of epoch 2 taken, then stopped
    assert again.stopped and again.checkpoint == first.checkpoint and again.history == first.history
    assert (again.val_acc, again.val_loss) == (first.history[-1].val_acc, first.history[-1].val_loss)


def digit_folder(root, per_class=25):
    digits = load_dataset("digits")
    for label in range(10):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(digits.targets == label)[:per_class]:
            Image.fromarray(digits[int(i)][0].squeeze(0).numpy()).save(folder / f"{i}.png")
    return root


def test_extract_caches_features_and_saves_a_whole_model(tmp_path):
    root = digit_folder(tmp_path / "digits")
    config = make_config("extract", LITE0, f"folder:{root}", image_size=64, device="cpu")
    assert not features_cached(config)
    first = run(config, out_dir=tmp_path / "run")
    assert first.feature_cache == "miss" and first.val_acc >= 0.8
    assert (first.to_json()["weights"], first.to_json()["config"]["weights"]) == ("shipped", "default")
    assert features_cached(config) and features_cached(replace(config, classifier="svm"))
    assert not features_cached(replace(config, tap="blocks.2")) and not features_cached(replace(config, image_size=96))
    assert first.params_trainable == 1281 * 10 and first.params_frozen > 3_000_000
    again = run(config, out_dir=tmp_path / "run")
    assert again.feature_cache == "hit" and again.val_acc == first.val_acc

    # the saved model (backbone + logistic regression folded into the classifier) predicts what sklearn did
    model, checkpoint = model_from_checkpoint(first.checkpoint)
    images = load_dataset(f"folder:{root}")
    _, val_idx = stratified_split(images.targets, config.val_fraction, config.seed)
    val = TransformedSubset(images, val_idx, transforms_for(get_spec(LITE0), False, 64))
    batch = torch.stack([val[i][0] for i in range(len(val))])
    with torch.no_grad():
        predicted = model(batch).argmax(1).numpy()
    assert np.mean(predicted == val.targets) == pytest.approx(first.val_acc, abs=1 / len(val))
    assert checkpoint.config["classes"] == [str(d) for d in range(10)]

    Image.new("L", (8, 8), 128).save(next((root / "3").glob("*.png")))
    assert not features_cached(config), "the images changed"
    changed = run(config)
    assert changed.feature_cache == "miss"


@dataclass
class Messages(Callback):
    """Keeps the run's messages, the last one that is not about loading at the end."""
    kept: list

    def on_message(self, text: str) -> None:
        if not text.startswith("reading"):
            self.kept.append(text)


def test_every_classifier_and_a_stage_tap(tmp_path):
    root = digit_folder(tmp_path / "digits", per_class=20)
    accuracies, messages = {}, []
    for classifier in ("logreg", "svm", "knn", "linear"):
        epochs = {"epochs": 20} if classifier == "linear" else {}
        result = run(make_config("extract", LITE0, f"folder:{root}", image_size=64, classifier=classifier,
                                 device="cpu", **epochs), [Messages(messages)], out_dir=tmp_path / classifier)
        accuracies[classifier] = result.val_acc
        assert result.feature_cache == ("miss" if classifier == "logreg" else "hit")
        assert messages.pop().startswith("computing the features" if classifier == "logreg" else
                                          "features of all 200 images from the cache")
        assert result.checkpoint is not None and keeps_model("extract")  # every classifier: a model
    assert min(accuracies.values()) >= 0.6, accuracies
    assert result.history[-1].val_loss < 0.5, "the linear head: sure where it is right, not blown up where not"
    tapped = run(make_config("extract", LITE0, f"folder:{root}", image_size=64, tap="blocks.4", device="cpu"),
                 out_dir=tmp_path / "tap")
    assert tapped.val_acc >= 0.6 and tapped.checkpoint is None and tapped.params_trainable == 113 * 10
    with pytest.raises(ConfigError, match="no layer 'blocks.99'"):
        run(make_config("extract", LITE0, f"folder:{root}", image_size=64, tap="blocks.99", device="cpu"))


def test_probe_reports_accuracy_per_stage(tmp_path):
    result = run(make_config("probe", LITE0, f"folder:{digit_folder(tmp_path / 'digits', 20)}", image_size=64,
                             device="cpu"))
    assert [r.layer for r in result.rows] == list(get_spec(LITE0).stages)
    assert [r.dim for r in result.rows] == [16, 24, 40, 112, 1280]
    assert all(0.3 < r.val_acc <= 1 for r in result.rows)
    assert max(r.val_acc for r in result.rows[2:]) > result.rows[0].val_acc
    per_image = result.total_macs / 200  # one forward pass over the 200 images: ImageNet's 1,280 x 1,000 classifier
    assert per_image == profile_arch(LITE0, 64).macs - 1280 * 1000 + 1280 * 10  # replaced by one for the 10 digits
    assert result.to_json()["total_macs"] == result.total_macs


@pytest.fixture
def cuda_runtime_on_cpu(monkeypatch):
    """Runs take the CUDA runtime's options on the CPU: channels_last, bf16 autocast and fused AdamW."""
    runtime = training.Runtime(torch.device("cpu"), channels_last=True, bf16=True, fused=True)
    monkeypatch.setattr(training, "make_runtime", lambda device, inference=False: runtime)
    return runtime


def test_cuda_options_train_resume_and_export(tmp_path, cuda_runtime_on_cpu, monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))  # inductor: a minute
    config = make_config("scratch", "lenet5", "digits", epochs=2, device="cpu", compile=True)
    straight = run(config, out_dir=tmp_path / "straight")
    assert straight.val_acc >= 0.75 and np.asarray(straight.confusion).sum() == 359
    run(config, [StopAfter(1)], out_dir=tmp_path / "resumed")
    resumed = run(config, out_dir=tmp_path / "resumed")
    assert [m.loss for m in resumed.history] == [m.loss for m in straight.history]
    saved = load_file(f"{resumed.checkpoint}/model.safetensors")
    assert set(saved) == set(build_model("lenet5").state_dict())  # no `_orig_mod.` from torch.compile
    assert all(torch.equal(saved[k], v) for k, v in load_file(f"{straight.checkpoint}/model.safetensors").items())
    assert export_checkpoint(tmp_path / "resumed", "torchscript").matches


def test_a_finished_feature_extractor_run_again_evaluates_its_saved_classifier(tmp_path, monkeypatch):
    root = digit_folder(tmp_path / "digits", per_class=10)
    svm = make_config("extract", LITE0, f"folder:{root}", image_size=64, classifier="svm", device="cpu")
    linear = replace(svm, classifier="linear", epochs=8)
    first = {c.classifier: run(c, out_dir=tmp_path / c.classifier) for c in (svm, linear)}

    def no_fit(*args, **kwargs):
        raise AssertionError("a finished run is not fitted again")

    monkeypatch.setattr(training, "make_classifier", no_fit)
    monkeypatch.setattr(training, "_train_linear_head", no_fit)
    for config, done in ((svm, "it already fitted its SVM"), (linear, "it already trained its 8 epochs")):
        again = run(config, [recorder := Recorder()], out_dir=tmp_path / config.classifier)
        earlier = first[config.classifier]
        assert recorder.start.summary().endswith(f"{done}: its saved model is evaluated again")
        assert (again.val_acc, again.confusion, again.checkpoint) == (earlier.val_acc, earlier.confusion,
                                                                     earlier.checkpoint)
        assert again.train_time_s == pytest.approx(earlier.train_time_s, abs=1e-3) and recorder.epochs == []
    monkeypatch.undo()

    shorter = run(replace(linear, epochs=3), [recorder := Recorder()], out_dir=tmp_path / "linear")
    assert [m.epoch for m in recorder.epochs] == [1, 2, 3] and not recorder.start.finished_before
    assert [p.name for p in (tmp_path / "linear" / "checkpoints").iterdir()] == ["ckpt-0003"]
    assert latest_checkpoint(tmp_path / "linear").path == Path(shorter.checkpoint)


def test_cuda_options_extract_float32_features(tmp_path, cuda_runtime_on_cpu):
    root = digit_folder(tmp_path / "digits", per_class=10)
    config = make_config("extract", LITE0, f"folder:{root}", image_size=64, device="cpu")
    result = run(config, out_dir=tmp_path / "run")
    assert result.val_acc >= 0.6 and result.checkpoint
    [cached] = (data_dir() / "features").glob("*.npz")
    with np.load(cached) as stored:
        assert stored["features"].dtype == np.float32 and stored["features"].shape == (100, 1280)
    model_from_checkpoint(result.checkpoint)  # the channels_last backbone with its new head, saved and loaded back
    linear = run(make_config("extract", LITE0, f"folder:{root}", image_size=64, classifier="linear", epochs=5,
                             device="cpu"))
    assert linear.feature_cache == "hit" and linear.val_acc >= 0.5


def test_a_linear_head_cancelled_mid_training_ends_cancelled_with_what_it_learned(tmp_path):
    from cnnlab import jobs
    from cnnlab.runstore import RunStore

    store = RunStore(tmp_path / "runs.sqlite3")
    config = make_config("extract", LITE0, f"folder:{digit_folder(tmp_path / 'digits', 10)}", image_size=64,
                         classifier="linear", epochs=6, device="cpu")
    run_id = jobs.submit(config, store)
    assert jobs.execute(store, store.claim_next("w"), "w", callbacks=(StopAfter(2),)) == "cancelled"
    stopped = store.get(run_id)
    assert stopped.error is None and stopped.result["stopped"]
    assert len(stopped.result["epochs"]) == 2 and stopped.result["val_acc"] >= 0.3
    assert stopped.result["feature_cache"] == "miss"  # computed and kept: a resume reads them back
    store.requeue(run_id)
    assert jobs.execute(store, store.claim_next("w"), "w") == "succeeded"
    assert store.get(run_id).result["feature_cache"] == "hit"
    assert [row["step"] for row in store.metrics(run_id, "epoch")] == [1, 2, 3, 4, 5, 6]  # the new head's only


def test_bf16_features_are_cached_apart_from_float32_ones(tmp_path, monkeypatch):
    root = digit_folder(tmp_path / "digits", per_class=10)
    config = make_config("extract", LITE0, f"folder:{root}", image_size=64, device="cpu")
    assert run(config).feature_cache == "miss"
    assert run(config).feature_cache == "hit"
    bf16 = training.Runtime(torch.device("cpu"), channels_last=True, bf16=True, fused=True)
    monkeypatch.setattr(training, "make_runtime", lambda device, inference=False: bf16)
    assert run(config).feature_cache == "miss"  # a GPU's bf16 features never stand in for float32 ones
    assert len(list((data_dir() / "features").glob("*.npz"))) == 2


def test_flattened_tap_keeps_every_position_as_the_lecture_recipe_does(tmp_path):
    root = digit_folder(tmp_path / "digits", per_class=10)
    options = dict(tap="bn2", image_size=64, device="cpu")
    averaged = run(make_config("extract", LITE0, f"folder:{root}", **options))
    flattened = run(make_config("extract", LITE0, f"folder:{root}", tap_pooling="flatten", **options))
    # bn2 at 64x64 input: 1280 maps of 2x2; logistic regression holds (features + 1) x classes parameters
    assert averaged.params_trainable == (1280 + 1) * 10 and flattened.params_trainable == (1280 * 2 * 2 + 1) * 10
    assert flattened.feature_cache == "miss" and flattened.val_acc >= 0.6
    assert len(list((data_dir() / "features").glob("*.npz"))) == 2


def test_an_early_tap_counts_as_frozen_only_the_layers_it_runs(tmp_path):
    root = digit_folder(tmp_path / "digits", per_class=10)
    result = run(make_config("extract", LITE0, f"folder:{root}", tap="blocks.2", image_size=64, device="cpu"))
    model = build_model(LITE0)
    ran = [model.conv_stem, model.bn1, *model.blocks[:3]]
    assert result.params_frozen == sum(p.numel() for m in ran for p in m.parameters()) == 55_504
    assert result.params_trainable == (40 + 1) * 10, "logistic regression on 40 averaged channels"


def test_flattened_features_too_large_are_refused_before_filling_memory(tmp_path, monkeypatch):
    monkeypatch.setattr("cnnlab.featurecache.MAX_FEATURE_BYTES", 1_000_000)
    root = digit_folder(tmp_path / "digits", per_class=10)
    config = make_config("extract", LITE0, f"folder:{root}", tap="blocks.0", tap_pooling="flatten", image_size=64,
                         device="cpu")
    with pytest.raises(ConfigError, match=r"blocks.0 flattened gives 16,384 features per image"):
        run(config)
    with pytest.raises(ConfigError, match="--tap-pooling does not apply to --strategy finetune"):
        make_config("finetune", LITE0, "digits", tap_pooling="flatten")
    with pytest.raises(ConfigError, match="unknown tap pooling 'max'"):
        make_config("extract", LITE0, "digits", tap_pooling="max")
    with pytest.raises(ConfigError, match="pooled already.*--tap LAYER"):
        make_config("extract", LITE0, "digits", tap_pooling="flatten")


def test_console_progress_prints_keras_lines(tmp_path):
    import io

    def last_line(*callbacks) -> str:
        stream = io.StringIO()
        run(config, [*callbacks, ConsoleProgress(stream)], out_dir=tmp_path / "run")
        return stream.getvalue().splitlines()[-1]

    config = make_config("scratch", "lenet5", "digits", epochs=2, device="cpu")
    assert re.fullmatch(r"stopped early; val_acc: 0\.\d{4} after 1 of 2 epochs, \d+\.\ds \(weakest classes: .*\); "
                        r"checkpoint: .*ckpt-0001", last_line(StopAfter(1)))
    assert re.fullmatch(r"val_acc: 0\.\d{4} in \d+\.\ds \(weakest .*ckpt-0002", last_line())
    assert re.fullmatch(r"val_acc: 0\.\d{4} trained earlier in \d+\.\ds .*ckpt-0002", last_line()), "not again"
    stream = io.StringIO()
    run(config, [ConsoleProgress(stream)])
    lines = stream.getvalue().splitlines()
    assert "61,706 trainable, 0 frozen" in lines[0]
    assert lines[1].startswith("Epoch 1/2 - ") and " - val_acc: " in lines[1] and lines[1].endswith("images/s")
    assert lines[-1].startswith("val_acc: ")
    metrics = EpochMetrics(3, 10, 0.5, 0.9, 0.4, 0.95, 12.3, 1234.5, 1e-3)
    assert metrics.keras_line() == ("Epoch 3/10 - 12.3s - loss: 0.5000 - acc: 0.9000 - val_loss: 0.4000 - "
                                    "val_acc: 0.9500 - 1,234 images/s")


def test_cli_train_json_and_export(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--strategy", "scratch", "--arch", "lenet5", "--dataset", "digits", "--epochs", "2",
                 "--device", "cpu", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    for key in ("strategy", "arch", "dataset", "val_acc", "train_time_s", "params_trainable", "params_frozen",
                "checkpoint"):
        assert key in result
    assert result["params_trainable"] == 61_706 and result["val_acc"] > 0.5
    assert "Epoch 2/2" in captured.err
    assert main(["export", str(out), "--format", "torchscript"]) == 0
    assert "match PyTorch" in capsys.readouterr().out
    again = ["train", "--strategy", "scratch", "--arch", "lenet5", "--dataset", "digits", "--device", "cpu",
             "--out", str(out)]
    assert main(again) == 0, "without --epochs: the folder's 2 epochs, not the strategy's default"
    assert "it already trained its 2 epochs" in capsys.readouterr().err
    assert main([*again, "--lr", "0.5", "--batch-size", "32"]) == 2
    assert "holds a different run: batch_size 32 (was 64); lr 0.5 (was 0.002)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "nowhere"], "unknown dataset"),
    (["--dataset", "folder:/no/such/folder"], "folder does not exist"),
    (["--lr", "-1"], "must be greater than zero"),
    (["--classifier", "svm"], "does not apply to --strategy scratch"),
    (["--freeze", "stage:2"], "--freeze does not apply to --strategy scratch"),
    (["--epochs", "0"], "greater than zero"),
    (["--tap-pooling", "flatten"], "--tap-pooling does not apply to --strategy scratch"),
    (["--input-size", "64"], "lenet5 takes only 32x32 input"),
    (["--batch-size", "1"], "batch size of at least 2"),
])
def test_cli_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    base = {"--dataset": "digits"}
    args = ["train", "--strategy", "scratch", "--arch", "lenet5", "--device", "cpu"]
    flags = dict(base, **dict(zip(argv[::2], argv[1::2])))
    for flag, value in flags.items():
        args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and message in err and "\n" not in err


def test_cli_extracts_flattened_features_at_a_smaller_input(tmp_path, capsys):
    root = digit_folder(tmp_path / "digits", per_class=10)
    (root / "3" / "broken.png").write_bytes(b"not a picture")
    assert main(["train", "--strategy", "extract", "--arch", LITE0, "--dataset", f"folder:{root}", "--tap", "bn2",
                 "--tap-pooling", "flatten", "--input-size", "64", "--device", "cpu", "--json"]) == 0
    printed = capsys.readouterr()
    result = json.loads(printed.out)
    assert result["params_trainable"] == (1280 * 2 * 2 + 1) * 10 and result["val_acc"] >= 0.6
    assert "note: this run kept no whole model" in printed.err and result["checkpoint"] is None
    assert "skipped 1 unreadable file: 3/broken.png" in printed.err
    assert main(["export", result["run"]]) == 2, "a run without a model says why, not 'no checkpoint'"
    assert f"run {result['run']} kept no whole model" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_cli_cuda_without_gpu_is_a_clear_error(capsys):
    assert main(["train", "--strategy", "scratch", "--arch", "lenet5", "--dataset", "digits", "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_cli_probe_json_and_missing_weights(tmp_path, capsys):
    root = digit_folder(tmp_path / "digits", per_class=5)
    assert main(["probe", "--arch", LITE0, "--dataset", f"folder:{root}", "--classifier", "knn", "--input-size", "64",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [s["layer"] for s in result["stages"]] == list(get_spec(LITE0).stages)
    assert (result["config"]["classifier"], result["config"]["image_size"]) == ("knn", 64)
    assert main(["probe", "--arch", "lenet5", "--dataset", "digits"]) == 2
    assert "no pretrained weights exist for lenet5" in capsys.readouterr().err
    assert main(["probe", "--arch", LITE0, "--dataset", "digits", "--classifier", "linear"]) == 2
    assert "invalid choice: 'linear'" in capsys.readouterr().err
    assert main(["probe", "--arch", LITE0, "--dataset", "digits", "--freeze", "body"]) == 2
    assert "unrecognized arguments: --freeze body (`cnnlab probe --help` says more)" in capsys.readouterr().err
    assert main(["probe", "--arch", LITE0, "--dataset", "digits", "--clasifier", "knn"]) == 2
    assert "--clasifier knn; did you mean --classifier? (`cnnlab probe" in capsys.readouterr().err


def test_an_early_tap_stops_the_forward_pass_and_keeps_the_same_features():
    from contextlib import nullcontext

    from torch.utils.data import DataLoader, TensorDataset

    from cnnlab.featurecache import extract_features
    from cnnlab.registry import get_spec
    from cnnlab.weights import create_model

    model, spec = create_model(LITE0, "shipped"), get_spec(LITE0)
    images = torch.randn(8, 3, 96, 96)
    loader = DataLoader(TensorDataset(images, torch.zeros(8)), batch_size=4)
    later_calls = []
    handle = model.get_submodule("blocks.4").register_forward_hook(lambda *args: later_calls.append(1))
    try:
        early = extract_features(model, spec, loader, ["blocks.1"], lambda x, y: (x, y), nullcontext)["blocks.1"]
        assert later_calls == [], "nothing after the tap ran"
        both = extract_features(model, spec, loader, ["blocks.1", "blocks.4"], lambda x, y: (x, y), nullcontext)
        assert len(later_calls) == 2  # one per batch, then stopped before the head
    finally:
        handle.remove()
    assert np.allclose(early, both["blocks.1"]) and early.shape == (8, 24)
    with pytest.raises(AttributeError):
        extract_features(model, spec, loader, ["blocks.1", "nosuch"], lambda x, y: (x, y), nullcontext)
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in model.modules())


def test_a_runs_method_names_its_classifier_and_an_input_size_not_the_networks_own():
    assert run_method(make_config("scratch", "lenet5", "digits").to_dict()) == "I: scratch"
    assert run_method(make_config("extract", LITE0, "digits", classifier="svm").to_dict()) == "III: extract + SVM"
    assert run_method(make_config("extract", LITE0, "digits", classifier="svm", tap="blocks.5", tap_pooling="flatten",
                                  image_size=64).to_dict()) == "III: extract at blocks.5, flattened + SVM, 64 px"
    assert run_method(make_config("extract", LITE0, "digits", tap="bn2").to_dict()) == \
        "III: extract at bn2 + logistic regression"
    assert run_method(make_config("finetune", LITE0, "digits", image_size=96).to_dict()) == "II: finetune, 96 px"
    assert run_method(make_config("probe", LITE0, "digits", classifier="knn", image_size=224).to_dict()) == \
        "probe of every stage + k-NN"


def test_a_runs_config_shown_without_the_fields_its_strategy_never_reads():
    from cnnlab.training import config_in_use

    fitted = config_in_use(make_config("extract", LITE0, "digits").to_dict())
    assert not {"freeze", "head", "epochs", "lr"} & set(fitted) and fitted["classifier"] == "logreg"
    assert fitted["image_size"] == 224, "the network's own size, where the run left it to the network (None)"
    assert config_in_use(make_config("scratch", "lenet5", "digits", image_size=None).to_dict())["image_size"] == 32
    linear = config_in_use(make_config("extract", LITE0, "digits", classifier="linear").to_dict())
    assert linear["epochs"] == 30 and "lr" in linear and "freeze" not in linear
    finetune = config_in_use(make_config("finetune", LITE0, "digits").to_dict())
    assert {"freeze", "head", "epochs", "lr"} <= set(finetune) and not {"classifier", "tap"} & set(finetune)
    probe = config_in_use(make_config("probe", LITE0, "digits").to_dict())
    assert not {"tap", "epochs", "lr", "freeze"} & set(probe)
    with pytest.raises(ConfigError, match="--freeze does not apply to --strategy extract"):
        make_config("extract", LITE0, "digits", freeze="stage:2")


@pytest.mark.parametrize("strategy", ["extract", "probe"])
def test_a_class_too_small_to_split_fails_before_any_feature_is_computed(tmp_path, monkeypatch, strategy):
    from cnnlab.data import DatasetError

    root = digit_folder(tmp_path / "digits", per_class=3)
    for extra in sorted((root / "7").iterdir())[1:]:
        extra.unlink()
    monkeypatch.setattr(training, "_features", lambda *args: pytest.fail("features computed before the split"))
    with pytest.raises(DatasetError, match=r"^digits/: every class needs at least 2 images .*; 7 has fewer$"):
        run(make_config(strategy, LITE0, f"folder:{root}", image_size=64, device="cpu"))
