"""POST /v1/search against a served snapshot and its indexes, built by the real workers from
phase buffers on disk (real redis-server): what a query may be, what it answers, and the
4xx that name a bad query."""

from __future__ import annotations

import base64

import pytest

from service.indexer_worker import IndexerWorker
from service.registry import Registry
from service.trainer_worker import bootstrap
from tests.helpers import api_client, wait_for, write_phases
from trainer.datasets.synthetic import SyntheticDataset


@pytest.fixture
def served(settings):
    """A client of an API serving snapshot 0 with indexes over two synthetic phases."""
    stream = SyntheticDataset(n_domains=2, pairs_per_domain=20, seed=4)
    write_phases(settings, stream, n=2)
    registry = Registry.from_url(settings.redis_url)
    bootstrap(settings, registry)
    IndexerWorker(settings, registry).tick()
    with api_client(settings.model_copy(update={"serving_poll_s": 0.05})) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, message="the index served")
        yield client, stream


def search(client, **body):
    return client.post("/v1/search", json=body)


def test_no_index_yet_is_503(settings):
    with api_client(settings) as client:
        r = search(client, text="a red circle")
    assert r.status_code == 503 and r.json()["detail"]["error"] == "not_ready"


def test_text_and_image_queries_rank_images_or_captions(served):
    client, stream = served
    pair = stream.generate("blocky")[3]
    r = search(client, text=pair.text, k=5).json()
    assert (r["snapshot"], r["index"], r["target"]) == (0, 0, "image") and len(r["results"]) == 5
    assert all(h["text"] and h["metadata"]["domain"] in ("basic", "blocky") for h in r["results"])
    scores = [h["score"] for h in r["results"]]
    assert scores == sorted(scores, reverse=True)
    own = search(client, image=base64.b64encode(pair.image).decode(), k=1).json()["results"]
    assert own[0]["id"] == pair.id  # image -> image: its own image first
    caption = search(client, text=pair.text, target="text", k=1).json()
    assert caption["target"] == "text" and caption["results"][0]["text"] == pair.text  # text -> text


def test_filter_and_min_score(served):
    client, _ = served
    r = search(client, text="a small red star at the center", k=50, filter={"domain": "blocky"}).json()
    assert r["results"] and all(h["metadata"]["domain"] == "blocky" for h in r["results"])
    assert len(r["results"]) == 20  # every blocky pair, though the index holds 40
    assert search(client, text="a small red star", k=5, min_score=1.0).json()["results"] == []


@pytest.mark.parametrize(
    "body,field,error",
    [
        ({"text": "x", "image": "AAAA"}, None, "exactly one of 'text', 'image' or 'id'"),
        ({"k": 3}, None, "exactly one of 'text', 'image' or 'id'"),
        ({"text": "x", "k": 0}, "k", "greater than or equal to 1"),
        ({"text": "x", "target": "audio"}, "target", "'image' or 'text'"),
        ({"text": ""}, "text", "at least 1 character"),
    ],
)
def test_bad_query_is_422_naming_it(served, body, field, error):
    client, _ = served
    r = search(client, **body)
    assert r.status_code == 422 and error in r.json()["detail"]["message"]
    assert r.json()["detail"].get("field") == field


def test_bad_query_image_names_the_reason(served):
    client, _ = served
    r = search(client, image="not base64!")
    assert r.status_code == 422 and r.json()["detail"]["error"] == "invalid_base64"
    r = search(client, image=base64.b64encode(b"GIF89a....").decode())
    assert r.status_code == 415 and r.json()["detail"]["field"] == "image"
