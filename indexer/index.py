"""FAISS indexes over L2-normalised embeddings: build, search, atomic save/load, swap.

    indexes/v000003/
      index.faiss     faiss.write_index of the CPU version of the index
      ids.json        position -> pair id
      index.json      {snapshot, size, kind, dim, created, params, segments_through}
      segments/       <n:06d>.npz incremental additions embedded by the same snapshot

Scores are inner products (cosines, since vectors are normalised). Ids are arbitrary
strings kept in a parallel list, so any FAISS index type works unchanged.
"""

from __future__ import annotations

import ctypes
import functools
import io
import json
import logging
import math
import os
import re
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import faiss
import numpy as np
import torch

from trainer.atomic import fsync_dir
from trainer.snapshot import snapshot_name

log = logging.getLogger(__name__)

KINDS = ("auto", "flat", "ivf", "ivfpq", "hnsw", "torch")
FLAT_MAX = 200_000  # `auto` stays exact up to this many vectors
INDEX_FILE, IDS_FILE, META_FILE, SEGMENTS_DIR = "index.faiss", "ids.json", "index.json", "segments"
SEGMENT_RE = re.compile(r"^(\d{6})\.npz$")
Hit = tuple[str, float]


# --------------------------------------------------------------------------- helpers


MODALITIES = ("image", "text")


def index_dir(data_dir: str | Path, snapshot: int, modality: str = "image") -> Path:
    """`<data_dir>/indexes/v<snapshot:06d>` for the images, `indexes/text/v<snapshot:06d>`
    for the captions (image -> text search)."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, not {modality!r}")
    root = Path(data_dir) / "indexes"
    return (root if modality == "image" else root / "text") / snapshot_name(snapshot)


def as_matrix(x: np.ndarray | torch.Tensor, dim: int | None = None) -> np.ndarray:
    """A C-contiguous float32 (n, d) array; a single vector becomes one row."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise ValueError(f"expected a (n, d) matrix, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"expected dimension {dim}, got {x.shape[1]}")
    return x


def faiss_gpus() -> int:
    """Number of GPUs FAISS can use (0 with a CPU-only faiss build)."""
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


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


# --------------------------------------------------------------------------- exact torch index


