"""Search benchmark: build time, single-query latency, batch QPS and recall@10 per index kind and size.

    python -m bench.search --preset cpu                 # 10k and 50k vectors, FAISS on CPU
    python -m bench.search --preset gpu --out bench/results/search-gpu.json   # 100k, 1M, 10M, + kind torch
    python -m bench.search --sizes 50k --kinds flat,hnsw --dim 256

Every index is built by indexer.index.Index.build and searched by Index.search (the code
that serves). Vectors and queries are L2-normalised draws from one mixture of Gaussians
(unequal cluster weights), generated in chunks from a fixed seed; the queries are fresh
draws, not members of the index. Recall@10 is measured on the batch against exact fp32
search (faiss.knn). The `matmul` rows are the exact-search ceiling: the vectors on the
device (fp16 on CUDA, fp32 on CPU), one matmul and torch.topk, query upload and result
download included. A size or (size, kind) whose rough memory estimate exceeds what is free,
or which runs out of memory, is reported as skipped instead of crashing the run.
"""

from __future__ import annotations

import argparse
import gc
import time

import faiss
import numpy as np
import torch

from bench.common import apply_preset, command, machine, write_result
from indexer.backends import faiss_gpus
from indexer.index import Index

PRESETS = {
    "cpu": dict(sizes="10k,50k", device="cpu", single=100),
    "gpu": dict(sizes="100k,1M,10M", device="auto", single=300),
}
KINDS = ("flat", "ivf", "ivfpq", "hnsw")
SPREAD = 1.0  # noise norm relative to the (unit) centre: cos(vector, its centre) ~ 0.7
CHUNK = 1 << 16  # rows generated / uploaded at a time
MAX_SCORES = 1 << 27  # (queries x vectors) scores per matmul chunk, as TorchExactIndex
# rough peak memory an index adds, in multiples of the fp32 vectors (4 n d): (host, GPU if on CUDA)
FOOTPRINT = {
    "flat": (2, 2.5),
    "ivf": (1.4, 1.1),
    "ivfpq": (0.5, 0.3),
    "hnsw": (1.2, 0),
    "torch": (3, 2.5),
    "matmul": (0, 0.5),
}
PER_VECTOR = 400  # bytes per vector besides the floats: ids list and set, graph links, list ids
SLACK = 1 << 30  # search workspace


def parse_size(s: str) -> int:
    s = s.strip()
    scale = {"k": 10**3, "M": 10**6, "G": 10**9}.get(s[-1], 1)
    return int(float(s[:-1] if scale > 1 else s) * scale)


