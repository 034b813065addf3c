"""Write backpressure against the real Tansu broker and the real consumer process: writes get
429 with Retry-After, and nothing is produced, while the group's committed offsets are too
far behind the topic's end (measured from Kafka, so it holds after the consumer is killed),
or while the data directory is short of free space."""

from __future__ import annotations

import pytest

from service.backpressure import KafkaLag
from service.ingest import make_producer, produce_batch
from service.limits import Limits
from service.validation import validate_pair
from tests.helpers import ConsumerProcess, api_client, make_png, pair_json, read_topic, wait_for


def pairs(prefix: str, n: int) -> list[dict]:
    return [pair_json(f"{prefix}-{i}", image=make_png(color=(i, 1, 2))) for i in range(n)]


def refused_429(resp, error: str) -> dict:
    assert resp.status_code == 429, resp.text
    assert int(resp.headers["retry-after"]) >= 1
    detail = resp.json()["detail"]
    assert detail["error"] == error, detail
    return detail


def test_lag_is_exact_where_list_offsets_is_not(settings):
    """37 records in one batch: the Fetch high watermark says 37 (Tansu's ListOffsets LATEST
    said 1 when this was written); nothing committed yet, so all 37 are lag."""
    producer = make_producer(settings)  # one request: a few multi-record batches
    batch = [validate_pair(p, Limits()) for p in pairs("lag", 37)]
    produce_batch(producer, settings.topic, batch)
    lag = KafkaLag(settings)
    try:
        assert lag.measure() == 37
        produce_batch(producer, settings.topic, batch[:5])
        assert lag.measure() == 42  # the probe fetches on from the end it saw
    finally:
        lag.close()
        producer.close()


def test_lagging_consumer_pauses_writes_until_it_catches_up(settings, tmp_path):
    s = settings.model_copy(update={"max_consumer_lag": 5, "lag_cache_s": 0})
    log = tmp_path / "consumer.log"
    with api_client(s) as client:
        assert client.post("/v1/pairs", json={"pairs": pairs("a", 6)}).status_code == 202  # lag was 0
        detail = refused_429(client.post("/v1/pairs", json={"pairs": pairs("b", 1)}), "consumer_lagging")
        assert detail["lag"] == 6 and "max_consumer_lag" in detail["message"]
        upload = {"image": ("x.png", make_png(), "image/png")}
        refused_429(client.post("/v1/pairs/upload", files=upload, data={"text": "t"}), "consumer_lagging")
        assert len(read_topic(s.kafka_bootstrap, s.topic)) == 6

        consumer = ConsumerProcess(s, log).start()  # it commits what it wrote: the lag drains
        try:
            wait_for(
                lambda: client.post("/v1/pairs", json={"pairs": pairs("c", 6)}).status_code == 202,
                timeout_s=60,
                interval_s=0.5,
                message=f"writes resumed:\n{consumer.log_tail()}",
            )
            wait_for(lambda: KafkaLag(s).measure() == 0, timeout_s=30, message="the consumer caught up")
        finally:
            consumer.kill()  # stopped: a gauge it exported would stay at its last value
        assert client.post("/v1/pairs", json={"pairs": pairs("d", 6)}).status_code == 202
        refused_429(client.post("/v1/pairs", json={"pairs": pairs("e", 1)}), "consumer_lagging")
    ids = {m.key.decode() for m in read_topic(s.kafka_bootstrap, s.topic)}
    assert not any(i.startswith(("b-", "e-")) for i in ids) and len(ids) == 18


def test_lag_is_cached(settings):
    s = settings.model_copy(update={"max_consumer_lag": 5, "lag_cache_s": 3600})
    with api_client(s) as client:
        assert client.post("/v1/pairs", json={"pairs": pairs("a", 6)}).status_code == 202
        assert client.post("/v1/pairs", json={"pairs": pairs("b", 1)}).status_code == 202  # lag 0, cached


@pytest.mark.parametrize("route", ["/v1/pairs", "/v1/pairs/upload"])
def test_low_disk_pauses_writes(settings, route):
    s = settings.model_copy(update={"min_free_bytes": 1 << 62})
    with api_client(s) as client:
        if route == "/v1/pairs":
            resp = client.post(route, json={"pairs": pairs("a", 1)})
        else:
            resp = client.post(route, files={"image": ("x.png", make_png(), "image/png")}, data={"text": "t"})
        detail = refused_429(resp, "low_disk_space")
        assert detail["free_bytes"] < 1 << 62 and "min_free_bytes" in detail["message"]
        assert client.post("/v1/search", json={"text": "q"}).status_code == 503  # reads are not paused
    assert read_topic(s.kafka_bootstrap, s.topic) == []


def test_kafka_down_does_not_pause_writes_for_lag(settings):
    down = settings.model_copy(
        update={"kafka_bootstrap": "127.0.0.1:1", "produce_timeout_s": 2.0, "max_consumer_lag": 0}
    )
    with api_client(down) as client:
        resp = client.post("/v1/pairs", json={"pairs": pairs("a", 1)})
    assert resp.status_code == 503 and resp.json()["detail"]["error"] == "kafka_unavailable"
