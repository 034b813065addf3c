"""service.validation: every bad input names what is wrong, with the right HTTP status."""

from __future__ import annotations

import pytest

from service.image_check import check_image, sniff_content_type
from service.limits import Limits, PairError
from service.validation import validate_batch, validate_pair
from tests.helpers import b64, bomb_png, make_image, make_png, pair_json, truncated_png

LIMITS = Limits(
    max_pairs_per_request=4,
    max_image_bytes=64 * 1024,
    max_image_pixels=1024 * 1024,
    max_text_chars=50,
    max_metadata_bytes=200,
)


def error_of(raw, limits=LIMITS) -> PairError:
    with pytest.raises(PairError) as info:
        validate_pair(raw, limits)
    return info.value


@pytest.mark.parametrize("fmt,content_type", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_good_pair_each_format(fmt, content_type):
    pair = validate_pair(pair_json("p-1", image=make_image(fmt, (10, 6))), LIMITS)
    assert (pair.id, pair.content_type, pair.width, pair.height) == ("p-1", content_type, 10, 6)
    assert sniff_content_type(pair.image) == content_type


def test_missing_id_gets_a_server_id_and_text_is_stripped():
    a, b = validate_pair(pair_json(text="  hi  "), LIMITS), validate_pair(pair_json(), LIMITS)
    assert a.id != b.id and len(a.id) == 32
    assert a.text == "hi"


@pytest.mark.parametrize(
    "raw,status,error,field",
    [
        (pair_json("bad id!"), 422, "invalid_id", "id"),
        (pair_json("x" * 129), 422, "invalid_id", "id"),
        (pair_json(".."), 422, "invalid_id", "id"),
        (pair_json(""), 422, "invalid_id", "id"),
        (pair_json("ok", text="   "), 422, "empty_text", "text"),
        (pair_json("ok", text="x" * 51), 422, "text_too_long", "text"),
        (pair_json("ok", text=5), 422, "invalid_text", "text"),
        ({"id": "ok", "image": b64(make_png())}, 422, "missing_text", "text"),
        ({**pair_json("ok"), "image": "not base64!"}, 422, "invalid_base64", "image"),
        ({**pair_json("ok"), "image": b64(make_png())[:-2]}, 422, "invalid_base64", "image"),  # bad padding
        ({**pair_json("ok"), "image": "aGVsbG8=\n"}, 422, "invalid_base64", "image"),  # no whitespace
        (pair_json("ok", image=b""), 422, "empty_image", "image"),
        (pair_json("ok", image=b"GIF89a" + b"\0" * 30), 415, "unsupported_media_type", "image"),
        (pair_json("ok", image=make_image("BMP")), 415, "unsupported_media_type", "image"),
        (pair_json("ok", image=truncated_png()), 422, "corrupt_image", "image"),
        (pair_json("ok", image=make_png()[:20]), 422, "corrupt_image", "image"),
        (pair_json("ok", image=make_image("PNG", (300, 300), noise=True)), 413, "image_too_large", "image"),
        (pair_json("ok", image=bomb_png(2048, 2048)), 413, "too_many_pixels", "image"),  # over our limit
        (pair_json("ok", image=bomb_png(20000, 20000)), 413, "too_many_pixels", "image"),  # PIL's own bomb check
        (pair_json("ok", metadata=[1]), 422, "invalid_metadata", "metadata"),
        (pair_json("ok", metadata={"k": "v" * 300}), 413, "metadata_too_large", "metadata"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_pair(raw, status, error, field):
    e = error_of(raw)
    assert (e.status, e.error, e.field) == (status, error, field)
    assert e.message and e.detail()["error"] == error


def test_bomb_is_refused_from_the_header_without_decoding():
    # the IDAT holds only a few rows: a full decode would fail as truncated, not as too many pixels
    e = error_of(pair_json("ok", image=bomb_png(5000, 5000)), Limits(max_image_pixels=4096 * 4096))
    assert (e.error, e.status) == ("too_many_pixels", 413)
    assert "5000x5000" in e.message


def test_image_exactly_at_the_pixel_limit_passes():
    content_type, w, h = check_image(make_png((32, 32)), Limits(max_image_pixels=32 * 32))
    assert (content_type, w, h) == ("image/png", 32, 32)


def test_batch_names_the_failing_item():
    with pytest.raises(PairError) as info:
        validate_batch([pair_json("a"), pair_json("b"), pair_json("c", text="")], LIMITS)
    assert (info.value.item, info.value.error) == (2, "empty_text")
    assert "item 2" in str(info.value)


def test_batch_size_limits():
    with pytest.raises(PairError) as info:
        validate_batch([pair_json(f"p{i}") for i in range(5)], LIMITS)
    assert (info.value.status, info.value.error) == (413, "too_many_pairs")
    with pytest.raises(PairError) as info:
        validate_batch([], LIMITS)
    assert info.value.error == "empty_request"