def mixture(n: int, centres: np.ndarray, weights: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """n L2-normalised float32 rows: a centre picked by weight plus isotropic noise."""
    d = centres.shape[1]
    out = np.empty((n, d), np.float32)
    for start in range(0, n, CHUNK):
        rng = np.random.default_rng([seed, stream, start // CHUNK])
        m = min(CHUNK, n - start)
        x = centres[rng.choice(len(centres), m, p=weights)]
        x += rng.standard_normal((m, d), dtype=np.float32) * np.float32(SPREAD / np.sqrt(d))
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def free_host() -> int:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


def on_cuda(device: str) -> bool:
    return device != "cpu" and torch.cuda.is_available()


def too_big(n: int, d: int, kind: str, device: str) -> str | None:
    """Why (n, kind) would not fit in free memory (a rough estimate), or None."""
    host_x, gpu_x = FOOTPRINT[kind]
    gpu_used = on_cuda(device) and (kind in ("flat", "torch", "matmul") or (kind != "hnsw" and faiss_gpus() > 0))
    need_host = host_x * 4 * n * d + PER_VECTOR * n + SLACK
    if need_host > (have := free_host()):
        return f"needs ~{need_host / 2**30:.1f} GiB host memory, {have / 2**30:.1f} GiB free"
    if gpu_used and gpu_x:
        need_gpu, have_gpu = gpu_x * 4 * n * d + SLACK, torch.cuda.mem_get_info()[0]
        if need_gpu > have_gpu:
            return f"needs ~{need_gpu / 2**30:.1f} GiB GPU memory, {have_gpu / 2**30:.1f} GiB free"
    return None


def is_oom(e: BaseException) -> bool:
    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(e).lower()


def release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- measuring


def measure(search, to_positions, queries: np.ndarray, gt: np.ndarray, single: int, k: int) -> dict:
    """Single-query p50/p99 (ms), batch QPS and recall@k of `search(q) -> result`."""
    for i in range(min(10, single)):  # warm-up
        search(queries[i : i + 1])
    times = []
    for i in range(single):
        t0 = time.perf_counter()
        search(queries[i : i + 1])
        times.append(time.perf_counter() - t0)
    search(queries[:64])
    t0 = time.perf_counter()
    result = search(queries)
    seconds = time.perf_counter() - t0
    found = to_positions(result)
    recall = np.mean([len(set(f) & set(g.tolist())) / k for f, g in zip(found, gt)])
    return {
        "p50_ms": round(float(np.percentile(times, 50)) * 1e3, 3),
        "p99_ms": round(float(np.percentile(times, 99)) * 1e3, 3),
        "batch_qps": round(len(queries) / seconds, 1),
        "recall_at_10": round(float(recall), 4),
    }


def index_row(vectors, ids, queries, gt, kind: str, args) -> dict:
    t0 = time.perf_counter()
    index = Index.build(vectors, ids, 0, kind, device=args.device)
    build_s = time.perf_counter() - t0
    stats = measure(
        lambda q: index.search(q, args.k),
        lambda res: [[int(p) for p, _ in hits] for hits in res],
        queries,
        gt,
        args.single,
        args.k,
    )
    return {"backend": index.backend, "build_s": round(build_s, 3), **stats, "params": index.params}


def device_matrix(vectors: np.ndarray, device: torch.device) -> torch.Tensor:
    """The vectors as the ceiling searches them: fp32 on CPU (shared), fp16 on CUDA."""
    if device.type == "cpu":
        return torch.from_numpy(vectors)
    x = torch.empty(vectors.shape, dtype=torch.float16, device=device)
    for i in range(0, len(vectors), CHUNK):
        x[i : i + CHUNK].copy_(torch.from_numpy(vectors[i : i + CHUNK]))
    return x


@torch.inference_mode()
def topk_search(x: torch.Tensor, q: np.ndarray, k: int) -> np.ndarray:
    q = torch.from_numpy(q).to(x.device, x.dtype)
    step = max(1, MAX_SCORES // len(x))
    chunks = [torch.topk(q[i : i + step] @ x.T, k, dim=1).indices for i in range(0, len(q), step)]
    return torch.cat(chunks).cpu().numpy()


def matmul_row(vectors, queries, gt, args) -> dict:
    device = torch.device("cuda" if on_cuda(args.device) else "cpu")
    t0 = time.perf_counter()
    x = device_matrix(vectors, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    build_s = time.perf_counter() - t0
    stats = measure(lambda q: topk_search(x, q, args.k), lambda res: res.tolist(), queries, gt, args.single, args.k)
    return {"backend": f"torch-{device.type}", "build_s": round(build_s, 3), **stats, "params": {"dtype": str(x.dtype)}}


def run_size(n: int, kinds: list[str], centres, weights, queries, args) -> list[dict]:
    rows = []
    if reason := too_big(n, args.dim, "flat", "cpu"):  # the vectors plus one copy must fit
        vectors = None
    else:
        vectors = mixture(n, centres, weights, args.seed, 1)
        ids = [str(i) for i in range(n)]
        gt = faiss.knn(queries, vectors, args.k, faiss.METRIC_INNER_PRODUCT)[1]
    for kind in [*kinds, "matmul"]:
        skipped = f"the vectors do not fit: {reason}" if vectors is None else too_big(n, args.dim, kind, args.device)
        row = {"size": n, "kind": kind, "skipped": skipped}
        if skipped is None:
            try:
                row |= (
                    matmul_row(vectors, queries, gt, args)
                    if kind == "matmul"
                    else index_row(vectors, ids, queries, gt, kind, args)
                )
            except Exception as e:
                if not is_oom(e):
                    raise
                row["skipped"] = f"out of memory: {str(e).splitlines()[0][:120]}"
        release()
        rows.append(row)
        print_row(row)
    return rows


# --------------------------------------------------------------------------- output

HEADER = (
    f"{'size':>10} {'kind':<7}{'backend':<12}{'build s':>9}{'p50 ms':>9}{'p99 ms':>9}{'batch QPS':>11}{'recall@10':>11}"
)


def print_row(r: dict) -> None:
    if r["skipped"]:
        print(f"{r['size']:>10} {r['kind']:<7}skipped: {r['skipped']}", flush=True)
    else:
        print(
            f"{r['size']:>10} {r['kind']:<7}{r['backend']:<12}{r['build_s']:>9}{r['p50_ms']:>9}{r['p99_ms']:>9}"
            f"{r['batch_qps']:>11}{r['recall_at_10']:>11}",
            flush=True,
        )


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default=None)
    p.add_argument("--sizes", help="comma list, k/M/G suffixes allowed (e.g. 100k,1M)")
    p.add_argument("--kinds", help=f"comma list of {', '.join(KINDS)}, torch (default: these, + torch on CUDA)")
    p.add_argument("--device", help="Index.build device and where the matmul ceiling runs: cpu, auto, cuda")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--centres", type=int, default=2000, help="Gaussians in the mixture")
    p.add_argument("--single", type=int, help="single queries timed for p50/p99")
    p.add_argument("--batch", type=int, default=1024, help="queries in the batch (QPS and recall)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--faiss-threads", type=int, help="FAISS OpenMP threads (default: FAISS's own)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    apply_preset(args, PRESETS[args.preset or "cpu"])
    if args.kinds is None:
        args.kinds = ",".join([*KINDS, "torch"] if on_cuda(args.device) else KINDS)
    sizes, kinds = [parse_size(s) for s in args.sizes.split(",")], args.kinds.split(",")
    if args.faiss_threads:
        faiss.omp_set_num_threads(args.faiss_threads)

    rng = np.random.default_rng([args.seed, 0])
    centres = rng.standard_normal((args.centres, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.dirichlet(np.ones(args.centres))
    queries = mixture(args.batch, centres, weights, args.seed, 2)
    threads = {
        "faiss_threads": faiss.omp_get_max_threads(),
        "torch_threads": torch.get_num_threads(),
        "faiss_gpus": faiss_gpus(),
    }
    print(
        f"search: dim {args.dim}, {args.centres} centres, k {args.k}, {args.single} single queries, "
        f"batch {args.batch}, device {args.device}, FAISS threads {threads['faiss_threads']}, "
        f"torch threads {threads['torch_threads']}, FAISS GPUs {threads['faiss_gpus']}"
    )
    print(HEADER, flush=True)
    rows = [row for n in sizes for row in run_size(n, kinds, centres, weights, queries, args)]
    result = {
        "benchmark": "search",
        "args": vars(args),
        **threads,
        "rows": rows,
        "machine": machine("cuda" if on_cuda(args.device) else "cpu", command("bench.search", argv)),
    }
    if args.out:
        write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
