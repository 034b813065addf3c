"""The single writer of the phase buffers (service.buffer's layout): append, de-duplicate, seal.

    with PhaseBuffer.from_settings(settings) as buf:     # service.durable.BufferLocked if another writer holds it
        result = buf.append(batch)                        # every written record fsynced on return
        manifest = buf.seal("request", request="<id>")    # None when the open phase is empty

A write is all or nothing for the caller: the state in memory (known ids, counts) moves
only after the bytes are fsynced, and after any failure (a full or read-only disk) the
next call first re-reads the state from disk and cuts a torn tail, so a replay of the
failed batch writes exactly what is missing. No file stays open for writing between
calls, so the data directory can be remounted read-only under a running consumer (the
lock, the images and the appends: service.durable).
A record that cannot be serialised (e.g. a lone surrogate) is returned as poison, not raised.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from service import tombstones
from service.buffer import (
    Incoming,
    PhaseInfo,
    Record,
    complete_lines,
    epoch,
    read_manifest,
    read_records,
    utc_now,
)
from service.durable import append_lines, lock_writer, write_images
from service.settings import Settings
from trainer import layout
from trainer.atomic import make_dirs, write_json_atomic
from trainer.data import split_of
from trainer.layout import image_relpath, phase_numbers

log = logging.getLogger("modx.buffer")


@dataclass
class AppendResult:
    written: list[Record] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    sealed: list[dict] = field(default_factory=list)  # manifests of phases sealed on the way
    poison: list[tuple[Incoming, str]] = field(default_factory=list)  # (item, why it cannot be written)
    deleted: list[str] = field(default_factory=list)  # ids deleted while they were queued: not written


class PhaseBuffer:
    """The single writer of the phase buffers: append (fsynced, de-duplicated), seal."""

    def __init__(self, data_dir: str | Path, *, phase_size: int, phase_max_age_s: float, probe_fraction: float):
        self.data_dir = Path(data_dir)
        self.phase_size, self.phase_max_age_s, self.probe_fraction = phase_size, phase_max_age_s, probe_fraction
        make_dirs(layout.phases_dir(self.data_dir))
        self._lock_fd = lock_writer(self.data_dir)
        self._recover()

    @classmethod
    def from_settings(cls, s: Settings) -> "PhaseBuffer":
        return cls(
            s.data_dir, phase_size=s.phase_size, phase_max_age_s=s.phase_max_age_s, probe_fraction=s.probe_fraction
        )

    # -- lifecycle

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def __enter__(self) -> "PhaseBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _recover(self) -> None:
        """State from disk: known ids, requests already sealed, the highest offset written per
        partition; the open phase's torn tail cut off."""
        self.known: set[str] = set()
        self.high: dict[int, int] = {}
        self.requests: set[str] = set()
        numbers = phase_numbers(self.data_dir)
        for n in numbers:
            for r in read_records(self.data_dir, n):
                self.known.add(r.id)
                if r.partition is not None and r.offset is not None:
                    self.high[r.partition] = max(self.high.get(r.partition, -1), r.offset)
            request = (read_manifest(self.data_dir, n) or {}).get("request")
            if request:
                self.requests.add(request)
        last = numbers[-1] if numbers else 0
        if last and read_manifest(self.data_dir, last) is None:
            self.phase = last
            self._repair_tail()
        else:
            self.phase = last + 1
        self._count_open()
        self.dirty = False

    def _repair_tail(self) -> None:
        path = layout.pairs_file(self.data_dir, self.phase)
        if not path.exists():
            return
        data = path.read_bytes()
        good = max((end for end, _ in complete_lines(data)), default=0)
        if good < len(data):
            log.warning("phase %d: cutting %d bytes of a torn last record", self.phase, len(data) - good)
            with open(path, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())

    def _count_open(self) -> None:
        records = read_records(self.data_dir, self.phase)
        self.n_probe = sum(r.split == "probe" for r in records)
        self.n_train = len(records) - self.n_probe
        self.opened = records[0].written_at if records else None

    def _guarded(self, write):
        """Run a disk write; after a failure the next one starts from what disk holds."""
        if self.dirty:
            self._recover()
        try:
            return write()
        except BaseException:
            self.dirty = True
            raise

    # -- state

    @property
    def n_open(self) -> int:
        return self.n_train + self.n_probe

    def __contains__(self, pair_id: str) -> bool:
        return pair_id in self.known

    def open_info(self) -> PhaseInfo:
        return PhaseInfo(self.phase, "open", self.n_train, self.n_probe, self.opened)

    def seal_due(self, now: float | None = None) -> str | None:
        """'size' or 'age' when the open phase should be sealed now, else None."""
        if self.n_open >= self.phase_size:
            return "size"
        opened = epoch(self.opened)
        if opened is not None and (now or time.time()) - opened >= self.phase_max_age_s:
            return "age"
        return None

    def passed(self, partition: int, offset: int) -> bool:
        """Whether a record after `offset` of `partition` is already written (a replay)."""
        return self.high.get(partition, -1) > offset

    # -- append

    def append(self, batch: Sequence[Incoming]) -> AppendResult:
        """Write the new pairs of `batch` durably (images, then records, then fsync).

        Pairs whose id is already in any phase (or earlier in the batch) are dropped; pairs
        whose record cannot be serialised come back as `poison`. The open phase is sealed
        whenever it reaches `phase_size`. When this returns, every written record is on disk;
        when it raises, nothing of the batch counts as written."""
        return self._guarded(lambda: self._append(batch))

    def _append(self, batch: Sequence[Incoming]) -> AppendResult:
        result, fresh, seen, gone = AppendResult(), [], set(), tombstones.deleted(self.data_dir)
        for item in batch:
            if item.pair.id in self.known or item.pair.id in seen:
                result.duplicates.append(item.pair.id)
                continue
            if item.pair.id in gone:
                result.deleted.append(item.pair.id)
                continue
            try:
                record = self._record(item)
                line = record.line()
            except Exception as e:  # the message decoded, but its record cannot be written: poison
                result.poison.append((item, f"unwritable_record: {type(e).__name__}: {e}"))
                continue
            seen.add(item.pair.id)
            fresh.append((item, record, line))
        write_images(self.data_dir, [(item.pair.id, item.pair.image) for item, _, _ in fresh])
        while fresh:
            if self.n_open >= self.phase_size:  # full before this batch (e.g. a crash before its seal)
                result.sealed.append(self._seal("size", None))
            room = self.phase_size - self.n_open
            chunk, fresh = fresh[:room], fresh[room:]
            self._write_lines(chunk)
            result.written.extend(record for _, record, _ in chunk)
            if self.n_open >= self.phase_size:
                result.sealed.append(self._seal("size", None))
        self._drop_deleted_images(result.written)
        return result

    def _drop_deleted_images(self, written: Sequence[Record]) -> None:
        """A pair deleted while this batch was written: its tombstone is on disk, so the API
        removed the image before this write or this check sees the tombstone and removes it."""
        gone = tombstones.deleted(self.data_dir)
        for record in written:
            if record.id in gone:
                layout.in_data(self.data_dir, record.image).unlink(missing_ok=True)

    def _record(self, item: Incoming) -> Record:
        pair = item.pair
        return Record(
            pair.id,
            pair.text,
            split_of(pair.id, self.probe_fraction),
            pair.content_type,
            image_relpath(pair.id),
            pair.metadata,
            item.partition,
            item.offset,
            item.received_at,
            utc_now(),
        )

    def _write_lines(self, chunk: list[tuple[Incoming, Record, bytes]]) -> None:
        """Append the records to the open phase and fsync; only then count them."""
        append_lines(self.data_dir, self.phase, b"".join(line for _, _, line in chunk))
        for item, record, _ in chunk:
            self.known.add(record.id)
            if record.partition is not None and record.offset is not None:
                self.high[record.partition] = max(self.high.get(record.partition, -1), record.offset)
            if record.split == "probe":
                self.n_probe += 1
            else:
                self.n_train += 1
            self.opened = self.opened or record.written_at

    # -- seal

    def seal(self, reason: str = "request", request: str | None = None) -> dict | None:
        """Seal the open phase (manifest written atomically) and move on; None if it is empty.
        `request` is the seal request it answers (kept in the manifest)."""
        return self._guarded(lambda: self._seal(reason, request))

    def _seal(self, reason: str, request: str | None) -> dict | None:
        if self.n_open == 0:
            return None
        manifest = {
            "format": 1,
            "phase": self.phase,
            "n": self.n_open,
            "n_train": self.n_train,
            "n_probe": self.n_probe,
            "probe_fraction": self.probe_fraction,
            "opened": self.opened,
            "sealed": utc_now(),
            "reason": reason,
            "bytes": layout.pairs_file(self.data_dir, self.phase).stat().st_size,
            **({"request": request} if request else {}),
        }
        write_json_atomic(layout.manifest_file(self.data_dir, self.phase), manifest)
        log.info("sealed phase %d: %d train + %d probe pairs (%s)", self.phase, self.n_train, self.n_probe, reason)
        if request:
            self.requests.add(request)
        self.phase += 1
        self.n_train = self.n_probe = 0
        self.opened = None
        return manifest
