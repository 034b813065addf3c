"""Pagination of the listings (phases, snapshots, recall, drift): `?limit=N&cursor=C`.

Items are ordered by their number (phase or snapshot); `cursor` is the last number a client
has seen, and the answer holds the next `limit` items after it and `next_cursor` (None on
the last page). Without `limit` every item comes back, as before pagination existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, TypeVar

from fastapi import Query

T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    limit: int | None = None
    cursor: int | None = None

    def take(self, items: Iterable[tuple[int, T]]) -> tuple[list[T], int | None]:
        """The items after `cursor`, at most `limit` of them, and the cursor of the next page."""
        after = sorted(((k, v) for k, v in items if self.cursor is None or k > self.cursor), key=lambda kv: kv[0])
        if self.limit is None or len(after) <= self.limit:
            return [v for _, v in after], None
        chosen = after[: self.limit]
        return [v for _, v in chosen], chosen[-1][0]


def get_page(
    limit: int | None = Query(None, ge=1, le=10_000, description="at most this many items (default: all)"),
    cursor: int | None = Query(None, ge=-1, description="the `next_cursor` of the previous page"),
) -> Page:
    return Page(limit, cursor)
