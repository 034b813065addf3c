"""The corpus of malformed requests that tests/test_bad_input.py sends: one `Case` a line,
over every route, each with the status and the error code it must get.

Every case sends an admin key unless its `key` says otherwise. A case's body is `json`
(sent as application/json; lone surrogates escaped as JSON does),
`raw` (bytes as is, with `content_type`), or `files`/`form` (multipart). The app under test
runs with the small limits in `LIMITS`, so size cases stay small.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from tests.helpers import b64, bomb_png, make_image, make_png

LIMITS = {
    "max_image_bytes": 64 * 1024,
    "max_request_bytes": 512 * 1024,
    "max_request_pixels": 100_000,
    "max_metadata_bytes": 1024,
}


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int
    error: str
    json: Any = None
    raw: bytes | None = None
    content_type: str | None = "application/json"
    files: dict | None = None
    form: dict | None = None
    field: str | None = None
    headers: dict = dataclasses.field(default_factory=dict)
    key: str = "admin"  # the scope of the key sent; "unknown": a made-up key; "basic": not a Bearer header

    def request(self) -> dict:
        """Keyword arguments for TestClient.request."""
        headers = dict(self.headers)
        if self.files is not None or self.form is not None:
            return {"files": self.files or {}, "data": self.form or {}, "headers": headers}
        if self.json is not None:
            return {
                "content": json.dumps(self.json).encode(),
                "headers": {"content-type": "application/json", **headers},
            }
        if self.raw is not None and self.content_type:
            headers["content-type"] = self.content_type
        return {"content": self.raw, "headers": headers}


PNG = make_png()
NOISE_PNG = make_image("PNG", (32, 32), noise=True)
JPEG = make_image("JPEG", (32, 32), noise=True)
WEBP = make_image("WEBP", (32, 32), noise=True)
PNG_200 = make_png((200, 200))  # 40,000 pixels: three are over the corpus' max_request_pixels
BIG_PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * (64 * 1024)


def zero_width_png() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 0, 8, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def flipped(data: bytes, at: float = 0.6) -> bytes:
    i = int(len(data) * at)
    return data[:i] + bytes(b ^ 0xFF for b in data[i : i + 16]) + data[i + 16 :]


def pair(**over) -> dict:
    out = {"id": "bad-1", "text": "a red square", "image": b64(PNG)}
    out.update(over)
    return {k: v for k, v in out.items() if v is not ...}


def pairs(*items) -> dict:
    return {"pairs": list(items)}


def P(name, status, error, body=None, field=None, **kw) -> Case:
    """A case for POST /v1/pairs with a JSON body of one pair (or `body`)."""
    return Case(name, "POST", "/v1/pairs", status, error, json=body, field=field, **kw)


def img(name, data: bytes, status: int, error: str) -> Case:
    return P(f"image_{name}", status, error, pairs(pair(image=b64(data))), "image")


def U(name, status, error, files=None, field=None, **form) -> Case:
    """A case for POST /v1/pairs/upload."""
    parts = {"image": ("x.png", PNG, "image/png")} if files is None else files
    return Case(name, "POST", "/v1/pairs/upload", status, error, files=parts, form={"text": "t", **form}, field=field)


def S(name, status, error, body=None, field=None, **kw) -> Case:
    """A case for POST /v1/search."""
    return Case(name, "POST", "/v1/search", status, error, json=body, field=field, **kw)


def raw(name, path, data: bytes, status, error, content_type="application/json") -> Case:
    return Case(name, "POST", path, status, error, raw=data, content_type=content_type)


def route(method, path, status, error) -> Case:
    return Case(f"{method}_{path}", method, path, status, error, content_type=None)


def auth(key: str, method: str, path: str, status: int, error: str, **kw) -> Case:
    return Case(f"{key}_key_{method}_{path}", method, path, status, error, key=key, **kw)


ROUTES = [
    ("POST", "/v1/pairs"),
    ("POST", "/v1/pairs/upload"),
    ("POST", "/v1/search"),
    ("GET", "/v1/pairs/x"),
    ("DELETE", "/v1/pairs/x"),
    ("POST", "/v1/pairs/delete"),
    ("GET", "/v1/images/x"),
    ("GET", "/v1/phases"),
    ("POST", "/v1/phases/seal"),
    ("GET", "/v1/snapshots"),
    ("GET", "/v1/recall"),
    ("GET", "/v1/drift"),
    ("GET", "/v1/timeline"),
    ("GET", "/metrics"),
    ("GET", "/v1/keys"),
    ("POST", "/v1/keys"),
    ("DELETE", "/v1/keys/x"),
]
NEEDS = {
    ("POST", "/v1/pairs"): "write",
    ("POST", "/v1/pairs/upload"): "write",
    ("DELETE", "/v1/pairs/x"): "write",
    ("POST", "/v1/pairs/delete"): "write",
    ("POST", "/v1/phases/seal"): "admin",
    ("GET", "/metrics"): "admin",
    ("GET", "/v1/keys"): "admin",
    ("POST", "/v1/keys"): "admin",
    ("DELETE", "/v1/keys/x"): "admin",
}
AUTH_CASES = [
    *[auth("unknown", m, p, 401, "unknown_key", content_type=None) for m, p in ROUTES],
    *[auth("basic", m, p, 401, "missing_key", content_type=None) for m, p in ROUTES[:3]],
    *[auth("read", m, p, 403, "insufficient_scope", content_type=None) for m, p in ROUTES if (m, p) in NEEDS],
    *[
        auth("write", m, p, 403, "insufficient_scope", content_type=None)
        for m, p in ROUTES
        if NEEDS.get((m, p)) == "admin"
    ],
]


DEEP = b"[" * 5000 + b"]" * 5000
HUGE_INT = b'{"pairs": [{"text": "t", "image": "x", "metadata": {"n": ' + b"9" * 5000 + b"}}]}"
NAN_META = json.dumps(pairs(pair(metadata={"a": [1, {"b": 0}]}))).replace('"b": 0', '"b": NaN').encode()

CASES: list[Case] = [
    # -- POST /v1/pairs: the envelope
    P("no_body", 422, "invalid_request"),
    raw("null_body", "/v1/pairs", b"null", 422, "invalid_request"),
    raw("array_body", "/v1/pairs", b"[]", 422, "invalid_request"),
    raw("string_body", "/v1/pairs", b'"pairs"', 422, "invalid_request"),
    P("empty_object", 422, "invalid_request", {}, "pairs"),
    P("pairs_null", 422, "invalid_request", {"pairs": None}, "pairs"),
    P("pairs_object", 422, "invalid_request", {"pairs": {}}, "pairs"),
    P("pairs_string", 422, "invalid_request", {"pairs": "x"}, "pairs"),
    P("pairs_empty", 422, "empty_request", pairs(), "pairs"),
    P("pairs_over_limit", 413, "too_many_pairs", pairs(*[pair(id=f"p{i}") for i in range(257)]), "pairs"),
    P("item_null", 422, "invalid_request", pairs(None)),
    P("item_number", 422, "invalid_request", pairs(1)),
    P("item_string", 422, "invalid_request", pairs("a pair")),
    P("item_list", 422, "invalid_request", pairs([])),
    P("extra_top_field", 422, "invalid_request", {**pairs(pair()), "force": True}, "force"),
    P("extra_pair_field", 422, "invalid_request", pairs(pair(caption="t")), "caption"),
    # -- text
    P("text_missing", 422, "invalid_request", pairs(pair(text=...)), "text"),
    P("text_null", 422, "invalid_request", pairs(pair(text=None)), "text"),
    P("text_number", 422, "invalid_request", pairs(pair(text=5)), "text"),
    P("text_bool", 422, "invalid_request", pairs(pair(text=True)), "text"),
    P("text_list", 422, "invalid_request", pairs(pair(text=["a"])), "text"),
    P("text_object", 422, "invalid_request", pairs(pair(text={"a": 1})), "text"),
    P("text_empty", 422, "empty_text", pairs(pair(text="")), "text"),
    P("text_spaces", 422, "empty_text", pairs(pair(text="   ")), "text"),
    P("text_newlines", 422, "empty_text", pairs(pair(text="\n\t\r")), "text"),
    P("text_too_long", 422, "text_too_long", pairs(pair(text="y" * 1001)), "text"),
    P("text_high_surrogate", 422, "invalid_unicode", pairs(pair(text="a\ud800b")), "text"),
    P("text_low_surrogate", 422, "invalid_unicode", pairs(pair(text="\udc00")), "text"),
    P("text_reversed_pair", 422, "invalid_unicode", pairs(pair(text="\udc00\ud800")), "text"),
    # -- id
    P("id_empty", 422, "invalid_id", pairs(pair(id="")), "id"),
    P("id_space", 422, "invalid_id", pairs(pair(id="a b")), "id"),
    P("id_slash", 422, "invalid_id", pairs(pair(id="../../etc/passwd")), "id"),
    P("id_dot", 422, "invalid_id", pairs(pair(id=".hidden")), "id"),
    P("id_too_long", 422, "invalid_id", pairs(pair(id="x" * 129)), "id"),
    P("id_unicode", 422, "invalid_id", pairs(pair(id="caf\u00e9")), "id"),
    P("id_surrogate", 422, "invalid_id", pairs(pair(id="a\udc00")), "id"),
    P("id_nul", 422, "invalid_id", pairs(pair(id="a\u0000b")), "id"),
    P("id_number", 422, "invalid_request", pairs(pair(id=7)), "id"),
    P("id_list", 422, "invalid_request", pairs(pair(id=["a"])), "id"),
    # -- image: the base64
    P("image_missing", 422, "invalid_request", pairs(pair(image=...)), "image"),
    P("image_null", 422, "invalid_request", pairs(pair(image=None)), "image"),
    P("image_number", 422, "invalid_request", pairs(pair(image=123)), "image"),
    P("image_bytes_list", 422, "invalid_request", pairs(pair(image=[137, 80])), "image"),
    P("image_empty", 422, "empty_image", pairs(pair(image="")), "image"),
    P("image_not_base64", 422, "invalid_base64", pairs(pair(image="%%%not-base64%%%")), "image"),
    P("image_bad_padding", 422, "invalid_base64", pairs(pair(image="abc")), "image"),
    P(
        "image_newlines",
        422,
        "invalid_base64",
        pairs(pair(image=b64(NOISE_PNG)[:40] + "\n" + b64(NOISE_PNG)[40:])),
        "image",
    ),
    P("image_data_url", 422, "invalid_base64", pairs(pair(image="data:image/png;base64," + b64(PNG))), "image"),
    P(
        "image_urlsafe",
        422,
        "invalid_base64",
        pairs(pair(image=b64(NOISE_PNG).replace("+", "-").replace("/", "_"))),
        "image",
    ),
    P("image_surrogate", 422, "invalid_base64", pairs(pair(image="\udc00AAA")), "image"),
    # -- image: what the bytes are
    img("text_bytes", b"hello, world", 415, "unsupported_media_type"),
    img("gif", make_image("GIF"), 415, "unsupported_media_type"),
    img("bmp", make_image("BMP"), 415, "unsupported_media_type"),
    img("tiff", make_image("TIFF"), 415, "unsupported_media_type"),
    img("svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', 415, "unsupported_media_type"),
    img("pdf", b"%PDF-1.4\n%\xe2\xe3", 415, "unsupported_media_type"),
    img("png_signature_only", PNG[:8], 422, "corrupt_image"),
    img("png_header_only", PNG[:33], 422, "corrupt_image"),
    img("png_half", NOISE_PNG[: len(NOISE_PNG) // 2], 422, "corrupt_image"),
    img("png_cut_20", NOISE_PNG[:-20], 422, "corrupt_image"),
    img("png_cut_12", NOISE_PNG[:-12], 422, "corrupt_image"),
    img("png_cut_1", NOISE_PNG[:-1], 422, "corrupt_image"),
    img("png_trailing_bytes", NOISE_PNG + b"garbage", 422, "corrupt_image"),
    img("png_flipped_pixels", flipped(NOISE_PNG), 422, "corrupt_image"),
    img("png_zero_width", zero_width_png(), 422, "corrupt_image"),
    img("png_bomb", bomb_png(50_000, 50_000), 413, "too_many_pixels"),
    img("png_too_many_bytes", BIG_PNG, 413, "image_too_large"),
    img("jpeg_soi_only", b"\xff\xd8\xff", 422, "corrupt_image"),
    img("jpeg_half", JPEG[: len(JPEG) // 2], 422, "corrupt_image"),
    img("jpeg_cut_20", JPEG[:-20], 422, "corrupt_image"),
    img("jpeg_cut_2", JPEG[:-2], 422, "corrupt_image"),
    img("jpeg_trailing_bytes", JPEG + b"garbage", 422, "corrupt_image"),
    img("webp_header_only", WEBP[:16], 422, "corrupt_image"),
    img("webp_cut_20", WEBP[:-20], 422, "corrupt_image"),
    img("webp_cut_2", WEBP[:-2], 422, "corrupt_image"),
    img("webp_trailing_bytes", WEBP + b"garbage!", 422, "corrupt_image"),
    P(
        "pixels_over_request_budget",
        413,
        "too_many_pixels_in_request",
        pairs(*[pair(id=f"px{i}", image=b64(PNG_200)) for i in range(3)]),
        "image",
    ),
    # -- metadata
    P("metadata_list", 422, "invalid_request", pairs(pair(metadata=[1, 2])), "metadata"),
    P("metadata_string", 422, "invalid_request", pairs(pair(metadata="k=v")), "metadata"),
    P("metadata_number", 422, "invalid_request", pairs(pair(metadata=5)), "metadata"),
    P("metadata_value_surrogate", 422, "invalid_unicode", pairs(pair(metadata={"k": "\udc00"})), "metadata.k"),
    P("metadata_key_surrogate", 422, "invalid_unicode", pairs(pair(metadata={"\ud800": 1})), "metadata.\\ud800"),
    P(
        "metadata_deep_surrogate",
        422,
        "invalid_unicode",
        pairs(pair(metadata={"a": [{"b": "\udfff"}]})),
        "metadata.a.0.b",
    ),
    P(
        "metadata_deep_key_surrogate",
        422,
        "invalid_unicode",
        pairs(pair(metadata={"a": {"\udc80": 0}})),
        "metadata.a.\\udc80",
    ),
    raw("metadata_nan", "/v1/pairs", NAN_META, 422, "invalid_number"),
    raw("metadata_infinity", "/v1/pairs", NAN_META.replace(b"NaN", b"Infinity"), 422, "invalid_number"),
    raw("metadata_minus_infinity", "/v1/pairs", NAN_META.replace(b"NaN", b"-Infinity"), 422, "invalid_number"),
    raw("metadata_overflow", "/v1/pairs", NAN_META.replace(b"NaN", b"1e999"), 422, "invalid_number"),
    P("metadata_too_large", 413, "metadata_too_large", pairs(pair(metadata={"k": "v" * 2000})), "metadata"),
    # -- a bad item among good ones: the whole request refused
    P("second_item_bad", 422, "empty_text", pairs(pair(id="ok-1"), pair(id="ok-2", text=""))),
    P(
        "last_item_bad",
        415,
        "unsupported_media_type",
        pairs(pair(id="ok-1"), pair(id="ok-2"), pair(id="ok-3", image=b64(make_image("GIF")))),
    ),
    # -- bodies that do not parse, or are not JSON
    raw("invalid_utf8", "/v1/pairs", b'{"pairs": [{"text": "caf\xe9"}]}', 400, "invalid_json"),
    raw("deep_nesting", "/v1/pairs", DEEP, 400, "invalid_json"),
    raw("huge_integer", "/v1/pairs", HUGE_INT, 400, "invalid_json"),
    raw("truncated_json", "/v1/pairs", b'{"pairs": [', 400, "invalid_json"),
    raw("trailing_garbage", "/v1/pairs", b'{"pairs": []} x', 400, "invalid_json"),
    raw("single_quotes", "/v1/pairs", b"{'pairs': []}", 400, "invalid_json"),
    raw("text_plain", "/v1/pairs", json.dumps(pairs(pair())).encode(), 415, "unsupported_content_type", "text/plain"),
    raw(
        "form_urlencoded", "/v1/pairs", b"pairs=1", 415, "unsupported_content_type", "application/x-www-form-urlencoded"
    ),
    raw("no_content_type", "/v1/pairs", json.dumps(pairs(pair())).encode(), 415, "unsupported_content_type", None),
    raw("over_request_limit", "/v1/pairs", b'{"pairs": ["' + b"a" * 600_000 + b'"]}', 413, "request_too_large"),
    # -- POST /v1/pairs/upload
    U("upload_no_image", 422, "invalid_request", files={"other": ("a", b"b")}, field="image"),
    Case(
        "upload_no_text",
        "POST",
        "/v1/pairs/upload",
        422,
        "invalid_request",
        files={"image": ("x.png", PNG, "image/png")},
        form={},
        field="text",
    ),
    U("upload_empty_text", 422, "empty_text", field="text", text="  "),
    U("upload_text_too_long", 422, "text_too_long", field="text", text="y" * 1001),
    U(
        "upload_text_not_utf8",
        422,
        "invalid_utf8",
        field="text",
        files={"image": ("x.png", PNG, "image/png"), "text": (None, b"caf\xe9")},
    ),
    U(
        "upload_id_not_utf8",
        422,
        "invalid_utf8",
        field="id",
        files={"image": ("x.png", PNG, "image/png"), "id": (None, b"a\xffb")},
    ),
    U(
        "upload_metadata_not_utf8",
        422,
        "invalid_utf8",
        field="metadata",
        files={"image": ("x.png", PNG, "image/png"), "metadata": (None, b'{"k": "\xff"}')},
    ),
    U(
        "upload_text_surrogate_escape",
        422,
        "invalid_utf8",
        field="text",
        files={"image": ("x.png", PNG, "image/png"), "text": (None, b"\xed\xb0\x80")},
    ),  # CESU-8 \udc00
    U("upload_bad_id", 422, "invalid_id", field="id", id="a b"),
    U("upload_metadata_not_json", 422, "invalid_metadata", field="metadata", metadata="{"),
    U("upload_metadata_array", 422, "invalid_metadata", field="metadata", metadata="[1]"),
    U("upload_metadata_nan", 422, "invalid_number", field="metadata.k", metadata='{"k": NaN}'),
    U("upload_metadata_surrogate", 422, "invalid_unicode", field="metadata.k", metadata='{"k": "\\udc00"}'),
    U("upload_metadata_deep", 422, "invalid_metadata", field="metadata", metadata="[" * 5000 + "]" * 5000),
    U("upload_metadata_huge_int", 422, "invalid_metadata", field="metadata", metadata='{"n": ' + "9" * 5000 + "}"),
    U(
        "upload_gif",
        415,
        "unsupported_media_type",
        files={"image": ("x.gif", make_image("GIF"), "image/gif")},
        field="image",
    ),
    U(
        "upload_truncated",
        422,
        "corrupt_image",
        files={"image": ("x.png", NOISE_PNG[:-20], "image/png")},
        field="image",
    ),
    U("upload_empty_file", 422, "empty_image", files={"image": ("x.png", b"", "image/png")}, field="image"),
    U("upload_too_large", 413, "image_too_large", files={"image": ("x.png", BIG_PNG, "image/png")}, field="image"),
    U(
        "upload_bomb",
        413,
        "too_many_pixels",
        files={"image": ("x.png", bomb_png(50_000, 50_000), "image/png")},
        field="image",
    ),
    raw("upload_json_body", "/v1/pairs/upload", json.dumps(pair()).encode(), 415, "unsupported_content_type"),
    raw("upload_no_boundary", "/v1/pairs/upload", b"--x\r\n", 400, "invalid_multipart", "multipart/form-data"),
    # -- POST /v1/search
    S("search_empty", 422, "invalid_request", {}),
    S("search_text_and_image", 422, "invalid_request", {"text": "q", "image": b64(PNG)}),
    S("search_text_empty", 422, "invalid_request", {"text": ""}, "text"),
    S("search_text_too_long", 422, "invalid_request", {"text": "q" * 1001}, "text"),
    S("search_text_number", 422, "invalid_request", {"text": 5}, "text"),
    S("search_text_surrogate", 422, "invalid_unicode", {"text": "a\udc00"}, "text"),
    S("search_k_string", 422, "invalid_request", {"text": "q", "k": "10"}, "k"),
    S("search_k_bool", 422, "invalid_request", {"text": "q", "k": True}, "k"),
    S("search_k_float", 422, "invalid_request", {"text": "q", "k": 10.0}, "k"),
    S("search_k_zero", 422, "invalid_request", {"text": "q", "k": 0}, "k"),
    S("search_k_negative", 422, "invalid_request", {"text": "q", "k": -1}, "k"),
    S("search_k_over", 422, "invalid_request", {"text": "q", "k": 1001}, "k"),
    S("search_min_score_bool", 422, "invalid_request", {"text": "q", "min_score": False}, "min_score"),
    S("search_min_score_string", 422, "invalid_request", {"text": "q", "min_score": "0.5"}, "min_score"),
    S("search_min_score_over", 422, "invalid_request", {"text": "q", "min_score": 2}, "min_score"),
    raw("search_min_score_nan", "/v1/search", b'{"text": "q", "min_score": NaN}', 422, "invalid_request"),
    S("search_target_unknown", 422, "invalid_request", {"text": "q", "target": "video"}, "target"),
    S("search_filter_list", 422, "invalid_request", {"text": "q", "filter": ["a"]}, "filter"),
    S("search_filter_surrogate", 422, "invalid_unicode", {"text": "q", "filter": {"k": "\udc00"}}, "filter.k"),
    raw("search_filter_nan", "/v1/search", b'{"text": "q", "filter": {"k": NaN}}', 422, "invalid_number"),
    S("search_extra_field", 422, "invalid_request", {"text": "q", "limit": 3}, "limit"),
    S("search_image_not_base64", 422, "invalid_base64", {"image": "%%%"}, "image"),
    S("search_image_gif", 415, "unsupported_media_type", {"image": b64(make_image("GIF"))}, "image"),
    S("search_image_truncated", 422, "corrupt_image", {"image": b64(NOISE_PNG[:-20])}, "image"),
    S("search_image_bomb", 413, "too_many_pixels", {"image": b64(bomb_png(50_000, 50_000))}, "image"),
    S("search_image_too_large", 413, "image_too_large", {"image": b64(BIG_PNG)}, "image"),
    raw("search_invalid_utf8", "/v1/search", b'{"text": "caf\xe9"}', 400, "invalid_json"),
    raw("search_deep_nesting", "/v1/search", DEEP, 400, "invalid_json"),
    raw("search_huge_integer", "/v1/search", b'{"text": "q", "k": ' + b"9" * 5000 + b"}", 400, "invalid_json"),
    raw("search_text_plain", "/v1/search", b'{"text": "q"}', 415, "unsupported_content_type", "text/plain"),
    # -- images
    Case("image_unknown_id", "GET", "/v1/images/no-such-pair", 404, "not_found", content_type=None),
    Case("image_dotdot_id", "GET", "/v1/images/%2e%2e", 404, "not_found", content_type=None),
    Case("image_bad_id", "GET", "/v1/images/a%20b", 404, "not_found", content_type=None),
    # -- one pair: state and delete
    Case("pair_unknown_id", "GET", "/v1/pairs/no-such-pair", 404, "not_found", content_type=None),
    Case("pair_bad_id", "GET", "/v1/pairs/a%20b", 422, "invalid_request", content_type=None, field="path.pair_id"),
    Case("delete_unknown_id", "DELETE", "/v1/pairs/no-such-pair", 404, "not_found", content_type=None),
    Case("delete_bad_id", "DELETE", "/v1/pairs/" + "x" * 129, 422, "invalid_request", content_type=None),
    Case("delete_many_unknown", "POST", "/v1/pairs/delete", 404, "not_found", json={"ids": ["no-such-pair"]}),
    Case("delete_many_nothing", "POST", "/v1/pairs/delete", 422, "invalid_request", json={}),
    Case("delete_many_both", "POST", "/v1/pairs/delete", 422, "invalid_request", json={"ids": [], "filter": {"a": 1}}),
    Case("delete_many_empty_filter", "POST", "/v1/pairs/delete", 422, "invalid_request", json={"filter": {}}),
    Case("delete_many_bad_id", "POST", "/v1/pairs/delete", 422, "invalid_request", json={"ids": ["a b"]}),
    Case("delete_many_ids_not_list", "POST", "/v1/pairs/delete", 422, "invalid_request", json={"ids": "x"}),
    Case(
        "delete_many_nan_filter",
        "POST",
        "/v1/pairs/delete",
        422,
        "invalid_number",
        raw=b'{"filter": {"a": NaN}}',
        field="filter.a",
    ),
    raw("delete_many_text_plain", "/v1/pairs/delete", b'{"ids": []}', 415, "unsupported_content_type", "text/plain"),
    Case(
        "wait_unknown", "POST", "/v1/pairs?wait=forever", 422, "invalid_request", json=pairs(pair()), field="query.wait"
    ),
    Case(
        "wait_timeout_zero",
        "POST",
        "/v1/pairs?wait=searchable&timeout=0",
        422,
        "invalid_request",
        json=pairs(pair()),
        field="query.timeout",
    ),
    Case(
        "wait_timeout_long",
        "POST",
        "/v1/pairs?timeout=61",
        422,
        "invalid_request",
        json=pairs(pair()),
        field="query.timeout",
    ),
    # -- wrong methods and unknown routes
    route("GET", "/v1/pairs", 405, "method_not_allowed"),
    route("PATCH", "/v1/pairs", 405, "method_not_allowed"),
    route("PUT", "/v1/pairs/upload", 405, "method_not_allowed"),  # GET /v1/pairs/upload looks up pair "upload"
    route("PATCH", "/v1/pairs/x", 405, "method_not_allowed"),
    route("GET", "/v1/pairs/delete/x", 404, "not_found"),
    route("GET", "/v1/search", 405, "method_not_allowed"),
    route("POST", "/v1/images/x", 405, "method_not_allowed"),
    route("POST", "/v1/phases", 405, "method_not_allowed"),
    route("GET", "/v1/phases/seal", 405, "method_not_allowed"),
    route("PUT", "/v1/phases/seal", 405, "method_not_allowed"),
    route("POST", "/v1/snapshots", 405, "method_not_allowed"),
    route("POST", "/v1/recall", 405, "method_not_allowed"),
    route("POST", "/v1/drift", 405, "method_not_allowed"),
    route("POST", "/healthz", 405, "method_not_allowed"),
    route("POST", "/readyz", 405, "method_not_allowed"),
    route("POST", "/metrics", 405, "method_not_allowed"),
    route("POST", "/", 405, "method_not_allowed"),  # GET / is the dashboard page
    route("GET", "/static/nowhere.js", 404, "not_found"),
    route("GET", "/v1/timeline/x", 404, "not_found"),
    route("POST", "/v1/timeline", 405, "method_not_allowed"),
    route("POST", "/readyz/search", 405, "method_not_allowed"),
    route("GET", "/v1", 404, "not_found"),
    route("GET", "/v1/nowhere", 404, "not_found"),
    route("POST", "/v2/pairs", 404, "not_found"),
    route("GET", "/v1/phases/1/secret", 404, "not_found"),
    route("PUT", "/v1/keys", 405, "method_not_allowed"),
    # -- /v1/keys
    Case("keys_create_no_scope", "POST", "/v1/keys", 422, "invalid_request", json={}, field="scope"),
    Case("keys_create_bad_scope", "POST", "/v1/keys", 422, "invalid_request", json={"scope": "root"}, field="scope"),
    Case("keys_create_scope_number", "POST", "/v1/keys", 422, "invalid_request", json={"scope": 1}, field="scope"),
    Case(
        "keys_create_rate_zero",
        "POST",
        "/v1/keys",
        422,
        "invalid_request",
        json={"scope": "read", "rate": 0},
        field="rate",
    ),
    Case(
        "keys_create_rate_string",
        "POST",
        "/v1/keys",
        422,
        "invalid_request",
        json={"scope": "read", "rate": "5"},
        field="rate",
    ),
    Case(
        "keys_create_extra",
        "POST",
        "/v1/keys",
        422,
        "invalid_request",
        json={"scope": "read", "admin": True},
        field="admin",
    ),
    raw("keys_create_invalid_utf8", "/v1/keys", b'{"scope": "r\xe9ad"}', 400, "invalid_json"),
    raw("keys_create_text_plain", "/v1/keys", b'{"scope": "read"}', 415, "unsupported_content_type", "text/plain"),
    Case("keys_revoke_unknown", "DELETE", "/v1/keys/no-such-key", 404, "not_found", content_type=None),
    *AUTH_CASES,
]
