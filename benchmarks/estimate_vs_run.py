"""How close Launch's "Estimate time" comes to the real run: for each configuration, the estimate
(`cnnlab.latency.estimate_run`) and then the run itself (`cnnlab.training.run`) in this process, offline, on the CPU.

Usage: python benchmarks/estimate_vs_run.py [--only lenet extract finetune]
Prints one line per configuration: estimate, real training time (the run's train_time_s), and their ratio.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

CONFIGS = {
    "lenet": ("scratch", "lenet5", {"epochs": 15}),
    "extract": ("extract", "tf_efficientnet_lite0", {}),
    "svm": ("extract", "tf_efficientnet_lite0", {"classifier": "svm", "image_size": 96}),
    "finetune": ("finetune", "tf_efficientnet_lite0", {"epochs": 3, "image_size": 96}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args()
    os.environ["CNNLAB_HOME"] = tempfile.mkdtemp(prefix="cnnlab-estimate-")  # a cold feature cache
    from cnnlab.data import load_dataset
    from cnnlab.latency import estimate_run
    from cnnlab.training import make_config, run

    digits = load_dataset("digits")
    for name in args.only:
        strategy, arch, options = CONFIGS[name]
        config = make_config(strategy, arch, "digits", device="cpu", **options)
        started = time.perf_counter()
        estimate = estimate_run(config, digits)
        estimating = time.perf_counter() - started
        result = run(config)
        print(f"{name}: {arch} {strategy} {options or ''}: estimate {estimate.seconds:.1f} s (took {estimating:.1f} s "
              f"to make), run {result.train_time_s:.1f} s, ratio {estimate.seconds / result.train_time_s:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
