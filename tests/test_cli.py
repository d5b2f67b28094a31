import json
import re
import subprocess
import sys

import pytest

from cnnlab.cli import main
from cnnlab.registry import arch_names, get_spec
from cnnlab.runstore import RunStore


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, timeout=120)


def test_models_json_lists_every_architecture_with_its_parameters(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == arch_names()
    for row in rows:
        assert {"name", "family", "params", "macs", "top1", "top5", "input_size"} <= set(row)
        assert row["params"] == get_spec(row["name"]).reference_params
    assert next(r for r in rows if r["name"] == "googlenet")["top5"] == pytest.approx(89.53)


def test_profile_json_rows_sum_to_totals(capsys):
    assert main(["profile", "googlenet", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert sum(r["params"] for r in data["layers"]) == data["totals"]["params"] == 6_624_904
    assert sum(r["macs"] for r in data["layers"]) == data["totals"]["macs"]
    assert {"name", "type", "output_shape", "params", "macs"} <= set(data["layers"][0])


def test_an_architecture_written_as_people_write_it_is_taken(capsys):
    assert main(["profile", "GoogLeNet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["params"] == 6_624_904
    assert main(["profile", "ResNet-50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["params"] == 25_557_032


def test_profile_text_marks_a_module_run_more_than_once(capsys):
    assert main(["profile", "resnet50"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("layer1.0.relu "))
    assert "ReLU (runs 3x)" in row and "(1, 256, 56, 56)" in row, "one ReLU per block, shown with its last output"


def test_profile_input_size(capsys):
    assert main(["profile", "resnet18", "--input-size", "112", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["input_shape"] == [1, 3, 112, 112]


@pytest.mark.parametrize("args, words", [
    (["profile", "resnet51"], ["unknown architecture", "resnet50"]),
    (["profile", "alexnet", "--input-size", "8"], ["too small", "63"]),
    (["profile", "lenet5", "--input-size", "64"], ["only 32x32"]),
    (["profile", "resnet18", "--input-size", "-3"], ["greater than zero"]),
    (["profile", "resnet18", "--input-size", "abc"], ["not a whole number"]),
    (["frobnicate"], ["invalid choice"]),
    (["train", "--strategy", "scratch", "--arch", "lenet5", "--dataset", "digits", "--epoch", "2"],  # no abbreviations
     ["unrecognized arguments: --epoch 2; did you mean --epochs? (`cnnlab train --help` says more)"]),
    (["predict", "assets/chelsea.png", "--weights", "ffffffffffff"], ["no run ffffffffffff", "`cnnlab runs`"]),
    (["predict", "assets/chelsea.png", "--arch", "lenet5"], ["no pretrained weights exist for lenet5", "--weights none"]),
    (["train", "--strategy", "finetune", "--arch", "lenet5", "--dataset", "digits"],
     ["no pretrained weights exist for lenet5", "train from random weights (`cnnlab train --strategy scratch`)"]),
    (["train", "--strategy", "finetune", "--arch", "resnet18", "--dataset", "digits", "--head", "lecture"],
     ["no new head for ResNet-18", "--head own"]),
    (["train", "--strategy", "extract", "--dataset", "digits", "--out", "README.md"], ["is a file, not a folder"]),
    (["train", "--strategy", "scratch", "--arch", "lenet5", "--dataset", "digits", "--lr", "inf"],
     ["learning rate must be positive and finite"]),
    (["train", "--strategy", "extract", "--dataset", "digits", "--classifier", "svm", "--epochs", "5"],
     ["--epochs applies only to the linear classifier (--classifier linear)", "svm is fitted in one go"]),
    (["submit", "--strategy", "extract", "--dataset", "digits", "--epochs", "5", "--lr", "0.1"],
     ["--epochs and --lr apply only to the linear classifier", "logreg is fitted"]),
    (["submit", "--strategy", "probe", "--dataset", "digits", "--epochs", "3"],
     ["--epochs does not apply to a probe", "logreg at each stage in one go"]),
    # a queued run is checked as `train` checks it, not left to fail in the worker
    (["submit", "--strategy", "extract", "--dataset", "digits", "--tap", "nosuch"], ["has no layer 'nosuch'"]),
    (["submit", "--strategy", "extract", "--dataset", "digits", "--tap", ""], ["has no layer ''", "--layer list"]),
    (["submit", "--strategy", "extract", "--dataset", "digits", "--tap", "500"],
     ["has layers 0 to 104, not 500", "`cnnlab features IMAGE --arch tf_efficientnet_lite0 --layer list`"]),
    (["submit", "--strategy", "finetune", "--arch", "resnet18", "--dataset", "digits", "--freeze", "stage:99"],
     ["stage:99 does not exist"]),
])
def test_bad_input_exits_2_with_one_line(args, words):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert all(word in lines[0] for word in words)
    assert RunStore().runs() == [], "nothing queued or recorded"


def test_listing_runs_and_refusing_bad_options_answer_without_loading_torch():
    store = RunStore()
    run_id = store.start({"strategy": "extract", "arch": "tf_efficientnet_lite0", "dataset": "zip:/up/pets.zip",
                          "classifier": "svm", "image_size": 128}, worker="test")
    store.finish(run_id, "succeeded", result={"val_acc": 0.9})
    probe_id = store.start({"strategy": "probe", "arch": "tf_efficientnet_lite0", "dataset": "digits"}, worker="test")
    stages = [{"stage": 1, "layer": "blocks.0", "val_acc": 0.7}, {"stage": 2, "layer": "blocks.4", "val_acc": 0.97},
              {"stage": 3, "layer": "bn2", "val_acc": 0.95}]
    store.finish(probe_id, "succeeded", result={"stages": stages})
    check = ("import sys; from cnnlab.cli import main; status = main(sys.argv[1:]); "
             "print(status, 'torch' in sys.modules, file=sys.stderr)")

    def without_torch(*args):
        result = subprocess.run([sys.executable, "-c", check, *args], capture_output=True, text=True, timeout=120)
        assert result.stderr.strip().endswith("False"), result.stderr
        return result

    listed = without_torch("runs").stdout
    assert re.search(r"III: extract \+ SVM, 128 px +tf_efficientnet_lite0 +pets\.zip", listed), listed
    assert f"{probe_id} (succeeded): val_acc is stage 2's (blocks.4), the best of 3 stages" in listed
    assert re.search(r"probe of every stage, best: stage 2 +tf_efficientnet_lite0", listed), "one stage's accuracy"
    refused = without_torch("train", "--strategy", "scratch", "--arch", "nope", "--dataset", "digits", "--epochs", "0")
    assert "argument --epochs: 0 must be greater than zero" in refused.stderr


def test_a_run_that_diverged_into_one_answer_is_warned_about():
    result = run_cli("train", "--strategy", "scratch", "--arch", "lenet5", "--dataset", "digits", "--epochs", "1",
                     "--lr", "10")
    assert result.returncode == 0
    assert "warning: It answers class 0 for every validation image: the model learned nothing it can use" \
        in result.stderr


def test_installed_console_script():
    result = subprocess.run(["cnnlab", "models"], capture_output=True, text=True, timeout=120,
                            env={"PATH": f"{sys.prefix}/bin"})
    assert result.returncode == 0
    vgg16 = next(line for line in result.stdout.splitlines() if line.startswith("vgg16 ")).split()
    assert vgg16[3:6] == ["138,357,544", "15.5G", "527.79"], "counts to read, not to decode"


def test_train_prints_its_result_on_stdout_and_its_progress_on_stderr(tmp_path, capsys):
    assert main(["train", "--strategy", "scratch", "--arch", "lenet5", "--dataset", "digits", "--epochs", "1",
                 "--device", "cpu", "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("val_acc: 0.") and len(printed.out.splitlines()) == 1
    assert f"checkpoint: {tmp_path / 'run'}" in printed.out
    assert printed.err.splitlines()[-1].startswith("Epoch 1/1 - "), "progress, then the result on stdout"


def test_network_tables_end_with_the_registry_notes_on_how_the_network_differs_from_its_paper(capsys):
    assert main(["reduce", "--arch", "googlenet"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert len(notes) == len(get_spec("googlenet").notes) and any("3x3 kernel" in n and "#906" in n for n in notes)


def test_a_data_directory_that_cannot_be_used_is_one_line(tmp_path):
    import os

    (tmp_path / "a-file").write_text("")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "runs.sqlite3").write_text("not a database")
    for home, words in ((tmp_path / "a-file", "is a file, not a folder; set CNNLAB_HOME"),
                        (tmp_path / "home", "runs.sqlite3 cannot be read (file is not a database); move it aside")):
        result = subprocess.run([sys.executable, "-m", "cnnlab", "runs"], capture_output=True, text=True,
                                timeout=120, env=dict(os.environ, CNNLAB_HOME=str(home)))
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and words in result.stderr, result.stderr


def test_version_bare_command_and_an_empty_run_list_each_say_something_useful(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("cnnlab ")
    assert main([]) == 2 and "required: command (`cnnlab --help` says more)" in capsys.readouterr().err
    assert main(["runs"]) == 0
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.startswith("no runs yet in ") and "`cnnlab train`" in printed.err


def test_train_out_refuses_folders_that_are_not_its_own(tmp_path, capsys):
    from cnnlab.jobs import runs_folder

    dataset = tmp_path / "data"
    for name in ("cats", "dogs"):
        (dataset / name).mkdir(parents=True)
    stranger, not_a_run = tmp_path / "notes", tmp_path / "other"
    stranger.mkdir()
    (stranger / "todo.txt").write_text("mine")
    not_a_run.mkdir()
    (not_a_run / "config.json").write_text("[1, 2]")
    cases = [("digits", stranger, "holds other files and no cnnlab run"),
             ("digits", runs_folder() / "mine", "inside the run store"),
             (f"folder:{dataset}", dataset / "run", "inside the dataset"),
             ("digits", not_a_run, "is not a cnnlab run's config")]
    for dataset_name, out, words in cases:
        assert main(["train", "--strategy", "scratch", "--arch", "lenet5", "--dataset", dataset_name,
                     "--epochs", "1", "--out", str(out)]) == 2
        message = capsys.readouterr().err.strip()
        assert len(message.splitlines()) == 1 and words in message, message
    assert sorted(p.name for p in stranger.iterdir()) == ["todo.txt"], "nothing written beside the user's files"
    assert not (dataset / "run").exists() and not (runs_folder() / "mine").exists()
    for dataset_name, out, words in (("folder:/no/such", tmp_path / "new" / "run", "/no/such does not exist"),
                                     ("digits", "", "--out needs a folder")):
        assert main(["train", "--strategy", "scratch", "--arch", "lenet5", "--dataset", dataset_name,
                     "--out", str(out)]) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "new").exists(), "a run that fails before it starts leaves no empty folder"
