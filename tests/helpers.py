"""Test helpers: tiny images (good and bad), producing to and reading a topic, the consumer
in a thread or as a subprocess, what it wrote and committed, API keys and an authenticated
API client (`api_client`, `make_key`)."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import redis
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from PIL import Image

from service.app import create_app
from service.buffer import Incoming, read_records
from service.ingest import ensure_topics
from service.keys import KeyStore
from service.limits import Limits
from service.settings import Settings
from service.validation import validate_pair
from service.writer import PhaseBuffer
from trainer.layout import phase_numbers

ROOT = Path(__file__).resolve().parents[1]


def make_image(fmt: str = "PNG", size: tuple[int, int] = (8, 8), color=(200, 30, 30), noise: bool = False) -> bytes:
    image = Image.new("RGB", size, color)
    if noise:
        image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def make_png(size: tuple[int, int] = (8, 8), color=(200, 30, 30)) -> bytes:
    return make_image("PNG", size, color)


def truncated_png() -> bytes:
    data = make_image("PNG", (64, 64), noise=True)
    return data[: len(data) // 2]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int, height: int) -> bytes:
    """A few hundred bytes whose header declares width x height pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    row = b"\x00" + b"\x00" * 3 * min(width, 16)
    chunks = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(row * 4)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pair_json(pair_id: str | None = None, text: str = "a red square", image: bytes | None = None, **extra) -> dict:
    out = {"text": text, "image": b64(image if image is not None else make_png()), **extra}
    if pair_id is not None:
        out["id"] = pair_id
    return out


def incoming(*ids: str, offset: int = 0) -> list[Incoming]:
    """Valid pairs with these ids, as the consumer hands them to a phase buffer (partition 0)."""
    return [
        Incoming(
            validate_pair(pair_json(i, text=f"caption {i}", image=make_png(color=(n, 0, 0))), Limits()), 0, offset + n
        )
        for n, i in enumerate(ids)
    ]


def open_buffer(path, phase_size=1000, max_age=3600.0, probe_fraction=0.1) -> PhaseBuffer:
    return PhaseBuffer(path, phase_size=phase_size, phase_max_age_s=max_age, probe_fraction=probe_fraction)


def read_topic(bootstrap: str, topic: str, timeout_s: float = 20.0) -> list:
    """Every message in `topic` from the beginning, by a fresh consumer outside any group.

    Reads until each partition's position reaches the high watermark that the broker
    reported in a fetch response, so an empty answer means the topic is empty.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50
    )
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        messages, deadline = [], time.monotonic() + timeout_s
        while not all(
            consumer.highwater(tp) is not None and consumer.position(tp) >= consumer.highwater(tp) for tp in tps
        ):
            assert time.monotonic() < deadline, f"could not read {topic} to its end in {timeout_s}s"
            for batch in consumer.poll(timeout_ms=100).values():
                messages.extend(batch)
        return sorted(messages, key=lambda m: (m.partition, m.offset))
    finally:
        consumer.close(autocommit=False)


def wait_for(condition, timeout_s: float = 30.0, interval_s: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")


def private_settings(data_dir: Path, kafka: str, redis_url: str, name: str, **overrides) -> Settings:
    """Settings with topics and a consumer group of their own (created), on the shared broker
    and Redis, so a test sees only what it produced."""
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    s = Settings(
        data_dir=data_dir,
        kafka_bootstrap=kafka,
        redis_url=redis_url,
        topic=tag,
        dlq_topic=f"{tag}.dlq",
        consumer_group=tag,
        **overrides,
    )
    ensure_topics(kafka, [s.topic, s.dlq_topic], s.topic_partitions)
    return s


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODX_")}
    for name, value in settings.model_dump(mode="json").items():
        if value is not None:  # nested settings (the recipe) as JSON, which pydantic-settings parses
            env[f"MODX_{name.upper()}"] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return env


class ConsumerProcess:
    """`python -m service.consumer` with the given settings; kill -9 it or stop it cleanly."""

    def __init__(self, settings: Settings, log_path: Path):
        self.settings, self.log_path = settings, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "ConsumerProcess":
        with open(self.log_path, "ab") as log:
            argv = [sys.executable, "-m", "service.consumer"]
            env = settings_env(self.settings)
            self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: no cleanup at all
        self.process.wait()

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"consumer did not stop on SIGTERM:\n{self.log_tail()}") from None
        return self.process.returncode

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]


def write_phases(settings: Settings, stream, n: int) -> None:
    """One sealed phase per synthetic domain, through the consumer's writer."""
    with PhaseBuffer.from_settings(settings) as buf:
        for domain in stream.domains[:n]:
            batch = [
                Incoming(validate_pair(pair_json(p.id, p.text, p.image, metadata={"domain": domain}), Limits()))
                for p in stream.generate(domain)
            ]
            buf.append(batch)
            buf.seal("request")


def make_key(settings: Settings, scope: str = "admin", name: str | None = None, rate: float | None = 1000.0) -> str:
    """A new API key in the settings' data dir, cached in their Redis at once; its secret.
    The default rate (1000/s) keeps tests that are not about rates clear of the limit."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_connect_timeout=1)
    try:
        return KeyStore(settings.data_dir, client).create(scope, name, rate)[1]
    finally:
        client.close()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@contextmanager
def api_client(settings: Settings, scope: str = "admin", key: str | None = None, app=None) -> Iterator[TestClient]:
    """`TestClient(create_app(settings))`, started, sending an API key on every request: `key`,
    else a new one of `scope`. `client.headers` can be changed per test (e.g. popped)."""
    key = key or make_key(settings, scope)
    with TestClient(app or create_app(settings), headers=bearer(key)) as client:
        yield client


def good_value(pair_id: str) -> bytes:
    """The Kafka value of a valid pair, as the API produces it."""
    from service.ingest import encode_value

    return encode_value(validate_pair(pair_json(pair_id), Limits()))


def produce(settings: Settings, messages) -> None:
    """Send (key, value) messages to the settings' topic as they are (acks=all), and wait."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        for key, value in messages:
            producer.send(settings.topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def buffered(data_dir) -> list[str]:
    """The ids in the phase buffers, in order, the open phase included."""
    return [r.id for n in phase_numbers(data_dir) for r in read_records(data_dir, n)]


def committed(settings: Settings, partition: int = 0) -> int:
    """The consumer group's committed offset of one partition of the topic (0 before any commit)."""
    probe = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.consumer_group, enable_auto_commit=False
    )
    try:
        return probe.committed(TopicPartition(settings.topic, partition)) or 0
    finally:
        probe.close(autocommit=False)


@contextmanager
def consumer_thread(settings: Settings) -> Iterator[threading.Thread]:
    """`service.consumer.run` in a thread; stopped on the way out, and checked to stop."""
    from service import consumer

    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(settings, stop), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
