"""Images of posted pairs: strict base64, the type sniffed from the bytes (PNG, JPEG, WebP),
and a complete decode within the limits (pixels counted from the header first).
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
from typing import Any

from PIL import Image

from service.limits import Limits, PairError, PixelBudget

CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the chunk every complete PNG ends with


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
