"""Gallery re-embedding benchmark: images/s through indexer.gallery.reindex, decode included.

    python -m bench.embed --preset cpu                 # modx-tiny, 2000 images, CPU
    python -m bench.embed --preset gpu --out bench/results/embed-gpu.json   # ViT-B-32 on CUDA, 100k images
    python -m bench.embed --preset gpu --shards 4   # sharded re-embedding: one encoder per GPU, cuda:0..3

The gallery is generated in memory as (id, PNG bytes) records: random shapes over a noisy
background at --image-size px (a pool of --unique distinct images repeated under distinct
ids, so generating it stays cheap). Stages:

    end-to-end    reindex(): decode + preprocess + encode + index build + atomic save
    decode+prep   decoded_batches() with the encoder's prepare, same pool size and batch
    encode        the encoder on preprocessed tensors already in memory, batch by batch
    index build   Index.build + save_index over as many vectors as the gallery (the real
                  embeddings of the encode stage, tiled with a little jitter)

The slowest component names the bound. Projections to 1M images are linear in the measured
rates (past 200k vectors `auto` builds IVF, whose training is not linear in n).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from bench.common import apply_preset, command, machine, write_result
from indexer.encoders import SnapshotImageEncoder
from indexer.gallery import decoded_batches, normalise, reindex
from indexer.index import Index
from indexer.store import save_index
from trainer.data import encode_png
from trainer.model import create_model

PRESETS = {
    "cpu": dict(model="modx-tiny", images=2000, image_size=64, batch=256, device="cpu"),
    "gpu": dict(model="ViT-B-32", images=100_000, image_size=256, batch=512, device="cuda"),
}
TARGET_IMAGES, TARGET_S = 1_000_000, 120.0
COMPONENTS = ("decode+prep", "encode", "index build")


def make_png(rng: np.random.Generator, size: int) -> bytes:
    """Random ellipses and rectangles on a plain background, plus pixel noise."""
    im = Image.new("RGB", (size, size), tuple(rng.integers(0, 256, 3).tolist()))
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x0, x1, y0, y1 = rng.integers(0, size, 4).tolist()
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), fill=tuple(rng.integers(0, 256, 3).tolist()))
    noisy = np.asarray(im, np.int16) + rng.integers(-12, 13, (size, size, 3))
    return encode_png(Image.fromarray(noisy.clip(0, 255).astype(np.uint8)))


def gallery(n: int, size: int, unique: int, seed: int = 0) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    pool = [make_png(rng, size) for _ in range(min(n, unique))]
    return [(f"img{i:08d}", pool[i % len(pool)]) for i in range(n)]


def decode_stage(records, encoder, args, keep: int) -> tuple[int, float, list[torch.Tensor]]:
    """Decode + preprocess every record as embed_records does; (count, seconds, first `keep` tensors)."""
    count, kept = 0, []
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="gallery-decode") as pool:
        for ids, items in decoded_batches(records, pool, args.batch, encoder.prepare):
            count += len(ids)
            kept.extend(items[: keep - len(kept)])
    return count, time.perf_counter() - t0, kept


def encode_stage(encoder, items: list[torch.Tensor], batch: int) -> tuple[float, np.ndarray]:
    """Seconds to encode `items` batch by batch (the encoder returns host arrays: synchronous)."""
    encoder(items[:batch])  # warm-up (CUDA context, kernels)
    t0 = time.perf_counter()
    vectors = np.concatenate([encoder(items[i : i + batch]) for i in range(0, len(items), batch)])
    return time.perf_counter() - t0, vectors


def index_stage(vectors: np.ndarray, ids: list[str], out_dir: Path, args) -> float:
    """Seconds to build and save an index over len(ids) vectors: `vectors` tiled, jittered."""
    rng = np.random.default_rng(1)
    tiled = np.resize(vectors, (len(ids), vectors.shape[1]))
    tiled = normalise(tiled + rng.normal(0, 0.05 / np.sqrt(tiled.shape[1]), tiled.shape).astype(np.float32))
    t0 = time.perf_counter()
    save_index(Index.build(tiled, ids, 0, args.kind, device=args.index_device), out_dir)
    return time.perf_counter() - t0


def stage_row(stage: str, images: int, seconds: float) -> dict:
    rate = images / seconds
    return {
        "stage": stage,
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_s": round(rate, 1),
        "projected_1m_s": round(TARGET_IMAGES / rate, 1),
    }


def judge(rows: list[dict]) -> tuple[str, dict]:
    """The bound (the slowest component stage) and the 1M-image target judged on the end-to-end row."""
    components = [r for r in rows if r["stage"] in COMPONENTS]
    bound = min(components, key=lambda r: r["images_per_s"])["stage"]
    projected = next(r for r in rows if r["stage"] == "end-to-end")["projected_1m_s"]
    return bound, {"images": TARGET_IMAGES, "seconds": TARGET_S, "projected_s": projected, "met": projected <= TARGET_S}


def shard_encoders(model, preprocess, args) -> list[SnapshotImageEncoder]:
    """One copy of the image tower per shard worker: on cuda:k with --device cuda, else all on --device."""
    cuda = torch.device(args.device).type == "cuda"
    devices = [f"cuda:{k}" for k in range(args.shards)] if cuda else [args.device] * args.shards
    return [SnapshotImageEncoder(copy.deepcopy(model).to(d).eval(), preprocess, args.batch) for d in devices]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default=None)
    p.add_argument("--model")
    p.add_argument("--images", type=int)
    p.add_argument("--image-size", type=int, help="source PNG side in px (preprocess resizes to the model's)")
    p.add_argument("--unique", type=int, default=1000, help="distinct images in the gallery's pool")
    p.add_argument("--batch", type=int, help="decode batch and encoder batch")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="decode threads")
    p.add_argument("--encode-images", type=int, default=4096, help="preprocessed images kept for the encode stage")
    p.add_argument("--kind", default="auto", help="index kind for reindex and the index-build stage")
    p.add_argument("--device")
    p.add_argument(
        "--shards", type=int, default=1, help="re-embedding workers, one encoder each (one GPU each on cuda)"
    )
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    apply_preset(args, PRESETS[args.preset or "cpu"])
    args.index_device = "cpu" if args.device == "cpu" else "auto"

    records = gallery(args.images, args.image_size, args.unique)
    model, preprocess, _ = create_model(args.model, device=args.device)
    encoder = SnapshotImageEncoder(model.eval(), preprocess, args.batch)
    with tempfile.TemporaryDirectory(prefix="modx-bench-embed-") as tmp:
        n_decoded, decode_s, items = decode_stage(records, encoder, args, args.encode_images)
        encode_s, vectors = encode_stage(encoder, items, args.batch)
        index_s = index_stage(vectors, [pid for pid, _ in records], Path(tmp) / "index-build", args)
        t0 = time.perf_counter()
        index = reindex(
            0,
            records,
            shard_encoders(model, preprocess, args) if args.shards > 1 else encoder,
            Path(tmp) / "reindex",
            args.kind,
            batch_size=args.batch,
            workers=args.workers,
            device=args.index_device,
        )
        e2e_s = time.perf_counter() - t0
    rows = [
        stage_row("end-to-end", index.size, e2e_s),
        stage_row("decode+prep", n_decoded, decode_s),
        stage_row("encode", len(items), encode_s),
        stage_row("index build", len(records), index_s),
    ]
    bound, target = judge(rows)
    projected = target["projected_s"]
    verdict = "met" if target["met"] else f"missed by {projected / TARGET_S:.1f}x"

    print(
        f"{args.model} on {args.device}: {args.images} PNG images of {args.image_size} px "
        f"({len(records[0][1]) // 1024} KiB each), batch {args.batch}, {args.workers} decode workers, "
        f"torch threads {torch.get_num_threads()}, {args.shards} shard worker(s), index {index.kind} ({index.backend})"
    )
    print(f"{'stage':<13}{'images':>9}{'seconds':>10}{'images/s':>11}{'1M images s':>13}")
    for r in rows:
        print(f"{r['stage']:<13}{r['images']:>9}{r['seconds']:>10}{r['images_per_s']:>11}{r['projected_1m_s']:>13}")
    print(
        f"target: {TARGET_IMAGES:,} images re-embedded and indexed in <= {TARGET_S:.0f} s "
        f"(>= {TARGET_IMAGES / TARGET_S:,.0f} images/s); projected {projected} s: {verdict}; bound: {bound}"
    )
    result = {
        "benchmark": "embed",
        "args": vars(args),
        "rows": rows,
        "bound": bound,
        "target": target,
        "index": {"kind": index.kind, "backend": index.backend, "size": index.size},
        "machine": machine(args.device, command("bench.embed", argv)),
    }
    if args.out:
        write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
