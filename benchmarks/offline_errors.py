"""How long an offline user waits for the error that says what to do, when something needs a download.

Goal: a few seconds at most (the issue's "offline without a local copy: a fast, clear error"). Measured for
torchvision's ResNet-18 weights (a reachability probe of download.pytorch.org, then the error) and for MNIST
and CIFAR-10 without a local copy. Usage: python benchmarks/offline_errors.py
"""
from __future__ import annotations

import tempfile
import time

from cnnlab.data import DatasetError, load_dataset
from cnnlab.weights import WeightsError, load_weights


def seconds_to_fail(attempt, error_type) -> tuple[float, str]:
    """Seconds until `attempt()` raises `error_type`, and the first 100 characters of its message."""
    started = time.perf_counter()
    try:
        attempt()
    except error_type as error:
        return time.perf_counter() - started, str(error)[:100]
    raise SystemExit(f"{attempt} did not fail: is this machine online?")


def main() -> None:
    with tempfile.TemporaryDirectory() as empty:
        cases = {
            "resnet18 torchvision weights": (lambda: load_weights("resnet18", "torchvision"), WeightsError),
            "mnist, no local copy": (lambda: load_dataset(f"mnist:{empty}"), DatasetError),
            "cifar10, no local copy": (lambda: load_dataset(f"cifar10:{empty}"), DatasetError),
        }
        for what, (attempt, error_type) in cases.items():
            seconds, message = seconds_to_fail(attempt, error_type)
            print(f"{what:30s} {seconds:6.2f} s  {message}")


if __name__ == "__main__":
    main()
