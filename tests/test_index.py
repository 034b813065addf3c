"""Index: build over every backend kind, filtered top-k search, additions, locking."""

import threading

import numpy as np
import pytest
import torch

from indexer.backends import TorchExactIndex, build_index, resolve_kind, to_cpu
from indexer.index import Index
from tests.vectors import D, brute_force, clustered, make_ids, near, normed, positions, recall_at


@pytest.fixture(scope="module")
def data():
    x = clustered(3000)
    return x, near(x[:100]), make_ids(len(x))


# --------------------------------------------------------------------------- build and search


def test_flat_search_is_exact(data):
    x, q, ids = data
    index = Index.build(x, ids, snapshot=3, kind="flat", device="cpu")
    assert (index.kind, index.backend, index.size, index.dim) == ("flat", "faiss-cpu", 3000, D)
    top, scores = brute_force(x, q, 10)
    res = index.search(q, 10)
    assert [positions(r) for r in res] == top.tolist()
    np.testing.assert_allclose([[s for _, s in r] for r in res], scores, atol=1e-5)


@pytest.mark.parametrize(
    "kind,params,floor",
    [
        ("ivf", {"nprobe": 16}, 0.95),
        ("hnsw", {}, 0.95),
        ("ivfpq", {"nprobe": 16, "pq_m": 8}, 0.5),
    ],
)
def test_approximate_recall(data, kind, params, floor):
    x, q, ids = data
    index = Index.build(x, ids, snapshot=0, kind=kind, device="cpu", **params)
    assert index.kind == kind and index.size == len(x)
    exact, _ = brute_force(x, q, 10)
    assert recall_at(index.search(q, 10), exact) >= floor


def test_auto_kind_switches_past_flat_max(data):
    x, _, ids = data
    assert resolve_kind("auto", 10, flat_max=100) == "flat"
    assert resolve_kind("auto", 1000, flat_max=100) == "ivf"
    assert resolve_kind("auto", 1000, flat_max=100, large_kind="hnsw") == "hnsw"
    _, kind, backend, params = build_index(x, "auto", device="cpu", flat_max=1000)
    assert kind == "ivf" and backend == "faiss-cpu" and params["nlist"] >= 1
    with pytest.raises(ValueError):
        resolve_kind("lsh", 10)


def test_torch_exact_matches_flat(data):
    x, q, ids = data
    flat = Index.build(x, ids, 0, "flat", device="cpu")
    torch_index = Index.build(x, ids, 0, "torch", device="cpu")
    assert torch_index.backend == "torch-cpu"
    a, b = flat.search(q, 10), torch_index.search(q, 10)
    assert [positions(r) for r in a] == [positions(r) for r in b]
    np.testing.assert_allclose([[s for _, s in r] for r in a], [[s for _, s in r] for r in b], atol=1e-5)


def test_torch_exact_pads_past_size():
    t = TorchExactIndex(4, "cpu", max_scores=8)  # forces query chunking
    t.add(normed(np.eye(4, dtype=np.float32)[:3]))
    D_, I_ = t.search(np.eye(4, dtype=np.float32), 5)
    assert I_.shape == (4, 5) and (I_[:, 3:] == -1).all()
    assert I_[:3, 0].tolist() == [0, 1, 2]


def test_dimension_and_shape_errors(data):
    x, _, ids = data
    index = Index.build(x[:10], ids[:10], 0, "flat", device="cpu")
    with pytest.raises(ValueError):
        index.search(np.zeros((1, D + 1), np.float32), 3)
    with pytest.raises(ValueError):
        index.add(x[:2], ["a"])
    assert len(index.search(x[0], 3)[0]) == 3  # a single vector is one query


def test_empty_index_and_small_k():
    index = Index.build(np.zeros((0, D), np.float32), [], 0, "flat", device="cpu")
    assert index.size == 0 and index.search(np.ones((2, D), np.float32), 5) == [[], []]
    index.add(normed(np.ones((1, D))), ["only"])
    assert [h[0] for h in index.search(normed(np.ones((1, D))), 5)[0]] == ["only"]


