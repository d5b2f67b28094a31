"""Checkpoints: round trip, all-or-nothing writes (also under SIGKILL), resume state, ONNX/TorchScript export."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

from cnnlab.checkpoints import (CheckpointError, export_checkpoint, latest_checkpoint, load_checkpoint_weights,
                                load_trainer_state, model_from_checkpoint, require_checkpoint, save_checkpoint,
                                state_dict_bytes)
from cnnlab.paths import atomic_write_bytes
from cnnlab.registry import build_model


def lenet_config(**extra):
    return {"strategy": "scratch", "arch": "lenet5", "dataset": "digits", "classes": [str(d) for d in range(10)],
            **extra}


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "deep" / "file.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second version")
    assert path.read_bytes() == b"second version"
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_checkpoint_round_trip_keeps_only_the_latest(tmp_path):
    torch.manual_seed(0)
    model = build_model("lenet5")
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 1, 32, 32)).sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path, 1, model, lenet_config(), {"history": [1]}, optimizer)
    saved = save_checkpoint(tmp_path, 2, model, lenet_config(), {"history": [1, 2]}, optimizer)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["ckpt-0002"]
    found = latest_checkpoint(tmp_path)
    assert found.path == saved.path and found.epoch == 2 and found.metrics == {"history": [1, 2]}
    assert latest_checkpoint(saved.path).epoch == 2
    again = save_checkpoint(tmp_path, 2, model, lenet_config(), {"history": [1, 2, "again"]})  # the same epoch
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["ckpt-0002"]
    assert latest_checkpoint(tmp_path).metrics == again.metrics and not again.has_trainer_state
    saved = save_checkpoint(tmp_path, 2, model, lenet_config(), {"history": [1, 2]}, optimizer)

    restored, checkpoint = model_from_checkpoint(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
    fresh = torch.optim.AdamW(restored.parameters())
    load_trainer_state(checkpoint, fresh)
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])

    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint_weights(build_model("lenet5", num_classes=3), checkpoint)
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        require_checkpoint(tmp_path / "checkpoints")
    checkpoint.model_file.write_bytes(checkpoint.model_file.read_bytes()[:100])  # a copy cut short
    with pytest.raises(CheckpointError, match=r"model.safetensors cannot be read \(damaged or cut short\)"):
        model_from_checkpoint(tmp_path)
    checkpoint.model_file.unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing: the checkpoint is incomplete"):
        load_checkpoint_weights(build_model("lenet5"), checkpoint)


def lenet_and_optimizer(cuda_like: bool):
    """lenet5 and AdamW as the CUDA runtime trains them (channels_last, fused) or the CPU one (NCHW, not fused)."""
    torch.manual_seed(0)
    model = build_model("lenet5").to(memory_format=torch.channels_last if cuda_like else torch.contiguous_format)
    return model, torch.optim.AdamW(model.parameters(), fused=cuda_like or None)


def train_step(model, optimizer, batch):
    optimizer.zero_grad()
    model(batch).square().mean().backward()
    optimizer.step()


@pytest.mark.parametrize("saved_on_cuda", [True, False])
def test_optimizer_state_resumes_on_the_other_runtime(tmp_path, saved_on_cuda):
    batch = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    model, optimizer = lenet_and_optimizer(saved_on_cuda)
    train_step(model, optimizer, batch)
    checkpoint = save_checkpoint(tmp_path, 1, model, lenet_config(), {}, optimizer)
    resumed, resumed_optimizer = lenet_and_optimizer(not saved_on_cuda)
    load_checkpoint_weights(resumed, checkpoint)
    load_trainer_state(checkpoint, resumed_optimizer)
    train_step(model, optimizer, batch)
    train_step(resumed, resumed_optimizer, batch)
    for (name, a), b in zip(model.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=lambda text: f"{name}: {text}")
    assert all(group["fused"] is (None if saved_on_cuda else True) for group in resumed_optimizer.param_groups)


def test_unfinished_checkpoint_folders_are_ignored_and_cleaned(tmp_path):
    model = build_model("lenet5")
    save_checkpoint(tmp_path, 1, model, lenet_config(), {})
    partial = tmp_path / "checkpoints" / ".ckpt-0002.abc"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half a file")
    assert latest_checkpoint(tmp_path).epoch == 1
    save_checkpoint(tmp_path, 2, model, lenet_config(), {})
    assert not partial.exists()


def test_a_save_leaves_other_live_writers_staging_alone_and_puts_back_a_checkpoint_moved_aside(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    parent = tmp_path / "checkpoints"
    live = parent / f".ckpt-0003.{os.getppid()}.abc"  # another process, still writing its save
    dead = parent / f".ckpt-0003.{gone.pid}.def"
    aside = parent / f".ckpt-0001.{gone.pid}.ghi.replaced"  # killed between moving epoch 1 aside and its new save
    for folder in (live, dead, aside):
        folder.mkdir(parents=True)
    model = build_model("lenet5")
    (aside / "model.safetensors").write_bytes(state_dict_bytes(model))
    save_checkpoint(tmp_path, 2, model, lenet_config(), {}, keep=2)
    assert live.exists() and not dead.exists() and not aside.exists()
    assert sorted(p.name for p in parent.iterdir() if not p.name.startswith(".")) == ["ckpt-0001", "ckpt-0002"]
    assert (parent / "ckpt-0001" / "model.safetensors").read_bytes() == state_dict_bytes(model)


WRITER = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from cnnlab.checkpoints import save_checkpoint
    model = nn.Linear(1024, 1024)  # 4 MiB of weights
    epoch = 0
    while True:
        epoch += 1
        with torch.no_grad():
            model.weight.fill_(epoch)
            model.bias.fill_(epoch)
        save_checkpoint(sys.argv[1], epoch, model, {"arch": "none", "epoch": epoch}, {"epoch": epoch})
        print(epoch, flush=True)
""")


