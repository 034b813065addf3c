"""The Kafka side of ingest: pair <-> message, the producer, topic creation.

A message is keyed by the pair id (utf-8) and its value is JSON
`{"id", "text", "image": base64, "content_type", "metadata", "received_at"}`.
`produce_batch` returns only once Kafka acknowledged every message (acks=all), so an
API answer of 2xx means the pairs are in Kafka.

A seal request is a control message in the same topic, one per partition, with the header
`modx-control: seal` and the value `{"seal": request id, "partitions": n, "requested"}`:
every pair acknowledged before the request sits before it in its partition, so the
consumer, which seals when it reaches the markers, seals exactly what was acknowledged.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from datetime import datetime, timezone
from typing import Sequence

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from service.settings import Settings
from service.validation import ValidPair

log = logging.getLogger("modx.ingest")


class ProduceError(RuntimeError):
    """Kafka did not acknowledge every message of a batch."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def encode_value(pair: ValidPair, received_at: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": pair.id,
            "text": pair.text,
            "image": base64.b64encode(pair.image).decode("ascii"),
            "content_type": pair.content_type,
            "metadata": pair.metadata,
            "received_at": received_at or now_iso(),
        },
        separators=(",", ":"),
    ).encode()


def max_message_bytes(settings: Settings) -> int:
    """Room for the largest valid pair: base64 image + text + metadata + envelope."""
    return settings.max_image_bytes * 4 // 3 + 4 * settings.max_text_chars + settings.max_metadata_bytes + 64 * 1024


def make_producer(settings: Settings, **overrides) -> KafkaProducer:
    timeout_ms = int(settings.produce_timeout_s * 1000)
    config = dict(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=5,
        batch_size=1 << 20,  # a request's pairs travel in a few record batches, not one batch per ~13 KB pair
        max_request_size=max_message_bytes(settings),
        bootstrap_timeout_ms=timeout_ms,
        max_block_ms=timeout_ms,
        request_timeout_ms=timeout_ms,
        delivery_timeout_ms=timeout_ms + 5,
    )
    return KafkaProducer(**{**config, **overrides})


def produce_batch(producer: KafkaProducer, topic: str, pairs: Sequence[ValidPair], timeout_s: float = 30.0) -> list:
    """Send every pair and wait for all their acks; raise ProduceError if any send failed.

    Waits on this batch's own futures only (not `flush()`, which would also wait for the
    records other requests put in the shared producer). Kafka has no all-or-nothing across
    messages here: after a failure some pairs may be in Kafka. Clients retry with the same
    ids and the consumer drops the repeats.
    """
    received_at = now_iso()
    try:
        futures = [producer.send(topic, key=p.id.encode(), value=encode_value(p, received_at)) for p in pairs]
    except KafkaError as e:  # no metadata within max_block_ms, buffer full
        raise ProduceError(f"Kafka did not take the batch: {e!r}") from e
    failures, metadata = [], []
    for pair, fut in zip(pairs, futures):
        try:
            metadata.append(fut.get(timeout=timeout_s))
        except Exception as e:  # KafkaError, KafkaTimeoutError
            failures.append(f"{pair.id}: {e!r}")
    if failures:
        raise ProduceError(f"Kafka did not acknowledge {len(failures)} of {len(pairs)} pairs: {failures[:3]}")
    return metadata


CONTROL_HEADER, SEAL = "modx-control", b"seal"


def seal_request(headers, value: bytes | None) -> dict | None:
    """The seal request a message carries ({"seal", "partitions", ...}), or None for a pair."""
    if not headers or (CONTROL_HEADER, SEAL) not in [(k, bytes(v or b"")) for k, v in headers]:
        return None
    try:
        data = json.loads(value or b"")
        return data if isinstance(data, dict) and isinstance(data.get("seal"), str) else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def produce_seal(producer: KafkaProducer, topic: str, request_id: str, timeout_s: float = 30.0) -> int:
    """Put seal request `request_id` at the end of every partition (acks=all); returns how many."""
    try:
        partitions = sorted(producer.partitions_for(topic) or [0])
        value = json.dumps({"seal": request_id, "partitions": len(partitions), "requested": now_iso()}).encode()
        futures = [producer.send(topic, value=value, partition=p, headers=[(CONTROL_HEADER, SEAL)]) for p in partitions]
        for fut in futures:
            fut.get(timeout=timeout_s)
    except Exception as e:  # KafkaError, KafkaTimeoutError
        raise ProduceError(f"Kafka did not take the seal request: {e!r}") from e
    return len(partitions)


def ensure_topics(
    bootstrap: str, topics: Sequence[str], partitions: int = 1, timeout_s: float = 30.0, replication: int = 1
) -> None:
    """Create the topics that do not exist yet, `replication` copies of each partition (the
    topic_replication setting; 1 suits one broker). Existing topics are left as they are."""
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms
    )
    try:
        missing = [t for t in topics if t not in set(admin.list_topics())]
        for topic in missing:
            try:
                admin.create_topics([NewTopic(topic, partitions, replication)])
                log.info("created topic %s with %d partitions x %d replicas", topic, partitions, replication)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


class Ingestor:
    """What the API produces through: one lazily connected producer per process.

    Connecting on first use (not at construction) lets the API start, and refuse bad input
    with a 4xx, while Kafka is still down.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    try:
                        self._producer = make_producer(self.settings)
                    except KafkaError as e:
                        raise ProduceError(f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {e}") from e
        return self._producer

    def send(self, pairs: Sequence[ValidPair]) -> list:
        if not pairs:
            return []
        return produce_batch(self.producer, self.settings.topic, pairs, self.settings.produce_timeout_s)

    def send_seal(self, request_id: str) -> int:
        return produce_seal(self.producer, self.settings.topic, request_id, self.settings.produce_timeout_s)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=min(5.0, self.settings.produce_timeout_s))
            self._producer = None
