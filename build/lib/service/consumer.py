"""The consumer: Kafka topic -> phase buffer, poison -> dead-letter topic.

One batch at a time: poll, decode every message (the API's validation), write the valid
ones to the phase buffer (fsync, drop ids seen before), send what cannot be decoded or
written to the DLQ with the reason (and wait for its acks), tell Redis, and only then
commit the offsets. A crash anywhere replays from the last commit; repeats drop by id.

A seal request is a marker in the topic (service.ingest.produce_seal): the consumer seals
when it reaches it, so every pair acknowledged before the request is in the sealed phase.
Between batches it also seals the open phase when it is full or old.

When a batch cannot be written (a full or read-only disk, any error) nothing of it is
committed: the consumer seeks back to the batch's first offsets, pauses its partitions and
keeps polling (so it keeps its place in the group), says why in `modx:fault:consumer` and
the `modx_consumer_write_fault` gauge, and tries again with backoff. It never crash-loops.

    python -m service.consumer      # settings from MODX_* variables; SIGTERM stops it cleanly
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from contextlib import ExitStack
from typing import Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata

from service import faults, metrics
from service.buffer import Incoming, phase_info
from service.ingest import ensure_topics, make_producer, max_message_bytes, seal_request
from service.registry import Registry
from service.settings import Settings
from service.validation import Limits, PairError, ValidPair, validate_pair
from service.writer import BufferLocked, PhaseBuffer

log = logging.getLogger("modx.consumer")


def decode_message(key: bytes | None, value: bytes | None, limits: Limits) -> tuple[ValidPair, str | None]:
    """(pair, received_at) of a message, or PairError saying why it is poison."""
    if value is None:
        raise PairError(422, "empty_message", "message has no value")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PairError(422, "invalid_json", f"message value is not JSON: {e}") from None
    try:
        pair = validate_pair(data, limits)
    except PairError:
        raise
    except Exception as e:  # whatever validation trips on is the message's fault, not a reason to stop
        raise PairError(422, "undecodable", f"{type(e).__name__}: {e}") from None
    if key is not None and key != pair.id.encode(errors="surrogatepass"):
        raise PairError(422, "key_mismatch", f"message key {key[:80]!r} differs from pair id {pair.id!r}")
    return pair, data.get("received_at")


def dlq_headers(topic: str, partition: int, offset: int, reason: str) -> list[tuple[str, bytes]]:
    source = f"{topic}/{partition}/{offset}"
    return [("reason", reason.encode(errors="backslashreplace")), ("source", source.encode())]


def commit_offsets(messages: Sequence, cap: dict[int, int] | None = None) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offset to commit per partition: one past the last message handled, never past `cap`."""
    last: dict[TopicPartition, int] = {}
    for m in messages:
        tp = TopicPartition(m.topic, m.partition)
        last[tp] = max(last.get(tp, -1), m.offset)
    cap = cap or {}
    return {
        tp: OffsetAndMetadata(min(offset + 1, cap.get(tp.partition, offset + 1)), "", -1) for tp, offset in last.items()
    }


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

    def __init__(
        self, settings: Settings, kafka: KafkaConsumer, dlq: KafkaProducer, buffer: PhaseBuffer, registry: Registry
    ):
        self.settings, self.kafka, self.dlq, self.buffer, self.registry = settings, kafka, dlq, buffer, registry
        self.limits = Limits.from_settings(settings)
        self.seals: dict[str, dict[int, int]] = {}  # request id -> partition -> marker offset (seen so far)
        self.fault: str | None = None
        self.retry_at = 0.0
        self.backoff = faults.Backoff(0.5, settings.consumer_retry_cap_s)
        self.redis_stale = False
        self.probed = float("-inf")  # when the disk was last probed while idle

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
                poison.append(self._send_to_dlq(m, f"{e.error}: {e.message}", e.error))
                continue
            incoming.append(Incoming(pair, m.partition, m.offset, received_at))
        result = self.buffer.append(incoming)
        for item, reason in result.poison:
            poison.append(self._send_to_dlq(by_pos[(item.partition, item.offset)], reason, "unwritable_record"))
        self._wait_dlq(poison)
        sealed = [phase_info(self.buffer.data_dir, m["phase"]).to_dict() for m in result.sealed]
        self._tell_redis(
            lambda: self.registry.record_written(
                [r.id for r in result.written], self.buffer.open_info().to_dict(), sealed
            )
        )
        self._count(result, sealed)
        if result.duplicates:
            log.info("dropped %d repeated pair ids (replays or re-sends)", len(result.duplicates))

    def _send_to_dlq(self, m, reason: str, code: str):
        log.warning(
            "poison message %s/%d/%d to %s: %s", m.topic, m.partition, m.offset, self.settings.dlq_topic, reason[:500]
        )
        metrics.CONSUMER_DLQ.labels(code).inc()
        headers = dlq_headers(m.topic, m.partition, m.offset, reason)
        return self.dlq.send(self.settings.dlq_topic, key=m.key, value=m.value, headers=headers)

    def _wait_dlq(self, futures: list) -> None:
        """Every DLQ send acknowledged, or raise (and commit nothing)."""
        if futures:
            self.dlq.flush(timeout=self.settings.produce_timeout_s)
            for fut in futures:
                fut.get(timeout=self.settings.produce_timeout_s)

    def _count(self, result, sealed: list[dict]) -> None:
        metrics.CONSUMER_WRITTEN.inc(len(result.written))
        metrics.CONSUMER_DUPLICATES.inc(len(result.duplicates))
        for record in sealed:
            metrics.PHASES_SEALED.labels(record["reason"]).inc()

    def _tell_redis(self, update) -> None:
        """Redis after the disk write; if it is away, disk is ahead and a rebuild catches up."""
        try:
            update()
        except Exception as e:
            log.warning("Redis not updated (disk is; rebuilding once it is back): %s", e)
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
        firsts: dict[TopicPartition, int] = {}
        for m in messages:
            tp = TopicPartition(m.topic, m.partition)
            firsts[tp] = min(firsts.get(tp, m.offset), m.offset)
        assigned = self.kafka.assignment()
        for tp, offset in firsts.items():
            if tp in assigned:
                self.kafka.seek(tp, offset)
        if assigned:
            self.kafka.pause(*assigned)
        self.fault = faults.disk_error(exc) or f"{type(exc).__name__}: {exc}"
        delay = self.backoff.next()
        self.retry_at = time.monotonic() + delay
        log.warning("batch not written (%s); nothing committed, retrying in %.1fs", self.fault, delay)
        self._report_fault()

    def _report_fault(self) -> None:
        code = self.fault.split(":", 1)[0] if self.fault else None
        codes = list(faults.DISK_ERRNOS.values())
        code = code if code in codes or code is None else "other"
        for reason in [*codes, "other"]:
            metrics.CONSUMER_WRITE_FAULT.labels(reason).set(1 if code == reason else 0)
        try:
            self.registry.set_fault("consumer", self.fault, ttl_s=max(30.0, 3 * self.settings.consumer_retry_cap_s))
        except Exception as e:
            log.warning("could not report the fault to Redis: %s", e)

    def _probe_disk(self) -> None:
        """Idle (nothing to write, e.g. while the group rebalances): still say when the disk
        cannot take writes, and when it can again; at most every `consumer_retry_cap_s`."""
        if time.monotonic() - self.probed < min(2.0, self.settings.consumer_retry_cap_s):
            return
        self.probed = time.monotonic()
        reason = faults.disk_fault(self.buffer.data_dir)
        if reason is None:
            self._recovered()
        elif reason != self.fault:
            log.warning("the data directory cannot take writes: %s", reason)
            self.fault = reason
            self._report_fault()

    def _recovered(self) -> None:
        if self.fault is not None:
            log.info("writing again after: %s", self.fault)
            self.fault = None
            self.backoff.reset()
            self._report_fault()

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
        if self.fault:
            self._report_fault()  # refreshes the expiring fault key

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
        """One poll and what follows; never raises for a batch (see `failed`)."""
        s = self.settings
        self._catch_up_redis()
        if self.fault is not None and time.monotonic() < self.retry_at:
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
                self._recovered()
            else:
                self._probe_disk()
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