@pytest.mark.parametrize("delay", [0.02, 0.1, 0.2, 0.35])
def test_a_kill_during_saving_leaves_the_last_complete_checkpoint(tmp_path, delay):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "1"  # first checkpoint done, the next ones under way
        time.sleep(delay)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
    checkpoint = latest_checkpoint(tmp_path)
    tensors = load_file(checkpoint.model_file)
    assert checkpoint.config["epoch"] == checkpoint.metrics["epoch"] == checkpoint.epoch >= 1
    assert torch.all(tensors["weight"] == checkpoint.epoch) and torch.all(tensors["bias"] == checkpoint.epoch)


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    torch.manual_seed(1)
    save_checkpoint(run_dir, 3, build_model("lenet5"), lenet_config(), {})
    return run_dir


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_models_give_pytorch_outputs(lenet_run, fmt):
    result = export_checkpoint(lenet_run, fmt)
    assert result.matches and result.max_abs_diff < 1e-4 and result.path.is_file()
    assert result.path.parent == lenet_run / "exports" / "ckpt-0003"
    assert result.verdict().startswith("its outputs match PyTorch's on 4 of the run's validation images (largest ")
    assert result.verdict().endswith("within the 1e-04 allowed)") and 0 < result.largest_output < 100
    model, _ = model_from_checkpoint(lenet_run)
    batch = torch.randn(5, 1, 32, 32)
    with torch.no_grad():
        expected = model(batch).numpy()
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
        actual = session.run(None, {"images": batch.numpy()})[0]  # another batch size than the export's
    else:
        actual = torch.jit.load(str(result.path))(batch).detach().numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_an_export_outlives_the_checkpoint_a_longer_run_prunes(tmp_path):
    save_checkpoint(tmp_path, 1, build_model("lenet5"), lenet_config(), {})
    exported = export_checkpoint(tmp_path, "onnx").path
    save_checkpoint(tmp_path, 2, build_model("lenet5"), lenet_config(), {})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["ckpt-0002"] and exported.is_file()
    inside = export_checkpoint(tmp_path / "checkpoints" / "ckpt-0002", "torchscript").path
    assert inside == tmp_path / "exports" / "ckpt-0002" / "model.torchscript.pt"


def test_an_export_that_fails_is_a_checkpoint_error(lenet_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed: the ONNX file cannot be checked
    with pytest.raises(CheckpointError, match="exporting LeNet-5 to onnx failed: ModuleNotFoundError"):
        export_checkpoint(lenet_run, "onnx")


def test_export_of_a_pretrained_network_at_its_trained_size(tmp_path):
    model = build_model("tf_efficientnet_lite0", num_classes=4).eval()
    config = {"strategy": "finetune", "arch": "tf_efficientnet_lite0", "image_size": 64, "classes": list("abcd")}
    save_checkpoint(tmp_path, 1, model, config, {})
    result = export_checkpoint(tmp_path, "onnx")
    assert result.matches and result.checked_on == "4 sample photos (the run's data cannot be read)"
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, 64, 64]


def test_export_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        export_checkpoint(tmp_path / "nothing", "onnx")
    with pytest.raises(CheckpointError, match="unknown export format"):
        export_checkpoint(tmp_path, "tflite")


def test_a_checkpoint_downloads_as_a_zip_that_loads_back(lenet_run, tmp_path):
    import io
    import zipfile

    from cnnlab.checkpoints import archive_bytes, latest_checkpoint, model_from_checkpoint

    folder = latest_checkpoint(lenet_run).path
    with zipfile.ZipFile(io.BytesIO(archive_bytes(folder))) as archive:
        assert sorted(archive.namelist()) == sorted(f"{folder.name}/{p.name}" for p in folder.iterdir() if p.is_file())
        archive.extractall(tmp_path)
    model, checkpoint = model_from_checkpoint(tmp_path / folder.name)
    original, _ = model_from_checkpoint(folder)
    assert checkpoint.epoch == 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), original.state_dict().values()))
