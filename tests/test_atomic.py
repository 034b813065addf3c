"""trainer.atomic: a file or a directory appears whole or not at all, and nothing is left behind."""

import os

import pytest

from trainer.atomic import atomic_file, being_published, publish_dir, temp_dir, write_bytes_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "f.bin"
    write_bytes_atomic(path, b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_exclusive_refuses_an_existing_file(tmp_path):
    path = tmp_path / "f.bin"
    write_bytes_atomic(path, b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_bytes_atomic(path, b"second", exclusive=True)
    write_bytes_atomic(path, b"third")  # the default replaces
    assert path.read_bytes() == b"third" and os.listdir(tmp_path) == ["f.bin"]


def test_publish_dir_refuses_or_replaces_an_existing_directory(tmp_path):
    final = tmp_path / "v000001"
    first = temp_dir(final)
    assert being_published(final)
    (first / "a").write_text("1")
    (first / "sub").mkdir()
    (first / "sub" / "b").write_text("2")
    assert publish_dir(first, final) == final and not being_published(final)
    second = temp_dir(final)
    (second / "a").write_text("new")
    with pytest.raises(FileExistsError):
        publish_dir(second, final)
    assert (final / "a").read_text() == "1" and (final / "sub" / "b").read_text() == "2"
    publish_dir(second, final, replace=True)
    assert (final / "a").read_text() == "new" and not (final / "sub").exists()
    assert os.listdir(tmp_path) == ["v000001"]
