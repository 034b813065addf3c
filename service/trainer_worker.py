"""The trainer worker: a loop over the sealed phases on disk.

It takes sealed phases in order; the parent is the newest snapshot the guard accepted
(service.status); it publishes snapshot t with its recall and drift (service.training), and
the guard marks it accepted or rejected, on disk. A phase whose training fails is retried
(service.retry). Redis is only a cache here: training goes on from disk while it is away.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from service import buffer, logs, metrics, status
from service.registry import Registry
from service.retry import PhaseRetries
from service.settings import Settings
from service.training import Outcome, ensure_clip0, train_and_evaluate
from trainer import layout
from trainer.atomic import read_json
from trainer.config import TrainConfig
from trainer.data import Pair

log = logging.getLogger("modx.workers")
CACHE_SYNC_S = 10.0  # how often the trainer compares the Redis cache with disk (TrainerWorker.check_cache)


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
        self.synced = float("-inf")  # when the cache was last compared with disk

    def tick(self) -> bool:
        """One step; True if it trained a phase (so the loop goes on at once)."""
        if not self.ready:
            bootstrap(self.s, self.registry)
            newest = newest_snapshot(self.s.data_dir)
            if newest is not None:
                report_snapshot(*newest)
            self.ready = True
        self.check_cache()
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

    def check_cache(self) -> None:
        """Rebuild a flushed Redis (one EXISTS, every tick); every CACHE_SYNC_S seconds rewrite
        the snapshot and sealed-phase entries that disagree with disk. That comparison reads
        every snapshot's and sealed phase's JSON files, too much for every idle tick (once a
        second), and repairs only cache updates that failed while Redis was away."""
        try:  # Redis away must not stop training from disk
            self.registry.ensure(self.s.data_dir)
            if time.monotonic() - self.synced >= CACHE_SYNC_S:
                status.sync(self.s.data_dir, self.registry)
                self.registry.sync_sealed(self.s.data_dir)
                self.synced = time.monotonic()
        except redis.RedisError as e:
            log.warning("Redis cache not checked: %s", e)


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
