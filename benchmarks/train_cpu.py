"""The issue's CPU bars for the training engine, measured as a user runs them (the `cnnlab` CLI, offline).

1. lenet5, scratch, digits: val accuracy >= 97% in under 60 s.
2. tf_efficientnet_lite0 (shipped weights), extract + logreg, digits: >= 93% in under 2 minutes; the same
   run again reuses the cached features and takes seconds.
3. tf_efficientnet_lite0, finetune against scratch, digits, the same epochs: finetune is better. The CLI
   trains at the spec's 224x224; this bar uses the API at a smaller input (--size, default 96) to keep
   the two CPU runs to minutes.

Usage: python benchmarks/train_cpu.py [--only 1 2 3] [--size 96] [--epochs 3]
Prints one line per measurement and a JSON summary; wall times include starting Python.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cli_run(args: list[str], home: Path) -> tuple[dict, float]:
    """Run `python -m cnnlab train ... --json` and return its JSON result and the wall time."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cnnlab", "train", *args, "--json"], capture_output=True, text=True,
                          env={**os.environ, "CNNLAB_HOME": str(home)}, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"cnnlab train {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), wall


def bar_lenet(home: Path) -> dict:
    result, wall = cli_run(["--strategy", "scratch", "--arch", "lenet5", "--dataset", "digits", "--device", "cpu",
                            "--out", str(home / "lenet")], home)
    ok = result["val_acc"] >= 0.97 and wall < 60
    print(f"[1] lenet5 scratch digits ({len(result['epochs'])} epochs): val_acc {result['val_acc']:.4f}, "
          f"wall {wall:.1f}s (train {result['train_time_s']:.1f}s) -> {'PASS' if ok else 'FAIL'} (>=0.97, <60s)")
    return {"val_acc": result["val_acc"], "wall_s": wall, "train_time_s": result["train_time_s"], "pass": ok}


def bar_extract(home: Path) -> dict:
    args = ["--strategy", "extract", "--arch", "tf_efficientnet_lite0", "--dataset", "digits",
            "--classifier", "logreg", "--device", "cpu"]
    first, first_wall = cli_run(args + ["--out", str(home / "extract1")], home)
    second, second_wall = cli_run(args + ["--out", str(home / "extract2")], home)
    ok = first["val_acc"] >= 0.93 and first_wall < 120 and second["feature_cache"] == "hit" and second_wall < 20
    print(f"[2] lite0 extract+logreg digits @224: val_acc {first['val_acc']:.4f}, cold wall {first_wall:.1f}s "
          f"(cache {first['feature_cache']}); rerun wall {second_wall:.1f}s (cache {second['feature_cache']}) "
          f"-> {'PASS' if ok else 'FAIL'} (>=0.93, <120s, rerun cached in seconds)")
    return {"val_acc": first["val_acc"], "cold_wall_s": first_wall, "warm_wall_s": second_wall,
            "warm_cache": second["feature_cache"], "pass": ok}


def bar_finetune(home: Path, size: int, epochs: int) -> dict:
    from cnnlab.training import make_config, run

    os.environ["CNNLAB_HOME"] = str(home)
    results = {}
    for strategy in ("finetune", "scratch"):
        start = time.perf_counter()
        result = run(make_config(strategy, "tf_efficientnet_lite0", "digits", epochs=epochs, image_size=size,
                                 device="cpu"))
        results[strategy] = {"val_acc": result.val_acc, "wall_s": time.perf_counter() - start,
                             "params_trainable": result.params_trainable, "params_frozen": result.params_frozen}
    ok = results["finetune"]["val_acc"] > results["scratch"]["val_acc"]
    print(f"[3] lite0 digits @{size}, {epochs} epochs: finetune val_acc {results['finetune']['val_acc']:.4f} "
          f"({results['finetune']['wall_s']:.0f}s), scratch {results['scratch']['val_acc']:.4f} "
          f"({results['scratch']['wall_s']:.0f}s) -> {'PASS' if ok else 'FAIL'} (finetune beats scratch)")
    return {**results, "image_size": size, "epochs": epochs, "pass": ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=int, nargs="+", choices=[1, 2, 3], default=[1, 2, 3])
    parser.add_argument("--size", type=int, default=96, help="input size for bar 3")
    parser.add_argument("--epochs", type=int, default=3, help="epochs for bar 3")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"cpus: {os.cpu_count()}, load average: {load}")
    summary = {"cpus": os.cpu_count(), "load_average_1min": load}
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        if 1 in args.only:
            summary["lenet5_scratch"] = bar_lenet(home)
        if 2 in args.only:
            summary["lite0_extract_logreg"] = bar_extract(home)
        if 3 in args.only:
            summary["lite0_finetune_vs_scratch"] = bar_finetune(home, args.size, args.epochs)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
