import io

import numpy as np
from PIL import Image

from indexer.encoders import SnapshotImageEncoder, SnapshotTextEncoder
from indexer.gallery import add_segment, embed_records, merge_shards, reindex, shard_bounds
from indexer.store import apply_segments, load_index, segment_numbers
from trainer.layout import index_dir

D = 16


def png(seed: int, size: int = 12) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


class ProjectionEncoder:
    """Deterministic stand-in for an image tower: a fixed random projection of 8x8 pixels."""

    dim = D

    def __init__(self):
        self.w = np.random.default_rng(0).normal(size=(8 * 8 * 3, D)).astype(np.float32)
        self.calls = []

    def __call__(self, images):
        self.calls.append(len(images))
        x = np.stack([np.asarray(im.resize((8, 8)), np.float32).ravel() / 255 - 0.5 for im in images])
        return x @ self.w


def records(n, start=0):
    return [(f"g{i}", png(i)) for i in range(start, start + n)]


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_embed_records_matches_direct_encoding():
    recs = records(23)
    enc = ProjectionEncoder()
    vectors, ids = embed_records(iter(recs), enc, batch_size=5, workers=3)
    assert ids == [pid for pid, _ in recs] and vectors.shape == (23, D) and vectors.dtype == np.float32
    assert enc.calls == [5, 5, 5, 5, 3]
    direct = ProjectionEncoder()([Image.open(io.BytesIO(b)).convert("RGB") for _, b in recs])
    np.testing.assert_allclose(vectors, unit(direct), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_embed_records_streams():
    consumed = []

    def stream():
        for rec in records(40):
            consumed.append(rec[0])
            yield rec

    consumed_at_encode = []

    class Spy(ProjectionEncoder):
        def __call__(self, images):
            consumed_at_encode.append(len(consumed))
            return super().__call__(images)

    embed_records(stream(), Spy(), batch_size=4, workers=2)
    assert consumed_at_encode[:3] == [8, 12, 16]  # the batch being encoded and one prefetched
    assert len(consumed) == 40


def test_duplicates_and_bad_images_are_skipped():
    recs = records(6) + [("g2", png(2)), ("broken", b"not an image"), ("pil", Image.new("RGB", (9, 9), "red"))]
    skipped = []
    vectors, ids = embed_records(recs, ProjectionEncoder(), batch_size=4, skipped=skipped)
    assert ids == ["g0", "g1", "g2", "g3", "g4", "g5", "pil"] and len(vectors) == 7
    assert [pid for pid, _ in skipped] == ["broken"]


def test_empty_gallery_uses_encoder_dim():
    vectors, ids = embed_records([], ProjectionEncoder())
    assert vectors.shape == (0, D) and ids == []


def test_reindex_builds_and_saves(tmp_path):
    recs = records(30)
    out = index_dir(tmp_path, 5)
    index = reindex(5, iter(recs), ProjectionEncoder(), out, kind="flat", batch_size=8)
    assert (index.snapshot, index.size, index.kind) == (5, 30, "flat")
    loaded = load_index(out)
    vectors, _ = embed_records(recs[17:18], ProjectionEncoder())
    assert loaded.search(vectors, 1)[0][0][0] == "g17"
    assert loaded.search(vectors, 5) == index.search(vectors, 5)


def test_add_segment_skips_known_and_refreshes(tmp_path):
    out = tmp_path / "v000001"
    index = reindex(1, records(20), ProjectionEncoder(), out, kind="flat")
    path, n = add_segment(out, records(15, start=10), ProjectionEncoder(), snapshot=1, known=index)
    assert n == 5 and path.name == "000000.npz"
    assert add_segment(out, records(20), ProjectionEncoder(), snapshot=1, known=index) == (None, 0)
    assert apply_segments(index) == 5 and index.size == 25
    add_segment(out, records(3, start=40), ProjectionEncoder(), snapshot=1)
    assert segment_numbers(out) == [0, 1] and load_index(out).size == 28


# --------------------------------------------------------------------------- the real tiny model


def test_tiny_model_gallery_roundtrip(tmp_path, tiny):
    from trainer.embed import encode_images

    model, preprocess, tokenizer = tiny
    recs = records(20, start=100)
    enc = SnapshotImageEncoder(model, preprocess, batch_size=8)
    assert enc.dim == 64
    index = reindex(0, recs, enc, index_dir(tmp_path, 0), kind="flat", batch_size=6)
    expected = encode_images(model, preprocess, [b for _, b in recs])
    vectors, ids = embed_records(recs, enc, batch_size=6)
    np.testing.assert_allclose(vectors, expected, atol=1e-4)
    assert [hits[0][0] for hits in index.search(expected, 1)] == ids


def test_caption_index_ranks_a_caption_first_for_itself(tmp_path, tiny):
    from trainer.embed import encode_texts

    model, _, tokenizer = tiny
    captions = [
        (f"t{i}", f"a {size} {colour} square")
        for i, (size, colour) in enumerate((s, c) for s in ("small", "large") for c in ("red", "green", "blue"))
    ]
    index = reindex(0, captions, SnapshotTextEncoder(model, tokenizer), index_dir(tmp_path, 0, "text"), kind="flat")
    assert index.size == 6 and index_dir(tmp_path, 0, "text") == tmp_path / "indexes" / "text" / "v000000"
    queries = encode_texts(model, tokenizer, [text for _, text in captions])
    assert [hits[0][0] for hits in index.search(queries, 1)] == [pid for pid, _ in captions]


# --------------------------------------------------------------------------- sharded re-embedding


def stored(index):
    return index.raw.reconstruct_n(0, index.size)


def test_shard_bounds_are_contiguous_and_cover_every_record():
    assert shard_bounds(5, 2) == [(0, 3), (3, 5)] and shard_bounds(2, 3) == [(0, 1), (1, 2), (2, 2)]
    assert merge_shards([(np.eye(2, dtype=np.float32), ["a", "b"]), (np.ones((2, 2), np.float32), ["b", "c"])])[1] == [
        "a",
        "b",
        "c",
    ]


def test_two_shard_workers_build_the_index_one_worker_builds(tmp_path, tiny):
    """Two workers, each its own copy of the tiny model's image tower, on contiguous halves;
    a repeated id across the shard boundary and an undecodable image included."""
    import copy

    model, preprocess, _ = tiny
    recs = records(13, start=200) + [("broken", b"not an image"), ("g201", png(201))] + records(6, start=300)
    one_skipped, two_skipped = [], []
    one_encoder = SnapshotImageEncoder(model, preprocess)
    one = reindex(3, recs, one_encoder, tmp_path / "one", kind="flat", batch_size=4, skipped=one_skipped)
    encoders = [SnapshotImageEncoder(copy.deepcopy(model), preprocess) for _ in range(2)]
    two = reindex(3, recs, encoders, tmp_path / "two", kind="flat", batch_size=4, skipped=two_skipped)
    assert two.ids == one.ids and len(two.ids) == 19 and "broken" not in two.ids
    np.testing.assert_allclose(stored(two), stored(one), atol=1e-5)
    assert [pid for pid, _ in two_skipped] == [pid for pid, _ in one_skipped] == ["broken"]
    loaded = load_index(tmp_path / "two")
    assert loaded.ids == one.ids and loaded.snapshot == 3
    np.testing.assert_allclose(stored(loaded), stored(one), atol=1e-5)
