"""The trainer worker and the indexer worker: loops over what is on disk.

Trainer: takes sealed phases in order; parent = the newest snapshot the guard accepted;
publishes snapshot t with recall and drift; the guard marks it accepted or rejected
(service.status, on disk). A phase whose training fails is retried (service.retry).
Indexer: when a newer accepted snapshot exists (reindex=full) it re-embeds the whole
gallery and publishes its index, then flips the serving pointer to (snapshot, index) at
once; between snapshots it embeds new pairs with the serving snapshot into segments, so
they are searchable within seconds.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from indexer.encoders import SnapshotEncoders, SnapshotImageEncoder, SnapshotTextEncoder
from indexer.gallery import add_segment, reindex
from indexer.index import Index
from indexer.store import apply_segments, load_index
from service import buffer, logs, metrics, status
from service.registry import Registry
from service.retry import PhaseRetries
from service.settings import Settings
from service.training import Outcome, ensure_clip0, train_and_evaluate
from trainer import layout
from trainer.atomic import read_json
from trainer.config import TrainConfig
from trainer.data import Pair
from trainer.layout import MODALITIES, index_dir, snapshot_dir

log = logging.getLogger("modx.workers")
BUILD_ORDER = ("text", "image")  # the caption index first: the image index's directory marks both built


def train_config(s: Settings) -> TrainConfig:
    """The settings' recipe on this host's device and seed."""
    return s.recipe.with_(device=s.device, seed=s.seed)


class PhaseTrainPairs(Sequence):
    """A phase's train pairs, images read from disk only when a pair is indexed (replay)."""

    def __init__(self, data_dir: Path, phase: int):
        self.data_dir, self.phase = data_dir, phase
        self.records = [r for r in buffer.live_records(data_dir, phase) if r.split == "train"]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Pair:
        return buffer.load_pair(self.data_dir, self.records[i], self.phase)


def bootstrap(s: Settings, registry: Registry) -> None:
    """Snapshot 0 (CLIP_0) on disk, accepted; half-written snapshot directories of a killed
    run removed; statuses repaired and the cache in step with them."""
    for stale in layout.snapshot_temps(s.data_dir):
        shutil.rmtree(stale, ignore_errors=True)
    ensure_clip0(s.data_dir, s.model, s.pretrained, s.seed)
    status.repair(s.data_dir)
    if not layout.snapshot_status_file(s.data_dir, 0).exists():
        status.judge(s.data_dir, registry, 0, "accepted", "CLIP_0, the starting model")
    status.sync(s.data_dir, registry)


def next_phase(data_dir: Path) -> int | None:
    """The first sealed phase not trained yet (a 'training' one was cut short: resume it;
    a 'retry' one failed for a cause a retry may fix)."""
    for info in buffer.list_phases(data_dir):
        if info.status in ("sealed", "training", "retry"):
            return info.phase
    return None


def train_next(s: Settings, registry: Registry) -> Outcome | None:
    """Train the next phase; raises what training raised (TrainerWorker decides on retries)."""
    phase = next_phase(s.data_dir)
    if phase is None:
        return None
    parent = status.accepted(s.data_dir)
    if parent is None:
        raise RuntimeError("no accepted snapshot to train from (CLIP_0 missing)")
    gallery = (status.read_serving(s.data_dir) or {}).get("index")  # the snapshot that embedded the served index
    started = buffer.utc_now()
    registry.set_phase_status(s.data_dir, phase, "training", parent=parent, started=started)
    sealed = [n for n in buffer.sealed_phases(s.data_dir) if n <= phase]
    probes = {str(n): buffer.phase_pairs(s.data_dir, n, "probe") for n in sealed}
    past = [PhaseTrainPairs(s.data_dir, n) for n in sealed if n < phase]

    def on_step(info: dict) -> None:
        metrics.TRAIN_STEPS.inc()
        metrics.TRAIN_LOSS.set(info["loss"])
        metrics.TRAIN_STEP_SECONDS.observe(info["seconds"])

    t0 = time.perf_counter()
    with logs.context(phase=phase, snapshot=phase):
        log.info("training phase %d from snapshot %d", phase, parent)
        outcome = train_and_evaluate(
            s.data_dir,
            phase,
            buffer.phase_pairs(s.data_dir, phase, "train"),
            probes,
            train_config(s),
            parent,
            replay=past,
            max_drop=s.guard_max_drop,
            gallery=gallery,
            on_step=on_step,
        )
    status.judge(s.data_dir, registry, phase, outcome.status, outcome.reason)
    registry.set_phase_status(
        s.data_dir, phase, "trained", started=started, snapshot=phase, snapshot_status=outcome.status
    )
    metrics.TRAIN_PHASE_SECONDS.observe(time.perf_counter() - t0)
    metrics.SNAPSHOTS.labels(outcome.status).inc()
    report_snapshot(phase, outcome.recall)
    return outcome


