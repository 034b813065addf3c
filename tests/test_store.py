"""Index directories: save/load round trips, atomic replacement under readers, segments."""

import json
import os
import threading

import numpy as np
import pytest

import indexer.store as store
import trainer.atomic as atomic
from indexer.index import Index
from indexer.store import (
    apply_segments,
    iter_segments,
    load_index,
    save_index,
    save_segment,
    segment_numbers,
)
from tests.vectors import D, clustered, make_ids, near
from trainer.layout import index_dir


@pytest.fixture(scope="module")
def data():
    x = clustered(3000)
    return x, near(x[:100]), make_ids(len(x))


# --------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq", "torch"])
def test_save_load_roundtrip(tmp_path, data, kind):
    x, q, ids = data
    index = Index.build(x, ids, 7, kind, device="cpu", nprobe=8)
    out = save_index(index, index_dir(tmp_path, 7))
    assert out == tmp_path / "indexes" / "v000007"
    assert sorted(os.listdir(out)) == ["ids.json", "index.faiss", "index.json", "segments"]
    meta = json.loads((out / store.META_FILE).read_text())
    assert {k: meta[k] for k in ("snapshot", "size", "kind", "dim")} == {
        "snapshot": 7,
        "size": 3000,
        "kind": kind,
        "dim": D,
    }
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
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
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
    real_write = store._write_file

    def crashing_write(path, blob):
        if path.name == store.IDS_FILE:
            real_write(path, blob[: len(blob) // 2])
            raise OSError("disk full")
        real_write(path, blob)

    monkeypatch.setattr(store, "_write_file", crashing_write)
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
    assert apply_segments(loaded) == 500 and loaded.segments_through == 1
    assert apply_segments(loaded) == 0
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
