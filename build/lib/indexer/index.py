"""The index: a search backend plus the pair id of each row, the snapshot that embedded it,
a readers-writer lock, and filtered top-k search.

Scores are inner products (cosines, since vectors are normalised). Ids are arbitrary strings
kept in a parallel list, so any backend works unchanged. Saving and loading are
`indexer.store`'s job; an `Index` only remembers the directory it came from.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import faiss
import numpy as np

from indexer.backends import as_matrix, build_index, to_cpu

Hit = tuple[str, float]


class RWLock:
    """Many concurrent readers (searches) or one writer (add)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def read(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._writer = True  # blocks new readers while we wait for the current ones
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


# --------------------------------------------------------------------------- the Index


@dataclass(eq=False)
class Index:
    """A searchable index: raw FAISS/torch index, ids by position, snapshot, kind, backend."""

    raw: Any = field(repr=False)
    ids: list[str] = field(repr=False)
    snapshot: int
    kind: str
    backend: str
    params: dict = field(default_factory=dict)
    directory: Path | None = None
    segments_through: int = -1  # highest segment number already applied
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.raw.ntotal != len(self.ids):
            raise ValueError(f"index holds {self.raw.ntotal} vectors but {len(self.ids)} ids")
        self._id_set = set(self.ids)
        if len(self._id_set) != len(self.ids):
            raise ValueError("duplicate ids")
        self._lock = RWLock()

    @classmethod
    def build(cls, vectors: np.ndarray, ids: Sequence[str], snapshot: int, kind: str = "auto", **kw) -> "Index":
        """Build over `vectors` (duplicate ids keep their first vector)."""
        vectors, ids = _dedupe(as_matrix(vectors), list(ids))
        raw, kind, backend, params = build_index(vectors, kind, **kw)
        return cls(raw, ids, snapshot, kind, backend, params)

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.raw.d

    def __contains__(self, pair_id: str) -> bool:
        return pair_id in self._id_set

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> int:
        """Append vectors whose ids are new; returns how many were added."""
        vectors = as_matrix(vectors, self.dim)
        if len(vectors) != len(ids):
            raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
        with self._lock.write():
            vectors, ids = _dedupe(vectors, list(ids), skip=self._id_set)
            if ids:
                self.raw.add(vectors)
                self.ids.extend(ids)
                self._id_set.update(ids)
        return len(ids)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        min_score: float | None = None,
        filter_fn: Callable[[str], bool] | None = None,
        overfetch: int = 4,
    ) -> list[list[Hit]]:
        """Top-k (id, score) per query, best first.

        With `filter_fn` (id -> keep?) the search over-fetches and widens until k hits pass
        or the index is exhausted (for IVF/HNSW: all the probe reaches). Hits scoring
        below `min_score` are dropped. `filter_fn` must not call back into this index.
        """
        queries = as_matrix(queries, self.dim)
        with self._lock.read():
            n = self.size
            if n == 0 or k <= 0:
                return [[] for _ in queries]
            fetch = min(n, k if filter_fn is None else k * overfetch)
            results: list[list[Hit]] = [[] for _ in queries]
            pending = list(range(len(queries)))
            while pending:
                D, I = self.raw.search(queries[pending], fetch)
                still = []
                for row, qi in enumerate(pending):
                    hits, exhausted = self._collect(D[row], I[row], k, min_score, filter_fn)
                    results[qi] = hits
                    if len(hits) < k and not exhausted and fetch < n:
                        still.append(qi)
                pending, fetch = still, min(n, fetch * max(2, overfetch))
        return results

    def _collect(self, scores, idx, k, min_score, filter_fn) -> tuple[list[Hit], bool]:
        """Hits passing the filters, and whether nothing further down could pass."""
        hits: list[Hit] = []
        for s, i in zip(scores.tolist(), idx.tolist()):
            if i < 0 or (min_score is not None and s < min_score):
                return hits, True
            pid = self.ids[i]
            if filter_fn is None or filter_fn(pid):
                hits.append((pid, s))
                if len(hits) == k:
                    break
        return hits, False

    def add_segment(self, n: int, vectors: np.ndarray, ids: Sequence[str], snapshot: int | None = None) -> int:
        """Apply segment `n` (embedded by `snapshot`, which must be this index's)."""
        if snapshot is not None and snapshot != self.snapshot:
            raise ValueError(f"segment {n} was embedded by snapshot {snapshot}, the index by {self.snapshot}")
        added = self.add(vectors, ids)
        self.segments_through = max(self.segments_through, n)
        return added

    def serialize(self) -> tuple[bytes, list[str], dict]:
        """(FAISS bytes of the CPU form, ids, meta), all as of one moment: what a save writes."""
        with self._lock.read():
            blob = faiss.serialize_index(to_cpu(self.raw, self.backend)).tobytes()
            return blob, list(self.ids), self.meta()

    def meta(self) -> dict:
        return {
            "format": 1,
            "snapshot": self.snapshot,
            "size": self.size,
            "kind": self.kind,
            "dim": self.dim,
            "created": self.created,
            "params": self.params,
            "segments_through": self.segments_through,
        }


def _dedupe(vectors: np.ndarray, ids: list[str], skip: set[str] = frozenset()) -> tuple[np.ndarray, list[str]]:
    """Drop rows whose id is in `skip` or repeats an earlier row."""
    seen, keep = set(skip), []
    for i, pid in enumerate(ids):
        if not isinstance(pid, str):
            raise TypeError(f"ids must be str, got {type(pid).__name__}")
        if pid not in seen:
            seen.add(pid)
            keep.append(i)
    if len(keep) == len(ids):
        return vectors, ids
    return vectors[keep], [ids[i] for i in keep]
