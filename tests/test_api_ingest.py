"""POST /v1/pairs and /v1/pairs/upload against a real Kafka (Tansu) and Redis: a 202 means
the pairs are in Kafka keyed by id; any bad item refuses the request with a 4xx naming the
item and the reason, and nothing at all reaches Kafka."""

from __future__ import annotations

import json

import pytest

from service import infra
from service.registry import Registry
from tests.helpers import api_client, b64, bomb_png, make_image, make_png, pair_json, read_topic, truncated_png


@pytest.fixture
def client(settings):
    with api_client(settings) as c:
        yield c


def post(client, *pairs):
    return client.post("/v1/pairs", json={"pairs": list(pairs)})


def test_good_batch_is_in_kafka_keyed_by_id(client, settings):
    images = [make_png(color=(i, 0, 0)) for i in range(3)]
    resp = post(
        client,
        pair_json("p1", image=images[0], metadata={"source": "t"}),
        pair_json("p2", image=images[1]),
        pair_json(None, text="no id", image=images[2]),
    )
    assert resp.status_code == 202, resp.text
    accepted = resp.json()["accepted"]
    assert [a["status"] for a in accepted] == ["queued"] * 3
    ids = [a["id"] for a in accepted]
    assert ids[:2] == ["p1", "p2"] and ids[2]
    messages = read_topic(settings.kafka_bootstrap, settings.topic)
    assert sorted(m.key.decode() for m in messages) == sorted(ids)
    by_id = {m.key.decode(): json.loads(m.value) for m in messages}
    assert by_id["p1"]["metadata"] == {"source": "t"} and by_id["p1"]["content_type"] == "image/png"
    assert by_id[ids[2]]["text"] == "no id" and by_id[ids[2]]["image"] == b64(images[2])
    assert all(by_id[i]["id"] == i and by_id[i]["received_at"] for i in ids)