class TorchExactIndex:
    """Exact inner-product search with a matmul and topk (FAISS-like interface).

    Searches in fp16 on CUDA, fp32 on CPU; an fp32 copy is kept in host memory so saving
    is lossless. Queries are processed in chunks so the (q, n) score matrix stays under
    `max_scores`.
    """

    def __init__(self, dim: int, device: str | torch.device | None = None, max_scores: int = 1 << 27):
        self.d = dim
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.max_scores = max_scores
        self._x32 = torch.empty((0, dim), dtype=torch.float32)  # host memory
        self._x = self._x32.to(self.device)

    @property
    def ntotal(self) -> int:
        return self._x32.shape[0]

    def add(self, x: np.ndarray) -> None:
        x = torch.from_numpy(as_matrix(x, self.d))
        self._x32 = torch.cat([self._x32, x])
        self._x = torch.cat([self._x, x.to(self.device, self.dtype)])

    def vectors(self) -> np.ndarray:
        return self._x32.numpy()

    @torch.inference_mode()
    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = torch.from_numpy(as_matrix(q, self.d)).to(self.device, self.dtype)
        n, kk = self.ntotal, min(k, self.ntotal)
        D = np.full((len(q), k), -np.inf, dtype=np.float32)
        I = np.full((len(q), k), -1, dtype=np.int64)
        if kk == 0:
            return D, I
        step = max(1, self.max_scores // max(n, 1))
        for i in range(0, len(q), step):
            scores, idx = torch.topk(q[i : i + step] @ self._x.T, kk, dim=1)
            D[i : i + step, :kk] = scores.float().cpu().numpy()
            I[i : i + step, :kk] = idx.cpu().numpy()
        return D, I


# --------------------------------------------------------------------------- build


def resolve_kind(kind: str, n: int, flat_max: int = FLAT_MAX, large_kind: str = "ivf") -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; one of {KINDS}")
    if kind != "auto":
        return kind
    return "flat" if n <= flat_max else large_kind


def default_nlist(n: int) -> int:
    """~4 sqrt(n) lists, but at least 39 training points per list (FAISS's minimum)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def default_pq_m(dim: int) -> int:
    """Sub-quantizers of ~8 dimensions each (largest divisor of dim <= dim // 8): 64 bytes
    per 512-d vector; 4-d sub-quantizers train twice as long for little recall."""
    return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)


def make_cpu_index(
    vectors: np.ndarray,
    kind: str,
    *,
    nlist: int | None = None,
    nprobe: int = 16,
    pq_m: int | None = None,
    hnsw_m: int = 32,
    ef_construction: int = 80,
    ef_search: int = 64,
) -> tuple[faiss.Index, dict]:
    """An untrained-then-trained (if needed) empty CPU index of `kind`, and its params."""
    n, d = vectors.shape
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(d), {}
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, ip)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        return index, {"hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
    if kind in ("ivf", "ivfpq"):
        if n == 0:
            raise ValueError(f"a {kind} index needs training vectors")
        nlist = min(nlist or default_nlist(n), n)
        quantizer = faiss.IndexFlatIP(d)
        params = {"nlist": nlist, "nprobe": nprobe}
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
        else:
            m = pq_m or default_pq_m(d)
            nbits = 8 if n >= 256 * 39 else max(1, min(8, int(math.log2(max(2, n // 39)))))
            index = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits, ip)
            params.update(pq_m=m, pq_nbits=nbits)
        index.train(vectors)
        index.nprobe = min(nprobe, nlist)
        return index, params
    raise ValueError(f"no CPU index for kind {kind!r}")


def place(cpu_index: faiss.Index, kind: str, device: str = "auto") -> tuple[Any, str]:
    """Move a CPU index where it will be searched; returns (index, backend).

    device: "cpu", "gpu"/"cuda", or "auto" (FAISS GPU if the build has it; else, for exact
    indexes on a CUDA machine, TorchExactIndex on the GPU; else CPU).
    """
    if device not in ("auto", "cpu", "gpu", "cuda"):
        raise ValueError(f"unknown device {device!r}")
    exact = kind in ("flat", "torch")
    if kind == "torch":
        return _torch_from_faiss(cpu_index, "cpu" if device == "cpu" else None)
    if device == "cpu":
        return cpu_index, "faiss-cpu"
    if faiss_gpus() > 0 and kind != "hnsw":  # FAISS has no GPU HNSW
        try:
            return faiss.index_cpu_to_all_gpus(cpu_index), "faiss-gpu"
        except RuntimeError as e:  # e.g. a PQ layout the GPU kernels don't support
            log.warning("FAISS GPU refused the %s index (%s); searching on CPU", kind, e)
    if exact and torch.cuda.is_available():
        return _torch_from_faiss(cpu_index, "cuda")
    if device != "auto":
        log.warning("no GPU path for a %s index (faiss GPUs: %d); searching on CPU", kind, faiss_gpus())
    return cpu_index, "faiss-cpu"


def _torch_from_faiss(cpu_index: faiss.Index, device: str | None) -> tuple[TorchExactIndex, str]:
    t = TorchExactIndex(cpu_index.d, device)
    if cpu_index.ntotal:
        t.add(cpu_index.reconstruct_n(0, cpu_index.ntotal))
    return t, f"torch-{t.device.type}"


def to_cpu(index: Any, backend: str) -> faiss.Index:
    """The CPU FAISS version of any index this module builds (for write_index)."""
    if isinstance(index, TorchExactIndex):
        flat = faiss.IndexFlatIP(index.d)
        flat.add(index.vectors())
        return flat
    return faiss.index_gpu_to_cpu(index) if backend == "faiss-gpu" else index


def build_index(
    vectors: np.ndarray,
    kind: str = "auto",
    *,
    device: str = "auto",
    flat_max: int = FLAT_MAX,
    large_kind: str = "ivf",
    **params,
) -> tuple[Any, str, str, dict]:
    """A FAISS (or torch) inner-product index over `vectors`: (index, kind, backend, params).

    `auto` is exact (IndexFlatIP) up to `flat_max` vectors and `large_kind` past it.
    `params` go to `make_cpu_index` (nlist, nprobe, pq_m, hnsw_m, ef_construction, ef_search).
    """
    vectors = as_matrix(vectors)
    kind = resolve_kind(kind, len(vectors), flat_max, large_kind)
    cpu, used = make_cpu_index(vectors, "flat" if kind == "torch" else kind, **params)
    if len(vectors):
        cpu.add(vectors)
    index, backend = place(cpu, kind, device)
    return index, kind, backend, used


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

    def refresh(self, directory: str | Path | None = None) -> int:
        """Apply segments newer than `segments_through`; returns vectors added.

        Stops at a segment that vanishes mid-read (directory being replaced); the next
        refresh picks it up from the new directory.
        """
        if directory is None and self.directory is None:
            raise ValueError("this index has no directory to refresh from")
        directory = Path(directory or self.directory)
        added = 0
        for n, vectors, ids, snapshot in iter_segments(directory, after=self.segments_through):
            added += self.add_segment(n, vectors, ids, snapshot)
        return added

    def add_segment(self, n: int, vectors: np.ndarray, ids: Sequence[str], snapshot: int | None = None) -> int:
        """Apply segment `n` (embedded by `snapshot`, which must be this index's)."""
        if snapshot is not None and snapshot != self.snapshot:
            raise ValueError(f"segment {n} was embedded by snapshot {snapshot}, the index by {self.snapshot}")
        added = self.add(vectors, ids)
        self.segments_through = max(self.segments_through, n)
        return added

    def save(self, directory: str | Path) -> Path:
        return save_index(self, directory)

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


# --------------------------------------------------------------------------- atomic save / load


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@functools.cache
def _renameat2():
    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    fn = _renameat2()
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def publish_dir(tmp: Path, final: Path) -> None:
    """Make the fully written `tmp` visible as `final`, replacing any existing `final`.

    A reader sees either the old or the new directory, never a partial one: an existing
    target is swapped atomically (or, where the kernel can't, renamed aside first, which
    leaves at most a short moment with no directory, which `load_index` waits out).
    """
    fsync_dir(tmp)
    if not final.exists():
        os.rename(tmp, final)
    elif _exchange(tmp, final):
        shutil.rmtree(tmp)  # now holds the old directory
    else:
        aside = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, aside)
        os.rename(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    fsync_dir(final.parent)


def save_index(index: Index, directory: str | Path) -> Path:
    """Write index.faiss, ids.json, index.json to `directory` atomically.

    Segments already in an existing `directory` are carried over (hard links), so a
    rebuild never loses additions written meanwhile; re-applying them is a no-op (dedup).
    """
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        with index._lock.read():
            blob = faiss.serialize_index(to_cpu(index.raw, index.backend)).tobytes()
            ids, meta = list(index.ids), index.meta()
        _write_file(tmp / INDEX_FILE, blob)
        _write_file(tmp / IDS_FILE, json.dumps(ids).encode())
        _write_file(tmp / META_FILE, json.dumps(meta, indent=1, sort_keys=True).encode())
        _carry_segments(final / SEGMENTS_DIR, tmp / SEGMENTS_DIR)
        publish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    index.directory = final
    return final


def _carry_segments(src: Path, dst: Path) -> None:
    dst.mkdir()
    if src.is_dir():
        for f in src.iterdir():
            if SEGMENT_RE.match(f.name):
                _link_or_copy(f, dst / f.name)
    fsync_dir(dst)


def _read_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def read_meta(directory: str | Path) -> dict:
    return json.loads((Path(directory) / META_FILE).read_text())


def load_index(directory: str | Path, device: str = "auto", refresh: bool = True, wait_s: float = 5.0) -> Index:
    """Load an index directory with its segments (unless `refresh=False`).

    All files are read through one open directory handle, so they come from the same
    published version; if the directory was replaced before the read ended, it reads again.
    """
    directory = Path(directory)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            meta, blob, ids, segments = _read_version(directory, refresh)
            break
        except FileNotFoundError:
            # a save swapping the directory aside, or deleting the version we opened
            retry = (directory / META_FILE).exists() or _save_in_progress(directory)
            if not retry or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    cpu = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
    raw, backend = place(cpu, meta["kind"], device)
    index = Index(raw, ids, meta["snapshot"], meta["kind"], backend, meta.get("params", {}), directory,
                  meta.get("segments_through", -1), meta.get("created", ""))
    for n, data in segments:
        index.add_segment(n, *load_segment(io.BytesIO(data)))
    return index


def _read_version(directory: Path, with_segments: bool) -> tuple[dict, bytes, list[str], list[tuple[int, bytes]]]:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        meta = json.loads(_read_at(dfd, META_FILE))
        blob = _read_at(dfd, INDEX_FILE)
        ids = json.loads(_read_at(dfd, IDS_FILE))
        segments = _read_segments_at(dfd, meta.get("segments_through", -1)) if with_segments else []
        if os.stat(directory).st_ino != os.fstat(dfd).st_ino:
            # replaced while we read: its segments may have been half deleted; read again
            raise FileNotFoundError(f"{directory} was replaced while being read")
    finally:
        os.close(dfd)
    return meta, blob, ids, segments


def _read_segments_at(dfd: int, after: int) -> list[tuple[int, bytes]]:
    try:
        sfd = os.open(SEGMENTS_DIR, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dfd)
    except FileNotFoundError:
        return []  # saved before segments existed
    try:
        nums = sorted(int(m.group(1)) for f in os.listdir(sfd) if (m := SEGMENT_RE.match(f)))
        return [(n, _read_at(sfd, f"{n:06d}.npz")) for n in nums if n > after]
    finally:
        os.close(sfd)


def _save_in_progress(directory: Path) -> bool:
    parent = directory.parent
    return parent.is_dir() and any(
        p.startswith((f".old-{directory.name}-", f".tmp-{directory.name}-")) for p in os.listdir(parent)
    )


# --------------------------------------------------------------------------- segments


def segment_numbers(directory: str | Path) -> list[int]:
    try:
        names = os.listdir(Path(directory) / SEGMENTS_DIR)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for f in names if (m := SEGMENT_RE.match(f)))


def next_segment(directory: str | Path) -> int:
    nums = segment_numbers(directory)
    return nums[-1] + 1 if nums else 0


def save_segment(
    directory: str | Path, n: int, vectors: np.ndarray, ids: Sequence[str], snapshot: int | None = None
) -> Path:
    """Write `segments/<n:06d>.npz` atomically; an existing segment is never overwritten."""
    vectors = as_matrix(vectors)
    if len(vectors) != len(ids):
        raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
    seg = Path(directory) / SEGMENTS_DIR
    seg.mkdir(parents=True, exist_ok=True)
    final = seg / f"{n:06d}.npz"
    tmp = seg / f".tmp-{n:06d}-{uuid.uuid4().hex[:8]}.npz"
    buf = io.BytesIO()
    np.savez(buf, vectors=vectors, ids=np.array(list(ids), dtype=str),
             snapshot=np.int64(-1 if snapshot is None else snapshot))
    try:
        _write_file(tmp, buf.getvalue())
        os.link(tmp, final)  # fails if `final` exists: segments are immutable
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(seg)
    return final


def load_segment(source: str | Path | io.BytesIO) -> tuple[np.ndarray, list[str], int | None]:
    """(vectors, ids, snapshot or None) of one segment file."""
    with np.load(source, allow_pickle=False) as z:
        snap = int(z["snapshot"])
        return z["vectors"].astype(np.float32), [str(s) for s in z["ids"]], (None if snap < 0 else snap)


def iter_segments(directory: str | Path, after: int = -1) -> Iterator[tuple[int, np.ndarray, list[str], int | None]]:
    """(n, vectors, ids, snapshot) for each segment numbered above `after`, in order.

    Ends early if a segment vanishes (the directory was replaced while reading).
    """
    for n in segment_numbers(directory):
        if n > after:
            try:
                yield n, *load_segment(Path(directory) / SEGMENTS_DIR / f"{n:06d}.npz")
            except FileNotFoundError:
                return


# --------------------------------------------------------------------------- serving pair


@dataclass(frozen=True, eq=False)
class Serving:
    """What answers a search: one snapshot's encoders and the indexes it embedded.

    `index` holds the gallery's images, `texts` (optional) their captions. `encode_text(texts)
    -> (n, d) normalised` and `model` (e.g. (model, preprocess, tokenizer)) are whatever the
    caller needs; all belong to `snapshot`.
    """

    snapshot: int
    index: Index
    encode_text: Callable[[Sequence[str]], np.ndarray] | None = None
    model: Any = None
    texts: Index | None = None

    def search_texts(self, texts: Sequence[str], k: int, **kw) -> list[list[Hit]]:
        if self.encode_text is None:
            raise RuntimeError("this serving pair has no text encoder")
        return self.index.search(self.encode_text(list(texts)), k, **kw)


class IndexHolder:
    """Thread-safe holder of the serving (snapshot model, index) pair.

    Readers call `get()` once per request and use that one object for both encoding and
    searching; `swap()` replaces the single reference, so no request mixes snapshots.
    """

    def __init__(self, serving: Serving | None = None, strict: bool = True):
        self.strict = strict
        self._lock = threading.Lock()
        self._serving: Serving | None = None
        if serving is not None:
            self.swap(serving)

    def get(self) -> Serving:
        serving = self._serving  # one atomic reference read
        if serving is None:
            raise LookupError("no index is being served yet")
        return serving

    @property
    def ready(self) -> bool:
        return self._serving is not None

    def swap(self, serving: Serving) -> Serving | None:
        """Serve `serving` from now on; returns the pair it replaced."""
        for index in (serving.index, serving.texts):
            if self.strict and index is not None and index.snapshot != serving.snapshot:
                raise ValueError(
                    f"index embedded by snapshot {index.snapshot} cannot serve queries of snapshot {serving.snapshot}"
                )
        with self._lock:
            old, self._serving = self._serving, serving
        return old


def load_serving(
    snapshot_dir: str | Path,
    index_directory: str | Path,
    device: str = "cpu",
    index_device: str = "auto",
    text_directory: str | Path | None = None,
) -> Serving:
    """Load a snapshot's model and the indexes it embedded (images; captions if given) as one."""
    from trainer.embed import encode_texts
    from trainer.snapshot import load_snapshot

    model, preprocess, tokenizer, record = load_snapshot(Path(snapshot_dir), device)
    model.eval()
    index = load_index(index_directory, index_device)
    texts = load_index(text_directory, index_device) if text_directory is not None else None
    return Serving(record["version"], index, functools.partial(encode_texts, model, tokenizer),
                   (model, preprocess, tokenizer), texts)  # fmt: skip
