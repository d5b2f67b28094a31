"""The comparison table behind the Compare page and `cnnlab models`: one plain dict per architecture."""
from __future__ import annotations

from functools import cache

from cnnlab.profiling import profile_arch
from cnnlab.registry import registry


@cache
def _architecture_rows() -> tuple[dict, ...]:
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
            "size_mb": round(profile.size_mb, 1),
            "implementation": spec.source,
        })
    return tuple(rows)


def architecture_rows() -> list[dict]:
    """Every registered architecture with its measured params, MACs, depth and published accuracy."""
    return [dict(row) for row in _architecture_rows()]
