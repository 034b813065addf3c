"""The input contract's defects (issue 9: defect 1's API side and defect 8), each reproduced
against the real app, Kafka (Tansu) and Redis: the request is refused with a 4xx naming what
is wrong, in the project's error body, and nothing reaches Kafka."""

from __future__ import annotations

import json

import pytest

from tests.helpers import api_client, make_image, make_png, pair_json, read_topic


@pytest.fixture
def client(settings):
    with api_client(settings) as c:
        yield c


def post_raw(client, body: str | bytes, path: str = "/v1/pairs"):
    """Send `body` as is: json.dumps escapes lone surrogates as \\udXXX (what a client sends on the wire)."""
    content = body.encode() if isinstance(body, str) else body
    return client.post(path, content=content, headers={"content-type": "application/json"})


def refused(resp, status: int, error: str, field: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert detail["error"] == error and detail["message"], detail
    if field is not None:
        assert detail["field"] == field, detail
    return detail


SURROGATES = {
    "metadata_value": (pair_json("s1", metadata={"k": "\udc00"}), "metadata.k"),
    "metadata_key": (pair_json("s1", metadata={"\ud800": 1}), "metadata.\\ud800"),
    "nested_value": (pair_json("s1", metadata={"a": [{"b": ["ok", "x\udfffy"]}]}), "metadata.a.0.b.1"),
    "nested_key": (pair_json("s1", metadata={"a": {"\udc00k": 1}}), "metadata.a.\\udc00k"),
    "text": (pair_json("s1", text="a \ud800 b"), "text"),
}


@pytest.mark.parametrize("case", SURROGATES)
def test_lone_surrogates_are_refused(client, settings, case):
    pair, field = SURROGATES[case]
    detail = refused(post_raw(client, json.dumps({"pairs": [pair]})), 422, "invalid_unicode", field)
    assert detail["item"] == 0 and "surrogate" in detail["message"]
    assert read_topic(settings.kafka_bootstrap, settings.topic) == []


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_in_metadata_are_refused(client, settings, literal):
    body = json.dumps({"pairs": [pair_json("n1", metadata={"a": {"b": 0}})]}).replace('"b": 0', f'"b": {literal}')
    refused(post_raw(client, body), 422, "invalid_number", "metadata.a.b")
    assert read_topic(settings.kafka_bootstrap, settings.topic) == []


def test_upload_with_invalid_utf8_text_is_refused(client, settings):
    files = {"image": ("x.png", make_png(), "image/png"), "text": (None, b"caf\xe9 au lait")}
    refused(client.post("/v1/pairs/upload", files=files), 422, "invalid_utf8", "text")
    files["text"] = (None, "café au lait".encode())  # the same letters in UTF-8 are fine
    assert client.post("/v1/pairs/upload", files=files).status_code == 202
    [message] = read_topic(settings.kafka_bootstrap, settings.topic)
    assert json.loads(message.value)["text"] == "café au lait"


def test_upload_with_surrogate_metadata_is_refused(client, settings):
    files = {"image": ("x.png", make_png(), "image/png")}
    resp = client.post("/v1/pairs/upload", files=files, data={"text": "t", "metadata": '{"k": "\\udc00"}'})
    refused(resp, 422, "invalid_unicode", "metadata.k")
    resp = client.post("/v1/pairs/upload", files=files, data={"text": "t", "metadata": '{"k": NaN}'})
    refused(resp, 422, "invalid_number", "metadata.k")
    assert read_topic(settings.kafka_bootstrap, settings.topic) == []


@pytest.mark.parametrize(
    "body,field",
    [
        ({"text": "q", "k": "10"}, "k"),
        ({"text": "q", "k": True}, "k"),
        ({"text": "q", "k": 10.0}, "k"),
        ({"text": "q", "min_score": False}, "min_score"),
        ({"text": 5}, "text"),
    ],
)
def test_search_types_are_strict(client, body, field):
    refused(client.post("/v1/search", json=body), 422, "invalid_request", field)


def test_pair_types_are_strict(client, settings):
    refused(client.post("/v1/pairs", json={"pairs": [{**pair_json("t1"), "text": 5}]}), 422, "invalid_request", "text")
    refused(client.post("/v1/pairs", json={"pairs": [{**pair_json("t1"), "id": 7}]}), 422, "invalid_request", "id")
    assert read_topic(settings.kafka_bootstrap, settings.topic) == []


def test_malformed_search_is_4xx_before_any_index_is_loaded(client):
    assert client.post("/v1/search", json={"text": "q"}).status_code == 503  # no index yet
    refused(client.post("/v1/search", json={"image": "%%%"}), 422, "invalid_base64", "image")
    gif = {"image": pair_json(image=make_image("GIF"))["image"]}
    refused(client.post("/v1/search", json=gif), 415, "unsupported_media_type", "image")
    body = json.dumps({"text": "q", "filter": {"k": "\udc00"}})
    refused(post_raw(client, body, "/v1/search"), 422, "invalid_unicode", "filter.k")


@pytest.mark.parametrize("path", ["/v1/pairs", "/v1/search"])
@pytest.mark.parametrize(
    "body,error",
    [
        (b'{"pairs": [{"text": "caf\xe9"}]}', "invalid_json"),
        (b"[" * 5000 + b"]" * 5000, "invalid_json"),
        (b'{"k": ' + b"9" * 5000 + b"}", "invalid_json"),
        (b'{"pairs": [', "invalid_json"),
    ],
)
def test_unparseable_bodies_get_the_project_error_body(client, settings, path, body, error):
    refused(post_raw(client, body, path), 400, error)
    assert read_topic(settings.kafka_bootstrap, settings.topic) == []


def test_framework_errors_use_the_project_error_body(client):
    refused(client.get("/v1/nowhere"), 404, "not_found")
    resp = client.delete("/v1/pairs")
    refused(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["allow"]


def test_image_responses_are_not_sniffed(client, settings):
    path = settings.data_dir / "images" / "ab" / "abc"
    path.parent.mkdir(parents=True)
    path.write_bytes(make_png())
    resp = client.get("/v1/images/abc")
    assert resp.status_code == 200 and resp.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("cut", [1, 2, 20])
def test_images_cut_short_are_refused(client, settings, fmt, cut):
    whole = make_image(fmt, (32, 32), noise=True)
    assert post_raw(client, json.dumps({"pairs": [pair_json("whole", image=whole)]})).status_code == 202
    short = pair_json("short", image=whole[:-cut])
    refused(post_raw(client, json.dumps({"pairs": [short]})), 422, "corrupt_image", "image")
    assert [m.key for m in read_topic(settings.kafka_bootstrap, settings.topic)] == [b"whole"]


def test_pixels_decoded_per_request_are_bounded(settings):
    budget = settings.model_copy(update={"max_request_pixels": 3 * 64 * 64})
    with api_client(budget) as client:
        pairs = [pair_json(f"px{i}", image=make_png((64, 64), color=(i, 0, 0))) for i in range(4)]
        detail = refused(client.post("/v1/pairs", json={"pairs": pairs}), 413, "too_many_pixels_in_request", "image")
        assert detail["item"] == 3 and "max_request_pixels" in detail["message"]
        assert client.post("/v1/pairs", json={"pairs": pairs[:3]}).status_code == 202
    assert len(read_topic(settings.kafka_bootstrap, settings.topic)) == 3