BAD = {
    "truncated_png": (pair_json("x", image=truncated_png()), 422, "corrupt_image"),
    "decompression_bomb": (pair_json("x", image=bomb_png(50_000, 50_000)), 413, "too_many_pixels"),
    "bad_base64": ({**pair_json("x"), "image": "%%%not-base64%%%"}, 422, "invalid_base64"),
    "empty_text": (pair_json("x", text=" \n "), 422, "empty_text"),
    "oversized_text": (pair_json("x", text="y" * 1001), 422, "text_too_long"),
    "bad_id": (pair_json("x/../../etc"), 422, "invalid_id"),
    "unsupported_type": (pair_json("x", image=make_image("GIF")), 415, "unsupported_media_type"),
    "oversized_image": (pair_json("x", image=b"\x89PNG\r\n\x1a\n" + b"\0" * (4 * 1024 * 1024)), 413, "image_too_large"),
    "missing_image": ({"id": "x", "text": "t"}, 422, "invalid_request"),
    "unknown_field": ({**pair_json("x"), "caption": "t"}, 422, "invalid_request"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_item_refuses_the_whole_request(client, settings, case):
    bad, status, error = BAD[case]
    resp = post(client, pair_json("good-1"), bad, pair_json("good-2"))
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert detail["error"] == error and detail["item"] == 1 and detail["message"]
    assert read_topic(settings.kafka_bootstrap, settings.topic) == []


def test_oversized_batch(client, settings):
    resp = post(client, *[pair_json(f"p{i}") for i in range(settings.max_pairs_per_request + 1)])
    assert resp.status_code == 413
    assert resp.json()["detail"]["error"] == "too_many_pairs" and "257 pairs" in resp.json()["detail"]["message"]
    resp = post(client)
    assert resp.status_code == 422 and resp.json()["detail"]["error"] == "empty_request"
    assert read_topic(settings.kafka_bootstrap, settings.topic) == []


def test_body_over_the_request_limit(settings):
    with api_client(settings.model_copy(update={"max_request_bytes": 2048})) as client:
        resp = post(client, pair_json("big", image=make_image("PNG", (64, 64), noise=True)))
    assert resp.status_code == 413 and resp.json()["detail"]["error"] == "request_too_large"
    assert read_topic(settings.kafka_bootstrap, settings.topic) == []


def test_duplicates_are_reported_and_not_produced(client, settings):
    Registry.from_url(settings.redis_url).add_ids(["seen"])  # already in a phase buffer
    resp = post(client, pair_json("seen"), pair_json("new"), pair_json("new"))
    assert resp.status_code == 202
    assert resp.json()["accepted"] == [
        {"id": "seen", "status": "duplicate"},
        {"id": "new", "status": "queued"},
        {"id": "new", "status": "duplicate"},
    ]
    assert [m.key for m in read_topic(settings.kafka_bootstrap, settings.topic)] == [b"new"]


def test_upload_multipart(client, settings):
    jpeg = make_image("JPEG", (12, 12))
    resp = client.post(
        "/v1/pairs/upload",
        files={"image": ("cat.jpg", jpeg, "image/jpeg")},
        data={"text": "a cat", "id": "up-1", "metadata": '{"k": 1}'},
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["accepted"] == [{"id": "up-1", "status": "queued"}]
    [message] = read_topic(settings.kafka_bootstrap, settings.topic)
    value = json.loads(message.value)
    assert message.key == b"up-1" and value["content_type"] == "image/jpeg" and value["metadata"] == {"k": 1}


@pytest.mark.parametrize(
    "files,data,status,error",
    [
        ({"image": ("x.gif", make_image("GIF"), "image/gif")}, {"text": "t"}, 415, "unsupported_media_type"),
        ({"image": ("x.png", truncated_png(), "image/png")}, {"text": "t"}, 422, "corrupt_image"),
        ({"image": ("x.png", make_png(), "image/png")}, {"text": "  "}, 422, "empty_text"),
        ({"image": ("x.png", make_png(), "image/png")}, {"text": "t", "id": "a b"}, 422, "invalid_id"),
        ({"image": ("x.png", make_png(), "image/png")}, {"text": "t", "metadata": "{"}, 422, "invalid_metadata"),
        ({}, {"text": "t"}, 422, "invalid_request"),
    ],
)
def test_upload_refusals(client, settings, files, data, status, error):
    resp = client.post("/v1/pairs/upload", files=files or {"other": ("a", b"b")}, data=data)
    assert resp.status_code == status, resp.text
    assert resp.json()["detail"]["error"] == error
    assert read_topic(settings.kafka_bootstrap, settings.topic) == []


def test_kafka_down_is_503_and_bad_input_still_4xx(settings):
    down = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1", "produce_timeout_s": 2.0})
    with api_client(down) as client:
        assert post(client, pair_json("x", text="")).status_code == 422
        resp = post(client, pair_json("x"))
    assert resp.status_code == 503 and resp.json()["detail"]["error"] == "kafka_unavailable"


def test_readyz_names_each_failed_dependency(settings):
    with api_client(settings) as client:  # Kafka and Redis up, no snapshot or index yet
        ready = client.get("/readyz")
        ingest = client.get("/readyz/ingest")
    assert ready.status_code == 503 and ready.json()["failed"] == ["snapshot_and_index"]
    assert ready.json()["ingest"] == {"ready": True, "checks": {"kafka": True, "redis": True}}
    assert ingest.status_code == 200 and ingest.json()["role"] == "ingest"  # pairs can be taken without an index
    down = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1", "redis_url": "redis://127.0.0.1:1/0"})
    with api_client(down) as client:
        body = client.get("/readyz").json()
        search, ingest = client.get("/readyz/search"), client.get("/readyz/ingest")
    assert body["failed"] == ["redis", "snapshot_and_index"] and body["ingest"]["ready"] is False
    assert search.status_code == 503 and search.json()["failed"] == ["redis", "snapshot_and_index"]
    assert ingest.status_code == 503 and ingest.json()["failed"] == ["kafka", "redis"]
    assert "kafka is not available" in ingest.json()["message"] and "redis is not available" in body["message"]


def test_images_and_health(client, settings):
    assert client.get("/healthz").json() == {"status": "ok"}
    resp = client.get("/v1/images/missing-id")
    assert resp.status_code == 404 and "missing-id" in resp.json()["detail"]["message"]
    path = settings.data_dir / "images" / "ab" / "abc"
    path.parent.mkdir(parents=True)
    path.write_bytes(make_png())
    resp = client.get("/v1/images/abc")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png" and resp.content == make_png()


def test_kafka_lost_after_start_is_503(settings, tmp_path):
    with infra.kafka_broker(log_dir=tmp_path) as broker:
        own = settings.model_copy(update={"kafka_bootstrap": broker.address, "produce_timeout_s": 2.0})
        with api_client(own) as client:
            assert post(client, pair_json("before")).status_code == 202
            infra.stop_process(broker.process)
            resp = post(client, pair_json("after"))
    assert resp.status_code == 503, resp.text
    assert resp.json()["detail"]["error"] == "kafka_unavailable"
