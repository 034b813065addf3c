"""The consumer's side of Kafka: its client, a message decoded into a pair (or the reason it
is poison), and the offsets a handled batch commits (or reads again).

A message is poison when it is not a pair the API would have accepted (the same
`service.validation` checks) or its key is not the pair's id; it goes to the dead-letter
topic (service.dlq).
"""

from __future__ import annotations

import json
from typing import Sequence

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from service.ingest import max_message_bytes
from service.limits import Limits, PairError
from service.settings import Settings
from service.validation import ValidPair, validate_pair


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


def first_offsets(messages: Sequence) -> dict[TopicPartition, int]:
    """The first offset of `messages` per partition: where to read a batch again."""
    firsts: dict[TopicPartition, int] = {}
    for m in messages:
        tp = TopicPartition(m.topic, m.partition)
        firsts[tp] = min(firsts.get(tp, m.offset), m.offset)
    return firsts


def make_consumer(settings: Settings) -> KafkaConsumer:
    """The group's consumer: manual commits, from the earliest offset the group has not committed."""
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
