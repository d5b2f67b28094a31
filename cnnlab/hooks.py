"""Forward hooks that never stay behind: attach them for one `with` block, removed on the way out, error or not."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

from torch import nn


@contextmanager
def forward_hooks(pairs: Iterable[tuple[nn.Module, Callable]], pre: bool = False) -> Iterator[None]:
    """Register each `(module, hook)` as a forward hook (a forward pre-hook with `pre`) while inside the block;
    all are removed after it."""
    handles = []
    try:
        for module, hook in pairs:
            handles.append(module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