# --------------------------------------------------------------------------- filters


def test_filter_matches_brute_force_on_subset(data):
    x, q, ids = data
    index = Index.build(x, ids, 0, "flat", device="cpu")

    def keep(pid):
        return int(pid[1:]) % 7 == 0

    res = index.search(q, 10, filter_fn=keep)
    sub = np.arange(0, len(x), 7)
    top, _ = brute_force(x[sub], q, 10)
    assert [positions(r) for r in res] == sub[top].tolist()


def test_rare_filter_widens_until_exhausted(data):
    x, q, ids = data
    index = Index.build(x, ids, 0, "flat", device="cpu")
    wanted = {"p5", "p1500", "p2999"}
    res = index.search(q[:3], 10, filter_fn=wanted.__contains__, overfetch=2)
    assert all({pid for pid, _ in r} == wanted for r in res)


def test_min_score(data):
    x, q, ids = data
    index = Index.build(x, ids, 0, "flat", device="cpu")
    res = index.search(q, 50, min_score=0.9)
    s = q @ x.T
    for r, row in zip(res, s):
        assert all(score >= 0.9 for _, score in r)
        assert len(r) == min(50, int((row >= 0.9).sum()))
    assert index.search(q, 10, min_score=1.5) == [[] for _ in q]


def test_filter_on_approximate_index(data):
    x, q, ids = data
    index = Index.build(x, ids, 0, "hnsw", device="cpu")

    def keep(pid):
        return int(pid[1:]) % 2 == 0

    res = index.search(q, 10, filter_fn=keep, min_score=-1.0)
    assert all(len(r) == 10 and all(keep(pid) for pid, _ in r) for r in res)


# --------------------------------------------------------------------------- additions


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "torch"])
def test_add_skips_known_ids(data, kind):
    x, q, ids = data
    index = Index.build(x[:2000], ids[:2000], 0, kind, device="cpu")
    assert index.add(x[1990:2100], ids[1990:2100]) == 100
    assert index.add(x[1990:2100], ids[1990:2100]) == 0
    assert index.size == 2100 and index.raw.ntotal == 2100 and "p2099" in index
    assert index.search(x[2050], 1)[0][0][0] == "p2050"


def test_build_drops_duplicate_ids(data):
    x, _, ids = data
    index = Index.build(x[:5], ["a", "b", "a", "c", "b"], 0, "flat", device="cpu")
    assert index.ids == ["a", "b", "c"]
    assert index.search(x[3], 1)[0][0][0] == "c"


def test_concurrent_add_and_search(data):
    x, q, ids = data
    index = Index.build(x[:500], ids[:500], 0, "flat", device="cpu")
    errors = []

    def searcher():
        try:
            for _ in range(50):
                for r in index.search(q[:5], 5):
                    assert len(r) == 5 and all(pid in index for pid, _ in r)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(500, 3000, 100):
        index.add(x[i : i + 100], ids[i : i + 100])
    for t in threads:
        t.join()
    assert not errors and index.size == 3000


def test_torch_half_search_keeps_fp32_for_saving(data):
    """The CUDA path (fp16 search, fp32 master copy), exercised on CPU."""
    x, q, ids = data
    t = TorchExactIndex(D, "cpu")
    t.dtype = torch.float16
    t._x = t._x32.half()
    t.add(x[:1000])
    t.add(x[1000:])
    assert t._x.dtype == torch.float16 and np.array_equal(t.vectors(), x)
    top, scores = brute_force(x, q, 10)
    D_, I_ = t.search(q, 10)
    assert (I_[:, 0] == top[:, 0]).mean() > 0.95
    np.testing.assert_allclose(D_, scores, atol=5e-3)
    index = Index(t, list(ids), 0, "flat", "torch-cuda")
    assert np.array_equal(to_cpu(index.raw, index.backend).reconstruct_n(0, len(x)), x)
