"""Decoding and limits for posted pairs, shared by the API (reject with 4xx) and the
consumer (route poison messages to the dead-letter topic).

Every failure is a `PairError` carrying the HTTP status, a short machine-readable `error`,
a message naming what is wrong, and the item index and field it concerns.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from PIL import Image

from service.settings import Settings

ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the chunk every complete PNG ends with


class PairError(ValueError):
    """A posted pair (or a whole request) that cannot be accepted, and why."""

    def __init__(self, status: int, error: str, message: str, *, item: int | None = None, field: str | None = None):
        super().__init__(message)
        self.status, self.error, self.message, self.item, self.field = status, error, message, item, field

    def at(self, item: int) -> "PairError":
        return PairError(self.status, self.error, self.message, item=item, field=self.field)

    def detail(self) -> dict:
        out: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.item is not None:
            out["item"] = self.item
        if self.field is not None:
            out["field"] = self.field
        return out

    def __str__(self) -> str:
        where = f"item {self.item}: " if self.item is not None else ""
        return f"{where}{self.message}"


@dataclass(frozen=True)
class Limits:
    max_pairs_per_request: int = 256
    max_image_bytes: int = 4 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_text_chars: int = 1000
    max_metadata_bytes: int = 16 * 1024
    max_request_pixels: int = 64 * 1024 * 1024

    @classmethod
    def from_settings(cls, s: Settings) -> "Limits":
        return cls(
            s.max_pairs_per_request,
            s.max_image_bytes,
            s.max_image_pixels,
            s.max_text_chars,
            s.max_metadata_bytes,
            s.max_request_pixels,
        )


class PixelBudget:
    """Pixels one request may still decode (`max_request_pixels`), spent from image headers
    before any pixel is decoded, so a request's decoding CPU is bounded."""

    def __init__(self, limits: Limits):
        self.total, self.left = limits.max_request_pixels, limits.max_request_pixels

    def spend(self, pixels: int) -> None:
        if pixels > self.left:
            raise PairError(
                413,
                "too_many_pixels_in_request",
                f"the request's images add up to more than "
                f"max_request_pixels = {self.total} pixels (MODX_MAX_REQUEST_PIXELS); send fewer "
                "or smaller images per request",
                field="image",
            )
        self.left -= pixels


@dataclass(frozen=True)
class ValidPair:
    """A pair that passed every check; `image` holds the decoded bytes as posted."""

    id: str
    text: str
    image: bytes
    content_type: str
    metadata: dict = field(default_factory=dict)
    width: int = 0
    height: int = 0


def new_id() -> str:
    return uuid.uuid4().hex


def check_id(raw: Any) -> str:
    """The pair id as posted, or a fresh server id when none was given."""
    if raw is None:
        return new_id()
    if not isinstance(raw, str) or not ID_PATTERN.fullmatch(raw) or raw.startswith("."):
        shown = repr(raw)[:80]
        raise PairError(
            422,
            "invalid_id",
            f"id {shown} must be 1-128 characters of A-Z a-z 0-9 . _ : - and must not start with '.'",
            field="id",
        )
    return raw


def check_text(raw: Any, limits: Limits) -> str:
    if not isinstance(raw, str):
        raise PairError(422, "invalid_text", f"text must be a string, got {type(raw).__name__}", field="text")
    check_unicode(raw, "text")
    text = raw.strip()
    if not text:
        raise PairError(422, "empty_text", "text is empty (or only whitespace)", field="text")
    if len(text) > limits.max_text_chars:
        raise PairError(
            422,
            "text_too_long",
            f"text has {len(text)} characters, more than the limit of {limits.max_text_chars}",
            field="text",
        )
    return text


def shown(name: str) -> str:
    """A name safe to echo in an error body: lone surrogates written as \\udXXX escapes."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def check_unicode(text: str, where: str) -> None:
    """Refuse a string that has no UTF-8 form (a lone surrogate such as "\\udc00")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PairError(
            422,
            "invalid_unicode",
            f"{where} holds a lone surrogate {shown(e.object[e.start])} at character {e.start}: not valid Unicode text",
            field=where,
        ) from None


def check_json_values(value: Any, where: str) -> None:
    """Every string (keys too) valid Unicode and every number finite, at any depth."""
    if isinstance(value, str):
        check_unicode(value, where)
    elif isinstance(value, float) and not math.isfinite(value):
        raise PairError(
            422,
            "invalid_number",
            f"{where} is {value}: JSON numbers must be finite (NaN and Infinity are not JSON)",
            field=where,
        )
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{shown(key)}"
            if isinstance(key, str):
                check_unicode(key, name)
            check_json_values(item, name)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json_values(item, f"{where}.{i}")


def check_metadata(raw: Any, limits: Limits) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PairError(
            422, "invalid_metadata", f"metadata must be a JSON object, got {type(raw).__name__}", field="metadata"
        )
    check_json_values(raw, "metadata")
    size = len(json.dumps(raw, separators=(",", ":")).encode())
    if size > limits.max_metadata_bytes:
        raise PairError(
            413,
            "metadata_too_large",
            f"metadata is {size} bytes of JSON, more than the limit of {limits.max_metadata_bytes}",
            field="metadata",
        )
    return raw


