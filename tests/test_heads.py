"""Strategy III's SVM and k-NN as PyTorch heads: the same predictions as scikit-learn, saved and loaded as weights,
and whole models that predict, export and train on."""
from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
from sklearn.datasets import load_digits

from cnnlab.cam import class_activation_map
from cnnlab.checkpoints import export_checkpoint, model_from_checkpoint
from cnnlab.featurecache import make_classifier
from cnnlab.naming import CLASSIFIER_NAMES
from cnnlab.heads import (KEEPS_EXAMPLES, SVM_SCORES_NOTE, KernelSVMHead, NearestNeighboursHead, classifier_as_head,
                          empty_head)
from cnnlab.images import read_image
from cnnlab.mistakes import validation_mistakes
from cnnlab.predict import predict_image
from cnnlab.registry import get_spec
from cnnlab.training import make_config, run
from cnnlab.weights import load_weights
from tests.test_training import LITE0, Recorder, digit_folder


def digits_split(classes: int):
    """scikit-learn's digits (64 pixel features) of the first `classes` classes, split in two halves."""
    x, y = load_digits(return_X_y=True)
    keep = y < classes
    x, y = x[keep], y[keep]
    return x[::2], y[::2], x[1::2], y[1::2]


def head_outputs(head: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return head(torch.from_numpy(x).float())


@pytest.mark.parametrize("classes", [10, 3, 2])
def test_the_svm_head_predicts_what_scikit_learn_predicts(classes):
    x_train, y_train, x_test, y_test = digits_split(classes)
    pipeline = make_classifier("svm").fit(x_train, y_train)
    head = classifier_as_head(pipeline, "svm", classes, x_train, y_train)
    assert isinstance(head, KernelSVMHead) and head.out_features == classes and head.in_features == 64
    predicted = head_outputs(head, x_test).argmax(1).numpy()
    assert (predicted == pipeline.predict(x_test)).mean() >= 0.995  # ties aside, the same votes
    assert (predicted == y_test).mean() > 0.9


def test_the_knn_head_gives_scikit_learns_probabilities():
    x_train, y_train, x_test, _ = digits_split(10)
    pipeline = make_classifier("knn").fit(x_train, y_train)
    head = classifier_as_head(pipeline, "knn", 10, x_train, y_train)
    assert isinstance(head, NearestNeighboursHead)
    probabilities = torch.softmax(head_outputs(head, x_test), 1).numpy()
    assert np.abs(probabilities - pipeline.predict_proba(x_test)).max() < 1e-4


@pytest.mark.parametrize("kind", ["svm", "knn"])
def test_a_head_reloads_from_its_saved_tensors(kind):
    x_train, y_train, x_test, _ = digits_split(4)
    head = classifier_as_head(make_classifier(kind).fit(x_train, y_train), kind, 4, x_train, y_train)
    state = head.state_dict()
    reloaded = empty_head(kind, state)
    reloaded.load_state_dict(state)
    assert torch.equal(head_outputs(reloaded, x_test), head_outputs(head, x_test))


@pytest.mark.parametrize("kind, head_type", [("svm", KernelSVMHead), ("knn", NearestNeighboursHead)])
def test_a_kernel_run_is_a_whole_model_that_predicts_exports_and_trains_on(tmp_path, kind, head_type):
    root = digit_folder(tmp_path / "digits", per_class=10)
    recorder = Recorder()
    result = run(make_config("extract", LITE0, f"folder:{root}", image_size=64, classifier=kind, device="cpu"),
                 [recorder], out_dir=tmp_path / "svm")
    assert result.checkpoint is not None
    model, _ = model_from_checkpoint(tmp_path / "svm")
    assert isinstance(model.get_submodule("classifier"), head_type)
    batch = torch.rand(1, 3, 64, 64)
    if kind == "knn":
        with pytest.raises(ValueError, match="no gradient, so there is no class activation map"):
            class_activation_map(model, batch, get_spec(LITE0))
    else:
        assert class_activation_map(model, batch, get_spec(LITE0)).heatmap.shape == (64, 64)
    loaded = load_weights(LITE0, str(tmp_path / "svm"))
    assert loaded.class_names == tuple(str(c) for c in range(10)) and loaded.image_size == 64
    assert ("probabilities are the softmax of its one-vs-rest vote scores" in loaded.notes[0]) == (kind == "svm")
    assert f"(III: extract + {CLASSIFIER_NAMES[kind]}, 64 px)" in loaded.notes[0]
    three = next((root / "3").iterdir())
    assert predict_image(three, LITE0, str(tmp_path / "svm")).predictions[0].label == "3"
    report = validation_mistakes(tmp_path / "svm")
    assert (report.scores_note == SVM_SCORES_NOTE) == (kind == "svm") and report.examined == 20
    assert f"0 trainable ({KEEPS_EXAMPLES[kind]})" in recorder.start.summary()
    exported = export_checkpoint(tmp_path / "svm", "onnx")
    assert exported.matches and exported.checked_on == "4 of the run's validation images", exported.max_abs_diff
    digits = torch.cat([loaded.batch_for(read_image(next((root / d).iterdir()))) for d in ("3", "7")])
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    assert list(session.run(None, {"images": digits.numpy()})[0].argmax(1)) == [3, 7], "the exported head itself"
    again = load_weights(LITE0, str(tmp_path / "svm"), num_classes=10)  # Strategy II from it: a layer to train
    assert isinstance(again.model.get_submodule("classifier"), torch.nn.Linear)
    assert any(f"{head_type.__name__} head is replaced" in note for note in again.notes)
