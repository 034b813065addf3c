"""The consumer: Kafka topic -> phase buffer, poison -> dead-letter topic.

One batch at a time: poll, decode every message (service.messages: the API's validation),
write the valid ones to the phase buffer (fsync, drop ids seen before), send what cannot be
decoded or written to the DLQ with the reason (service.dlq; and wait for its acks), tell
Redis, and only then commit the offsets. A crash anywhere replays from the last commit; repeats drop by id.

A seal request is a marker in the topic (service.ingest.produce_seal): the consumer seals
when it reaches it, so every pair acknowledged before the request is in the sealed phase.
Between batches it also seals the open phase when it is full or old.

When a batch cannot be written (a full or read-only disk, any error) nothing of it is
committed: the consumer seeks back to the batch's first offsets, pauses its partitions and
keeps polling (so it keeps its place in the group), says why in `modx:fault:consumer` and
the `modx_consumer_write_fault` gauge, and tries again with backoff (service.write_fault).
It never crash-loops.

    python -m service.consumer      # settings from MODX_* variables; SIGTERM stops it cleanly
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import ExitStack
from typing import Sequence

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError

from service import faults, metrics
from service.buffer import Incoming, phase_info
from service.cache import update_cache
from service.dlq import DeadLetters
from service.durable import BufferLocked
from service.ingest import ensure_topics, make_producer, seal_request
from service.limits import Limits, PairError
from service.messages import commit_offsets, decode_message, first_offsets, make_consumer
from service.registry import Registry
from service.settings import Settings
from service.write_fault import WriteFault
from service.writer import PhaseBuffer

log = logging.getLogger("modx.consumer")


class PairConsumer:
    """The loop's steps, with every dependency passed in."""

    def __init__(
        self, settings: Settings, kafka: KafkaConsumer, dlq: KafkaProducer, buffer: PhaseBuffer, registry: Registry
    ):
        self.settings, self.kafka, self.buffer, self.registry = settings, kafka, buffer, registry
        self.dlq = DeadLetters(settings, dlq)
        self.limits = Limits.from_settings(settings)
        self.seals: dict[str, dict[int, int]] = {}  # request id -> partition -> marker offset (seen so far)
        self.fault = WriteFault(settings, registry, buffer.data_dir)
        self.redis_stale = False

    # -- one batch

    def handle(self, messages: Sequence) -> None:
        """Write a batch; seal where its markers say; commit. Raises with nothing committed."""
        segment: list = []
        for m in messages:
            request = seal_request(m.headers, m.value)
            if request is None:
                segment.append(m)
                continue
            self._write(segment)
            segment = []
            self._seal_marker(m, request)
        self._write(segment)
        self._commit(messages)

    def _write(self, messages: Sequence) -> None:
        if not messages:
            return
        incoming, poison, by_pos = [], [], {}
        for m in messages:
            by_pos[(m.partition, m.offset)] = m
            try:
                pair, received_at = decode_message(m.key, m.value, self.limits)
            except PairError as e:
                poison.append(self.dlq.send(m, f"{e.error}: {e.message}", e.error))
                continue
            incoming.append(Incoming(pair, m.partition, m.offset, received_at))
        result = self.buffer.append(incoming)
        for item, reason in result.poison:
            poison.append(self.dlq.send(by_pos[(item.partition, item.offset)], reason, "unwritable_record"))
        self.dlq.wait(poison)
        sealed = [phase_info(self.buffer.data_dir, m["phase"]).to_dict() for m in result.sealed]
        self._tell_redis(
            lambda: self.registry.record_written(
                [r.id for r in result.written], self.buffer.open_info().to_dict(), sealed
            )
        )
        self._count(result, sealed)
        if result.duplicates:
            log.info("dropped %d repeated pair ids (replays or re-sends)", len(result.duplicates))

    def _count(self, result, sealed: list[dict]) -> None:
        metrics.CONSUMER_WRITTEN.inc(len(result.written))
        metrics.CONSUMER_DUPLICATES.inc(len(result.duplicates))
        for record in sealed:
            metrics.PHASES_SEALED.labels(record["reason"]).inc()

    def _tell_redis(self, update) -> None:
        """Redis after the disk write; if it is away, disk is ahead and a rebuild catches up."""
        if not update_cache(update, "Redis"):
            self.redis_stale = True

    def _commit(self, messages: Sequence) -> None:
        if not messages:
            return
        cap: dict[int, int] = {}  # a seal marker still waiting for its other partitions is read again
        for seen in self.seals.values():
            for partition, offset in seen.items():
                cap[partition] = min(cap.get(partition, offset), offset)
        try:
            self.kafka.commit(commit_offsets(messages, cap))
        except CommitFailedError as e:  # the group rebalanced: the new owner replays, ids dedupe
            log.warning("offset commit failed, batch will be replayed: %s", e)

    # -- seals

    def _seal_marker(self, m, request: dict) -> None:
        """A seal request's marker in partition m.partition; seal once every partition's is read."""
        request_id = request["seal"]
        if request_id in self.buffer.requests or self.buffer.passed(m.partition, m.offset):
            return  # a replay of a marker handled before the crash
        seen = self.seals.setdefault(request_id, {})
        seen[m.partition] = m.offset
        if len(seen) < int(request.get("partitions", 1)):
            return
        del self.seals[request_id]
        record = self.seal("request", request_id)
        answer = {"sealed": record} if record else {"sealed": None, "reason": "the open phase is empty"}
        self._tell_redis(lambda: self.registry.answer_seal(request_id, answer))

    def seal(self, reason: str, request: str | None = None) -> dict | None:
        """Seal the open phase (manifest on disk), then register it in Redis; None if empty."""
        manifest = self.buffer.seal(reason, request)
        if manifest is None:
            return None
        record = phase_info(self.buffer.data_dir, manifest["phase"]).to_dict()
        self._tell_redis(lambda: self.registry.register_sealed(record, self.buffer.open_info().to_dict()))
        metrics.PHASES_SEALED.labels(reason).inc()
        return record

    def seal_if_due(self) -> None:
        reason = self.buffer.seal_due()
        if reason:
            self.seal(reason)

    # -- faults

    def failed(self, messages: Sequence, exc: BaseException) -> None:
        """Nothing of `messages` is committed: read them again, after a backoff."""
        assigned = self.kafka.assignment()
        for tp, offset in first_offsets(messages).items():
            if tp in assigned:
                self.kafka.seek(tp, offset)
        if assigned:
            self.kafka.pause(*assigned)
        self.fault.failed(exc)

    # -- reports

    def report(self) -> None:
        lags = {}
        for tp in self.kafka.assignment():
            high, position = self.kafka.highwater(tp), self._position(tp)
            if high is not None and position is not None:
                lags[tp.partition] = max(0, high - position)
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(lags[tp.partition])
        metrics.PHASE_OPEN.set(self.buffer.phase)
        metrics.PHASE_FILL.set(self.buffer.n_open)
        if self.fault.reason:
            self.fault.report()  # refreshes the expiring fault key

    def _position(self, tp) -> int | None:
        try:
            return self.kafka.position(tp, timeout_ms=100)
        except Exception:  # not fetched yet
            return None

    # -- the loop

    def start(self) -> None:
        self.registry.rebuild_from_disk(self.buffer.data_dir)  # repairs a crash between disk and Redis
        self.seal_if_due()

    def step(self) -> int:
        """One poll and what follows; never raises for a batch (see `failed`)."""
        s = self.settings
        self._catch_up_redis()
        if self.fault.waiting():
            self.kafka.poll(timeout_ms=s.consumer_poll_ms)  # partitions paused: keeps the group membership
            self.report()
            return 0
        messages: list = []
        try:
            if self.kafka.paused():
                self.kafka.resume(*self.kafka.paused())
            polled = self.kafka.poll(timeout_ms=s.consumer_poll_ms, max_records=s.consumer_max_records)
            messages = [m for batch in polled.values() for m in batch]
            self.handle(messages)
            self.seal_if_due()
            if messages:
                self.fault.recovered()
            else:
                self.fault.probe()
        except Exception as e:
            self.failed(messages, e)
            return 0
        self.report()
        return len(messages)

    def _catch_up_redis(self) -> None:
        try:
            if self.redis_stale:
                self.registry.rebuild_from_disk(self.buffer.data_dir)
                self.redis_stale = False
            else:
                self.registry.ensure(self.buffer.data_dir)  # a flushed or restarted Redis: rebuilt from disk
        except Exception as e:
            self.redis_stale = True
            log.warning("Redis unavailable: %s", e)


