"""`modx import` against a live stack, on each source kind made here: a folder with .txt/.json
captions, CSV and parquet tables, webdataset shards. The right pairs arrive once; a second
run posts nothing new; bad rows are reported and never posted."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.client import ApiError, Client
from service.importer import pair_id
from tests.helpers import make_image, wait_for

pytestmark = pytest.mark.slow
runner = CliRunner()


def noise_png(seed: int) -> bytes:
    return make_image("PNG", (12, 12), noise=True)


def modx_import(live, *args):
    result = runner.invoke(app, ["import", *map(str, args)], env={**live.env(), "COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def open_count(client: Client) -> int:
    return sum(p.n or 0 for p in client.phases().phases)


def arrived(client: Client, expected: dict[str, tuple[bytes, str]], before: int) -> None:
    """Each expected id's image is stored byte for byte and its caption is searchable; the
    buffered pairs grew by exactly that many."""
    wait_for(lambda: open_count(client) >= before + len(expected), 60, message="the pairs buffered")
    assert open_count(client) == before + len(expected)
    for pid, (image, text) in expected.items():
        assert client.image(pid) == image
    hits = wait_for(
        lambda: (
            (r := {h.id: h.text for h in client.search(text="anything", k=1000).results}).keys() >= expected.keys()
            and r
        ),
        60,
        message="the pairs indexed",
    )
    assert {pid: hits[pid] for pid in expected} == {pid: text for pid, (_, text) in expected.items()}


def not_posted(client: Client, ids) -> None:
    for pid in ids:
        with pytest.raises(ApiError) as e:
            client.image(pid)
        assert e.value.status == 404


def test_import_a_folder(live, tmp_path):
    root = tmp_path / "pets"
    (root / "sub").mkdir(parents=True)
    good = {}
    for n, rel in enumerate(["a.png", "sub/b.png", "c.png"]):
        image = noise_png(n)
        (root / rel).write_bytes(image)
        good[rel] = image
    (root / "a.txt").write_text("a cat on a mat\n")
    (root / "sub/b.json").write_text(json.dumps({"caption": "a dog in a fog", "license": "cc0"}))
    (root / "c.json").write_text(json.dumps({"text": "a bird", "source": "me"}))
    (root / "nocaption.png").write_bytes(noise_png(9))  # bad: no caption
    (root / "broken.png").write_bytes(b"\x89PNG not really")  # bad: not an image
    (root / "broken.txt").write_text("broken")
    captions = {"a.png": "a cat on a mat", "sub/b.png": "a dog in a fog", "c.png": "a bird"}
    with Client(live.url, live.key) as client:
        before = open_count(client)
        out = modx_import(live, root, "--id-prefix", "pets-")
        assert "5 rows, 3 queued, 0 duplicate (already there), 2 bad rows skipped" in out
        assert "nocaption" in out and "no caption" in out and "broken" in out
        expected = {pair_id("pets-", rel): (good[rel], captions[rel]) for rel in good}
        arrived(client, expected, before)
        hit = next(h for h in client.search(id=pair_id("pets-", "sub/b.png"), k=50).results if h.id.startswith("pets-"))
        assert hit.id == pair_id("pets-", "sub/b.png") and hit.metadata == {"license": "cc0"}
        not_posted(client, [pair_id("pets-", "nocaption.png"), pair_id("pets-", "broken.png")])

        again = modx_import(live, root, "--id-prefix", "pets-")  # a second run: nothing new
        assert "5 rows, 0 queued, 3 duplicate (already there), 2 bad rows skipped" in again
        assert open_count(client) == before + 3


def test_import_csv_and_parquet(live, tmp_path):
    (tmp_path / "img").mkdir()
    rows = []
    for n in range(4):
        (tmp_path / "img" / f"{n}.png").write_bytes(noise_png(n))
        rows.append({"filepath": f"img/{n}.png", "title": f"table picture number {n}"})
    bad = [
        {"filepath": "img/missing.png", "title": "no such file"},
        {"filepath": "img/0.png", "title": ""},  # no caption
    ]
    with open(tmp_path / "train.tsv", "w") as f:
        f.write("filepath\ttitle\n" + "".join(f"{r['filepath']}\t{r['title']}\n" for r in rows[:2] + bad))
    pq.write_table(pa.Table.from_pylist(rows[2:] + bad[:1]), tmp_path / "train.parquet")
    with Client(live.url, live.key) as client:
        before = open_count(client)
        out = modx_import(live, tmp_path / "train.tsv", "--report", tmp_path / "bad.jsonl")
        assert "4 rows, 2 queued, 0 duplicate (already there), 2 bad rows skipped" in out
        report = [json.loads(line) for line in (tmp_path / "bad.jsonl").read_text().splitlines()]
        assert [(r["row"], "missing.png" in r["reason"] or "empty" in r["reason"]) for r in report] == [
            ("4", True),
            ("5", True),
        ]
        out = modx_import(live, tmp_path / "train.parquet")
        assert "3 rows, 2 queued, 0 duplicate (already there), 1 bad rows skipped" in out
        expected = {
            pair_id("", f"{r['filepath']}\n{r['title']}"): ((tmp_path / r["filepath"]).read_bytes(), r["title"])
            for r in rows
        }
        arrived(client, expected, before)
        assert "0 queued, 2 duplicate" in modx_import(live, tmp_path / "train.parquet")


def tar_shard(path, samples: dict[str, dict[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, files in samples.items():
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_import_webdataset_shards(live, tmp_path):
    images = {f"{n:09d}": make_image("JPEG", (16, 16), noise=True) for n in range(3)}
    samples = {
        images_key: {"jpg": image, "txt": f"shard caption {images_key}".encode(), "json": b'{"url": "http://x"}'}
        for images_key, image in images.items()
    }
    samples["000000003"] = {"jpg": make_image("JPEG", noise=True)}  # no caption
    samples["000000004"] = {"txt": b"a caption without its image"}
    samples["000000005"] = {"jpg": os.urandom(64), "txt": b"garbage bytes"}  # not an image
    tar_shard(tmp_path / "00000.tar", samples)
    with Client(live.url, live.key) as client:
        before = open_count(client)
        out = modx_import(live, tmp_path / "00000.tar", "--id-prefix", "wds-")
        assert "6 rows, 3 queued, 0 duplicate (already there), 3 bad rows skipped" in out
        expected = {pair_id("wds-", f"00000.tar/{k}"): (img, f"shard caption {k}") for k, img in images.items()}
        arrived(client, expected, before)
        not_posted(client, [pair_id("wds-", f"00000.tar/00000000{n}") for n in (3, 4, 5)])
        assert "0 queued, 3 duplicate" in modx_import(live, tmp_path / "00000.tar", "--id-prefix", "wds-")
