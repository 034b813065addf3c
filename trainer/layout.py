"""The data directory's layout: every path in it is built here, and nowhere else.

    data/                               MODX_DATA_DIR (disk holds the truth)
      images/<id[:2]>/<id>              image bytes as posted (written before the pair record)
      phases/.writer.lock               flock of the one consumer that writes phase buffers
      phases/<phase:06d>/               phases count from 1
        pairs.jsonl                     one pair record per line, appended + fsynced
        manifest.json                   written at seal: present <=> sealed
        status.json                     training / trained / retry / failed (the trainer worker)
      snapshots/v<snapshot:06d>/        a snapshot (trainer.snapshot), and beside its weights:
        recall.json, drift.json         its evaluation (the trainer worker)
        experts.npz                     accepted snapshots: its expert embeddings (trainer.experts)
        status.json                     accepted / rejected / superseded (service.status)
      snapshots/.tmp-*                  a snapshot being written (removed when the trainer starts)
      indexes/v<snapshot:06d>/          the gallery's images embedded by that snapshot (indexer.store)
        index.faiss, ids.json, index.json, segments/<n:06d>.npz
      indexes/text/v<snapshot:06d>/     the gallery's captions, same layout
      work/phase-<phase:06d>/           the trainer's mid-phase checkpoint
      serving.json                      the serving pointer {"snapshot", "index"} (service.status)
      tombstones.jsonl                  deleted pair ids, appended + fsynced (service.tombstones)
      keys.json, keys.json.lock         API keys and the flock of whoever changes them (service.keys)
      admin.key                         the admin secret `modx up` makes (mode 0600)
      logs/                             the roles' logs under `modx up` (unless MODX_LOG_DIR)

A snapshot directory is self-contained (it opens with plain open_clip wherever it lies), so
the names of the files inside it are here too, for trainer.snapshot to write and every
reader to find. Only the standard library is imported: every package may use this module.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

IMAGES, PHASES, SNAPSHOTS, INDEXES, WORK, LOGS = "images", "phases", "snapshots", "indexes", "work", "logs"
SERVING_FILE, KEYS_FILE, ADMIN_KEY_FILE = "serving.json", "keys.json", "admin.key"
TOMBSTONES_FILE = "tombstones.jsonl"
# in a phase directory
PAIRS_FILE, MANIFEST_FILE, STATUS_FILE, WRITER_LOCK = "pairs.jsonl", "manifest.json", "status.json", ".writer.lock"
# in a snapshot directory (STATUS_FILE too)
RECORD_FILE, FISHER_FILE, TRAINED_FILE = "snapshot.json", "fisher.safetensors", "trained.json"
RECALL_FILE, DRIFT_FILE, EXPERTS_FILE = "recall.json", "drift.json", "experts.npz"
# in an index directory
INDEX_FILE, IDS_FILE, META_FILE, SEGMENTS_DIR = "index.faiss", "ids.json", "index.json", "segments"
MODALITIES = ("image", "text")

PHASE_RE = re.compile(r"\d{6}")
SNAPSHOT_RE = re.compile(r"v(\d{6})")
SEGMENT_RE = re.compile(r"^(\d{6})\.npz$")
TEMP_PREFIX = ".tmp-"  # trainer.atomic's temporary names


def _numbers(directory: Path, pattern: re.Pattern) -> list[int]:
    """The numbers in the names of `directory`'s entries that match `pattern` (sorted)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = (pattern.fullmatch(n) for n in names)
    return sorted(int(m[m.lastindex or 0]) for m in found if m)


# ---------------------------------------------------------------- images and phases


def image_relpath(pair_id: str) -> str:
    """A pair's image, relative to the data directory (what its record's `image` says)."""
    return f"{IMAGES}/{pair_id[:2]}/{pair_id}"


def in_data(data_dir: str | Path, relpath: str) -> Path:
    """A path a record names relative to the data directory (a pair record's `image`)."""
    return Path(data_dir) / relpath


def phases_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / PHASES


def writer_lock(data_dir: str | Path) -> Path:
    return phases_dir(data_dir) / WRITER_LOCK


def phase_dir(data_dir: str | Path, phase: int) -> Path:
    return phases_dir(data_dir) / f"{phase:06d}"