def acquire_buffer(settings: Settings, stop: threading.Event, retry_s: float = 1.0) -> PhaseBuffer | None:
    """The phase buffers' writer. While another consumer holds the data directory's writer
    lock this one is a standby: it waits, and takes over when that one dies. A data
    directory that cannot be opened (read-only, full) is waited for likewise."""
    waiting = None
    backoff = faults.Backoff(retry_s, settings.consumer_retry_cap_s)
    while not stop.is_set():
        try:
            return PhaseBuffer.from_settings(settings)
        except (BufferLocked, OSError) as e:
            if str(e) != waiting:
                log.info("waiting for the phase buffers: %s", e)
                waiting = str(e)
            stop.wait(retry_s if isinstance(e, BufferLocked) else backoff.next())
    return None


def run(settings: Settings, stop: threading.Event) -> None:
    """Consume until `stop` is set; every resource is closed on the way out."""
    ensure_topics(
        settings.kafka_bootstrap,
        [settings.topic, settings.dlq_topic],
        settings.topic_partitions,
        replication=settings.topic_replication,
    )
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
        consumer._tell_redis(consumer.start)
        log.info(
            "consuming %s as %s into %s (open phase %d)",
            settings.topic,
            settings.consumer_group,
            settings.data_dir,
            buffer.phase,
        )
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
