"""Re-embed the gallery with a snapshot, build its index, and add incremental segments.

The gallery is a stream of `(pair id, image)` records (image: encoded bytes or a PIL
image), or `(pair id, caption)` records for the caption index; it is consumed batch by
batch, never loaded whole. Worker threads decode (and, when the encoder has a `prepare`
method, preprocess) the next batch while the current one is encoded. The encoders are a
snapshot's (indexer.encoders) or any callable with the same contract.

Sharded re-embedding: given several encoders (e.g. one per GPU) and the gallery as a
sequence, `reindex` gives each worker a contiguous shard of the records in their order and
merges the shards, in order, into the one index it saves atomically; under torch.distributed
each rank embeds its shard and rank 0 builds and saves. Either way the index is the one a
single worker builds: the same ids in the same order, the same vectors (to float tolerance).
"""

from __future__ import annotations

import io
import itertools
import logging
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from indexer.backends import as_matrix
from indexer.index import Index
from indexer.store import load_index, next_segment, save_index, save_segment
from trainer import distributed
from trainer.atomic import make_dirs, write_bytes_atomic
from trainer.data import decode_image

log = logging.getLogger(__name__)

Record = tuple[str, "bytes | Image.Image | str"]  # (pair id, image; or caption for the text index)
EncodeFn = Callable[[list[Any]], np.ndarray]  # list[PIL.Image] (or prepared items) -> (n, d)


# --------------------------------------------------------------------------- embedding


def batched(iterable: Iterable, n: int) -> Iterator[list]:
    it = iter(iterable)
    while batch := list(itertools.islice(it, n)):
        yield batch


def _load(item: str | bytes | Image.Image, prepare: Callable | None) -> Any:
    """A record's payload ready for the encoder: texts as they are, images decoded."""
    if isinstance(item, str):
        return item
    pil = item.convert("RGB") if isinstance(item, Image.Image) else decode_image(item)
    return prepare(pil) if prepare else pil


def _gather(futures: list[tuple[str, Future]], skipped: list | None) -> tuple[list[str], list[Any]]:
    ids, items = [], []
    for pid, fut in futures:
        try:
            items.append(fut.result())
            ids.append(pid)
        except Exception as e:  # an undecodable image: skip it, keep going
            log.warning("skipping gallery item %s: %s", pid, e)
            if skipped is not None:
                skipped.append((pid, str(e)))
    return ids, items


def decoded_batches(
    records: Iterable[Record],
    pool: ThreadPoolExecutor,
    batch_size: int,
    prepare: Callable | None = None,
    skipped: list | None = None,
    exclude: Callable[[str], bool] | None = None,
) -> Iterator[tuple[list[str], list[Any]]]:
    """(ids, decoded items) per batch; the next batch decodes while the caller works.

    Repeated ids and ids for which `exclude(id)` is true are dropped.
    """
    seen: set[str] = set()
    pending: list[tuple[str, Future]] | None = None
    for batch in batched(records, batch_size):
        fresh = []
        for pid, image in batch:
            if pid not in seen and not (exclude and exclude(pid)):
                seen.add(pid)
                fresh.append((pid, pool.submit(_load, image, prepare)))
        if pending is not None:
            yield _gather(pending, skipped)
        pending = fresh
    if pending:
        yield _gather(pending, skipped)


