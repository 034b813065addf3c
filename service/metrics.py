"""Prometheus metrics of ingest and the consumer.

The counters below live in the process that increments them (prometheus-client's default
registry). The consumer runs in its own process, so it also mirrors its numbers into Redis
(`modx:metrics:*`); `SharedMetrics` exports those from any process, e.g. the API's /metrics:

    from prometheus_client import REGISTRY
    REGISTRY.register(SharedMetrics(registry))
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("modx.metrics")

INGEST_ACCEPTED = Counter("modx_ingest_accepted_pairs", "Pairs produced to Kafka by the API")
INGEST_DUPLICATES = Counter("modx_ingest_duplicate_pairs", "Posted pairs answered 'duplicate' (not produced)")
INGEST_REJECTED = Counter("modx_ingest_rejected_requests", "Requests refused with a 4xx, by reason", ["reason"])
INGEST_PRODUCE_ERRORS = Counter("modx_ingest_produce_errors", "Requests that Kafka did not fully acknowledge")

CONSUMER_WRITTEN = Counter("modx_consumer_written_pairs", "Pairs fsynced into a phase buffer")
CONSUMER_DUPLICATES = Counter("modx_consumer_duplicate_pairs", "Messages dropped as already buffered")
CONSUMER_DLQ = Counter("modx_consumer_dlq_messages", "Messages sent to the dead-letter topic, by reason", ["reason"])
CONSUMER_LAG = Gauge("modx_consumer_lag", "Messages behind the partition's high watermark", ["partition"])
CONSUMER_WRITE_FAULT = Gauge(
    "modx_consumer_write_fault",
    "1 while the consumer cannot write its batch, by cause (ENOSPC, EROFS, EDQUOT, EIO, other)",
    ["reason"],
)
PHASES_SEALED = Counter("modx_phases_sealed", "Phases sealed, by reason", ["reason"])
PHASE_OPEN = Gauge("modx_phase_open", "Number of the open phase")
PHASE_FILL = Gauge("modx_phase_fill", "Pairs in the open phase")

TRAIN_LOSS = Gauge("modx_train_loss", "Loss of the trainer worker's last step")
TRAIN_STEP_SECONDS = Histogram(
    "modx_train_step_seconds", "Seconds per training step", buckets=(0.01, 0.03, 0.1, 0.3, 1, 3, 10)
)
SNAPSHOT_VERSION = Gauge("modx_snapshot_version", "Newest snapshot published by the trainer worker")
SNAPSHOTS_REJECTED = Counter("modx_snapshots_rejected", "Snapshots the promotion guard rejected")
INDEX_VERSION = Gauge("modx_index_version", "Snapshot version of the index being served")
INDEX_SIZE = Gauge("modx_index_size", "Vectors in the index being served")
SEARCH_LATENCY = Histogram(
    "modx_search_seconds", "Search latency (encode + search)", buckets=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1)
)


class SharedMetrics:
    """A prometheus collector for the counters other processes keep in Redis."""

    def __init__(self, registry):
        self.registry = registry

    def collect(self):
        try:
            counters = self.registry.counters()
        except Exception as e:  # Redis down: /metrics still answers
            log.warning("shared metrics unavailable: %s", e)
            return
        family = GaugeMetricFamily("modx_shared", "Counters shared across modx processes (Redis)", labels=["name"])
        for name, value in counters.items():
            family.add_metric([name], value)
        yield family
