"""Prometheus metrics, one registry per role: each process exports only what it updates.

    API       the API's /metrics (admin key) and its metrics port: HTTP, ingest, search
    CONSUMER  the consumer's metrics port: written pairs, lag per partition, phase fill
    TRAINER   the trainer's metrics port: step time, loss, snapshots, recall per probe
    INDEXER   the indexer's metrics port: index size, rebuilds, segments

Every role serves its registry on `<role>_metrics_port` (`serve(role, settings)`; 0 = off;
a port already taken is logged, never fatal). Conventions: counters end in `_total`
(prometheus-client adds it), durations are `_seconds` histograms, sizes are counts of
things, and every label can be summed or averaged over (no label mixes kinds of value).
"""

from __future__ import annotations

import logging

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

log = logging.getLogger("modx.metrics")
disable_created_metrics()  # no `_created` series beside every counter

ROLES = ("api", "consumer", "trainer", "indexer")
REGISTRIES = {role: CollectorRegistry(auto_describe=True) for role in ROLES}
for _registry in REGISTRIES.values():
    for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        _registry.register(_collector)
API, CONSUMER, TRAINER, INDEXER = (REGISTRIES[role] for role in ROLES)
FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# the API
HTTP_REQUESTS = Counter(
    "modx_http_requests",
    "HTTP requests answered, by route template and status",
    ["method", "route", "status"],
    registry=API,
)
HTTP_SECONDS = Histogram(
    "modx_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=FAST,
    registry=API,
)
INGEST_ACCEPTED = Counter("modx_ingest_accepted_pairs", "Pairs produced to Kafka by the API", registry=API)
INGEST_DUPLICATES = Counter(
    "modx_ingest_duplicate_pairs", "Posted pairs answered 'duplicate' (not produced)", registry=API
)
INGEST_REJECTED = Counter(
    "modx_ingest_rejected_requests", "Requests refused with a 4xx, by reason", ["reason"], registry=API
)
INGEST_PRODUCE_ERRORS = Counter("modx_ingest_produce_errors", "Requests Kafka did not fully acknowledge", registry=API)
SEARCH_ENCODE_SECONDS = Histogram(
    "modx_search_encode_seconds", "Search: encoding the query", ["query"], buckets=FAST, registry=API
)
SEARCH_INDEX_SECONDS = Histogram(
    "modx_search_index_seconds", "Search: the index lookup (top-k, filter)", ["target"], buckets=FAST, registry=API
)
SERVING_SNAPSHOT = Gauge("modx_serving_snapshot", "Snapshot whose encoders answer this API's searches", registry=API)
SERVING_VECTORS = Gauge("modx_serving_index_vectors", "Vectors in the image index this API searches", registry=API)

# the consumer
CONSUMER_WRITTEN = Counter("modx_consumer_written_pairs", "Pairs fsynced into a phase buffer", registry=CONSUMER)
CONSUMER_DUPLICATES = Counter(
    "modx_consumer_duplicate_pairs", "Messages dropped as already buffered", registry=CONSUMER
)
CONSUMER_DLQ = Counter(
    "modx_consumer_dlq_messages", "Messages sent to the dead-letter topic, by reason", ["reason"], registry=CONSUMER
)
CONSUMER_LAG = Gauge(
    "modx_consumer_lag_messages", "Messages behind the partition's high watermark", ["partition"], registry=CONSUMER
)
CONSUMER_WRITE_FAULT = Gauge(
    "modx_consumer_write_fault",
    "1 while the consumer cannot write its batch, by cause (ENOSPC, EROFS, EDQUOT, EIO, other)",
    ["reason"],
    registry=CONSUMER,
)
PHASES_SEALED = Counter("modx_phases_sealed", "Phases sealed, by reason", ["reason"], registry=CONSUMER)
PHASE_OPEN = Gauge("modx_phase_open", "Number of the open phase", registry=CONSUMER)
PHASE_FILL = Gauge("modx_phase_fill_pairs", "Pairs in the open phase", registry=CONSUMER)

# the trainer
TRAIN_STEPS = Counter("modx_train_steps", "Training steps taken", registry=TRAINER)
TRAIN_LOSS = Gauge("modx_train_loss", "Loss of the last training step", registry=TRAINER)
TRAIN_STEP_SECONDS = Histogram(
    "modx_train_step_seconds",
    "Seconds per training step",
    buckets=(0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30),
    registry=TRAINER,
)
TRAIN_PHASE_SECONDS = Histogram(
    "modx_train_phase_seconds",
    "Seconds to train and evaluate one phase",
    buckets=(1, 3, 10, 30, 100, 300, 1000, 3000),
    registry=TRAINER,
)
SNAPSHOTS = Counter("modx_snapshots", "Snapshots published, by the guard's status", ["status"], registry=TRAINER)
SNAPSHOT_LATEST = Gauge("modx_snapshot_latest", "Newest snapshot published", registry=TRAINER)
SNAPSHOT_R1 = Gauge(
    "modx_snapshot_recall_r1",
    "R@1 of the newest snapshot on each phase's probe (direction i2t or t2i)",
    ["probe", "direction"],
    registry=TRAINER,
)

# the indexer
INDEX_SNAPSHOT = Gauge("modx_index_snapshot", "Snapshot that embedded the index being served", registry=INDEXER)
INDEX_VECTORS = Gauge("modx_index_vectors", "Vectors in the served index, by modality", ["modality"], registry=INDEXER)
INDEX_REBUILD_SECONDS = Histogram(
    "modx_index_rebuild_seconds",
    "Seconds to re-embed the gallery into a new snapshot's index",
    buckets=(0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000),
    registry=INDEXER,
)
INDEX_ADDED = Counter("modx_index_added_pairs", "Pairs embedded into segments between rebuilds", registry=INDEXER)


def set_recall(recall: dict) -> None:
    """The newest snapshot's R@1 per probe: `recall` = {probe: {"i2t": {"r1"}, "t2i": {"r1"}}}."""
    SNAPSHOT_R1.clear()
    for probe, both in recall.items():
        for direction in ("i2t", "t2i"):
            SNAPSHOT_R1.labels(str(probe), direction).set(both[direction]["r1"])


def serve(role: str, port: int, host: str = "0.0.0.0") -> bool:
    """Serve `role`'s registry at http://host:port/metrics (a daemon thread); False if off or taken."""
    if not port:
        return False
    try:
        start_http_server(port, addr=host, registry=REGISTRIES[role])
    except OSError as e:
        log.warning("%s metrics not served: port %d: %s", role, port, e)
        return False
    log.info("%s metrics on http://%s:%d/metrics", role, host, port)
    return True
