"""Durable file writes: fsync what was written, publish whole files and directories by rename.

Readers never see half a file: content goes to a hidden temp name in the same directory,
is fsynced, then `os.replace`d over the final name, and the directory is fsynced so the
rename itself survives a crash. Directories likewise: written under a hidden temp name
(`temp_dir`), then published whole (`publish_dir`). This module is the only place that
writes to a temp name and renames it.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


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


@contextmanager
def atomic_file(
    path: str | Path, *, exclusive: bool = False, sync: bool = True, sync_dir: bool = True
) -> Iterator[BinaryIO]:
    """A binary file that appears at `path` whole when the block exits cleanly, never otherwise.

    `exclusive=True` refuses to replace an existing `path` (FileExistsError; the file is
    published with a hard link, which fails if the name is taken). `sync=False` leaves the
    flush to the caller (e.g. one `syncfs` for a whole batch); until then a crash may lose
    the file, so nothing may refer to it before that flush.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def write_bytes_atomic(
    path: str | Path, data: bytes, *, exclusive: bool = False, sync: bool = True, sync_dir: bool = True
) -> None:
    """Publish `data` at `path` whole or not at all (options as `atomic_file`)."""
    with atomic_file(path, exclusive=exclusive, sync=sync, sync_dir=sync_dir) as f:
        f.write(data)


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


# --------------------------------------------------------------------------- directories


def temp_dir(final: str | Path) -> Path:
    """A new empty hidden directory beside `final` (parents created), to fill then publish."""
    final = Path(final)
    make_dirs(final.parent)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def publish_dir(tmp: Path, final: Path, *, replace: bool = False) -> Path:
    """Make the fully written directory `tmp` visible as `final`; returns `final`.

    Every file and directory under `tmp` is fsynced first. Without `replace` an existing
    `final` is refused (FileExistsError). With `replace` it is swapped atomically (Linux
    renameat2 RENAME_EXCHANGE), or, where the kernel can't, renamed aside first, which leaves
    at most a short moment with no directory (`being_published` tells a reader to wait).
    A reader sees either the old or the new directory, never a partial one.
    """
    tmp, final = Path(tmp), Path(final)
    _fsync_tree(tmp)
    if not final.exists():
        os.rename(tmp, final)
    elif not replace:
        raise FileExistsError(f"{final} already exists")
    elif _exchange(tmp, final):
        shutil.rmtree(tmp)  # now holds the old directory
    else:
        aside = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, aside)
        os.rename(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    fsync_dir(final.parent)
    return final


def being_published(final: str | Path) -> bool:
    """Whether a `publish_dir` of `final` may be under way (its temp or aside directory exists)."""
    final = Path(final)
    prefixes = (f".old-{final.name}-", f".tmp-{final.name}-")
    return final.parent.is_dir() and any(p.startswith(prefixes) for p in os.listdir(final.parent))


def _fsync_tree(root: Path) -> None:
    for top, dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(top, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(top)


@functools.cache
def _renameat2():
    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    fn = _renameat2()
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
