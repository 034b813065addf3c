import json
import os
import threading

import numpy as np
import pytest

import indexer.index as ix
from indexer.index import (
    Index,
    IndexHolder,
    Serving,
    TorchExactIndex,
    build_index,
    index_dir,
    iter_segments,
    load_index,
    read_meta,
    resolve_kind,
    save_index,
    save_segment,
    segment_numbers,
)

D = 32


def normed(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n, d=D, centres=40, seed=0):
    """Embedding-like data: a mixture of tight clusters on the sphere."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    return normed(c[rng.integers(0, centres, n)] + 0.5 * rng.normal(size=(n, d)))


def near(x, seed=1, noise=0.1):
    rng = np.random.default_rng(seed)
    return normed(x + noise * rng.normal(size=x.shape))


def make_ids(n, prefix="p"):
    return [f"{prefix}{i}" for i in range(n)]


def brute_force(x, q, k):
    s = q @ x.T
    top = np.argsort(-s, axis=1)[:, :k]
    return top, np.take_along_axis(s, top, axis=1)


def positions(hits):
    return [int(pid[1:]) for pid, _ in hits]


def recall_at(results, exact, k=10):
    return float(np.mean([len(set(positions(r)) & set(e[:k].tolist())) / k for r, e in zip(results, exact)]))


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


@pytest.mark.parametrize("kind,params,floor", [
    ("ivf", {"nprobe": 16}, 0.95),
    ("hnsw", {}, 0.95),
    ("ivfpq", {"nprobe": 16, "pq_m": 8}, 0.5),
])
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
    keep = lambda pid: int(pid[1:]) % 7 == 0
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
    keep = lambda pid: int(pid[1:]) % 2 == 0
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


# --------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq", "torch"])
def test_save_load_roundtrip(tmp_path, data, kind):
    x, q, ids = data
    index = Index.build(x, ids, 7, kind, device="cpu", nprobe=8)
    out = save_index(index, index_dir(tmp_path, 7))
    assert out == tmp_path / "indexes" / "v000007"
    assert sorted(os.listdir(out)) == ["ids.json", "index.faiss", "index.json", "segments"]
    meta = read_meta(out)
    assert {k: meta[k] for k in ("snapshot", "size", "kind", "dim")} == {"snapshot": 7, "size": 3000, "kind": kind, "dim": D}
    loaded = load_index(out, device="cpu")
    assert (loaded.snapshot, loaded.kind, loaded.size, loaded.ids) == (7, kind, 3000, ids)
    assert loaded.search(q, 10) == index.search(q, 10)


def test_save_replaces_existing_and_leaves_no_temp(tmp_path, data):
    x, q, ids = data
    out = tmp_path / "v000001"
    save_index(Index.build(x[:100], ids[:100], 1, "flat", device="cpu"), out)
    save_index(Index.build(x[:200], ids[:200], 1, "flat", device="cpu"), out)
    assert load_index(out).size == 200
    assert os.listdir(tmp_path) == ["v000001"]


def versioned(v, n=50):
    x = clustered(n, seed=v)
    return Index.build(x, make_ids(n, f"s{v}-"), v, "flat", device="cpu")


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_reader_never_sees_partial_dir(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(ix, "_exchange", lambda a, b: False)
    out = tmp_path / "v000000"
    save_index(versioned(0), out)
    save_segment(out, 0, clustered(5, seed=99), make_ids(5, "seg-"))  # carried by every save
    indexes = [versioned(v, n=50 + v) for v in range(1, 30)]
    stop, errors, seen = threading.Event(), [], set()

    def reader():
        while not stop.is_set():
            try:
                idx = load_index(out, device="cpu")
                assert idx.size == 55 + idx.snapshot and idx.segments_through == 0
                assert all(pid.startswith((f"s{idx.snapshot}-", "seg-")) for pid in idx.ids)
                seen.add(idx.snapshot)
            except Exception as e:
                errors.append(repr(e))
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for idx in indexes:
        save_index(idx, out)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert load_index(out).snapshot == 29 and len(seen) >= 1


def test_crash_mid_save_keeps_old_index(tmp_path, data, monkeypatch):
    x, q, ids = data
    out = tmp_path / "v000002"
    old = Index.build(x[:100], ids[:100], 2, "flat", device="cpu")
    save_index(old, out)
    real_write = ix._write_file

    def crashing_write(path, blob):
        if path.name == ix.IDS_FILE:
            real_write(path, blob[: len(blob) // 2])
            raise OSError("disk full")
        real_write(path, blob)

    monkeypatch.setattr(ix, "_write_file", crashing_write)
    with pytest.raises(OSError):
        save_index(Index.build(x, ids, 2, "flat", device="cpu"), out)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["v000002"]
    loaded = load_index(out)
    assert loaded.size == 100 and loaded.search(q, 5) == old.search(q, 5)


def test_leftover_temp_dir_from_killed_process_is_ignored(tmp_path, data):
    x, q, ids = data
    out = tmp_path / "v000002"
    save_index(Index.build(x[:100], ids[:100], 2, "flat", device="cpu"), out)
    partial = tmp_path / ".tmp-v000002-deadbeef"
    partial.mkdir()
    (partial / "index.faiss").write_bytes(b"\0" * 10)
    assert load_index(out).size == 100
    with pytest.raises(FileNotFoundError):
        load_index(tmp_path / "v000009", wait_s=0.2)


# --------------------------------------------------------------------------- segments


def test_segments_apply_incrementally(tmp_path, data):
    x, q, ids = data
    out = tmp_path / "v000004"
    save_index(Index.build(x[:1000], ids[:1000], 4, "flat", device="cpu"), out)
    save_segment(out, 0, x[990:1500], ids[990:1500], snapshot=4)  # 10 already indexed
    assert segment_numbers(out) == [0]

    loaded = load_index(out)
    assert loaded.size == 1500 and loaded.segments_through == 0
    assert loaded.search(x[1200], 1)[0][0][0] == "p1200"

    save_segment(out, 1, x[1400:2000], ids[1400:2000], snapshot=4)
    assert loaded.refresh() == 500 and loaded.segments_through == 1
    assert loaded.refresh() == 0
    assert loaded.ids == ids[:2000]
    assert load_index(out, refresh=False).size == 1000


def test_segment_is_immutable_and_atomic(tmp_path, data):
    x, _, ids = data
    save_segment(tmp_path, 3, x[:10], ids[:10])
    with pytest.raises(FileExistsError):
        save_segment(tmp_path, 3, x[10:20], ids[10:20])
    assert os.listdir(tmp_path / "segments") == ["000003.npz"]
    [(n, vectors, seg_ids, snap)] = list(iter_segments(tmp_path))
    assert n == 3 and snap is None and seg_ids == ids[:10] and np.array_equal(vectors, x[:10])


def test_segment_from_another_snapshot_is_refused(tmp_path, data):
    x, _, ids = data
    out = tmp_path / "v000004"
    save_index(Index.build(x[:10], ids[:10], 4, "flat", device="cpu"), out)
    save_segment(out, 0, x[10:20], ids[10:20], snapshot=5)
    with pytest.raises(ValueError, match="snapshot 5"):
        load_index(out)


def test_compaction_keeps_segments_and_skips_applied(tmp_path, data):
    x, q, ids = data
    out = tmp_path / "v000004"
    save_index(Index.build(x[:100], ids[:100], 4, "flat", device="cpu"), out)
    save_segment(out, 0, x[100:200], ids[100:200], snapshot=4)
    merged = load_index(out)
    save_index(merged, out)  # fold the segment into the main index
    assert json.loads((out / "index.json").read_text())["segments_through"] == 0
    assert segment_numbers(out) == [0]
    save_segment(out, 1, x[200:300], ids[200:300], snapshot=4)
    again = load_index(out)
    assert again.size == 300 and again.segments_through == 1


# --------------------------------------------------------------------------- serving swap


def serving(v):
    index = versioned(v)
    rng = np.random.default_rng(v)
    return Serving(v, index, encode_text=lambda texts: normed(rng.normal(size=(len(texts), D))), model=("model", v))


def test_holder_swap_under_concurrent_search():
    holder = IndexHolder()
    assert not holder.ready
    with pytest.raises(LookupError):
        holder.get()
    holder.swap(serving(0))
    stop, errors, answered = threading.Event(), [], []

    def client():
        while not stop.is_set():
            try:
                s = holder.get()
                hits = s.index.search(s.encode_text(["a query"]), 5)[0]
                assert s.model == ("model", s.snapshot) and s.index.snapshot == s.snapshot
                assert len(hits) == 5 and all(pid.startswith(f"s{s.snapshot}-") for pid, _ in hits)
                answered.append(s.snapshot)
            except Exception as e:
                errors.append(repr(e))
                return

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    pairs = [serving(v) for v in range(1, 30)]
    for s in pairs:
        old = holder.swap(s)
        assert old.snapshot == s.snapshot - 1
    stop.set()
    for t in threads:
        t.join()
    assert not errors and answered and holder.get().snapshot == 29
    assert holder.get().search_texts(["x", "y"], 3)[1][0][0].startswith("s29-")


def test_holder_refuses_mismatched_pair():
    s = serving(1)
    with pytest.raises(ValueError):
        IndexHolder().swap(Serving(2, s.index, s.encode_text))
    assert IndexHolder(strict=False).swap(Serving(2, s.index, s.encode_text)) is None


def test_torch_half_search_keeps_fp32_for_saving(data):
    """The CUDA path (fp16 search, fp32 master copy), exercised on CPU."""
    x, q, ids = data
    t = TorchExactIndex(D, "cpu")
    t.dtype = ix.torch.float16
    t._x = t._x32.half()
    t.add(x[:1000])
    t.add(x[1000:])
    assert t._x.dtype == ix.torch.float16 and np.array_equal(t.vectors(), x)
    top, scores = brute_force(x, q, 10)
    D_, I_ = t.search(q, 10)
    assert (I_[:, 0] == top[:, 0]).mean() > 0.95
    np.testing.assert_allclose(D_, scores, atol=5e-3)
    index = Index(t, list(ids), 0, "flat", "torch-cuda")
    assert np.array_equal(ix.to_cpu(index.raw, index.backend).reconstruct_n(0, len(x)), x)
