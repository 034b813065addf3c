"""Snapshot status and the serving pointer: disk holds them, Redis only caches them.

    snapshots/v<N:06d>/status.json   {"snapshot", "status": accepted|rejected|superseded, "reason", "updated"}
    serving.json                     {"snapshot", "index"}: the serving pointer (the indexer sets it)

(paths from trainer.layout)

Every role reads and writes them through this module. A write goes to disk first (atomic:
temp + fsync + rename), then to the Redis cache (`modx:snapshots`, `modx:serving`);
`sync` repairs the cache wherever it disagrees with disk. Decisions (the parent of the
next phase, the indexer's target) are taken from disk, never from the cache.

A snapshot is `accepted` when the promotion guard let it through (snapshot 0, CLIP_0, is
accepted when it is made), `rejected` when the guard refused it, and `superseded` once a
newer snapshot was accepted. The newest accepted snapshot is the parent of the next phase.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from service.cache import update_cache
from trainer import layout
from trainer.atomic import read_json, write_json_atomic

log = logging.getLogger("modx.status")

STATUSES = ("accepted", "rejected", "superseded")
SUMMARY_FIELDS = ("parent", "phase", "method", "created", "model", "recipe", "train")


# ---------------------------------------------------------------- snapshot status


def read_status(data_dir: str | Path, version: int) -> dict | None:
    """The status record of one snapshot, or None while it has none (trained, not judged yet).

    Data directories made before status.json carry the guard's verdict in recall.json
    (`serving` then meant accepted); CLIP_0 without a record is accepted.
    """
    record = read_json(layout.snapshot_status_file(data_dir, version))
    if record is not None:
        return record
    guard = read_json(layout.recall_file(data_dir, version)) or {}
    legacy = {"serving": "accepted"}.get(guard.get("status"), guard.get("status"))
    if legacy in STATUSES:
        return {"snapshot": version, "status": legacy, "reason": guard.get("reason", "")}
    if version == 0 and layout.record_file(data_dir, version).exists():
        return {"snapshot": 0, "status": "accepted", "reason": "CLIP_0, the starting model"}
    return None


def write_status(data_dir: str | Path, version: int, status: str, reason: str = "") -> dict:
    """status.json of one snapshot, atomically; returns the record written."""
    if status not in STATUSES:
        raise ValueError(f"snapshot status must be one of {STATUSES}, got {status!r}")
    record = {
        "snapshot": version,
        "status": status,
        "reason": reason,
        "updated": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }
    write_json_atomic(layout.snapshot_status_file(data_dir, version), record)
    return record


def summary(data_dir: str | Path, version: int) -> dict:
    """What /v1/snapshots shows of one snapshot: its record's fields, the recall summary, the status."""
    record = read_json(layout.record_file(data_dir, version)) or {}
    out = {"snapshot": version, **{k: record.get(k) for k in SUMMARY_FIELDS}}
    recall = read_json(layout.recall_file(data_dir, version))
    if recall is not None:
        out["recall"] = {"mean_r1_old": recall.get("mean_r1_old"), "mean_r1_all": recall.get("mean_r1_all")}
    status = read_status(data_dir, version)
    if status is not None:
        out.update(status=status["status"], reason=status.get("reason", ""))
    return out


def disk_snapshots(data_dir: str | Path) -> dict[int, dict]:
    return {v: summary(data_dir, v) for v in layout.snapshot_numbers(data_dir)}


def accepted(data_dir: str | Path) -> int | None:
    """The newest accepted snapshot: the parent of the next phase; None before CLIP_0."""
    ok = [v for v in layout.snapshot_numbers(data_dir) if (read_status(data_dir, v) or {}).get("status") == "accepted"]
    return max(ok, default=None)


def judge(data_dir: str | Path, registry, version: int, status: str, reason: str = "") -> None:
    """Record the guard's verdict on `version`. Accepting it supersedes every older accepted
    snapshot (after the new status is on disk, so a crash between leaves the newest one the parent)."""
    write_status(data_dir, version, status, reason)
    if status == "accepted":
        for older in layout.snapshot_numbers(data_dir):
            if older < version and (read_status(data_dir, older) or {}).get("status") == "accepted":
                write_status(data_dir, older, "superseded", f"snapshot {version} accepted")
    update_cache(lambda: sync(data_dir, registry))


def repair(data_dir: str | Path) -> list[int]:
    """Only the newest accepted snapshot stays accepted (a crash inside `judge` can leave two);
    older ones without status.json get one. Returns the versions rewritten."""
    newest, fixed = accepted(data_dir), []
    for version in layout.snapshot_numbers(data_dir):
        record = read_status(data_dir, version)
        if record is None:
            continue
        if record["status"] == "accepted" and newest is not None and version < newest:
            write_status(data_dir, version, "superseded", f"snapshot {newest} accepted")
            fixed.append(version)
        elif not layout.snapshot_status_file(data_dir, version).exists():
            write_status(data_dir, version, record["status"], record.get("reason", ""))
            fixed.append(version)
    return fixed


# ---------------------------------------------------------------- the serving pointer


def read_serving(data_dir: str | Path) -> dict | None:
    """serving.json, or for a data directory without one: the newest accepted snapshot and
    the newest published index (None before any index)."""
    saved = read_json(layout.serving_file(data_dir))
    if saved is not None:
        return {"snapshot": saved["snapshot"], "index": saved.get("index")}
    indexes = layout.image_index_numbers(data_dir)
    version = accepted(data_dir)
    if version is None or not indexes:
        return None
    return {"snapshot": version, "index": indexes[-1]}


def set_serving(data_dir: str | Path, registry, snapshot: int, index: int | None) -> dict:
    """Point serving at (snapshot, index): serving.json first, then the cache."""
    pointer = {"snapshot": snapshot, "index": index}
    write_json_atomic(layout.serving_file(data_dir), pointer)
    update_cache(lambda: registry.cache_serving(pointer))
    return pointer


# ---------------------------------------------------------------- the cache


def sync(data_dir: str | Path, registry) -> bool:
    """Make the Redis cache say what disk says (snapshots and pointer); True if it differed."""
    disk, cached = disk_snapshots(data_dir), registry.snapshots()
    stale = {v: rec for v, rec in disk.items() if cached.get(v) != rec}
    gone = [v for v in cached if v not in disk]
    pointer = read_serving(data_dir)
    moved = pointer is not None and registry.serving() != pointer
    if stale or gone or moved:
        registry.cache_snapshots(stale, gone, pointer if moved else None)
        log.info("Redis cache repaired from disk: snapshots %s, dropped %s, pointer %s", sorted(stale), gone, moved)
    return bool(stale or gone or moved)