def embed_records(
    records: Iterable[Record],
    encode_fn: EncodeFn,
    batch_size: int = 256,
    workers: int = 4,
    skipped: list | None = None,
    exclude: Callable[[str], bool] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Embed a stream of (id, image) records: (L2-normalised float32 (n, d), ids).

    Undecodable images are skipped (appended to `skipped` as (id, reason) if given).
    """
    prepare = getattr(encode_fn, "prepare", None)
    chunks, ids = [], []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gallery-decode") as pool:
        for batch_ids, items in decoded_batches(records, pool, batch_size, prepare, skipped, exclude):
            if batch_ids:
                chunks.append(as_matrix(encode_fn(items)))
                ids.extend(batch_ids)
    if not chunks:
        return np.zeros((0, int(getattr(encode_fn, "dim", 0) or 0)), np.float32), []
    return normalise(np.concatenate(chunks)), ids


def normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


# --------------------------------------------------------------------------- index builds


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges of n records over `shards` workers (sizes differ by <= 1)."""
    cuts = [k * (n // shards) + min(k, n % shards) for k in range(shards + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def merge_shards(parts: Sequence[tuple[np.ndarray, list[str]]]) -> tuple[np.ndarray, list[str]]:
    """The shards' (vectors, ids) in shard order, an id repeated in a later shard dropped
    (as one worker drops a repeated id)."""
    seen: set[str] = set()
    keep_vectors, keep_ids = [], []
    for vectors, ids in [p for p in parts if len(p[1])] or parts[:1]:  # empty shards may lack a width
        rows = [i for i, pid in enumerate(ids) if not (pid in seen or seen.add(pid))]
        keep_vectors.append(vectors[rows])
        keep_ids.extend(ids[i] for i in rows)
    return np.concatenate(keep_vectors), keep_ids


def embed_sharded(
    records: Sequence[Record], encoders: Sequence[EncodeFn], batch_size: int = 256, workers: int = 4, skipped=None
) -> tuple[np.ndarray, list[str]]:
    """`embed_records` with one worker thread per encoder (e.g. one per GPU), each on a
    contiguous shard of `records`; the shards merged in order."""
    bounds = shard_bounds(len(records), len(encoders))

    def part(k: int) -> tuple[np.ndarray, list[str]]:
        start, stop = bounds[k]
        return embed_records(records[start:stop], encoders[k], batch_size, workers, skipped)

    with ThreadPoolExecutor(max_workers=len(encoders), thread_name_prefix="gallery-shard") as pool:
        return merge_shards(list(pool.map(part, range(len(encoders)))))


def reindex(
    snapshot_version: int,
    records: Iterable[Record],
    encode_fn: EncodeFn | Sequence[EncodeFn],
    out_dir: str | Path,
    kind: str = "auto",
    *,
    batch_size: int = 256,
    workers: int = 4,
    skipped: list | None = None,
    **build_kw,
) -> Index:
    """Embed the whole gallery with one snapshot, build the index, save it atomically.

    `encode_fn` a list of encoders: sharded re-embedding, one worker per encoder (`records`
    a sequence). Under torch.distributed (`records` a sequence, the same on every rank):
    each rank embeds its shard (`_reindex_on_ranks`)."""
    if distributed.active() and not isinstance(encode_fn, (list, tuple)):
        embed_kw = dict(batch_size=batch_size, workers=workers, skipped=skipped)
        return _reindex_on_ranks(snapshot_version, records, encode_fn, out_dir, kind, embed_kw, build_kw)
    if isinstance(encode_fn, (list, tuple)):
        vectors, ids = embed_sharded(records, encode_fn, batch_size, workers, skipped)
    else:
        vectors, ids = embed_records(records, encode_fn, batch_size, workers, skipped)
    return _build(snapshot_version, vectors, ids, out_dir, kind, **build_kw)


def _reindex_on_ranks(version: int, records: Sequence[Record], encode_fn: EncodeFn, out_dir, kind, embed_kw, build_kw):
    """Each rank embeds its contiguous shard of `records` into `<out_dir>.shards/<rank>.npz`;
    rank 0 merges the shards in order, builds and saves the index (atomically), the others
    then load it. No collective carries vectors: the shards meet on the local disk."""
    staging = Path(f"{out_dir}.shards")
    start, stop = shard_bounds(len(records), distributed.world())[distributed.rank()]
    vectors, ids = embed_records(records[start:stop], encode_fn, **embed_kw)
    make_dirs(staging)
    buf = io.BytesIO()
    np.savez(buf, vectors=vectors, ids=np.array(ids, dtype=str))
    write_bytes_atomic(staging / f"{distributed.rank()}.npz", buf.getvalue())
    distributed.barrier()
    if distributed.is_main():
        parts = []
        for k in range(distributed.world()):
            with np.load(staging / f"{k}.npz", allow_pickle=False) as z:
                parts.append((z["vectors"], [str(x) for x in z["ids"]]))
        index = _build(version, *merge_shards(parts), out_dir, kind, **build_kw)
        shutil.rmtree(staging, ignore_errors=True)
    distributed.barrier()
    return index if distributed.is_main() else load_index(out_dir, "cpu")


def _build(snapshot_version: int, vectors: np.ndarray, ids: list[str], out_dir, kind: str, **build_kw) -> Index:
    if vectors.shape[1] == 0:
        raise ValueError("empty gallery and encode_fn has no `dim` to build an empty index with")
    index = Index.build(vectors, ids, snapshot_version, kind, **build_kw)
    save_index(index, out_dir)
    log.info(
        "indexed %d gallery items with snapshot %d (%s, %s) -> %s",
        index.size,
        snapshot_version,
        index.kind,
        index.backend,
        out_dir,
    )
    return index


def add_segment(
    index_dir: str | Path,
    records: Iterable[Record],
    encode_fn: EncodeFn,
    snapshot: int | None = None,
    known: Index | set[str] | None = None,
    *,
    batch_size: int = 256,
    workers: int = 4,
    skipped: list | None = None,
) -> tuple[Path | None, int]:
    """Embed new records (ids in `known` skipped) into the next segment of `index_dir`.

    Returns (segment path or None when nothing was new, vectors written).
    """
    exclude = (lambda pid: pid in known) if known is not None else None
    vectors, ids = embed_records(records, encode_fn, batch_size, workers, skipped, exclude)
    if not ids:
        return None, 0
    for _ in range(100):  # another writer may take the same number; take the next one
        try:
            return save_segment(index_dir, next_segment(index_dir), vectors, ids, snapshot), len(ids)
        except FileExistsError:
            continue
    raise RuntimeError(f"could not claim a segment number in {index_dir}")
