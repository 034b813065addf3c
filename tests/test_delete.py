"""Delete, pair states and wait=searchable, against a live stack (real Tansu and redis-server;
consumer, trainer and indexer as processes; the API in-process).

A deleted pair: never returned by search again, with any query; not replayed by any later
phase (the snapshot's trained.json); its image gone; not in the index re-embedded after it;
and all of that holds after every role restarts. A pair deleted while still queued in
Kafka is never written.
"""

from __future__ import annotations

import base64
import os
import sys
import time

import pytest
import redis

from indexer.store import load_index
from service.buffer import read_records
from service.infra import start_process, stop_process
from service.ingest import ensure_topics
from service.settings import Settings
from tests.helpers import api_client, wait_for
from trainer import layout
from trainer.atomic import read_json
from trainer.datasets.synthetic import SyntheticDataset

pytestmark = pytest.mark.slow

ROLES = ("consumer", "trainer", "indexer")


class Stack:
    def __init__(self, env: dict, settings: Settings, data_dir):
        self.env, self.settings, self.data_dir = env, settings, data_dir
        self.procs: dict = {}

    def start(self, *roles: str) -> None:
        for role in roles or ROLES:
            log = self.data_dir.parent / f"{self.data_dir.name}-{role}.log"
            self.procs[role] = start_process(
                [sys.executable, "-m", "service.cli", role], log, {**os.environ, **self.env}
            )

    def kill(self, *roles: str) -> None:
        for role in roles or list(self.procs):
            proc = self.procs.pop(role)
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stack(kafka, redis_server, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("delete") / "data"
    with redis.Redis.from_url(redis_server) as r:
        r.flushdb()
    env = {
        "MODX_DATA_DIR": str(data_dir),
        "MODX_KAFKA_BOOTSTRAP": kafka,
        "MODX_REDIS_URL": redis_server,
        "MODX_TOPIC": "delete.pairs",
        "MODX_DLQ_TOPIC": "delete.pairs.dlq",
        "MODX_CONSUMER_GROUP": "delete",
        "MODX_PHASE_SIZE": "100000",
        "MODX_RECIPE__EPOCHS": "2",
        "MODX_RECIPE__BATCH_SIZE": "16",
        "MODX_RECIPE__REPLAY_FRACTION": "1.0",
        "MODX_WORKER_POLL_S": "0.3",
        "MODX_INDEX_POLL_S": "0.3",
        "MODX_SERVING_POLL_S": "0.3",
        "MODX_CONSUMER_POLL_MS": "100",
        "MODX_SEAL_MIN_INTERVAL_S": "0",
    }
    settings = Settings(**{k[5:].lower(): v for k, v in env.items() if "__" not in k})
    ensure_topics(kafka, [settings.topic, settings.dlq_topic])
    s = Stack(env, settings, data_dir)
    s.start()
    try:
        yield s
    finally:
        for p in s.procs.values():
            stop_process(p, timeout_s=10)


def body(pairs, group: str = "keep") -> dict:
    return {
        "pairs": [
            {"id": p.id, "text": p.text, "image": base64.b64encode(p.image).decode(), "metadata": {"group": group}}
            for p in pairs
        ]
    }


def returned_ids(client, pairs, k: int = 1000) -> set[str]:
    """Every id search returns for each pair's caption and each pair's image, text and image targets."""
    seen = set()
    for p in pairs:
        for query in ({"text": p.text}, {"image": base64.b64encode(p.image).decode()}):
            for target in ("image", "text"):
                r = client.post("/v1/search", json={**query, "target": target, "k": k})
                assert r.status_code == 200, r.text
                seen |= {h["id"] for h in r.json()["results"]}
    return seen


def serving(client) -> dict:
    return client.get("/v1/snapshots").json()["serving"] or {}


def seal_and_wait(client, snapshot: int) -> None:
    assert client.post("/v1/phases/seal").status_code == 200
    wait_for(lambda: serving(client).get("index") == snapshot, 240, message=f"index {snapshot} served")


def trained(data_dir, snapshot: int) -> dict:
    return read_json(layout.snapshot_dir(data_dir, snapshot) / layout.TRAINED_FILE)


def test_delete_removes_a_pair_from_search_replay_index_and_disk_for_good(stack):
    data = SyntheticDataset(n_domains=2, pairs_per_domain=40, seed=11)
    first, second = (data.generate(d) for d in data.domains)
    keep, dropped_group, victim = first[:30], first[30:36], first[36]
    with api_client(stack.settings) as client:
        wait_for(lambda: serving(client).get("index") == 0, 120, message="CLIP_0's index")

        # wait=searchable answers 200 once every pair is in the served index
        r = client.post("/v1/pairs?wait=searchable&timeout=60", json=body(keep + [victim]))
        assert r.status_code == 200, r.text
        states = r.json()["states"]
        assert [s["id"] for s in states] == [p.id for p in keep + [victim]]
        odd = [s for s in states if s["searchable"] != {"snapshot": 0, "index": 0} or s["phase"] != 1]
        assert not odd, odd
        s = client.get(f"/v1/pairs/{victim.id}").json()
        assert s["state"] == "searchable" and s["phase"] == 1 and s["trained_in"] == []
        assert victim.id in returned_ids(client, [victim])

        # delete one, then a group by metadata; unknown ids are 404, a second delete changes nothing
        assert client.delete("/v1/pairs/no-such-pair").status_code == 404
        r = client.delete(f"/v1/pairs/{victim.id}")
        assert r.status_code == 200 and r.json() == {"deleted": [victim.id], "already_deleted": []}
        assert client.delete(f"/v1/pairs/{victim.id}").json() == {"deleted": [], "already_deleted": [victim.id]}
        r = client.post("/v1/pairs/delete", json={"ids": [keep[0].id, "no-such-pair"]})
        assert r.status_code == 404 and "no-such-pair" in r.text
        assert client.get(f"/v1/pairs/{keep[0].id}").json()["state"] == "searchable"  # nothing was deleted
        assert client.post("/v1/pairs/delete", json={"filter": {"group": "drop"}}).json()["deleted"] == []
        assert client.post("/v1/pairs?wait=searchable&timeout=60", json=body(dropped_group, "drop")).status_code == 200
        r = client.post("/v1/pairs/delete", json={"filter": {"group": "drop"}})
        assert sorted(r.json()["deleted"]) == sorted(p.id for p in dropped_group)
        assert client.post("/v1/pairs/delete", json={"filter": {}}).status_code == 422

        gone = {victim.id} | {p.id for p in dropped_group}
        assert client.get(f"/v1/pairs/{victim.id}").json() == {
            "id": victim.id,
            "state": "deleted",
            "phase": None,
            "searchable": None,
            "trained_in": [],
        }
        assert client.get(f"/v1/images/{victim.id}").status_code == 404
        assert not layout.in_data(stack.data_dir, layout.image_relpath(victim.id)).exists()
        assert not gone & returned_ids(client, [victim, *dropped_group[:2], *keep[:2]])
        reposted = client.post("/v1/pairs", json=body([victim])).json()["accepted"]
        assert reposted == [{"id": victim.id, "status": "deleted"}]

        # phase 1 trains without it; delete `late` after it trained: phase 2 does not replay it
        seal_and_wait(client, 1)
        trained_1 = set(trained(stack.data_dir, 1)["pairs"])
        assert trained_1 and not gone & trained_1
        late = next(p for p in keep if p.id in trained_1)
        assert client.delete(f"/v1/pairs/{late.id}").status_code == 200
        gone.add(late.id)
        assert client.get(f"/v1/pairs/{late.id}").json()["trained_in"] == [1]  # weights cannot forget it
        assert not gone & returned_ids(client, [victim, late])

        # a pair deleted while it is still queued in Kafka is never written
        stack.kill("consumer")
        queued = second[0]
        assert client.post("/v1/pairs", json=body([queued])).json()["accepted"][0]["status"] == "queued"
        assert client.get(f"/v1/pairs/{queued.id}").json()["state"] == "queued"
        assert client.delete(f"/v1/pairs/{queued.id}").status_code == 200
        gone.add(queued.id)

    # every role restarts (the API too: a new app); the stream goes on
    stack.kill()
    stack.start()
    with api_client(stack.settings) as client:
        r = client.post("/v1/pairs?wait=searchable&timeout=60", json=body(second[1:]))
        assert r.status_code == 200, r.text
        seal_and_wait(client, 2)
        replayed = set(trained(stack.data_dir, 2)["replayed"])
        assert replayed and not gone & replayed and not gone & set(trained(stack.data_dir, 2)["pairs"])
        index = load_index(layout.index_dir(stack.data_dir, 2), "cpu")
        assert not any(i in index for i in gone) and keep[0].id in index  # gone at the re-embed
        assert not gone & returned_ids(client, [victim, late, queued])
        assert all(client.get(f"/v1/pairs/{i}").json()["state"] == "deleted" for i in gone)
        assert all(not layout.in_data(stack.data_dir, layout.image_relpath(i)).exists() for i in gone)
        records = {r.id for n in layout.phase_numbers(stack.data_dir) for r in read_records(stack.data_dir, n)}
        assert queued.id not in records and victim.id in records  # the queued one was never written


def test_wait_times_out_with_states_when_nothing_indexes(stack):
    stack.kill("indexer")
    try:
        with api_client(stack.settings) as client:
            pair = SyntheticDataset(n_domains=1, pairs_per_domain=1, seed=12).generate("basic")
            t0 = time.monotonic()
            r = client.post("/v1/pairs?wait=searchable&timeout=1.5", json=body(pair))
            assert r.status_code == 202 and time.monotonic() - t0 >= 1.5
            assert r.json()["states"][0]["searchable"] is None
            assert client.post("/v1/pairs?wait=searchable&timeout=0", json=body(pair)).status_code == 422
    finally:
        stack.start("indexer")
