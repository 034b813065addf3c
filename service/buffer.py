"""Phase buffers on disk: the consumer appends pairs, seals phases; workers read them.

    images/<id[:2]>/<id>            image bytes, written (atomically) before the record
    phases/<n:06d>/pairs.jsonl      one record per line, appended then fsynced
    phases/<n:06d>/manifest.json    written atomically at seal: present <=> sealed
    phases/<n:06d>/status.json      training / trained / retry / failed (the trainer worker)

(paths from trainer.layout)

Phases are numbered from 1. The open phase is the highest-numbered one without a
manifest; its directory is created with its first pair. Exactly one process writes (a
`service.writer.PhaseBuffer`, holding an exclusive lock); any number read with the
functions below, which only ever look at complete lines.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from service import tombstones
from service.image_check import sniff_content_type
from service.validation import ID_PATTERN, ValidPair
from trainer import layout
from trainer.atomic import read_json, write_json_atomic
from trainer.data import Pair
from trainer.layout import phase_numbers

log = logging.getLogger("modx.buffer")

STATUSES = ("open", "sealed", "training", "trained", "failed", "retry")


# ---------------------------------------------------------------- names and records


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


@dataclass(frozen=True)
class Record:
    """One line of pairs.jsonl."""

    id: str
    text: str
    split: str
    content_type: str
    image: str  # path relative to the data directory
    metadata: dict = field(default_factory=dict)
    partition: int | None = None
    offset: int | None = None
    received_at: str | None = None
    written_at: str | None = None

    def line(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    @classmethod
    def parse(cls, line: bytes) -> "Record":
        """The record on a complete line; ValueError/TypeError/KeyError when it is not one."""
        data = json.loads(line)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class BufferedPair(Pair):
    """A `trainer.data.Pair` read back from a phase buffer, with where it came from."""

    split: str = "train"
    phase: int = 0
    content_type: str = ""


@dataclass(frozen=True)
class Incoming:
    """A validated pair on its way into the buffer, with its Kafka position."""

    pair: ValidPair
    partition: int | None = None
    offset: int | None = None
    received_at: str | None = None


@dataclass
class PhaseInfo:
    phase: int
    status: str
    n_train: int
    n_probe: int
    opened: str | None = None
    sealed: str | None = None
    manifest: dict | None = None
    status_record: dict | None = None

    @property
    def n(self) -> int:
        return self.n_train + self.n_probe

    def to_dict(self) -> dict:
        extra = {k: v for k, v in (self.status_record or {}).items() if k not in ("phase", "status")}
        return {
            "phase": self.phase,
            "status": self.status,
            "n": self.n,
            "n_train": self.n_train,
            "n_probe": self.n_probe,
            "opened": self.opened,
            "sealed": self.sealed,
            "reason": (self.manifest or {}).get("reason"),
            **extra,
        }


# ---------------------------------------------------------------- readers


def read_manifest(data_dir: str | Path, phase: int) -> dict | None:
    return read_json(layout.manifest_file(data_dir, phase))


def complete_lines(data: bytes) -> Iterator[tuple[int, Record]]:
    """(end offset, record) of each valid line, stopping at the first torn or corrupt one."""
    start = 0
    while (end := data.find(b"\n", start)) >= 0:
        try:
            record = Record.parse(data[start:end])
        except (ValueError, TypeError, KeyError):
            return
        start = end + 1
        yield start, record


def read_records(data_dir: str | Path, phase: int) -> list[Record]:
    """The records of a phase; for a sealed phase exactly those its manifest counted."""
    path = layout.pairs_file(data_dir, phase)
    manifest = read_manifest(data_dir, phase)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    if manifest is not None:
        data = data[: manifest["bytes"]]
    return [r for _, r in complete_lines(data)]


def live_records(data_dir: str | Path, phase: int) -> list[Record]:
    """The records of a phase that are not deleted (service.tombstones): what training,
    replay, indexing and evaluation read."""
    gone = tombstones.deleted(data_dir)
    return [r for r in read_records(data_dir, phase) if r.id not in gone]


class PhaseTail:
    """Follows the phase buffers as they grow: `new()` returns the live records written
    since its last call, reading each file on from where it stopped (complete lines only),
    so following a large gallery costs what was added, not what is there."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.offsets: dict[int, int] = {}
        self.done: set[int] = set()  # sealed phases read to their manifest's end

    def new(self) -> list[tuple[int, Record]]:
        out = []
        for phase in phase_numbers(self.data_dir):
            if phase in self.done:
                continue
            manifest = read_manifest(self.data_dir, phase)  # before the data: its bytes are all there
            start = self.offsets.get(phase, 0)
            try:
                with open(layout.pairs_file(self.data_dir, phase), "rb") as f:
                    f.seek(start)
                    data = f.read(manifest["bytes"] - start if manifest else -1)
            except FileNotFoundError:
                continue
            end, gone = start, tombstones.deleted(self.data_dir)
            for line_end, record in complete_lines(data):
                if record.id not in gone:
                    out.append((phase, record))
                end = start + line_end
            self.offsets[phase] = end
            if manifest is not None and end >= manifest["bytes"]:
                self.done.add(phase)
        return out


