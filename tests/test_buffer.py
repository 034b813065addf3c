"""service.buffer: durable appends, torn-tail recovery, dedup across phases, atomic seals,
the deterministic split, and the reader API the workers use."""

from __future__ import annotations

import os

import pytest

from service import buffer
from service.buffer import Incoming
from service.durable import BufferLocked
from service.limits import Limits
from service.validation import validate_pair
from tests.helpers import buffered as all_ids
from tests.helpers import incoming, make_image, make_png, open_buffer, pair_json
from trainer import atomic, layout
from trainer.data import Pair, split_of


def test_append_writes_image_then_record(tmp_path):
    with open_buffer(tmp_path) as buf:
        result = buf.append(incoming("a", "b"))
    assert [r.id for r in result.written] == ["a", "b"]
    records = buffer.read_records(tmp_path, 1)
    assert [(r.id, r.partition, r.offset) for r in records] == [("a", 0, 0), ("b", 0, 1)]
    assert (tmp_path / records[0].image).read_bytes() == make_png(color=(0, 0, 0))
    assert buffer.read_image(tmp_path, "b") == (make_png(color=(1, 0, 0)), "image/png")
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temp files left behind


def test_torn_trailing_line_is_cut_on_restart(tmp_path):
    with open_buffer(tmp_path) as buf:
        buf.append(incoming("a", "b"))
    path = layout.pairs_file(tmp_path, 1)
    good = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b'{"id":"c","text":"half a rec')  # the crash hit mid-write
    assert [r.id for r in buffer.read_records(tmp_path, 1)] == ["a", "b"]  # readers skip it already
    with open_buffer(tmp_path) as buf:
        assert path.read_bytes() == good
        assert buf.known == {"a", "b"} and buf.n_open == 2
        buf.append(incoming("c", "d"))
    assert all_ids(tmp_path) == ["a", "b", "c", "d"]


def test_garbage_after_a_crash_is_cut(tmp_path):
    with open_buffer(tmp_path) as buf:
        buf.append(incoming("a"))
    path = layout.pairs_file(tmp_path, 1)
    with open(path, "ab") as f:
        f.write(b"\0" * 40 + b"\n" + b'{"id":"z"}\n')  # zeros from an unflushed extent, then more
    with open_buffer(tmp_path) as buf:
        buf.append(incoming("b"))
    assert all_ids(tmp_path) == ["a", "b"]


def test_duplicates_dropped_within_a_batch_and_across_phases(tmp_path):
    with open_buffer(tmp_path, phase_size=3) as buf:
        r1 = buf.append(incoming("a", "b", "a", "c"))
        assert [r.id for r in r1.written] == ["a", "b", "c"] and r1.duplicates == ["a"]
        assert [m["phase"] for m in r1.sealed] == [1]
        r2 = buf.append(incoming("b", "d", "c", "e"))
        assert [r.id for r in r2.written] == ["d", "e"] and r2.duplicates == ["b", "c"]
    with open_buffer(tmp_path, phase_size=3) as buf:  # the known ids come back from disk
        r3 = buf.append(incoming("a", "e", "f"))
        assert [r.id for r in r3.written] == ["f"]
    ids = all_ids(tmp_path)
    assert sorted(ids) == ["a", "b", "c", "d", "e", "f"] and len(ids) == len(set(ids))
    assert [len(buffer.read_records(tmp_path, n)) for n in (1, 2)] == [3, 3]


def test_seal_writes_manifest_and_opens_next_phase(tmp_path):
    with open_buffer(tmp_path) as buf:
        assert buf.seal() is None  # nothing to seal
        buf.append(incoming(*[f"p{i}" for i in range(20)]))
        manifest = buf.seal("request")
        assert buf.phase == 2 and buf.n_open == 0
        buf.append(incoming("q"))
    assert manifest["n"] == 20 and manifest["n_train"] + manifest["n_probe"] == 20
    assert buffer.read_manifest(tmp_path, 1) == manifest
    infos = buffer.list_phases(tmp_path)
    assert [(i.phase, i.status, i.n) for i in infos] == [(1, "sealed", 20), (2, "open", 1)]
    assert buffer.sealed_phases(tmp_path) == [1]


def test_manifest_present_iff_sealed_even_when_the_seal_crashes(tmp_path, monkeypatch):
    with open_buffer(tmp_path) as buf:
        buf.append(incoming("a", "b"))

        def crash(src, dst):
            raise OSError("power cut")

        monkeypatch.setattr(atomic.os, "replace", crash)
        with pytest.raises(OSError):
            buf.seal()
        monkeypatch.undo()
    directory = layout.phase_dir(tmp_path, 1)
    assert not (directory / layout.MANIFEST_FILE).exists()
    assert buffer.phase_info(tmp_path, 1).status == "open"
    with open_buffer(tmp_path) as buf:  # after the restart the phase is still open, whole
        assert buf.phase == 1 and buf.n_open == 2
        assert buf.seal()["n"] == 2
    assert buffer.phase_info(tmp_path, 1).status == "sealed"


