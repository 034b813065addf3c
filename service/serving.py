"""What the API serves: the snapshot and its indexes (images and captions) named by the
serving pointer, plus a catalog of each pair's text and metadata for search results.

A background thread follows the pointer: when it names another (snapshot, index), the
snapshot's encoders and its indexes are loaded and swapped in as one `Served` object
(`ServedHolder`); otherwise new segments of the current indexes are applied, so new pairs
become searchable.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from indexer.encoders import SnapshotEncoders
from indexer.index import Index
from indexer.store import apply_segments, load_index
from service import buffer, metrics, status
from service.faults import Backoff
from service.registry import Registry
from trainer.layout import index_dir, snapshot_dir

log = logging.getLogger("modx.serving")


@dataclass(frozen=True, eq=False)
class Served:
    """What answers a search: one snapshot's encoders and the indexes it embedded.

    `index` holds the gallery's images, `texts` (optional) their captions. Both were embedded
    by `encoders.snapshot`; an index embedded by another snapshot is refused (ValueError).
    """

    encoders: SnapshotEncoders
    index: Index
    texts: Index | None = None

    def __post_init__(self) -> None:
        for index in (self.index, self.texts):
            if index is not None and index.snapshot != self.snapshot:
                raise ValueError(
                    f"index embedded by snapshot {index.snapshot} cannot serve queries of snapshot {self.snapshot}"
                )

    @property
    def snapshot(self) -> int:
        return self.encoders.snapshot

    @classmethod
    def load(
        cls, snapshot: Path, images: Path, texts: Path | None = None, device: str = "cpu", index_device: str = "auto"
    ) -> "Served":
        """The snapshot saved in `snapshot` with the index directories it embedded."""
        encoders = SnapshotEncoders.load(snapshot, device)
        index = load_index(images, index_device)
        return cls(encoders, index, load_index(texts, index_device) if texts is not None else None)


class ServedHolder:
    """Thread-safe holder of what is served.

    Readers call `get()` once per request and use that one object for both encoding and
    searching; `swap()` replaces the single reference, so no request mixes snapshots.
    """

    def __init__(self, served: Served | None = None):
        self._lock = threading.Lock()
        self._served = served

    def get(self) -> Served:
        served = self._served  # one atomic reference read
        if served is None:
            raise LookupError("no index is being served yet")
        return served

    @property
    def ready(self) -> bool:
        return self._served is not None

    def swap(self, served: Served) -> Served | None:
        """Serve `served` from now on; returns what it replaced."""
        with self._lock:
            old, self._served = self._served, served
        return old


class Catalog:
    """id -> (text, metadata) and id -> phase of every live buffered pair, read incrementally."""

    def __init__(self, data_dir: Path):
        self.tail = buffer.PhaseTail(data_dir)
        self.entries: dict[str, tuple[str, dict]] = {}
        self.phases: dict[str, int] = {}

    def refresh(self) -> None:
        for phase, r in self.tail.new():
            self.entries[r.id] = (r.text, r.metadata)
            self.phases[r.id] = phase

    def get(self, pair_id: str) -> tuple[str, dict]:
        if pair_id not in self.entries:
            self.refresh()
        return self.entries.get(pair_id, ("", {}))

    def phase(self, pair_id: str) -> int | None:
        """The phase buffer holding `pair_id`, None if it is not buffered (yet)."""
        if pair_id not in self.phases:
            self.refresh()
        return self.phases.get(pair_id)

    def matching(self, wanted: dict) -> list[str]:
        """The buffered ids whose metadata has every key -> value of `wanted`."""
        self.refresh()
        return [pid for pid, (_, meta) in self.entries.items() if all(meta.get(k) == v for k, v in wanted.items())]


class ServingState:
    """The holder, kept in step with the serving pointer by `poll`, and the catalog."""

    def __init__(self, data_dir: Path, registry: Registry, device: str = "cpu", index_device: str = "auto"):
        self.data_dir, self.registry, self.device, self.index_device = Path(data_dir), registry, device, index_device
        self.holder = ServedHolder()
        self.catalog = Catalog(data_dir)

    def poll(self) -> None:
        """Repair the Redis cache if it was flushed or restarted, then `refresh`. Serving reads
        only the disk, so a Redis fault never stops what is served from being followed."""
        try:
            self.registry.ensure(self.data_dir)
        except redis.RedisError as e:
            log.warning("Redis cache not checked, Redis unavailable: %s", e)
        self.refresh()

    def refresh(self) -> None:
        """Follow the serving pointer on disk: load what it names, or apply new segments."""
        pointer = status.read_serving(self.data_dir)
        if not pointer or pointer.get("index") is None:
            return
        current = self.holder.get() if self.holder.ready else None
        if current is None or current.snapshot != pointer["snapshot"] or current.index.snapshot != pointer["index"]:
            served = Served.load(
                snapshot_dir(self.data_dir, pointer["snapshot"]),
                index_dir(self.data_dir, pointer["index"]),
                index_dir(self.data_dir, pointer["index"], "text"),
                self.device,
                self.index_device,
            )
            self.holder.swap(served)
            log.info(
                "serving snapshot %d with index %d (%d pairs)",
                served.snapshot,
                served.index.snapshot,
                served.index.size,
            )
        else:
            for index in (current.index, current.texts):
                if index is not None:
                    apply_segments(index)
        served = self.holder.get()
        metrics.SERVING_SNAPSHOT.set(served.snapshot)
        metrics.SERVING_VECTORS.set(served.index.size)
        self.catalog.refresh()

    def load_first(self, timeout_s: float = 30.0) -> None:
        """Load what the serving pointer names before the API takes requests (lifespan startup,
        which uvicorn runs before it listens), so a restarted API is refused, never answers 503,
        while it loads an index it has. A load that fails (an index being swapped, a data
        directory fault) is retried for up to `timeout_s`; after that the poller keeps trying."""
        backoff = Backoff(first_s=0.1, cap_s=2.0)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.poll()
                return
            except Exception:
                delay = backoff.next()
                if time.monotonic() + delay > deadline:
                    log.exception("could not load what is served yet; the poller keeps trying")
                    return
                log.warning("could not load what is served yet, retrying in %.1fs", delay, exc_info=True)
                time.sleep(delay)

    def run(self, stop: threading.Event, interval_s: float) -> None:
        while not stop.is_set():
            try:
                self.poll()
            except Exception:  # keep serving what was loaded last; say why in the log
                log.exception("could not refresh what is served")
            stop.wait(interval_s)
