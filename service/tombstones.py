"""Deleted pairs: a tombstone per id, written durably before the pair leaves search.

    tombstones.jsonl    one {"id", "deleted_at"} per line, appended under flock, fsynced

A tombstone is permanent: the id stays deleted. Every reader of the phase buffers that
feeds training, replay, indexing or search results (service.buffer's `live` readers, the
consumer, search) skips deleted ids; the raw readers (the writer's recovery, the registry's
known ids) still see them, so an id is never reused. Deleting removes the image bytes;
weights already trained on a pair cannot forget it (`trained_in` of GET /v1/pairs/{id}).

`deleted(data_dir)` is cheap enough for every search: one stat, and a re-read only when
the file changed.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Iterable

from trainer import layout
from trainer.atomic import fsync_dir

_cache: dict[Path, tuple[tuple[int, int], frozenset[str]]] = {}
_cache_lock = threading.Lock()


def _parse(data: bytes) -> frozenset[str]:
    """The ids on complete lines (a torn last line is a delete that was never acknowledged)."""
    ids = set()
    for line in data.split(b"\n")[:-1]:
        try:
            ids.add(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            continue
    return frozenset(ids)


def deleted(data_dir: str | Path) -> frozenset[str]:
    """Every deleted id."""
    path = layout.tombstones_file(data_dir)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return frozenset()
    stamp = (st.st_mtime_ns, st.st_size)
    with _cache_lock:
        hit = _cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    ids = _parse(path.read_bytes()[: st.st_size])
    with _cache_lock:
        _cache[path] = (stamp, ids)
    return ids


def delete(data_dir: str | Path, ids: Iterable[str], at: str) -> list[str]:
    """Tombstone `ids` (fsynced before this returns), then remove their images. Returns the
    ids that were not deleted before; deleting an id twice changes nothing."""
    path = layout.tombstones_file(data_dir)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # API replicas append to one file
        gone = deleted(data_dir)
        fresh = list(dict.fromkeys(i for i in ids if i not in gone))
        if fresh:
            lines = b"".join(json.dumps({"id": i, "deleted_at": at}).encode() + b"\n" for i in fresh)
            os.write(fd, lines)
            os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)
    for pair_id in fresh:
        layout.in_data(data_dir, layout.image_relpath(pair_id)).unlink(missing_ok=True)
    return fresh
