"""The topics' replication factor is the `topic_replication` setting: the consumer creates
its topics with that many replicas (Tansu records the factor it is given, even on one broker)."""

from __future__ import annotations

import uuid

from kafka.admin import KafkaAdminClient

from service.settings import Settings
from tests.helpers import ConsumerProcess, wait_for


def replicas(bootstrap: str, topic: str) -> list[int] | None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        if topic not in admin.list_topics():
            return None
        [described] = admin.describe_topics([topic])
        return [len(p["replica_nodes"]) for p in described["partitions"]]
    finally:
        admin.close()


def test_the_consumer_creates_its_topics_with_the_configured_replication(kafka, redis_server, tmp_path):
    tag = f"rf-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path / "data",
        kafka_bootstrap=kafka,
        redis_url=redis_server,
        topic=tag,
        dlq_topic=f"{tag}.dlq",
        consumer_group=tag,
        topic_partitions=2,
        topic_replication=3,
    )
    consumer = ConsumerProcess(settings, tmp_path / "consumer.log").start()
    try:
        got = wait_for(lambda: replicas(kafka, f"{tag}.dlq"), 60, 0.5, "the consumer's topics")
        assert got == [3, 3] and replicas(kafka, tag) == [3, 3], consumer.log_tail()
    finally:
        consumer.stop()
