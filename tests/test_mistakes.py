"""A finished run's mistakes on its own validation images: the same ones its confusion matrix counts."""
import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.checkpoints import read_json
from cnnlab.data import load_dataset, stratified_split
from cnnlab.mistakes import MistakesError, dataset_image, run_dataset, validation_mistakes
from cnnlab.training import ConfigError, make_config, run
from tests.test_training import LITE0, digit_folder


def off_diagonal(matrix) -> int:
    matrix = np.asarray(matrix)
    return int(matrix.sum() - np.trace(matrix))


def test_a_scratch_runs_mistakes_are_the_ones_its_confusion_matrix_counts(tmp_path):
    result = run(make_config("scratch", "lenet5", "digits", epochs=1, device="cpu"), out_dir=tmp_path / "run")
    seen = []
    report = validation_mistakes(tmp_path / "run", limit=5, progress=lambda done, total: seen.append((done, total)))
    digits = load_dataset("digits")
    _, val_idx = stratified_split(digits.targets, 0.2, 0)
    assert (report.examined, report.validation_size) == (len(val_idx), len(val_idx)) == (359, 359)
    assert report.wrong == off_diagonal(result.confusion) > 5  # one epoch of LeNet-5 still errs
    assert report.accuracy == pytest.approx(result.val_acc)
    assert len(report.mistakes) == 5 and seen[-1] == (359, 359)
    confidences = [m.confidence for m in report.mistakes]
    assert confidences == sorted(confidences, reverse=True)
    for mistake in report.mistakes:
        assert mistake.index in val_idx and mistake.true != mistake.predicted
        assert mistake.true == str(digits.targets[mistake.index]) and mistake.confidence > mistake.true_probability
    picture = dataset_image(run_dataset(read_json(tmp_path / "run" / "config.json")), report.mistakes[0].index)
    assert picture.size == (8, 8) and report.mistakes[0].image.tobytes() == picture.tobytes()


def test_a_feature_extractor_with_its_head_saved_and_one_without(tmp_path):
    root = digit_folder(tmp_path / "digits", per_class=15)
    result = run(make_config("extract", LITE0, f"folder:{root}", image_size=64, device="cpu"),
                 out_dir=tmp_path / "logreg")
    report = validation_mistakes(tmp_path / "logreg", max_images=20)
    assert report.examined == 20 and report.validation_size == 30
    full = validation_mistakes(tmp_path / "logreg")
    assert abs(full.wrong - off_diagonal(result.confusion)) <= 1  # logistic regression folded into a linear head
    assert dataset_image(run_dataset(read_json(tmp_path / "logreg" / "config.json")), 0).mode == "RGB"
    knn = run(make_config("extract", LITE0, f"folder:{root}", image_size=64, classifier="knn", device="cpu"),
              out_dir=tmp_path / "knn")
    assert abs(validation_mistakes(tmp_path / "knn").wrong - off_diagonal(knn.confusion)) <= 1  # k-NN as a layer
    run(make_config("extract", LITE0, f"folder:{root}", image_size=64, classifier="knn", tap="blocks.4",
                    device="cpu"), out_dir=tmp_path / "stage")
    with pytest.raises(MistakesError, match="stage kept no whole model: Strategy III saves one only when"):
        validation_mistakes(tmp_path / "stage")


def test_a_run_whose_data_are_gone_says_so(tmp_path):
    root = digit_folder(tmp_path / "digits", per_class=4)
    run(make_config("scratch", "lenet5", f"folder:{root}", epochs=1, device="cpu"), out_dir=tmp_path / "run")
    for folder in root.iterdir():
        for image in folder.iterdir():
            image.unlink()
        folder.rmdir()
    with pytest.raises(MistakesError, match="cannot be read any more"):
        validation_mistakes(tmp_path / "run")


def test_a_run_whose_images_changed_shows_no_mistakes_and_does_not_resume(tmp_path):
    root = digit_folder(tmp_path / "digits", per_class=6)
    config = make_config("scratch", "lenet5", f"folder:{root}", epochs=1, device="cpu")
    run(config, out_dir=tmp_path / "run")
    assert validation_mistakes(tmp_path / "run").examined == 12
    first = sorted((root / "3").iterdir())[0]
    Image.open(first).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(first)  # same files, one image edited
    with pytest.raises(MistakesError, match="changed since this run trained on them"):
        validation_mistakes(tmp_path / "run")
    with pytest.raises(ConfigError, match="changed since this run started"):
        run(config, out_dir=tmp_path / "run")


def test_cli_lists_a_runs_mistakes(tmp_path, capsys):
    import json

    from cnnlab.cli import main

    result = run(make_config("scratch", "lenet5", "digits", epochs=1, device="cpu"), out_dir=tmp_path / "run")
    assert main(["mistakes", str(tmp_path / "run"), "--limit", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["wrong"] == off_diagonal(result.confusion) and len(report["mistakes"]) == 3
    assert set(report["mistakes"][0]) == {"index", "true", "predicted", "confidence", "true_probability"}
    assert main(["mistakes", str(tmp_path / "run"), "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{report['wrong']} wrong among 359 of 359 validation images of digits")
    assert main(["mistakes", str(tmp_path / "nothing")]) == 2
    assert f"no run {tmp_path / 'nothing'} and no file or folder of that name" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["mistakes", str(tmp_path / "run"), "--device", "cuda"]) == 2  # one line, no traceback
        assert "PyTorch sees no CUDA GPU" in capsys.readouterr().err


def test_cli_takes_a_queued_runs_id(capsys):
    from cnnlab import jobs
    from cnnlab.cli import main
    from cnnlab.runstore import RunStore

    store = RunStore()
    run_id = jobs.submit(make_config("scratch", "lenet5", "digits", epochs=1, device="cpu"), store)
    jobs.work(store, once=True)
    assert main(["mistakes", run_id, "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "validation images of digits" in out
    first = out.splitlines()[0]
    assert first.endswith("; its mistake:" if first.startswith("1 wrong") else "; the surest one:")


def test_a_runs_validation_examples_are_one_held_out_image_per_class(tmp_path):
    from cnnlab.mistakes import validation_examples

    run(make_config("scratch", "lenet5", "digits", epochs=1, device="cpu"), out_dir=tmp_path / "run")
    examples = validation_examples(tmp_path / "run", limit=4)
    digits = load_dataset("digits")
    train_idx, _ = stratified_split(digits.targets, 0.2, 0)
    assert [name for name, _, _ in examples] == ["0", "1", "2", "3"]
    for name, index, image in examples:
        assert index not in train_idx and str(digits.targets[index]) == name and image.size == (8, 8)