def phase_numbers(data_dir: str | Path) -> list[int]:
    """Every phase that has a directory, sealed or not."""
    return _numbers(phases_dir(data_dir), PHASE_RE)


def pairs_file(data_dir: str | Path, phase: int) -> Path:
    return phase_dir(data_dir, phase) / PAIRS_FILE


def manifest_file(data_dir: str | Path, phase: int) -> Path:
    return phase_dir(data_dir, phase) / MANIFEST_FILE


def phase_status_file(data_dir: str | Path, phase: int) -> Path:
    return phase_dir(data_dir, phase) / STATUS_FILE


def work_dir(data_dir: str | Path, phase: int) -> Path:
    """Where the trainer keeps the mid-phase checkpoint of `phase`."""
    return Path(data_dir) / WORK / f"phase-{phase:06d}"


# ---------------------------------------------------------------- snapshots


def snapshot_name(snapshot: int) -> str:
    return f"v{snapshot:06d}"


def snapshots_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / SNAPSHOTS


def snapshot_dir(data_dir: str | Path, snapshot: int) -> Path:
    return snapshots_dir(data_dir) / snapshot_name(snapshot)


def snapshot_numbers(data_dir: str | Path) -> list[int]:
    """Every published snapshot (a complete directory: its record is inside)."""
    found = _numbers(snapshots_dir(data_dir), SNAPSHOT_RE)
    return [v for v in found if (snapshot_dir(data_dir, v) / RECORD_FILE).exists()]


def snapshot_temps(data_dir: str | Path) -> list[Path]:
    """Snapshot directories a killed trainer left half-written."""
    return sorted(snapshots_dir(data_dir).glob(TEMP_PREFIX + "*"))


def snapshot_status_file(data_dir: str | Path, snapshot: int) -> Path:
    return snapshot_dir(data_dir, snapshot) / STATUS_FILE


def recall_file(data_dir: str | Path, snapshot: int) -> Path:
    return snapshot_dir(data_dir, snapshot) / RECALL_FILE


def drift_file(data_dir: str | Path, snapshot: int) -> Path:
    return snapshot_dir(data_dir, snapshot) / DRIFT_FILE


def experts_file(data_dir: str | Path, snapshot: int) -> Path:
    return snapshot_dir(data_dir, snapshot) / EXPERTS_FILE


def record_file(data_dir: str | Path, snapshot: int) -> Path:
    return snapshot_dir(data_dir, snapshot) / RECORD_FILE


# ---------------------------------------------------------------- indexes and the serving pointer


def index_dir(data_dir: str | Path, snapshot: int, modality: str = "image") -> Path:
    """`indexes/v<snapshot:06d>` for the images, `indexes/text/v<snapshot:06d>` for the
    captions (image -> text search)."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, not {modality!r}")
    root = Path(data_dir) / INDEXES
    return (root if modality == "image" else root / "text") / snapshot_name(snapshot)


def image_index_numbers(data_dir: str | Path) -> list[int]:
    """The snapshots whose image index is published (its index.json is inside)."""
    found = _numbers(Path(data_dir) / INDEXES, SNAPSHOT_RE)
    return [v for v in found if (index_dir(data_dir, v) / META_FILE).exists()]


def segment_name(n: int) -> str:
    return f"{n:06d}.npz"


def serving_file(data_dir: str | Path) -> Path:
    return Path(data_dir) / SERVING_FILE


def tombstones_file(data_dir: str | Path) -> Path:
    return Path(data_dir) / TOMBSTONES_FILE


# ---------------------------------------------------------------- keys, logs, disk checks


def keys_file(data_dir: str | Path) -> Path:
    return Path(data_dir) / KEYS_FILE


def keys_lock(data_dir: str | Path) -> Path:
    return Path(data_dir) / (KEYS_FILE + ".lock")


def admin_key_file(data_dir: str | Path) -> Path:
    return Path(data_dir) / ADMIN_KEY_FILE


def logs_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / LOGS


def disk_check_file(data_dir: str | Path) -> Path:
    """A fresh name for the small file service.faults writes to see whether the disk takes writes."""
    return Path(data_dir) / f".probe-{uuid.uuid4().hex[:8]}"