def decode_base64(raw: Any, limits: Limits) -> bytes:
    """Strict standard base64 (no whitespace, no data: prefix), size-checked before decoding."""
    if not isinstance(raw, str):
        raise PairError(
            422, "invalid_base64", f"image must be a base64 string, got {type(raw).__name__}", field="image"
        )
    if len(raw) > 4 * ((limits.max_image_bytes + 2) // 3):
        raise PairError(
            413,
            "image_too_large",
            f"image is about {len(raw) * 3 // 4} bytes, more than the limit of {limits.max_image_bytes}",
            field="image",
        )
    try:
        return base64.b64decode(raw.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise PairError(422, "invalid_base64", f"image is not valid base64: {e}", field="image") from None


def sniff_content_type(data: bytes) -> str | None:
    """image/png, image/jpeg or image/webp from the magic bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_image(data: bytes, limits: Limits, budget: PixelBudget | None = None) -> tuple[str, int, int]:
    """(content_type, width, height) of an image that decodes fully within the limits.

    Complete means every pixel decodes (PIL's `load()`, truncated images not tolerated) and
    the format's closing structure is there: PNG's IEND chunk, JPEG's EOI marker, and
    WebP's RIFF size matching the bytes.
    """
    if not data:
        raise PairError(422, "empty_image", "image is empty", field="image")
    if len(data) > limits.max_image_bytes:
        raise PairError(
            413,
            "image_too_large",
            f"image is {len(data)} bytes, more than the limit of {limits.max_image_bytes}",
            field="image",
        )
    content_type = sniff_content_type(data)
    if content_type is None:
        raise PairError(
            415,
            "unsupported_media_type",
            f"image must be PNG, JPEG or WebP (judged from its bytes, which start with {data[:8].hex()})",
            field="image",
        )
    fmt = next(k for k, v in CONTENT_TYPES.items() if v == content_type)
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            width, height = im.size
            _check_pixels(width, height, limits)  # from the header, before any pixel is decoded
            if budget is not None:
                budget.spend(width * height)
            im.load()  # decodes everything: truncated or corrupt data fails here
        _check_complete(data, fmt)
    except PairError:
        raise
    except Image.DecompressionBombError as e:
        raise PairError(413, "too_many_pixels", f"image dimensions are too large: {e}", field="image") from None
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, struct.error, ...) on bad data
        raise PairError(422, "corrupt_image", f"{fmt} image could not be decoded: {e}", field="image") from None
    return content_type, width, height


def _check_complete(data: bytes, fmt: str) -> None:
    if fmt == "PNG":
        complete = data.endswith(PNG_IEND)
    elif fmt == "JPEG":
        complete = data.endswith(b"\xff\xd9")
    else:
        size = struct.unpack("<I", data[4:8])[0] + 8
        complete = size == len(data) or (size % 2 == 1 and size + 1 == len(data))
    if not complete:
        ending = {"PNG": "its IEND chunk", "JPEG": "its end-of-image marker", "WEBP": "the size in its RIFF header"}
        raise PairError(
            422,
            "corrupt_image",
            f"{fmt} image is cut short or has trailing bytes: it does not end with {ending[fmt]}",
            field="image",
        )


def _check_pixels(width: int, height: int, limits: Limits) -> None:
    if width < 1 or height < 1:
        raise PairError(422, "corrupt_image", f"image has no pixels ({width}x{height})", field="image")
    if width * height > limits.max_image_pixels:
        raise PairError(
            413,
            "too_many_pixels",
            f"image is {width}x{height} = {width * height} pixels, more than the limit of {limits.max_image_pixels}",
            field="image",
        )


def validate_fields(
    *, id: Any, text: Any, image: bytes, metadata: Any, limits: Limits, budget: PixelBudget | None = None
) -> ValidPair:
    """Check one pair whose image is already bytes (multipart upload, or decoded base64)."""
    pair_id = check_id(id)
    clean_text = check_text(text, limits)
    meta = check_metadata(metadata, limits)
    content_type, width, height = check_image(image, limits, budget)
    return ValidPair(pair_id, clean_text, image, content_type, meta, width, height)


def validate_pair(raw: Mapping[str, Any], limits: Limits, budget: PixelBudget | None = None) -> ValidPair:
    """Check one posted pair `{"id"?, "text", "image": base64, "metadata"?}`."""
    if not isinstance(raw, Mapping):
        raise PairError(422, "invalid_pair", f"a pair must be a JSON object, got {type(raw).__name__}")
    for name in ("text", "image"):
        if name not in raw:
            raise PairError(422, f"missing_{name}", f"{name} is required", field=name)
    pair_id = check_id(raw.get("id"))  # fail on the id before spending time on the image
    image = decode_base64(raw["image"], limits)
    return validate_fields(
        id=pair_id, text=raw["text"], image=image, metadata=raw.get("metadata"), limits=limits, budget=budget
    )


def check_count(n: int, limits: Limits) -> None:
    if n == 0:
        raise PairError(422, "empty_request", "pairs is empty: send at least one pair", field="pairs")
    if n > limits.max_pairs_per_request:
        raise PairError(
            413,
            "too_many_pairs",
            f"{n} pairs in one request, more than the limit of {limits.max_pairs_per_request}",
            field="pairs",
        )


def validate_batch(items: Sequence[Mapping[str, Any]], limits: Limits) -> list[ValidPair]:
    """Every pair of a request, or the first error (with its item index): all or nothing."""
    check_count(len(items), limits)
    out, budget = [], PixelBudget(limits)
    for i, raw in enumerate(items):
        try:
            out.append(validate_pair(raw, limits, budget))
        except PairError as e:
            raise e.at(i) from None
    return out
