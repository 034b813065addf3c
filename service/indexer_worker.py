"""The indexer worker: keeps the indexes in step with the serving snapshot and the gallery.

When a newer accepted snapshot exists (reindex=full) it re-embeds the whole gallery (images
and captions) and publishes its indexes, then flips the serving pointer to (snapshot, index)
at once; between snapshots it embeds new pairs with the serving snapshot into segments, so
they are searchable within seconds.
"""

from __future__ import annotations

import logging
import threading
import time

from indexer.encoders import SnapshotEncoders, SnapshotImageEncoder, SnapshotTextEncoder
from indexer.gallery import add_segment, reindex
from indexer.index import Index
from indexer.store import apply_segments, load_index
from service import buffer, logs, metrics, status
from service.registry import Registry
from service.settings import Settings
from trainer.layout import MODALITIES, index_dir, snapshot_dir

log = logging.getLogger("modx.workers")
BUILD_ORDER = ("text", "image")  # the caption index first: the image index's directory marks both built


class IndexerWorker:
    """Keeps indexes/v<snapshot> (images) and indexes/text/v<snapshot> (captions) in step
    with the serving snapshot and the gallery."""

    def __init__(self, s: Settings, registry: Registry):
        self.s, self.registry = s, registry
        self.version: int | None = None
        self.encoders: dict[str, SnapshotImageEncoder | SnapshotTextEncoder] = {}
        self.shards: dict[str, list] = {"image": [], "text": []}  # with `embed_devices`
        self.indexes: dict[str, Index] = {}
        self.tail = buffer.PhaseTail(s.data_dir)

    @property
    def index(self) -> Index | None:
        return self.indexes.get("image")

    def target(self) -> int | None:
        """The snapshot whose index should serve: the newest accepted one, or with
        `reindex = keep` the one already serving (its index and query encoder stay)."""
        if self.s.reindex == "keep":
            served = (status.read_serving(self.s.data_dir) or {}).get("index")
            if served is not None:
                return served
        return status.accepted(self.s.data_dir)

    def new_records(self) -> dict[str, list]:
        """The pairs written since the last call (open phase included) that the indexes do
        not hold yet, as (id, image bytes) and (id, caption) streams."""
        fresh = [r for _, r in self.tail.new() if r.id not in self.indexes.get("text", ())]
        return {
            "image": buffer.LiveImages(self.s.data_dir, fresh),
            "text": [(r.id, r.text) for r in fresh],
        }

    def load_encoders(self, version: int) -> None:
        """The snapshot's encoders on `device`, and with `embed_devices` one more pair per
        device for sharded re-embedding (`shards`)."""
        directory, batch = snapshot_dir(self.s.data_dir, version), self.s.embed_batch_size
        encoders = SnapshotEncoders.load(directory, self.s.device, batch)
        self.encoders = {"image": encoders.image, "text": encoders.text}
        per_device = [SnapshotEncoders.load(directory, d, batch) for d in self.s.embed_devices]
        self.shards = {"image": [e.image for e in per_device], "text": [e.text for e in per_device]}

    def rebuild(self, version: int) -> None:
        """Re-embed the whole gallery with `version` and publish its indexes, then serve them."""
        t0 = time.perf_counter()
        self.load_encoders(version)
        self.version, self.indexes = version, {}
        self.tail = buffer.PhaseTail(self.s.data_dir)  # the whole gallery, then what comes after it
        if all(index_dir(self.s.data_dir, version, m).exists() for m in MODALITIES):  # before a restart
            self.indexes = {m: load_index(index_dir(self.s.data_dir, version, m), "cpu") for m in MODALITIES}
            self.add_new()  # what came since
        else:
            records = self.new_records()
            for modality in BUILD_ORDER:
                self.indexes[modality] = reindex(
                    version,
                    records[modality],
                    self.shards[modality] or self.encoders[modality],
                    index_dir(self.s.data_dir, version, modality),
                    self.s.index_kind,
                    batch_size=self.s.embed_batch_size,
                    flat_max=self.s.index_flat_max,
                )
        status.set_serving(self.s.data_dir, self.registry, version, version)
        metrics.INDEX_REBUILD_SECONDS.observe(time.perf_counter() - t0)
        self.report()
        log.info("index v%d: %d pairs in %.1fs", version, self.index.size, time.perf_counter() - t0)

    def add_new(self) -> int:
        """Embed pairs that are not in the indexes yet with the serving snapshot (a segment each)."""
        records, added = self.new_records(), {}
        for modality in BUILD_ORDER:
            directory = index_dir(self.s.data_dir, self.version, modality)
            _, added[modality] = add_segment(
                directory,
                records[modality],
                self.encoders[modality],
                self.version,
                known=self.indexes[modality],
                batch_size=self.s.embed_batch_size,
            )
            if added[modality]:
                apply_segments(self.indexes[modality], directory)
        if any(added.values()):
            metrics.INDEX_ADDED.inc(added["image"])
            self.report()
        return added["image"]

    def report(self) -> None:
        metrics.INDEX_SNAPSHOT.set(self.version)
        for modality, index in self.indexes.items():
            metrics.INDEX_VECTORS.labels(modality).set(index.size)

    def tick(self) -> None:
        self.registry.ensure(self.s.data_dir)
        target = self.target()
        if target is None:  # the trainer worker has not published CLIP_0 yet
            return
        with logs.context(snapshot=target):  # on every record of the rebuild or the segment
            if self.version != target:
                self.rebuild(target)
            else:
                self.add_new()


def run_indexer(s: Settings, stop: threading.Event) -> None:
    registry = Registry.from_url(s.redis_url)
    worker = IndexerWorker(s, registry)
    while not stop.is_set():
        try:
            worker.tick()
        except Exception:  # e.g. a snapshot published but not readable yet: retry next tick
            log.exception("indexer tick failed; retrying")
        stop.wait(s.index_poll_s)
