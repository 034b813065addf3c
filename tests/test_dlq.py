"""Poison messages go to the dead-letter topic with their reason; the consumer keeps going."""

from __future__ import annotations

import json

import pytest

from tests.helpers import (
    b64,
    buffered,
    committed,
    consumer_thread,
    pair_json,
    produce,
    read_topic,
    truncated_png,
    wait_for,
)
from tests.helpers import good_value as good


@pytest.fixture
def running_consumer(settings):
    with consumer_thread(settings) as thread:
        yield thread


def test_poison_goes_to_the_dlq_with_its_reason(settings, running_consumer):
    bad_image = json.dumps({**pair_json("bad-img"), "image": b64(truncated_png())}).encode()
    messages = [
        (b"good-1", good("good-1")),
        (b"junk", b"\x00\xffnot json at all"),
        (b"bad-img", bad_image),
        (b"other-key", good("mismatch")),
        (b"tombstone", None),
        (b"good-2", good("good-2")),
    ]
    produce(settings, messages)
    wait_for(lambda: "good-2" in buffered(settings.data_dir), message="the good message after the poison")
    assert buffered(settings.data_dir) == ["good-1", "good-2"]

    dead = wait_for(lambda: (d := read_topic(settings.kafka_bootstrap, settings.dlq_topic)) and len(d) >= 4 and d)
    reasons = {m.key: dict(m.headers)["reason"].decode() for m in dead}
    assert reasons[b"junk"].startswith("invalid_json: ")
    assert reasons[b"bad-img"].startswith("corrupt_image: ")
    assert reasons[b"other-key"].startswith("key_mismatch: ")
    assert reasons[b"tombstone"].startswith("empty_message: ")
    originals = {key: value for key, value in messages}
    for m in dead:
        assert m.value == originals[m.key]  # the original bytes, untouched
        assert dict(m.headers)["source"].decode() == f"{settings.topic}/0/{[k for k, _ in messages].index(m.key)}"
    wait_for(lambda: committed(settings) == len(messages), message="offsets committed past the poison")


def test_a_message_that_cannot_be_written_is_poison_not_a_crash_loop(settings, running_consumer):
    """Defect 1: a lone surrogate decodes from JSON but cannot be encoded as UTF-8 when its
    record is written; the consumer crashed on it at every restart and nothing after it was
    ever written. Such a message (or any the consumer cannot handle) goes to the DLQ."""
    surrogate = json.dumps({**json.loads(good("lone")), "metadata": {"k": "\udc00"}}).encode()  # "\\udc00" on the wire
    deep = b'{"id": "deep", "text": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    messages = [(b"lone", surrogate), (b"deep", deep), (b"after", good("after"))]
    produce(settings, messages)
    wait_for(lambda: "after" in buffered(settings.data_dir), message="the pair after the unwritable one")
    assert buffered(settings.data_dir) == ["after"] and running_consumer.is_alive()
    dead = wait_for(lambda: (d := read_topic(settings.kafka_bootstrap, settings.dlq_topic)) and len(d) >= 2 and d)
    reasons = {m.key: dict(m.headers)["reason"].decode() for m in dead}
    assert set(reasons) == {b"lone", b"deep"} and all(reasons.values())
    assert "surrogate" in reasons[b"lone"] or "utf" in reasons[b"lone"].lower()
