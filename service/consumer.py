"""The consumer: Kafka topic -> phase buffer, poison -> dead-letter topic.

One batch at a time: poll, validate every message (the API's validation), send the invalid
ones to the DLQ (and wait for its acks), append the valid ones to the phase buffer (fsync,
drop ids seen before), tell Redis, and only then commit the offsets. A crash anywhere
replays from the last commit, and the replay's repeats are dropped by id.

Between batches it seals the open phase when it is full or old, or when someone asked
(POST /v1/phases/seal puts a request in Redis).

    python -m service.consumer      # settings from MODX_* variables; SIGTERM stops it cleanly
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from contextlib import ExitStack
from typing import Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata

from service import metrics
from service.buffer import BufferLocked, Incoming, PhaseBuffer, phase_info
from service.ingest import ensure_topics, make_producer, max_message_bytes
from service.registry import Registry
from service.settings import Settings
from service.validation import Limits, PairError, ValidPair, validate_pair

log = logging.getLogger("modx.consumer")


def decode_message(key: bytes | None, value: bytes | None, limits: Limits) -> tuple[ValidPair, str | None]:
    """(pair, received_at) of a message, or PairError saying why it is poison."""
    if value is None:
        raise PairError(422, "empty_message", "message has no value")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, ValueError) as e:
        raise PairError(422, "invalid_json", f"message value is not JSON: {e}") from None
    pair = validate_pair(data, limits)
    if key is not None and key != pair.id.encode():
        raise PairError(422, "key_mismatch", f"message key {key[:80]!r} differs from pair id {pair.id!r}")
    return pair, data.get("received_at")


def dlq_headers(topic: str, partition: int, offset: int, error: PairError) -> list[tuple[str, bytes]]:
    reason, source = f"{error.error}: {error.message}", f"{topic}/{partition}/{offset}"
    return [("reason", reason.encode()), ("source", source.encode())]


def commit_offsets(messages: Sequence) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offset to commit per partition: one past the last message handled."""
    last: dict[TopicPartition, int] = {}
    for m in messages:
        tp = TopicPartition(m.topic, m.partition)
        last[tp] = max(last.get(tp, -1), m.offset)
    return {tp: OffsetAndMetadata(offset + 1, "", -1) for tp, offset in last.items()}


