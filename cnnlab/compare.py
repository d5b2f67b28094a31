"""The comparison table behind the Compare page and `cnnlab models`: one plain dict per architecture."""
from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from cnnlab.paths import atomic_write_bytes, data_dir
from cnnlab.profiling import profile_arch
from cnnlab.registry import registry


def _rows_file() -> Path:
    """Where the measured rows are kept between processes, named by what they depend on: the library versions
    and cnnlab's registry and counting code (any change to either measures again)."""
    import timm
    import torch
    import torchvision

    digest = hashlib.sha256(f"{torch.__version__} {torchvision.__version__} {timm.__version__}".encode())
    for module in ("registry.py", "profiling.py", "compare.py"):
        digest.update((Path(__file__).parent / module).read_bytes())
    return data_dir() / "cache" / f"architectures-{digest.hexdigest()[:16]}.json"


@cache
def _architecture_rows() -> tuple[dict, ...]:
    path = _rows_file()
    try:
        return tuple(json.loads(path.read_text()))
    except (OSError, ValueError):  # not measured yet here, or a damaged file: measure again
        pass
    rows = _measure_rows()
    atomic_write_bytes(path, json.dumps(rows).encode())
    return tuple(rows)


def _measure_rows() -> list[dict]:
    """Profile every registered architecture on the meta device (seconds in all) for its row."""
    rows = []
    for spec in registry().values():
        profile = profile_arch(spec.name)
        accuracy = spec.accuracy
        rows.append({
            "name": spec.name,
            "title": spec.title,
            "family": spec.family,
            "year": spec.year,
            "params": profile.params,
            "macs": profile.macs,
            "gmacs": profile.macs / 1e9,
            "gflops": profile.flops / 1e9,
            "depth": profile.depth,
            "top1": accuracy.top1 if accuracy else None,
            "top5": accuracy.top5 if accuracy else None,
            "error": accuracy.error if accuracy else None,
            "accuracy_dataset": accuracy.dataset if accuracy else None,
            "accuracy_source": accuracy.source if accuracy else None,
            "input_size": list(spec.input_size),
            "size_mb": round(profile.size_mb, 2),
            "implementation": spec.source,
        })
    return rows


def architecture_rows() -> list[dict]:
    """Every registered architecture with its measured params, MACs, depth and published accuracy (measured once
    per installation and kept in cnnlab's data directory)."""
    return [dict(row) for row in _architecture_rows()]