def test_a_sealed_phase_reads_only_what_its_manifest_counted(tmp_path):
    with open_buffer(tmp_path) as buf:
        buf.append(incoming("a", "b"))
        buf.seal()
    with open(layout.pairs_file(tmp_path, 1), "ab") as f:
        f.write(buffer.Record("x", "t", "train", "image/png", "images/x/x").line())  # must never happen
    assert [r.id for r in buffer.read_records(tmp_path, 1)] == ["a", "b"]


def test_seal_due_by_size_and_age(tmp_path):
    with open_buffer(tmp_path, phase_size=3, max_age=60.0) as buf:
        assert buf.seal_due() is None
        buf.append(incoming("a"))
        opened = buffer.epoch(buf.opened)
        assert buf.seal_due(now=opened + 10) is None
        assert buf.seal_due(now=opened + 61) == "age"
    with open_buffer(tmp_path, phase_size=1, max_age=60.0) as buf:  # smaller size after a restart
        assert buf.seal_due() == "size"


def test_split_is_a_function_of_the_id(tmp_path):
    ids = [f"id-{i}" for i in range(400)]
    for sub in ("one", "two"):
        with open_buffer(tmp_path / sub, probe_fraction=0.25) as buf:
            buf.append(incoming(*ids))
    one, two = (buffer.read_records(tmp_path / sub, 1) for sub in ("one", "two"))
    assert [r.split for r in one] == [r.split for r in two] == [split_of(i, 0.25) for i in ids]
    n_probe = sum(r.split == "probe" for r in one)
    assert 60 < n_probe < 140
    with open_buffer(tmp_path / "one") as buf:
        manifest = buf.seal()
    assert (manifest["n_probe"], manifest["n_train"]) == (n_probe, 400 - n_probe)


def test_reader_api(tmp_path):
    with open_buffer(tmp_path, phase_size=2, probe_fraction=0.5) as buf:
        buf.append(incoming("a", "b", "c"))
        buf.append([Incoming(validate_pair(pair_json("w", image=make_image("WEBP")), Limits()))])
    pairs = buffer.phase_pairs(tmp_path, 1)
    assert all(isinstance(p, Pair) for p in pairs)
    assert [(p.id, p.phase, p.split) for p in pairs] == [(i, 1, split_of(i, 0.5)) for i in ("a", "b")]
    assert pairs[0].image == make_png(color=(0, 0, 0)) and pairs[0].pil().size == (8, 8)
    train = list(buffer.iter_phase(tmp_path, 1, split="train"))
    assert all(p.split == "train" for p in train)
    gallery = list(buffer.iter_gallery(tmp_path))  # the open phase included
    assert [p.id for p in gallery] == ["a", "b", "c", "w"]
    assert gallery[-1].content_type == "image/webp"
    assert buffer.read_image(tmp_path, "w")[1] == "image/webp"
    for bad in ("nope", "..", "../x"):
        with pytest.raises(FileNotFoundError):
            buffer.read_image(tmp_path, bad)


def test_phase_status_written_by_workers(tmp_path):
    with open_buffer(tmp_path) as buf:
        buf.append(incoming("a"))
        with pytest.raises(ValueError):
            buffer.write_phase_status(tmp_path, 1, "training")  # not sealed yet
        buf.seal()
    buffer.write_phase_status(tmp_path, 1, "training", snapshot=1)
    info = buffer.phase_info(tmp_path, 1)
    assert info.status == "training" and info.to_dict()["snapshot"] == 1
    with pytest.raises(ValueError):
        buffer.write_phase_status(tmp_path, 1, "bogus")


def test_one_writer_at_a_time(tmp_path):
    with open_buffer(tmp_path):
        with pytest.raises(BufferLocked):
            open_buffer(tmp_path)
    open_buffer(tmp_path).close()  # released on close


def test_images_dir_entries_are_durable(tmp_path):
    with open_buffer(tmp_path) as buf:
        buf.append(incoming("ab1", "ab2", "cd"))
    assert sorted(os.listdir(tmp_path / "images")) == ["ab", "cd"]
    assert sorted(os.listdir(tmp_path / "images" / "ab")) == ["ab1", "ab2"]


def test_phase_tail_returns_each_record_once_as_the_buffers_grow(tmp_path):
    tail = buffer.PhaseTail(tmp_path)
    assert tail.new() == []
    with open_buffer(tmp_path, phase_size=3) as buf:
        buf.append(incoming("a", "b"))
        assert [(n, r.id) for n, r in tail.new()] == [(1, "a"), (1, "b")]
        path = layout.pairs_file(tmp_path, 1)
        with open(path, "ab") as f:
            f.write(b'{"id":"x","te')  # a record being written: not returned yet
        assert tail.new() == []
    with open_buffer(tmp_path, phase_size=3) as buf:  # the restart cuts the torn tail
        buf.append(incoming("c", "d", offset=2))  # c fills and seals phase 1, d opens phase 2
    assert [(n, r.id) for n, r in tail.new()] == [(1, "c"), (2, "d")]
    assert tail.done == {1} and tail.new() == []
