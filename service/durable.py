"""The phase writer's durable writes: the flock that makes it the only writer, a batch's
images (durable before any record names them) and its records (appended, then fsynced).

No file stays open for writing between calls (the lock file is opened read-only), so the
data directory can be remounted read-only under a running consumer.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Iterable

from trainer import layout
from trainer.atomic import fsync_dir, has_syncfs, make_dirs, syncfs, write_bytes_atomic


class BufferLocked(RuntimeError):
    """Another process is writing this data directory's phase buffers."""


def lock_writer(data_dir: Path) -> int:
    """An exclusive flock on `phases/.writer.lock` (its fd; closing it releases the lock),
    or BufferLocked at once if another process holds it."""
    path = layout.writer_lock(data_dir)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
    fd = os.open(path, os.O_RDONLY)  # not open for writing: a read-only remount stays possible
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BufferLocked(f"another process writes the phase buffers in {data_dir}") from None
    return fd


def write_images(data_dir: Path, images: Iterable[tuple[str, bytes]]) -> None:
    """Every (pair id, bytes) at its image path, durable on return: one syncfs for the whole
    batch where Linux has it, else an fsync per file and per directory."""
    one_sync, dirs = has_syncfs(), set()
    for pair_id, data in images:
        path = layout.in_data(data_dir, layout.image_relpath(pair_id))
        make_dirs(path.parent)
        write_bytes_atomic(path, data, sync=not one_sync, sync_dir=False)
        dirs.add(path.parent)
    if dirs and one_sync:
        syncfs(data_dir)
    else:
        for d in dirs:
            fsync_dir(d)


def append_lines(data_dir: Path, phase: int, data: bytes) -> None:
    """Append `data` to the phase's pairs.jsonl and fsync it (and its directory)."""
    directory = layout.phase_dir(data_dir, phase)
    make_dirs(directory)
    view = memoryview(data)
    fd = os.open(layout.pairs_file(data_dir, phase), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(directory)
