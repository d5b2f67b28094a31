"""Where cnnlab keeps its data: `$CNNLAB_HOME`, by default `~/.cnnlab`."""
from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """cnnlab's data directory (created on first use); override with the CNNLAB_HOME environment variable."""
    path = Path(os.environ.get("CNNLAB_HOME") or Path.home() / ".cnnlab").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
