"""Datasets as pairs, for `modx import`: each source yields `Row`s in a stable order.

    folder    images (.png .jpg .jpeg .webp, any depth), each with a same-named .txt caption or a
              .json holding `caption` or `text` (its other keys become the pair's metadata)
    csv/tsv   one row per pair: an image path column and a caption column (open_clip's `filepath`,
              `title` by default); paths relative to the file's folder
    parquet   the same columns (pyarrow); the image column may hold the bytes themselves
    .tar      webdataset shards as img2dataset writes them: NNN.jpg + NNN.txt (+ NNN.json)

A pair's id is a hash of its source key (the folder-relative path; the CSV's image path and
caption; the shard name and sample key), behind an optional prefix: the same dataset gives
the same ids on every run, so the API answers a second run "duplicate" and posts nothing new.
A row that cannot be read carries `problem` instead of a pair.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CAPTION_KEYS = ("caption", "text")


@dataclass
class Row:
    where: str  # the file
    row: str  # the row, sample key or file name within it
    id: str = ""
    text: str | None = None
    image: bytes | None = None
    metadata: dict = field(default_factory=dict)
    problem: str | None = None

    def pair(self) -> dict:
        return {"id": self.id, "text": self.text, "image": self.image, "metadata": self.metadata or None}


def pair_id(prefix: str, key: str) -> str:
    """A stable id for the source key `key`: `<prefix>` + 32 hex digits of its SHA-256."""
    return prefix + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def kind_of(source: Path) -> str:
    if source.is_dir():
        return "folder"
    suffix = source.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".tar":
        return "tar"
    raise ValueError(f"{source}: not a folder, .csv, .tsv, .parquet or .tar")


def count(source: Path) -> int | None:
    """How many rows a source has, when that is cheap to know (for the progress bar)."""
    kind = kind_of(source)
    if kind == "folder":
        return sum(1 for _ in _images(source))
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(source).metadata.num_rows
    return None


def rows(source: Path, prefix: str = "", image_col: str = "filepath", text_col: str = "title", sep: str | None = None):
    kind = kind_of(source)
    if kind == "folder":
        return folder_rows(source, prefix)
    if kind == "csv":
        return csv_rows(source, prefix, image_col, text_col, sep)
    if kind == "parquet":
        return parquet_rows(source, prefix, image_col, text_col)
    return tar_rows(source, prefix)


# ---------------------------------------------------------------- a folder


def _images(root: Path) -> Iterator[Path]:
    return (p for p in sorted(root.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def folder_rows(root: Path, prefix: str = "") -> Iterator[Row]:
    for path in _images(root):
        rel = path.relative_to(root).as_posix()
        row = Row(str(path.with_suffix("")) + ".*", rel, id=pair_id(prefix, rel))
        try:
            row.image = path.read_bytes()
            row.text, row.metadata = _caption_beside(path)
        except (OSError, ValueError) as e:
            row.problem = str(e)
        yield row


def _caption_beside(image: Path) -> tuple[str, dict]:
    txt, meta = image.with_suffix(".txt"), image.with_suffix(".json")
    if meta.is_file():
        text, metadata = caption_of_json(meta.read_bytes())
        if text is None and txt.is_file():
            text = txt.read_text(encoding="utf-8").strip()
        if text is None:
            raise ValueError(f"{meta.name} has no 'caption' or 'text' and there is no {txt.name}")
        return text, metadata
    if txt.is_file():
        return txt.read_text(encoding="utf-8").strip(), {}
    raise ValueError(f"no caption: neither {txt.name} nor {meta.name} exists")


def caption_of_json(data: bytes) -> tuple[str | None, dict]:
    """(caption, metadata) of a sidecar .json: `caption` or `text`, the other keys as metadata."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"the .json is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError("the .json is not an object")
    text = next((obj[k] for k in CAPTION_KEYS if isinstance(obj.get(k), str)), None)
    return text, {k: v for k, v in obj.items() if k not in CAPTION_KEYS}


# ---------------------------------------------------------------- CSV and parquet


def _table_row(where: Path, n: int, image, text, prefix: str) -> Row:
    """Row `n` of a table; `image` is a path (relative to the table's folder) or the bytes."""
    row = Row(str(where), str(n))
    if not isinstance(text, str) or not text:
        row.problem = "the caption is empty"
        return row
    row.text = text
    if isinstance(image, (bytes, bytearray)):
        row.image, key = bytes(image), f"{where.name}:{n}"
    elif isinstance(image, str) and image:
        path = where.parent / image
        key = f"{image}\n{text}"
        try:
            row.image = path.read_bytes()
        except OSError as e:
            row.problem = f"cannot read the image {image}: {e.strerror or e}"
    else:
        row.problem, key = "the image path is empty", ""
    row.id = pair_id(prefix, key)
    return row


def csv_rows(path: Path, prefix: str, image_col: str, text_col: str, sep: str | None = None) -> Iterator[Row]:
    sep = sep or ("\t" if path.suffix.lower() == ".tsv" else ",")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=sep)
        _check_columns(path, reader.fieldnames or [], image_col, text_col)
        for n, record in enumerate(reader, start=2):  # row 1 is the header
            yield _table_row(path, n, record.get(image_col), record.get(text_col), prefix)


def parquet_rows(path: Path, prefix: str, image_col: str, text_col: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    _check_columns(path, table.schema_arrow.names, image_col, text_col)
    n = 0
    for batch in table.iter_batches(columns=[image_col, text_col], batch_size=256):
        data = batch.to_pydict()
        for image, text in zip(data[image_col], data[text_col]):
            yield _table_row(path, n, image, text, prefix)
            n += 1


def _check_columns(path: Path, names: list[str], *wanted: str) -> None:
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ValueError(
            f"{path}: no column {', '.join(missing)} (columns: {', '.join(names)}); see --image-col/--text-col"
        )


# ---------------------------------------------------------------- webdataset shards


def tar_rows(path: Path, prefix: str = "") -> Iterator[Row]:
    """The samples of one webdataset shard, in order (the `webdataset` library groups the
    files of a sample by key); a sample without an image or a caption is a bad row."""
    import webdataset as wds

    problems: list[str] = []

    def note(exc: Exception) -> bool:
        problems.append(repr(exc))
        return True  # keep going

    samples = wds.WebDataset(str(path), shardshuffle=False, handler=note, empty_check=False)
    for sample in samples:
        key = sample["__key__"]
        row = Row(str(path), key, id=pair_id(prefix, f"{path.name}/{key}"))
        image = next((sample[k] for k in ("jpg", "jpeg", "png", "webp") if k in sample), None)
        text, metadata = None, {}
        try:
            text, metadata = caption_of_json(sample["json"]) if "json" in sample else (None, {})
            if "txt" in sample:
                text = sample["txt"].decode("utf-8").strip()
        except (ValueError, UnicodeDecodeError) as e:
            text, row.problem = None, str(e)
        row.image, row.text, row.metadata = image, text, metadata
        if row.problem is None and image is None:
            row.problem = f"sample {key} has no .jpg/.png/.webp"
        elif row.problem is None and not text:
            row.problem = f"sample {key} has no caption (.txt, or .json with caption/text)"
        yield row
    for problem in problems:
        yield Row(str(path), "?", problem=f"unreadable: {problem}")
