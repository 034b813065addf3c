"""The consumer in normal operation, through the API: buffering, sealing by size, by age and
on request (POST /v1/phases/seal), the phase listing, images, and Redis kept in step."""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest

from service import buffer, metrics
from service.ingest import seal_request
from service.registry import Registry
from service.writer import PhaseBuffer
from tests.helpers import api_client, buffered, consumer_thread, make_png, pair_json, read_topic, wait_for


@pytest.fixture
def start_consumer():
    """start(settings): a consumer thread, stopped at the end of the test."""
    with ExitStack() as running:
        yield lambda settings: running.enter_context(consumer_thread(settings))


def test_pairs_flow_into_phases_and_seal_on_request(settings, start_consumer):
    s = settings.model_copy(update={"phase_size": 5, "seal_min_interval_s": 0})
    written_before = metrics.CONSUMER_WRITTEN._value.get()
    start_consumer(s)
    with api_client(s) as client:
        ids = [f"p{i}" for i in range(7)]
        resp = client.post(
            "/v1/pairs", json={"pairs": [pair_json(i, image=make_png(color=(n, 1, 2))) for n, i in enumerate(ids)]}
        )
        assert resp.status_code == 202
        wait_for(lambda: len(buffered(s.data_dir)) == 7, message="7 pairs buffered")
        registry = Registry.from_url(s.redis_url)
        wait_for(lambda: registry.phase(2) and registry.phase(2)["n"] == 2, message="open phase in Redis")

        phases = client.get("/v1/phases").json()
        assert phases["open"] == 2
        assert [(p["phase"], p["status"], p["n"]) for p in phases["phases"]] == [(1, "sealed", 5), (2, "open", 2)]
        first = phases["phases"][0]
        assert first["n_train"] + first["n_probe"] == 5 and first["opened"] and first["sealed"]

        resp = client.post("/v1/phases/seal")
        assert resp.status_code == 200, resp.text
        assert resp.json()["phase"]["phase"] == 2 and resp.json()["phase"]["reason"] == "request"
        assert buffer.read_manifest(s.data_dir, 2)["n"] == 2
        resp = client.post("/v1/phases/seal")
        assert resp.status_code == 409 and resp.json()["detail"]["error"] == "empty_phase"

        assert client.get("/v1/images/p3").content == make_png(color=(3, 1, 2))
        again = client.post("/v1/pairs", json={"pairs": [pair_json("p0"), pair_json("p9")]}).json()["accepted"]
        assert again == [{"id": "p0", "status": "duplicate"}, {"id": "p9", "status": "queued"}]
        wait_for(lambda: "p9" in buffered(s.data_dir), message="p9 buffered")

        registry.set_phase_status(s.data_dir, 1, "training", snapshot=1)
        statuses = [p["status"] for p in client.get("/v1/phases").json()["phases"]]
        assert statuses == ["training", "sealed", "open"]
        assert metrics.CONSUMER_WRITTEN._value.get() - written_before == 8  # this process's consumer thread
        assert sorted(registry.r.smembers(registry.key("ids"))) == sorted([*ids, "p9"])


def test_seal_by_age(settings, start_consumer):
    s = settings.model_copy(update={"phase_max_age_s": 0.5})
    start_consumer(s)
    with api_client(s) as client:
        assert client.post("/v1/pairs", json={"pairs": [pair_json("old")]}).status_code == 202
        wait_for(lambda: buffer.read_manifest(s.data_dir, 1), message="phase 1 sealed by age")
    assert buffer.read_manifest(s.data_dir, 1)["reason"] == "age"


def test_seal_request_waits_for_a_consumer(settings):
    with api_client(settings.model_copy(update={"seal_wait_s": 0.2})) as client:
        resp = client.post("/v1/phases/seal")  # no consumer running
    assert resp.status_code == 202 and resp.json()["status"] == "requested"


def test_a_seal_answers_what_was_acknowledged_across_a_consumer_restart(settings, start_consumer):
    """Defect 7: right after a consumer (re)start, a seal answered 409 'empty' while the
    acknowledged pairs were still waiting out the rebalance, and pairs acknowledged before
    a seal could land in the next phase. The seal is a marker behind them in the topic."""
    s = settings.model_copy(update={"seal_wait_s": 0.2, "seal_min_interval_s": 0})
    with api_client(s) as client:
        ids = [f"early-{i}" for i in range(30)]
        assert client.post("/v1/pairs", json={"pairs": [pair_json(i) for i in ids]}).status_code == 202
        assert client.post("/v1/phases/seal").status_code == 202  # no consumer yet: requested
        late = client.post("/v1/pairs", json={"pairs": [pair_json("late")]})
        assert late.status_code == 202
        start_consumer(s)
        wait_for(lambda: buffer.read_manifest(s.data_dir, 1), message="phase 1 sealed")
        assert [r.id for r in buffer.read_records(s.data_dir, 1)] == ids  # exactly what came before the seal
        wait_for(lambda: "late" in buffered(s.data_dir), message="the late pair, in the next phase")
        assert [r.id for r in buffer.read_records(s.data_dir, 2)] == ["late"]
        with api_client(s.model_copy(update={"seal_wait_s": 20})) as waiting:
            resp = waiting.post("/v1/phases/seal")
        assert resp.status_code == 200 and resp.json()["phase"]["n"] == 1


def test_repeated_seals_join_and_are_rate_limited(settings):
    s = settings.model_copy(update={"seal_wait_s": 0.1, "seal_min_interval_s": 30})
    with api_client(s) as client:
        first = client.post("/v1/phases/seal").json()  # no consumer: stays pending
        again = [client.post("/v1/phases/seal").json() for _ in range(5)]
        assert {a["request"] for a in again} == {first["request"]} and all(a["joined"] for a in again)
        registry = Registry.from_url(s.redis_url)
        registry.answer_seal(first["request"], {"sealed": None})
        limited = client.post("/v1/phases/seal")
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["detail"]["error"] == "seal_rate_limited"
    markers = [m for m in read_topic(s.kafka_bootstrap, s.topic) if seal_request(m.headers, m.value)]
    assert len(markers) == 1  # seven requests, one marker: one training run at most


def test_a_second_consumer_is_a_standby_until_the_writer_lock_is_free(settings, start_consumer):
    writer = PhaseBuffer.from_settings(settings)  # another consumer holds the data directory
    try:
        start_consumer(settings)
        with api_client(settings) as client:
            assert client.post("/v1/pairs", json={"pairs": [pair_json("early")]}).status_code == 202
            time.sleep(2.0)
            assert buffered(settings.data_dir) == []  # the standby writes nothing while the lock is held
    finally:
        writer.close()  # the active consumer goes away
    wait_for(lambda: buffered(settings.data_dir) == ["early"], message="the standby took over")
