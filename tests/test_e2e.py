"""End to end on CPU with the tiny model, against a real Tansu broker and redis-server:
REST ingest -> Kafka -> phase buffers -> trainer worker -> snapshots -> indexer -> search.
"""

from __future__ import annotations

import base64
import os
import sys
import threading
import time

import pytest
import redis

from service.infra import start_process, stop_process
from service.ingest import ensure_topics
from service.settings import Settings
from tests.helpers import api_client
from trainer.datasets.synthetic import SyntheticDataset

pytestmark = pytest.mark.slow

PHASES, PAIRS = 3, 96


@pytest.fixture(scope="module")
def stack(kafka, redis_server, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("e2e")
    with redis.Redis.from_url(redis_server) as r:
        r.flushdb()  # what earlier tests left in the shared server is not this stack's
    env = {
        "MODX_DATA_DIR": str(data_dir),
        "MODX_KAFKA_BOOTSTRAP": kafka,
        "MODX_REDIS_URL": redis_server,
        "MODX_TOPIC": "e2e.pairs",
        "MODX_DLQ_TOPIC": "e2e.pairs.dlq",
        "MODX_CONSUMER_GROUP": "e2e",
        "MODX_PHASE_SIZE": "100000",
        "MODX_RECIPE__EPOCHS": "3",
        "MODX_RECIPE__BATCH_SIZE": "32",
        "MODX_WORKER_POLL_S": "0.3",
        "MODX_INDEX_POLL_S": "0.3",
        "MODX_CONSUMER_POLL_MS": "100",
        "MODX_SEAL_MIN_INTERVAL_S": "0",  # phases here train in seconds: seal each one at once
    }
    settings = Settings(**{k[5:].lower(): v for k, v in env.items() if "__" not in k})
    ensure_topics(kafka, [settings.topic, settings.dlq_topic])
    procs = [
        start_process([sys.executable, "-m", "service.cli", role], data_dir / f"{role}.log", {**os.environ, **env})
        for role in ("consumer", "trainer", "indexer")
    ]
    try:
        with api_client(settings) as client:
            yield client, settings, data_dir
    finally:
        for p in procs:
            stop_process(p, timeout_s=10)


def wait(what, check, timeout_s=240.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def post(client, pairs):
    body = {
        "pairs": [
            {"id": p.id, "text": p.text, "image": base64.b64encode(p.image).decode(), "metadata": {"domain": p.domain}}
            for p in pairs
        ]
    }
    r = client.post("/v1/pairs", json=body)
    assert r.status_code == 202, r.text
    return r.json()["accepted"]


def open_phase(client):
    return next((p for p in client.get("/v1/phases").json()["phases"] if p["status"] == "open"), None)


def test_pairs_flow_to_snapshots_indexes_and_search(stack):
    client, settings, data_dir = stack
    data = SyntheticDataset(n_domains=PHASES, pairs_per_domain=PAIRS, seed=5)
    searches, errors, stop = [], [], threading.Event()

    def hammer():  # search keeps answering while indexes are swapped
        while not stop.is_set():
            r = client.post("/v1/search", json={"text": "a large red circle at the top left", "k": 5})
            if r.status_code == 200:
                searches.append((r.json()["snapshot"], r.json()["index"]))
            elif r.status_code != 503:  # 503 only before the first index exists
                errors.append(r.text)
            time.sleep(0.02)

    hammer_thread = threading.Thread(target=hammer, daemon=True)
    hammer_thread.start()
    try:
        for t, domain in enumerate(data.domains, start=1):
            pairs = data.generate(domain)
            assert [a["status"] for a in post(client, pairs)] == ["queued"] * len(pairs)
            wait("pairs buffered", lambda: (o := open_phase(client)) and o["n"] >= len(pairs))
            assert [a["status"] for a in post(client, pairs[:3])] == ["duplicate"] * 3
            r = client.post("/v1/phases/seal")
            assert r.status_code == 200, r.text
            wait(
                f"snapshot {t}",
                lambda: any(
                    s["snapshot"] == t and s.get("status") in ("accepted", "superseded", "rejected")
                    for s in client.get("/v1/snapshots").json()["snapshots"]
                ),
            )
            wait(f"index {t}", lambda: client.get("/v1/snapshots").json()["serving"].get("index") == t)
            wait(f"the searches answered by v{t}", lambda: any(s == t for s, _ in searches))  # not a race with `stop`
    finally:
        stop.set()
        hammer_thread.join()

    assert not errors, errors[:3]
    assert searches and all(s == i for s, i in searches)  # a query is answered by the snapshot that embedded the index
    assert {s for s, _ in searches} >= {1, 2, 3}

    phases = client.get("/v1/phases").json()["phases"]
    trained = [p for p in phases if p["status"] == "trained"]
    assert [p["phase"] for p in trained] == [1, 2, 3]
    assert all(p["n_train"] + p["n_probe"] == PAIRS for p in trained)

    snaps = {s["snapshot"]: s for s in client.get("/v1/snapshots").json()["snapshots"]}
    assert set(snaps) >= {0, 1, 2, 3}
    assert [snaps[v]["parent"] for v in (1, 2, 3)] == [0, 1, 2]
    assert all(snaps[v]["recipe"]["method"] == settings.recipe.method for v in (1, 2, 3))

    # search returns stored pairs, with their texts and metadata
    pair = data.generate(data.domains[-1])[7]
    hits = client.post("/v1/search", json={"text": pair.text, "k": 20}).json()
    assert hits["snapshot"] == hits["index"] == 3
    assert len(hits["results"]) == 20 and all(h["text"] and h["metadata"]["domain"] for h in hits["results"])
    filtered = client.post("/v1/search", json={"text": pair.text, "k": 5, "filter": {"domain": "basic"}}).json()
    assert filtered["results"] and all(h["metadata"]["domain"] == "basic" for h in filtered["results"])
    image_query = client.post("/v1/search", json={"image": base64.b64encode(pair.image).decode(), "k": 1}).json()
    assert image_query["results"][0]["id"] == pair.id  # its own image is its nearest neighbour
    by_text = client.post("/v1/search", json={"text": pair.text, "target": "text", "k": 1}).json()
    assert by_text["target"] == "text" and by_text["results"][0]["text"] == pair.text  # its own caption first
    to_text = client.post(
        "/v1/search", json={"image": base64.b64encode(pair.image).decode(), "target": "text", "k": 5}
    ).json()  # image -> text: captions ranked
    assert to_text["snapshot"] == to_text["index"] == 3 and len(to_text["results"]) == 5
    img = client.get(f"/v1/images/{pair.id}")
    assert img.status_code == 200 and img.content == pair.image and img.headers["content-type"] == "image/png"

    recall = {r["snapshot"]: r for r in client.get("/v1/recall").json()["snapshots"]}
    assert set(recall) >= {1, 2, 3}
    assert set(recall[3]["recall"]) == {"1", "2", "3"}  # every phase's probe, after the last phase
    for probe in recall[3]["recall"].values():
        assert set(probe) == {"i2t", "t2i"} and 0 <= probe["i2t"]["r1"] <= probe["i2t"]["r10"] <= 1
    assert set(recall[3]["old_gallery"]) == {"1", "2", "3"}

    drift = {d["to"]: d for d in client.get("/v1/drift").json()["transitions"]}
    assert set(drift) >= {1, 2, 3}
    assert all(drift[t]["from"] == t - 1 for t in (1, 2, 3))
    pooled = drift[3]["pooled"]
    assert pooled["ram"]["image"]["n"] > 0 and sum(pooled["sam_change"]["text"]["counts"]) > 0
    assert drift[3]["first"] == "1" and drift[3]["domains"]["1"]["ram"]["image"]["n"] > 0

    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics").text
    for name in ("modx_ingest_accepted_pairs_total", "modx_search_encode_seconds_count", "modx_http_requests_total"):
        assert name in metrics
    assert "modx_shared" not in metrics and "modx_train_loss" not in metrics  # only the API's own series


def test_new_pairs_become_searchable_between_snapshots(stack):
    client, settings, data_dir = stack
    fresh = SyntheticDataset(n_domains=1, pairs_per_domain=4, seed=99).generate("basic")
    post(client, fresh)
    target = fresh[0]

    def found():
        r = client.post("/v1/search", json={"image": base64.b64encode(target.image).decode(), "k": 3}).json()
        return any(h["id"] == target.id for h in r["results"])

    wait("a fresh pair in the index", found, timeout_s=60)
