"""Real servers for the service tests: a Tansu Kafka broker and a private redis-server,
each started once per session on a free port (service.infra), never mocked."""

from __future__ import annotations

import pytest
import redis

from service import infra
from service.settings import Settings
from tests.helpers import make_png, private_settings


@pytest.fixture(scope="session")
def kafka(tmp_path_factory) -> str:
    """Bootstrap address of a Tansu broker (in-memory storage)."""
    with infra.kafka_broker(log_dir=tmp_path_factory.mktemp("tansu")) as server:
        yield server.address


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> str:
    """URL of a private redis-server (no persistence)."""
    with infra.redis_server(log_dir=tmp_path_factory.mktemp("redis")) as server:
        yield server.address


@pytest.fixture
def redis_client(redis_server):
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(tmp_path, kafka, redis_server, redis_client) -> Settings:
    """Settings for one test: its own topics, consumer group, data dir, and an empty Redis."""
    return private_settings(
        tmp_path / "data",
        kafka,
        redis_server,
        "pairs",
        consumer_poll_ms=100,
        consumer_session_timeout_ms=2000,
        consumer_max_poll_interval_ms=5000,
        seal_wait_s=10,
        phase_size=1000,
    )


@pytest.fixture
def png() -> bytes:
    return make_png()


@pytest.fixture(scope="module")
def tiny():
    """A freshly initialised modx-tiny open_clip model: (model, preprocess, tokenizer)."""
    import torch

    from trainer.model import create_model

    torch.manual_seed(0)
    return create_model("modx-tiny")


@pytest.fixture(scope="session")
def live(kafka, redis_server, tmp_path_factory):
    """A running stack (tests.live) shared by the client-side tests: its URL and an admin key."""
    from tests.live import live_stack

    with live_stack(kafka, redis_server, tmp_path_factory.mktemp("live") / "data", "live") as stack:
        yield stack
