"""Index directories on disk: save and load whole, and the incremental segments beside them.

    indexes/v000003/  (trainer.layout.index_dir; indexes/text/v000003 for the captions)
      index.faiss     faiss.write_index of the CPU version of the index
      ids.json        position -> pair id
      index.json      {snapshot, size, kind, dim, created, params, segments_through}
      segments/       <n:06d>.npz incremental additions embedded by the same snapshot

A save writes a temp directory and publishes it over the old one in one atomic swap
(trainer.atomic.publish_dir); a segment is written once and never replaced. A load reads
every file of one published version, so a reader never mixes two.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterator, Sequence

import faiss
import numpy as np

from indexer.backends import as_matrix, place
from indexer.index import Index
from trainer.atomic import being_published, make_dirs, publish_dir, temp_dir, write_bytes_atomic
from trainer.layout import IDS_FILE, INDEX_FILE, META_FILE, SEGMENT_RE, SEGMENTS_DIR, segment_name

# --------------------------------------------------------------------------- save


def _write_file(path: Path, data: bytes) -> None:
    """Write one file of a directory being saved (publish_dir fsyncs it)."""
    path.write_bytes(data)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def save_index(index: Index, directory: str | Path) -> Path:
    """Write index.faiss, ids.json, index.json to `directory` atomically, replacing it.

    Segments already in an existing `directory` are carried over (hard links), so a
    rebuild never loses additions written meanwhile; re-applying them is a no-op (dedup).
    """
    final = Path(directory)
    tmp = temp_dir(final)
    try:
        blob, ids, meta = index.serialize()
        _write_file(tmp / INDEX_FILE, blob)
        _write_file(tmp / IDS_FILE, json.dumps(ids).encode())
        _write_file(tmp / META_FILE, json.dumps(meta, indent=1, sort_keys=True).encode())
        _carry_segments(final / SEGMENTS_DIR, tmp / SEGMENTS_DIR)
        publish_dir(tmp, final, replace=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    index.directory = final
    return final


def _carry_segments(src: Path, dst: Path) -> None:
    dst.mkdir()
    if src.is_dir():
        for f in src.iterdir():
            if SEGMENT_RE.match(f.name):
                _link_or_copy(f, dst / f.name)


# --------------------------------------------------------------------------- load


def _read_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def load_index(directory: str | Path, device: str = "auto", refresh: bool = True, wait_s: float = 5.0) -> Index:
    """Load an index directory with its segments (unless `refresh=False`).

    All files are read through one open directory handle, so they come from the same
    published version; if the directory was replaced before the read ended, it reads again.
    """
    directory = Path(directory)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            meta, blob, ids, segments = _read_version(directory, refresh)
            break
        except FileNotFoundError:
            # a save swapping the directory aside, or deleting the version we opened
            retry = (directory / META_FILE).exists() or being_published(directory)
            if not retry or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    cpu = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
    raw, backend = place(cpu, meta["kind"], device)
    index = Index(
        raw,
        ids,
        meta["snapshot"],
        meta["kind"],
        backend,
        meta.get("params", {}),
        directory,
        meta.get("segments_through", -1),
        meta.get("created", ""),
    )
    for n, data in segments:
        index.add_segment(n, *load_segment(io.BytesIO(data)))
    return index


def _read_version(directory: Path, with_segments: bool) -> tuple[dict, bytes, list[str], list[tuple[int, bytes]]]:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        meta = json.loads(_read_at(dfd, META_FILE))
        blob = _read_at(dfd, INDEX_FILE)
        ids = json.loads(_read_at(dfd, IDS_FILE))
        segments = _read_segments_at(dfd, meta.get("segments_through", -1)) if with_segments else []
        if os.stat(directory).st_ino != os.fstat(dfd).st_ino:
            # replaced while we read: its segments may have been half deleted; read again
            raise FileNotFoundError(f"{directory} was replaced while being read")
    finally:
        os.close(dfd)
    return meta, blob, ids, segments


def _read_segments_at(dfd: int, after: int) -> list[tuple[int, bytes]]:
    try:
        sfd = os.open(SEGMENTS_DIR, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dfd)
    except FileNotFoundError:
        return []  # saved before segments existed
    try:
        nums = sorted(int(m.group(1)) for f in os.listdir(sfd) if (m := SEGMENT_RE.match(f)))
        return [(n, _read_at(sfd, segment_name(n))) for n in nums if n > after]
    finally:
        os.close(sfd)


def apply_segments(index: Index, directory: str | Path | None = None) -> int:
    """Apply the segments of `directory` (default: the index's own) numbered above the
    index's `segments_through`; returns vectors added.

    Stops at a segment that vanishes mid-read (directory being replaced); the next
    call picks it up from the new directory.
    """
    if directory is None and index.directory is None:
        raise ValueError("this index has no directory to refresh from")
    directory = Path(directory or index.directory)
    added = 0
    for n, vectors, ids, snapshot in iter_segments(directory, after=index.segments_through):
        added += index.add_segment(n, vectors, ids, snapshot)
    return added


# --------------------------------------------------------------------------- segments


def segment_numbers(directory: str | Path) -> list[int]:
    try:
        names = os.listdir(Path(directory) / SEGMENTS_DIR)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for f in names if (m := SEGMENT_RE.match(f)))


def next_segment(directory: str | Path) -> int:
    nums = segment_numbers(directory)
    return nums[-1] + 1 if nums else 0


def save_segment(
    directory: str | Path, n: int, vectors: np.ndarray, ids: Sequence[str], snapshot: int | None = None
) -> Path:
    """Write `segments/<n:06d>.npz` atomically; an existing segment is never overwritten."""
    vectors = as_matrix(vectors)
    if len(vectors) != len(ids):
        raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
    seg = Path(directory) / SEGMENTS_DIR
    make_dirs(seg)
    final = seg / segment_name(n)
    buf = io.BytesIO()
    np.savez(
        buf,
        vectors=vectors,
        ids=np.array(list(ids), dtype=str),
        snapshot=np.int64(-1 if snapshot is None else snapshot),
    )
    write_bytes_atomic(final, buf.getvalue(), exclusive=True)  # segments are immutable
    return final


def load_segment(source: str | Path | io.BytesIO) -> tuple[np.ndarray, list[str], int | None]:
    """(vectors, ids, snapshot or None) of one segment file."""
    with np.load(source, allow_pickle=False) as z:
        snap = int(z["snapshot"])
        return z["vectors"].astype(np.float32), [str(s) for s in z["ids"]], (None if snap < 0 else snap)


def iter_segments(directory: str | Path, after: int = -1) -> Iterator[tuple[int, np.ndarray, list[str], int | None]]:
    """(n, vectors, ids, snapshot) for each segment numbered above `after`, in order.

    Ends early if a segment vanishes (the directory was replaced while reading).
    """
    for n in segment_numbers(directory):
        if n > after:
            try:
                yield n, *load_segment(Path(directory) / SEGMENTS_DIR / segment_name(n))
            except FileNotFoundError:
                return
