"""Every malformed request of the corpus (tests/bad_requests.py) against one real app, Kafka
(Tansu) and Redis: each gets its status and named error code in the project's error body,
and the topic stays empty (checked after each case by the Fetch high watermark)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.backpressure import KafkaLag
from service.settings import Settings
from tests.bad_requests import CASES, LIMITS, PNG
from tests.helpers import b64, bearer, make_key, private_settings

assert len(CASES) >= 120 and len({c.name for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def corpus_settings(tmp_path_factory, kafka, redis_server) -> Settings:
    return private_settings(tmp_path_factory.mktemp("corpus"), kafka, redis_server, "corpus", **LIMITS)


@pytest.fixture(scope="module")
def client(corpus_settings):
    with TestClient(create_app(corpus_settings)) as c:
        yield c


@pytest.fixture(scope="module")
def keys(corpus_settings) -> dict[str, dict]:
    """The Authorization header each case's `key` names."""
    out = {scope: bearer(make_key(corpus_settings, scope)) for scope in ("read", "write", "admin")}
    return {**out, "unknown": bearer("modx_" + "0" * 43), "basic": {"Authorization": "Basic YWRtaW46YWRtaW4="}}


@pytest.fixture(scope="module")
def produced(corpus_settings):
    """Messages in the corpus topic so far (no group ever commits there: the lag is the count)."""
    lag = KafkaLag(corpus_settings)
    yield lag.measure
    lag.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_request(client, keys, produced, case):
    request = case.request()
    request["headers"] = {**keys[case.key], **request["headers"]}
    resp = client.request(case.method, case.path, **request)
    assert resp.status_code == case.status, resp.text
    assert resp.headers["content-type"] == "application/json"
    detail = resp.json()["detail"]
    assert detail["error"] == case.error and isinstance(detail["message"], str) and detail["message"], detail
    if case.field is not None:
        assert detail["field"] == case.field, detail
    assert produced() == 0


def test_the_produced_check_sees_a_good_request(client, keys, produced):
    """Run last in this module: the check above is able to fail."""
    resp = client.post(
        "/v1/pairs", json={"pairs": [{"id": "good", "text": "a red square", "image": b64(PNG)}]}, headers=keys["write"]
    )
    assert resp.status_code == 202, resp.text
    assert produced() == 1