def report_snapshot(version: int, recall: dict | None) -> None:
    """The newest snapshot and its R@1 per probe, as gauges (also after a restart, from disk)."""
    metrics.SNAPSHOT_LATEST.set(version)
    if recall:
        metrics.set_recall(recall)


def newest_snapshot(data_dir: Path) -> tuple[int, dict | None] | None:
    versions = layout.snapshot_numbers(data_dir)
    if not versions:
        return None
    recall = read_json(layout.recall_file(data_dir, versions[-1]))
    return versions[-1], (recall or {}).get("recall")


class TrainerWorker:
    """The trainer's loop body: keep the cache in step with disk, train the next phase,
    retry a failed one (service.retry)."""

    def __init__(self, s: Settings, registry: Registry):
        self.s, self.registry, self.retries = s, registry, PhaseRetries(s, registry)
        self.ready = False

    def tick(self) -> bool:
        """One step; True if it trained a phase (so the loop goes on at once)."""
        if not self.ready:
            bootstrap(self.s, self.registry)
            newest = newest_snapshot(self.s.data_dir)
            if newest is not None:
                report_snapshot(*newest)
            self.ready = True
        try:  # the cache: Redis away must not stop training from disk
            self.registry.ensure(self.s.data_dir)
            status.sync(self.s.data_dir, self.registry)
            self.registry.sync_sealed(self.s.data_dir)
        except redis.RedisError as e:
            log.warning("Redis cache not checked: %s", e)
        phase = next_phase(self.s.data_dir)
        if phase is None:
            return False
        waiting = self.retries.wait_reason(phase)
        if waiting is not None:
            log.debug("phase %d waits: %s", phase, waiting)
            return False
        try:
            train_next(self.s, self.registry)
        except Exception as e:  # a failed phase must not stop the worker
            log.exception("training phase %d failed", phase)
            self.retries.failed(phase, e)
            return False
        self.retries.succeeded(phase)
        return True


def run_trainer(s: Settings, stop: threading.Event) -> None:
    registry = Registry.from_url(s.redis_url)
    worker = TrainerWorker(s, registry)
    while not stop.is_set():
        try:
            busy = worker.tick()
        except Exception:  # Redis away, a disk fault outside training: the next tick tries again
            log.exception("trainer tick failed; retrying")
            busy = False
        if not busy:
            stop.wait(s.worker_poll_s)


class IndexerWorker:
    """Keeps indexes/v<snapshot> (images) and indexes/text/v<snapshot> (captions) in step
    with the serving snapshot and the gallery."""

    def __init__(self, s: Settings, registry: Registry):
        self.s, self.registry = s, registry
        self.version: int | None = None
        self.encoders: dict[str, SnapshotImageEncoder | SnapshotTextEncoder] = {}
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
            "image": buffer.live_images(self.s.data_dir, fresh),
            "text": [(r.id, r.text) for r in fresh],
        }

    def load_encoders(self, version: int) -> None:
        encoders = SnapshotEncoders.load(snapshot_dir(self.s.data_dir, version), self.s.device, self.s.embed_batch_size)
        self.encoders = {"image": encoders.image, "text": encoders.text}

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
                    self.encoders[modality],
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
