"""The consumer in normal operation, through the API: buffering, sealing by size, by age and
on request (POST /v1/phases/seal), the phase listing, images, and Redis kept in step."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from service import buffer, consumer
from service.app import create_app
from service.registry import Registry
from tests.helpers import make_png, pair_json, wait_for


@pytest.fixture
def start_consumer():
    running = []

    def start(settings):
        stop = threading.Event()
        thread = threading.Thread(target=consumer.run, args=(settings, stop), daemon=True)
        thread.start()
        running.append((stop, thread))

    yield start
    for stop, thread in running:
        stop.set()
        thread.join(30)
        assert not thread.is_alive()


def buffered(settings) -> list[str]:
    return [r.id for n in buffer.phase_numbers(settings.data_dir) for r in buffer.read_records(settings.data_dir, n)]


def test_pairs_flow_into_phases_and_seal_on_request(settings, start_consumer):
    s = settings.model_copy(update={"phase_size": 5})
    start_consumer(s)
    with TestClient(create_app(s)) as client:
        ids = [f"p{i}" for i in range(7)]
        resp = client.post("/v1/pairs", json={"pairs": [pair_json(i, image=make_png(color=(n, 1, 2)))
                                                        for n, i in enumerate(ids)]})  # fmt: skip
        assert resp.status_code == 202
        wait_for(lambda: len(buffered(s)) == 7, message="7 pairs buffered")
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
        wait_for(lambda: "p9" in buffered(s), message="p9 buffered")

        registry.set_phase_status(s.data_dir, 1, "training", snapshot=1)
        statuses = [p["status"] for p in client.get("/v1/phases").json()["phases"]]
        assert statuses == ["training", "sealed", "open"]
        assert registry.counters()["consumer_written"] == 8
        assert sorted(registry.r.smembers(registry.key("ids"))) == sorted([*ids, "p9"])


def test_seal_by_age(settings, start_consumer):
    s = settings.model_copy(update={"phase_max_age_s": 0.5})
    start_consumer(s)
    with TestClient(create_app(s)) as client:
        assert client.post("/v1/pairs", json={"pairs": [pair_json("old")]}).status_code == 202
        wait_for(lambda: buffer.read_manifest(s.data_dir, 1), message="phase 1 sealed by age")
    assert buffer.read_manifest(s.data_dir, 1)["reason"] == "age"


def test_seal_request_waits_for_a_consumer(settings):
    with TestClient(create_app(settings.model_copy(update={"seal_wait_s": 0.2}))) as client:
        resp = client.post("/v1/phases/seal")  # no consumer running
    assert resp.status_code == 202 and resp.json()["status"] == "requested"


def test_a_second_consumer_is_a_standby_until_the_writer_lock_is_free(settings, start_consumer):
    writer = buffer.PhaseBuffer.from_settings(settings)  # another consumer holds the data directory
    try:
        start_consumer(settings)
        with TestClient(create_app(settings)) as client:
            assert client.post("/v1/pairs", json={"pairs": [pair_json("early")]}).status_code == 202
            time.sleep(2.0)
            assert buffered(settings) == []  # the standby writes nothing while the lock is held
    finally:
        writer.close()  # the active consumer goes away
    wait_for(lambda: buffered(settings) == ["early"], message="the standby took over")
