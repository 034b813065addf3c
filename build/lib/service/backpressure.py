"""Write backpressure: refuse writes with 429 and Retry-After, before anything is produced,
while the consumer is too far behind or the data directory is nearly full.

Lag is measured from Kafka itself, so it stays true when the consumer has stopped:

    lag = sum over the topic's partitions of (end offset - the group's committed offset)

- committed offsets: OffsetFetch (`KafkaAdminClient.list_group_offsets`); a partition the
  group never committed counts from its first offset (ListOffsets EARLIEST).
- end offsets: the high watermark of a Fetch response, read by a group-less consumer that
  fetches from the last end it saw (so it reads at most one record batch per partition per
  measure). Not ListOffsets LATEST: Tansu answers it with the base offset of the last record
  batch plus one (37 records in one batch: 1, not 37; checked in tests/test_backpressure.py),
  while the Fetch high watermark is exact on Tansu and on Apache Kafka alike.

A measure is cached for `lag_cache_s`; the request that finds it expired refreshes it and
the others meanwhile use the previous one. When Kafka cannot be asked, the lag is unknown
and writes are not refused for it (the produce itself then fails with 503).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

from service.errors import api_error
from service.settings import Settings

log = logging.getLogger("modx.backpressure")


class KafkaLag:
    """The consumer group's lag on the topic, in messages, measured from the broker."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._admin: KafkaAdminClient | None = None
        self._probe: KafkaConsumer | None = None
        self._ends: dict[TopicPartition, int] = {}

    def _connect(self) -> None:
        timeout_ms = 5000
        common = dict(bootstrap_servers=self.settings.kafka_bootstrap, request_timeout_ms=timeout_ms)
        self._admin = self._admin or KafkaAdminClient(**common, bootstrap_timeout_ms=timeout_ms)
        if self._probe is None:
            self._probe = KafkaConsumer(
                **common,
                enable_auto_commit=False,
                group_id=None,
                auto_offset_reset="latest",
                fetch_max_wait_ms=10,
                max_partition_fetch_bytes=1,
                fetch_max_bytes=1,
            )

    def measure(self) -> int:
        """Messages the group has not committed yet; raises on any Kafka error."""
        self._connect()
        tps = [
            TopicPartition(self.settings.topic, p)
            for p in sorted(self._probe.partitions_for_topic(self.settings.topic) or ())
        ]
        if not tps:
            return 0
        committed = self._admin.list_group_offsets({self.settings.consumer_group: tps})[self.settings.consumer_group]
        ends = self._end_offsets(tps)
        missing = [tp for tp in tps if committed.get(tp) is None or committed[tp].offset < 0]
        first = self._probe.beginning_offsets(missing) if missing else {}
        return sum(max(0, ends[tp] - (first[tp] if tp in first else committed[tp].offset)) for tp in tps)

    def _end_offsets(self, tps: list[TopicPartition], timeout_s: float = 2.0) -> dict[TopicPartition, int]:
        """Each partition's high watermark from a fresh Fetch answer.

        Fetching from the last end seen answers at once with records when there are new ones,
        else with none after `fetch_max_wait_ms` (10 ms): one poll of 100 ms sees either.
        """
        probe = self._probe
        if set(probe.assignment()) != set(tps):
            probe.assign(tps)
            self._ends = {**probe.end_offsets(tps), **self._ends}  # a lower bound on Tansu: fetch from there
        for tp in tps:
            probe.seek(tp, self._ends.get(tp, 0))
        probe.poll(timeout_ms=100, max_records=1)
        deadline = time.monotonic() + timeout_s
        while any(probe.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
            probe.poll(timeout_ms=50, max_records=1)
        ends = {tp: probe.highwater(tp) for tp in tps}
        if any(v is None for v in ends.values()):
            raise TimeoutError(f"no fetch answer from {self.settings.kafka_bootstrap} within {timeout_s}s")
        self._ends = dict(ends)
        return ends

    def close(self) -> None:
        for client in (self._probe, self._admin):
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing a client of a broker that went away
                    pass
        self._probe = self._admin = None


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem holding `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


class WriteGate:
    """`check()` raises the 429 that a write must get now, or returns."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.lag = KafkaLag(settings)
        self._lock = threading.Lock()
        self._value: int | None = None
        self._at = float("-inf")

    def consumer_lag(self) -> int | None:
        """The cached lag, refreshed by the first caller after `lag_cache_s`; None: unknown."""
        if time.monotonic() - self._at < self.settings.lag_cache_s:
            return self._value
        if not self._lock.acquire(blocking=self._at == float("-inf")):  # another request is refreshing it
            return self._value
        try:
            self._value = self.lag.measure()
        except Exception as e:  # Kafka down or slow: unknown, and the produce will say so
            log.warning("consumer lag unknown: %r", e)
            self.lag.close()
            self._value = None
        finally:
            self._at = time.monotonic()
            self._lock.release()
        return self._value

    def check(self) -> None:
        s = self.settings
        retry = {"Retry-After": str(s.write_retry_after_s)}
        free = free_bytes(s.data_dir)
        if free < s.min_free_bytes:
            raise api_error(
                429,
                "low_disk_space",
                f"writes are paused: the data directory has {free} bytes free, "
                f"under min_free_bytes = {s.min_free_bytes} (MODX_MIN_FREE_BYTES); retry later",
                headers=retry,
                free_bytes=free,
            )
        if s.max_consumer_lag is None:
            return
        lag = self.consumer_lag()
        if lag is not None and lag > s.max_consumer_lag:
            raise api_error(
                429,
                "consumer_lagging",
                f"writes are paused: the consumer is {lag} messages behind, "
                f"over max_consumer_lag = {s.max_consumer_lag} (MODX_MAX_CONSUMER_LAG); retry later",
                headers=retry,
                lag=lag,
            )

    def close(self) -> None:
        self.lag.close()
