"""The dead-letter topic: a poison message is sent there whole (its key and value), with
headers `reason` ("<error code>: <message>") and `source` ("topic/partition/offset"), and
every send of a batch is acknowledged before the batch's offsets are committed. Delivery
is at-least-once: a crash before the commit may send a message twice.
"""

from __future__ import annotations

import logging

from kafka import KafkaProducer

from service import metrics
from service.settings import Settings

log = logging.getLogger("modx.consumer")


def dlq_headers(topic: str, partition: int, offset: int, reason: str) -> list[tuple[str, bytes]]:
    source = f"{topic}/{partition}/{offset}"
    return [("reason", reason.encode(errors="backslashreplace")), ("source", source.encode())]


class DeadLetters:
    def __init__(self, settings: Settings, producer: KafkaProducer):
        self.settings, self.producer = settings, producer

    def send(self, m, reason: str, code: str):
        """Send the message `m` with its reason; returns the send's future (see `wait`)."""
        topic = self.settings.dlq_topic
        log.warning("poison message %s/%d/%d to %s: %s", m.topic, m.partition, m.offset, topic, reason[:500])
        metrics.CONSUMER_DLQ.labels(code).inc()
        headers = dlq_headers(m.topic, m.partition, m.offset, reason)
        return self.producer.send(topic, key=m.key, value=m.value, headers=headers)

    def wait(self, futures: list) -> None:
        """Every send acknowledged, or raise (and the batch commits nothing)."""
        if not futures:
            return
        self.producer.flush(timeout=self.settings.produce_timeout_s)
        for fut in futures:
            fut.get(timeout=self.settings.produce_timeout_s)