def make_consumer(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(
        settings.topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.consumer_max_records,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=max(100, settings.consumer_session_timeout_ms // 4),
        max_poll_interval_ms=settings.consumer_max_poll_interval_ms,
        max_partition_fetch_bytes=max(1 << 20, max_message_bytes(settings)),
    )


class PairConsumer:
    """The loop's steps, with every dependency passed in."""

    def __init__(self, settings: Settings, kafka: KafkaConsumer, dlq: KafkaProducer, buffer: PhaseBuffer,
                 registry: Registry):  # fmt: skip
        self.settings, self.kafka, self.dlq, self.buffer, self.registry = settings, kafka, dlq, buffer, registry
        self.limits = Limits.from_settings(settings)

    # -- one batch

    def handle(self, messages: Sequence) -> None:
        incoming, poison = [], []
        for m in messages:
            try:
                pair, received_at = decode_message(m.key, m.value, self.limits)
            except PairError as e:
                poison.append(self._send_to_dlq(m, e))
                continue
            incoming.append(Incoming(pair, m.partition, m.offset, received_at))
        self._wait_dlq(poison)
        result = self.buffer.append(incoming)
        sealed = [phase_info(self.buffer.data_dir, m["phase"]).to_dict() for m in result.sealed]
        self.registry.record_written([r.id for r in result.written], self.buffer.open_info().to_dict(), sealed)
        self._count(result, sealed)
        self._commit(messages)
        if result.duplicates:
            log.info("dropped %d repeated pair ids (replays or re-sends)", len(result.duplicates))

    def _send_to_dlq(self, m, error: PairError):
        log.warning("poison message %s/%d/%d to %s: %s", m.topic, m.partition, m.offset, self.settings.dlq_topic, error)
        metrics.CONSUMER_DLQ.labels(error.error).inc()
        headers = dlq_headers(m.topic, m.partition, m.offset, error)
        return self.dlq.send(self.settings.dlq_topic, key=m.key, value=m.value, headers=headers)

    def _wait_dlq(self, futures: list) -> None:
        """Every DLQ send acknowledged, or raise (and commit nothing)."""
        if futures:
            self.dlq.flush(timeout=self.settings.produce_timeout_s)
            for fut in futures:
                fut.get(timeout=self.settings.produce_timeout_s)
            self.registry.incr("consumer_dlq", len(futures))

    def _count(self, result, sealed: list[dict]) -> None:
        metrics.CONSUMER_WRITTEN.inc(len(result.written))
        metrics.CONSUMER_DUPLICATES.inc(len(result.duplicates))
        for record in sealed:
            metrics.PHASES_SEALED.labels(record["reason"]).inc()
        self.registry.add_counters({"consumer_written": len(result.written),
                                    "consumer_duplicates": len(result.duplicates),
                                    "phases_sealed": len(sealed)})  # fmt: skip

    def _commit(self, messages: Sequence) -> None:
        if not messages:
            return
        try:
            self.kafka.commit(commit_offsets(messages))
        except CommitFailedError as e:  # the group rebalanced: the new owner replays, ids dedupe
            log.warning("offset commit failed, batch will be replayed: %s", e)

    # -- between batches

    def seal(self, reason: str) -> dict | None:
        """Seal the open phase (manifest on disk), then register it in Redis; None if empty."""
        manifest = self.buffer.seal(reason)
        if manifest is None:
            return None
        record = phase_info(self.buffer.data_dir, manifest["phase"]).to_dict()
        self.registry.register_sealed(record, self.buffer.open_info().to_dict())
        metrics.PHASES_SEALED.labels(reason).inc()
        self.registry.incr("phases_sealed")
        return record

    def seal_if_due(self) -> None:
        reason = self.buffer.seal_due()
        if reason:
            self.seal(reason)

    def serve_seal_requests(self) -> None:
        for request_id in self.registry.take_seal_requests():
            record = self.seal("request")
            answer = {"sealed": record} if record else {"sealed": None, "reason": "the open phase is empty"}
            self.registry.answer_seal(request_id, answer)

    def report(self) -> None:
        lags = {}
        for tp in self.kafka.assignment():
            high, position = self.kafka.highwater(tp), self._position(tp)
            if high is not None and position is not None:
                lags[tp.partition] = max(0, high - position)
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(lags[tp.partition])
        metrics.PHASE_OPEN.set(self.buffer.phase)
        metrics.PHASE_FILL.set(self.buffer.n_open)
        pipe = {"consumer_lag": sum(lags.values()), "phase_open": self.buffer.phase, "phase_fill": self.buffer.n_open}
        for name, value in pipe.items():
            self.registry.set_gauge(name, value)

    def _position(self, tp: TopicPartition) -> int | None:
        try:
            return self.kafka.position(tp, timeout_ms=100)
        except Exception:  # not fetched yet
            return None

    # -- the loop

    def start(self) -> None:
        self.registry.rebuild_from_disk(self.buffer.data_dir)  # repairs a crash between disk and Redis
        self.seal_if_due()

    def step(self) -> int:
        s = self.settings
        self.registry.ensure(self.buffer.data_dir)  # a flushed or restarted Redis: rebuilt from disk
        polled = self.kafka.poll(timeout_ms=s.consumer_poll_ms, max_records=s.consumer_max_records)
        messages = [m for batch in polled.values() for m in batch]
        if messages:
            self.handle(messages)
        self.seal_if_due()
        self.serve_seal_requests()
        self.report()
        return len(messages)


def acquire_buffer(settings: Settings, stop: threading.Event, retry_s: float = 1.0) -> PhaseBuffer | None:
    """The phase buffers' writer. While another consumer holds the data directory's writer
    lock this one is a standby: it waits, and takes over when that one dies."""
    waiting = False
    while not stop.is_set():
        try:
            return PhaseBuffer.from_settings(settings)
        except BufferLocked as e:
            if not waiting:
                log.info("standby: %s; waiting for its lock", e)
                waiting = True
            stop.wait(retry_s)
    return None


def run(settings: Settings, stop: threading.Event) -> None:
    """Consume until `stop` is set; every resource is closed on the way out."""
    ensure_topics(settings.kafka_bootstrap, [settings.topic, settings.dlq_topic], settings.topic_partitions)
    buffer = acquire_buffer(settings, stop)
    if buffer is None:
        return
    with ExitStack() as stack:
        stack.enter_context(buffer)
        registry = Registry.from_url(settings.redis_url)
        stack.callback(registry.close)
        dlq = make_producer(settings)
        stack.callback(dlq.close, timeout=5)
        kafka = make_consumer(settings)
        stack.callback(kafka.close, autocommit=False)
        consumer = PairConsumer(settings, kafka, dlq, buffer, registry)
        consumer.start()
        log.info("consuming %s as %s into %s (open phase %d)", settings.topic, settings.consumer_group,
                 settings.data_dir, buffer.phase)  # fmt: skip
        while not stop.is_set():
            consumer.step()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(Settings(), stop)


if __name__ == "__main__":
    main()
