"""What a posted pair may be and the error that refuses one: `Limits` (from the settings),
the per-request `PixelBudget`, and `PairError`, which carries the HTTP status, a short
machine-readable `error`, a message naming what is wrong, and the item and field it concerns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.settings import Settings


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
