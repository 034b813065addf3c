"""Checks of posted pairs, shared by the API (reject with 4xx) and the consumer (route
poison messages to the dead-letter topic): the id, the text, the metadata (valid Unicode and
finite numbers at any depth), the image (service.image_check), all within the limits
(service.limits). Every failure is a `PairError` naming the item and field.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from service.image_check import check_image, decode_base64
from service.limits import Limits, PairError, PixelBudget

ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")


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
