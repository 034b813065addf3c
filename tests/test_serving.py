"""What the API serves: one snapshot's encoders with the indexes it embedded, swapped as one."""

import threading

import numpy as np
import pytest

from indexer.encoders import SnapshotEncoders, SnapshotImageEncoder, SnapshotTextEncoder
from indexer.gallery import reindex
from indexer.index import Index
from service.serving import Served, ServedHolder
from tests.helpers import make_image
from tests.vectors import clustered, make_ids
from trainer.layout import index_dir, snapshot_dir


def encoders(tiny, version: int) -> SnapshotEncoders:
    model, preprocess, tokenizer = tiny
    return SnapshotEncoders(version, SnapshotImageEncoder(model, preprocess), SnapshotTextEncoder(model, tokenizer))


def served(tiny, version: int, n: int = 50) -> Served:
    enc = encoders(tiny, version)
    index = Index.build(
        clustered(n, d=enc.text.dim, seed=version), make_ids(n, f"s{version}-"), version, "flat", device="cpu"
    )
    return Served(enc, index)


def test_holder_swap_under_concurrent_search(tiny):
    holder = ServedHolder()
    assert not holder.ready
    with pytest.raises(LookupError):
        holder.get()
    holder.swap(served(tiny, 0))
    stop, errors, answered = threading.Event(), [], []

    def client():
        while not stop.is_set():
            try:
                s = holder.get()
                hits = s.index.search(s.encoders.text(["a query"]), 5)[0]
                assert s.encoders.snapshot == s.snapshot == s.index.snapshot
                assert len(hits) == 5 and all(pid.startswith(f"s{s.snapshot}-") for pid, _ in hits)
                answered.append(s.snapshot)
            except Exception as e:
                errors.append(repr(e))
                return

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for version in range(1, 30):
        old = holder.swap(served(tiny, version))
        assert old.snapshot == version - 1
    stop.set()
    for t in threads:
        t.join()
    assert not errors and answered and holder.get().snapshot == 29


def test_an_index_of_another_snapshot_is_refused(tiny):
    s = served(tiny, 1)
    with pytest.raises(ValueError, match="embedded by snapshot 1"):
        Served(encoders(tiny, 2), s.index)
    with pytest.raises(ValueError, match="embedded by snapshot 1"):
        Served(encoders(tiny, 2), served(tiny, 2).index, texts=s.index)


def test_load_serves_a_snapshot_with_the_indexes_it_embedded(tmp_path, tiny):
    from trainer.embed import encode_images, encode_texts
    from trainer.snapshot import save_snapshot

    model, preprocess, tokenizer = tiny
    snap = save_snapshot(
        model,
        snapshot_dir(tmp_path, 0),
        model_name="modx-tiny",
        version=0,
        parent=None,
        phase=None,
        method="init",
    )
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    images = [(f"g{i}", make_image(color=c, size=(16, 16), noise=i == 3)) for i, c in enumerate(colours)]
    captions = [(f"g{i}", f"a square of colour {i}") for i in range(len(colours))]
    enc = SnapshotEncoders.load(snap)
    reindex(0, images, enc.image, index_dir(tmp_path, 0), kind="flat")
    reindex(0, captions, enc.text, index_dir(tmp_path, 0, "text"), kind="flat")
    s = ServedHolder(Served.load(snap, index_dir(tmp_path, 0), index_dir(tmp_path, 0, "text"))).get()
    assert s.snapshot == s.index.snapshot == s.texts.snapshot == 0 and (s.index.size, s.texts.size) == (4, 4)
    # a query goes through the same encoders as the gallery did: each item finds itself first
    image_queries = s.encoders.image([data for _, data in images])
    np.testing.assert_allclose(image_queries, encode_images(model, preprocess, [data for _, data in images]), atol=1e-5)
    assert [hits[0][0] for hits in s.index.search(image_queries, 1)] == ["g0", "g1", "g2", "g3"]
    text_queries = s.encoders.text([text for _, text in captions])
    np.testing.assert_allclose(text_queries, encode_texts(model, tokenizer, [text for _, text in captions]), atol=1e-5)
    assert [hits[0] for hits in s.texts.search(text_queries, 1)] == [
        (f"g{i}", pytest.approx(1, abs=1e-4)) for i in range(4)
    ]
