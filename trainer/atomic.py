"""Durable file writes: fsync what was written, publish whole files by rename.

Readers never see half a file: content goes to a hidden temp name in the same directory,
is fsynced, then `os.replace`d over the final name, and the directory is fsynced so the
rename itself survives a crash.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import uuid
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """mkdir -p that fsyncs every parent whose entry it created."""
    path = Path(path)
    if path.is_dir():
        return
    make_dirs(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return
    fsync_dir(path.parent)


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def write_bytes_atomic(path: str | Path, data: bytes, *, sync: bool = True, sync_dir: bool = True) -> None:
    """Publish `data` at `path` whole or not at all.

    `sync=False` leaves the flush to the caller (e.g. one `syncfs` for a whole batch);
    until then a crash may lose the file, so nothing may refer to it before that flush.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


@functools.cache
def _libc_syncfs():
    return getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)


def has_syncfs() -> bool:
    return _libc_syncfs() is not None


def syncfs(path: str | Path) -> None:
    """Flush every written file and rename on the filesystem holding `path` in one call
    (Linux syncfs; check `has_syncfs()` first)."""
    fn = _libc_syncfs()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if fn(fd) != 0:
            raise OSError(ctypes.get_errno(), f"syncfs({path}) failed")
    finally:
        os.close(fd)


def write_json_atomic(path: str | Path, data: dict) -> None:
    write_bytes_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode())


def read_json(path: str | Path) -> dict | None:
    """The JSON at `path`, or None when there is no such file."""
    try:
        return json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        return None
