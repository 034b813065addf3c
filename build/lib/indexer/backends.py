"""Search backends: FAISS index kinds (flat, IVF, IVF-PQ, HNSW) and an exact torch index.

Every backend scores by inner product (cosine, since vectors are L2-normalised) and has the
FAISS interface the `Index` uses: `d`, `ntotal`, `add(x)`, `search(q, k) -> (D, I)`.
`build_index` makes one over a matrix and `place` moves it where it is searched (CPU, FAISS
GPU, or torch on CUDA); `to_cpu` gives back the CPU FAISS form that is saved.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import faiss
import numpy as np
import torch

log = logging.getLogger(__name__)

KINDS = ("auto", "flat", "ivf", "ivfpq", "hnsw", "torch")
FLAT_MAX = 200_000  # `auto` stays exact up to this many vectors


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