def phase_info(data_dir: str | Path, phase: int) -> PhaseInfo:
    manifest = read_manifest(data_dir, phase)
    status = read_json(layout.phase_status_file(data_dir, phase))
    if manifest is not None:
        state = (status or {}).get("status", "sealed")
        return PhaseInfo(
            phase,
            state,
            manifest["n_train"],
            manifest["n_probe"],
            manifest.get("opened"),
            manifest.get("sealed"),
            manifest,
            status,
        )
    records = read_records(data_dir, phase)
    n_probe = sum(r.split == "probe" for r in records)
    opened = records[0].written_at if records else None
    return PhaseInfo(phase, "open", len(records) - n_probe, n_probe, opened)


def list_phases(data_dir: str | Path) -> list[PhaseInfo]:
    return [phase_info(data_dir, n) for n in phase_numbers(data_dir)]


def sealed_phases(data_dir: str | Path) -> list[int]:
    return [n for n in phase_numbers(data_dir) if read_manifest(data_dir, n) is not None]


def load_pair(data_dir: str | Path, record: Record, phase: int) -> BufferedPair:
    image = layout.in_data(data_dir, record.image).read_bytes()
    return BufferedPair(
        record.id,
        record.text,
        image,
        domain=f"phase-{phase:06d}",
        metadata=record.metadata,
        split=record.split,
        phase=phase,
        content_type=record.content_type,
    )


def iter_phase(data_dir: str | Path, phase: int, split: str | None = None) -> Iterator[BufferedPair]:
    """The live pairs of one phase (images loaded), optionally only one split."""
    for record in live_records(data_dir, phase):
        if split is None or record.split == split:
            try:
                yield load_pair(data_dir, record, phase)
            except FileNotFoundError:
                if record.id not in tombstones.deleted(data_dir):  # deleted while we read
                    raise


class LiveImages(Sequence):
    """(id, image bytes) of `records` as a sequence whose images are read only when taken: a
    slice is a stream (`live_images`), so sharded re-embedding never holds the gallery's bytes."""

    def __init__(self, data_dir: str | Path, records: Sequence[Record]):
        self.data_dir, self.records = data_dir, records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return live_images(self.data_dir, self.records[i])
        return next(live_images(self.data_dir, [self.records[i]]))


def live_images(data_dir: str | Path, records: Iterable[Record]) -> Iterator[tuple[str, bytes]]:
    """(id, image bytes) of each record, skipping pairs deleted since they were read."""
    for r in records:
        try:
            yield r.id, layout.in_data(data_dir, r.image).read_bytes()
        except FileNotFoundError:
            if r.id not in tombstones.deleted(data_dir):
                raise


def phase_pairs(data_dir: str | Path, phase: int, split: str | None = None) -> list[BufferedPair]:
    return list(iter_phase(data_dir, phase, split))


def iter_gallery(data_dir: str | Path, split: str | None = None) -> Iterator[BufferedPair]:
    """Every pair written so far, phase by phase, the open phase included."""
    for phase in phase_numbers(data_dir):
        yield from iter_phase(data_dir, phase, split)


def read_image(data_dir: str | Path, pair_id: str) -> tuple[bytes, str]:
    """(bytes, content type) of a pair's image; FileNotFoundError when there is none."""
    if not ID_PATTERN.fullmatch(pair_id) or pair_id.startswith("."):
        raise FileNotFoundError(f"no image for id {pair_id!r}")
    data = layout.in_data(data_dir, layout.image_relpath(pair_id)).read_bytes()
    return data, sniff_content_type(data) or "application/octet-stream"


def write_phase_status(data_dir: str | Path, phase: int, status: str, **extra) -> dict:
    """Record a sealed phase's training status (atomic); returns the record written."""
    if status not in STATUSES[2:]:
        raise ValueError(f"status must be one of {STATUSES[2:]}, got {status!r}")
    if read_manifest(data_dir, phase) is None:
        raise ValueError(f"phase {phase} is not sealed")
    record = {"phase": phase, "status": status, "updated": utc_now(), **extra}
    write_json_atomic(layout.phase_status_file(data_dir, phase), record)
    return record
