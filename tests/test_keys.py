"""API keys and scopes against a real Redis and Kafka: 401 without a key or with an unknown
or revoked one, 403 without the scope, 429 over a key's rate, nothing produced by a refused
write, keys stored only as hashes, and a new or revoked key in force at once on every API
replica (two apps sharing Redis and the data dir)."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.keys import KeyStore
from tests.helpers import api_client, bearer, make_key, pair_json, read_topic
from trainer.layout import KEYS_FILE

ROUTES = [  # (method, path, scope needed)
    ("GET", "/v1/phases", "read"),
    ("GET", "/v1/snapshots", "read"),
    ("GET", "/v1/recall", "read"),
    ("GET", "/v1/drift", "read"),
    ("GET", "/v1/timeline", "read"),
    ("GET", "/v1/images/x", "read"),
    ("POST", "/v1/search", "read"),
    ("POST", "/v1/pairs", "write"),
    ("POST", "/v1/pairs/upload", "write"),
    ("GET", "/v1/pairs/x", "read"),
    ("DELETE", "/v1/pairs/x", "write"),
    ("POST", "/v1/pairs/delete", "write"),
    ("POST", "/v1/phases/seal", "admin"),
    ("GET", "/v1/keys", "admin"),
    ("POST", "/v1/keys", "admin"),
    ("DELETE", "/v1/keys/x", "admin"),
    ("GET", "/metrics", "admin"),
]


@pytest.fixture
def app(settings):
    with TestClient(create_app(settings.model_copy(update={"seal_wait_s": 0.1}))) as client:
        yield client


@pytest.mark.parametrize("method,path,scope", ROUTES)
def test_every_route_needs_a_key(app, method, path, scope):
    resp = app.request(method, path)
    assert resp.status_code == 401, resp.text
    assert resp.json()["detail"]["error"] == "missing_key"
    assert resp.headers["www-authenticate"] == "Bearer"
    resp = app.request(method, path, headers=bearer("modx_not-a-key"))
    assert resp.status_code == 401 and resp.json()["detail"]["error"] == "unknown_key"
    resp = app.request(method, path, headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert resp.status_code == 401 and resp.json()["detail"]["error"] == "missing_key"


def test_liveness_and_readiness_need_no_key(app):
    assert app.get("/healthz").status_code == 200
    assert app.get("/readyz").status_code == 503  # no index yet: answered, not refused


@pytest.mark.parametrize("method,path,scope", [r for r in ROUTES if r[2] != "read"])
def test_a_narrower_scope_is_403(app, settings, method, path, scope):
    for weaker in ("read", "write")[: ("read", "write", "admin").index(scope)]:
        resp = app.request(method, path, headers=bearer(make_key(settings, weaker)))
        assert resp.status_code == 403, resp.text
        detail = resp.json()["detail"]
        assert detail["error"] == "insufficient_scope" and detail["required"] == scope and detail["scope"] == weaker


@pytest.mark.parametrize("method,path,scope", ROUTES)
def test_a_wide_enough_scope_passes(app, settings, method, path, scope):
    for scope_ok in ("read", "write", "admin")[("read", "write", "admin").index(scope) :]:
        resp = app.request(method, path, headers=bearer(make_key(settings, scope_ok)))
        assert resp.status_code not in (401, 403, 429), (scope_ok, resp.text)


def test_refused_writes_produce_nothing(app, settings):
    body = {"pairs": [pair_json("p1")]}
    assert app.post("/v1/pairs", json=body).status_code == 401
    assert app.post("/v1/pairs", json=body, headers=bearer(make_key(settings, "read"))).status_code == 403
    form = app.post("/v1/pairs/upload", files={"image": ("a.png", b"x", "image/png")}, data={"text": "t"})
    assert form.status_code == 401  # a cross-site form post carries no Authorization header
    assert read_topic(settings.kafka_bootstrap, settings.topic) == []


def test_keys_file_holds_hashes_only(settings):
    with api_client(settings) as admin:
        made = admin.post("/v1/keys", json={"scope": "write", "name": "ingest", "rate": 5}).json()
        listed = admin.get("/v1/keys").json()["keys"]
    secret = made["key"]
    assert secret.startswith("modx_") and len(secret) >= 5 + 43  # 32 random bytes, URL-safe base64
    assert made["name"] == "ingest" and made["scope"] == "write" and made["rate"] == 5
    text = (settings.data_dir / KEYS_FILE).read_text()
    assert secret not in text and secret[5:] not in text
    assert all("key" not in k and "hash" not in k for k in listed)
    assert {k["name"] for k in listed} >= {"ingest"}
    with api_client(settings, key=secret) as client:
        assert client.get("/v1/phases").status_code == 200


def test_new_and_revoked_keys_take_effect_at_once_on_every_replica(settings):
    with api_client(settings) as a, api_client(settings) as b:
        secret = a.post("/v1/keys", json={"scope": "read", "name": "reader"}).json()["key"]
        assert b.get("/v1/phases", headers=bearer(secret)).status_code == 200  # made on A, known to B
        assert a.get("/v1/phases", headers=bearer(secret)).status_code == 200
        revoked = b.delete("/v1/keys/reader")
        assert revoked.status_code == 200 and revoked.json()["revoked"] is not None
        for replica in (a, b):  # the very next request, on either replica
            resp = replica.get("/v1/phases", headers=bearer(secret))
            assert resp.status_code == 401 and resp.json()["detail"]["error"] == "unknown_key"
        listed = {k["name"]: k for k in a.get("/v1/keys").json()["keys"]}
        assert listed["reader"]["revoked"] is not None and listed["reader"]["last_used"] is not None


def test_key_cache_is_rebuilt_from_disk_after_a_flush(settings, redis_client):
    secret = make_key(settings, "read")
    with api_client(settings) as admin:
        revoked = make_key(settings, "read", name="gone")
        assert admin.delete("/v1/keys/gone").status_code == 200
        redis_client.flushall()
        assert admin.get("/v1/phases", headers=bearer(secret)).status_code == 200
        assert admin.get("/v1/phases", headers=bearer(revoked)).status_code == 401
        assert redis_client.exists("modx:keys:version")


def test_keys_work_from_disk_while_redis_is_down(settings):
    secret = make_key(settings, "read")
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with api_client(down, key=secret) as client:
        resp = client.get("/v1/images/nothing")
        assert resp.status_code == 404  # authenticated from keys.json, then the route answered
        assert client.get("/v1/images/nothing", headers=bearer("modx_wrong")).status_code == 401


def test_over_its_rate_a_key_gets_429_and_nothing_is_produced(settings):
    slow = make_key(settings, "write", rate=1)  # bucket of 1: the second request within a second is refused
    with api_client(settings, key=slow) as client:
        assert client.post("/v1/pairs", json={"pairs": [pair_json("first")]}).status_code == 202
        resp = client.post("/v1/pairs", json={"pairs": [pair_json("second")]})
        assert resp.status_code == 429, resp.text
        assert resp.json()["detail"]["error"] == "rate_limited"
        assert 1 <= int(resp.headers["retry-after"]) <= 2
        other = make_key(settings, "write")  # the limit is the key's, not the replica's
        assert client.post("/v1/pairs", json={"pairs": [pair_json("third")]}, headers=bearer(other)).status_code == 202
        time.sleep(1.05)
        assert client.post("/v1/pairs", json={"pairs": [pair_json("fourth")]}).status_code == 202
    ids = [m.key.decode() for m in read_topic(settings.kafka_bootstrap, settings.topic)]
    assert sorted(ids) == ["first", "fourth", "third"]


def test_the_rate_is_shared_by_replicas(settings):
    slow = make_key(settings, "read", rate=2)  # capacity 2
    with api_client(settings, key=slow) as a, api_client(settings, key=slow) as b:
        codes = [c.get("/v1/phases").status_code for c in (a, b, a, b)]
    assert codes[:2] == [200, 200] and 429 in codes[2:]


def test_default_rate_is_a_setting(settings):
    secret = make_key(settings, "read", rate=None)
    with api_client(settings.model_copy(update={"key_rate": 1.0}), key=secret) as client:
        assert [client.get("/v1/phases").status_code for _ in range(2)] == [200, 429]


def test_openapi_documents_the_bearer_scheme_and_errors(app):
    doc = app.get("/openapi.json").json()
    scheme = doc["components"]["securitySchemes"]["HTTPBearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer" and "admin.key" in scheme["description"]
    search = doc["paths"]["/v1/search"]["post"]
    assert search["security"] == [{"HTTPBearer": []}]
    assert {"401", "403", "429"} <= set(search["responses"])
    assert "security" not in doc["paths"]["/healthz"]["get"] and "security" not in doc["paths"]["/readyz"]["get"]


def test_cors_is_off_unless_origins_are_set(settings):
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    with TestClient(create_app(settings)) as client:
        resp = client.options("/v1/pairs", headers=preflight)
        assert "access-control-allow-origin" not in resp.headers
    allowed = settings.model_copy(update={"cors_origins": ["https://app.example"]})
    with TestClient(create_app(allowed)) as client:
        ok = client.options("/v1/pairs", headers={**preflight, "Origin": "https://app.example"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        evil = client.options("/v1/pairs", headers=preflight)
        assert "access-control-allow-origin" not in evil.headers


def test_bad_key_requests_are_4xx(settings):
    with api_client(settings) as admin:
        assert admin.post("/v1/keys", json={"scope": "root"}).status_code == 422
        assert admin.post("/v1/keys", json={"scope": "read", "rate": 0}).status_code == 422
        bad_name = admin.post("/v1/keys", json={"scope": "read", "name": "no spaces"})
        assert bad_name.status_code == 422 and bad_name.json()["detail"]["error"] == "invalid_name"
        assert admin.post("/v1/keys", json={"scope": "read", "name": "twice"}).status_code == 201
        taken = admin.post("/v1/keys", json={"scope": "read", "name": "twice"})
        assert taken.status_code == 409 and taken.json()["detail"]["error"] == "name_taken"
        missing = admin.delete("/v1/keys/nobody")
        assert missing.status_code == 404 and missing.json()["detail"]["error"] == "not_found"
    assert json.loads((settings.data_dir / KEYS_FILE).read_text())["keys"].keys() >= {"twice"}


def test_last_used_is_batched_not_written_per_request(settings):
    secret = make_key(settings, "read", name="busy")
    path = settings.data_dir / KEYS_FILE
    before = path.stat().st_mtime_ns, path.read_text()
    with TestClient(create_app(settings.model_copy(update={"key_sync_s": 3600}))) as client:
        for _ in range(20):
            assert client.get("/v1/phases", headers=bearer(secret)).status_code == 200
        assert (path.stat().st_mtime_ns, path.read_text()) == before  # 20 requests, no disk write
        client.app.state.auth.sync()  # what the key-sync thread does every key_sync_s
        used = json.loads(path.read_text())["keys"]["busy"]["last_used"]
        assert used is not None and time.time() - used < 60
        assert json.loads(path.read_text())["version"] == json.loads(before[1])["version"]  # key set unchanged


def test_a_key_file_changed_behind_redis_is_picked_up_by_the_sync(settings):
    secret = make_key(settings, "read", name="restored-away")
    with TestClient(create_app(settings.model_copy(update={"key_sync_s": 3600}))) as client:
        assert client.get("/v1/phases", headers=bearer(secret)).status_code == 200
        KeyStore(settings.data_dir, None).revoke("restored-away")  # keys.json changed, Redis not told
        client.app.state.auth.sync()
        assert client.get("/v1/phases", headers=bearer(secret)).status_code == 401
