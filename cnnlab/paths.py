"""Where cnnlab keeps its data (`$CNNLAB_HOME`, by default `~/.cnnlab`) and how it writes there safely."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

FILE_MODE = 0o644


class DataDirError(OSError):
    """cnnlab's data directory cannot be created or is not a folder; the message says which and what to do."""


def data_dir() -> Path:
    """cnnlab's data directory (created on first use); override with the CNNLAB_HOME environment variable.
    DataDirError when it cannot be a folder (a file of that name, no permission)."""
    path = Path(os.environ.get("CNNLAB_HOME") or Path.home() / ".cnnlab").expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        why = "is a file, not a folder" if path.is_file() else f"cannot be created: {error.strerror or error}"
        raise DataDirError(f"cnnlab's data directory {path} {why}; set CNNLAB_HOME to another folder") from None
    return path


def keep_upload(data: bytes, folder: str, suffix: str, name: str | None = None) -> Path:
    """Keep uploaded bytes in `data_dir()/folder`, named by their SHA-256 (the same upload is stored once), or
    with `name`, under a folder so named: `folder/<sha>/<name>` keeps the file name the user knows it by.
    Written to a temporary name first so a half-written file never takes the real name; returns the path."""
    import hashlib
    import re

    digest = hashlib.sha256(data).hexdigest()[:20]
    target = data_dir() / folder
    if name is not None:
        stem = re.sub(r"[^\w.() -]+", "_", Path(name).stem).strip(" ._") or "upload"
        target, file_name = target / digest, f"{stem[:80]}{suffix}"
    else:
        file_name = f"{digest}{suffix}"
    target.mkdir(parents=True, exist_ok=True)
    path = target / file_name
    if not path.is_file():
        atomic_write_bytes(path, data)
    return path


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` all-or-nothing: a temporary file beside it, fsync, rename, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
