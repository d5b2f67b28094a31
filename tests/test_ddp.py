"""Multi-process training under torchrun: 2 CPU processes on gloo (also with the CUDA runtime's options), and a
failing rank that must fail the run."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

from cnnlab.registry import build_model

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def torchrun(args, tmp_path, timeout=180):
    env = {**os.environ, "CNNLAB_DDP_TIMEOUT_S": "60", "OMP_NUM_THREADS": "1"}
    return subprocess.run(TORCHRUN + args, capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env)


def test_two_gloo_processes_train_together(tmp_path):
    out = tmp_path / "run"
    done = torchrun(["-m", "cnnlab", "train", "--strategy", "scratch", "--arch", "lenet5", "--dataset", "digits",
                     "--epochs", "4", "--device", "cpu", "--out", str(out), "--json"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)  # one JSON object: only rank 0 prints
    assert result["world_size"] == 2 and result["val_acc"] >= 0.8
    assert sum(sum(row) for row in result["confusion_matrix"]) == 359  # every validation image, counted once
    assert done.stderr.count("Epoch 4/4") == 1 and "x2 processes" in done.stderr
    assert Path(result["checkpoint"]).name == "ckpt-0004" and (out / "metrics.json").is_file()


CUDA_OPTIONS = textwrap.dedent("""
    import functools, json, sys, torch
    from cnnlab import distributed, training

    training.make_runtime = lambda device, inference=False: training.Runtime(
        torch.device("cpu"), distributed.setup("cpu"), channels_last=True, bf16=True, fused=True)
    torch.compile = functools.partial(torch.compile, backend="eager")
    config = training.make_config("scratch", "lenet5", "digits", epochs=3, device="cpu", compile=True)
    result = training.run(config, out_dir=sys.argv[1])
    if distributed.context_from_env().is_main:
        print(json.dumps(result.to_json()))
""")


def test_ddp_with_the_cuda_runtime_options(tmp_path):
    """DistributedDataParallel around a compiled channels_last model, bf16 autocast, fused AdamW (all but NCCL)."""
    script = tmp_path / "cuda_options.py"
    script.write_text(CUDA_OPTIONS)
    done = torchrun([str(script), str(tmp_path / "run")], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["world_size"] == 2 and result["val_acc"] >= 0.75
    assert sum(sum(row) for row in result["confusion_matrix"]) == 359
    assert set(load_file(Path(result["checkpoint"]) / "model.safetensors")) == set(build_model("lenet5").state_dict())


FAILING_RANK = textwrap.dedent("""
    import os
    from cnnlab.training import Callback, make_config, run

    class FailOnRankOne(Callback):
        def on_step(self, event):
            if os.environ["RANK"] == "1" and event.phase == "train" and event.step == 3:
                raise RuntimeError("rank 1 failed on purpose")

    run(make_config("scratch", "lenet5", "digits", epochs=3, device="cpu"), [FailOnRankOne()])
    print("finished", os.environ["RANK"], flush=True)
""")


def test_a_failing_rank_fails_the_run_instead_of_hanging(tmp_path):
    script = tmp_path / "failing_rank.py"
    script.write_text(FAILING_RANK)
    try:
        done = torchrun([str(script)], tmp_path, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the surviving rank hung after its peer failed")
    assert done.returncode != 0
    assert "rank 1 failed on purpose" in done.stderr
    assert "finished" not in done.stdout
