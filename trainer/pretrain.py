"""Pretraining CLIP_0 on the icon corpus: `modx pretrain`.

    pretrain(out, dataset, model_name, cfg) -> out/   (a snapshot directory)

Plain contrastive (InfoNCE) training from random weights on the `train` pairs of every
set of an IconDataset, with trainer.loop's batching, learning-rate schedule, optimiser
and loss. The result is a snapshot (trainer.snapshot): open_clip loads it with
`create_model_and_transforms("local-dir:" + out)`, and `MODX_PRETRAINED=out` (with the
same `MODX_MODEL`) starts the service's CLIP_0 from it. Its snapshot.json records the
corpus (packages, licences, counts) and R@1 on the held-out validation and test concepts.

A cut-short run resumes: every `cfg.checkpoint_every` steps the model and optimiser are
written atomically to `<work_dir>/checkpoint.pt`, keyed by (model, recipe, pair ids,
image size), and the same command picks up from there. Batches are a pure function of
(seed, epoch) and augmentation of (seed, step), so a resumed run ends with the weights
an uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from trainer import distributed
from trainer.atomic import make_dirs
from trainer.config import TrainConfig
from trainer.data import Pair
from trainer.evaluate import evaluate_model
from trainer.loop import augment, epoch_plan, make_optimizer, run_steps
from trainer.metrics import r1
from trainer.model import create_model
from trainer.objective import phase_loss
from trainer.snapshot import save_snapshot

log = logging.getLogger("modx.pretrain")

# what `modx pretrain --preset` starts from; every value can be overridden
PRESETS: dict[str, dict] = {
    # about 30 minutes on 2 CPU cores (modx-small, ~200 samples/s): every pretraining set, 8 epochs
    "cpu": {
        "model": "modx-small",
        "epochs": 8,
        "batch_size": 128,
        "lr": 1e-3,
        "warmup": 0.05,
        "max_per_set": None,
        "augment": True,
        "device": "cpu",
    },
    # one GPU: a wider model at 64 px, bigger batches, more epochs
    "gpu": {
        "model": "modx-base",
        "epochs": 40,
        "batch_size": 512,
        "lr": 1e-3,
        "warmup": 0.05,
        "max_per_set": None,
        "augment": True,
        "device": "cuda",
    },
}
CHECKPOINT = "checkpoint.pt"


@dataclass
class Corpus:
    ids: list[str]
    images: torch.Tensor  # (n, 3, H, W) uint8, decoded once; normalised per batch
    tokens: torch.Tensor  # (n, context_length)

    def __len__(self) -> int:
        return len(self.ids)


def corpus_tensors(pairs: Sequence[Pair], size: int, tokenizer) -> Corpus:
    """Pairs as uint8 image and token tensors (images resized to `size` if they differ)."""
    arrays = []
    for p in pairs:
        image = p.pil()
        if image.size != (size, size):
            image = image.resize((size, size))
        arrays.append(np.asarray(image, dtype=np.uint8))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return Corpus([p.id for p in pairs], images, tokenizer([p.text for p in pairs]))


def normaliser(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 (b, 3, H, W) -> the float tensor open_clip's preprocess makes of the same pixels."""
    cfg = model.visual.preprocess_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    return lambda images: (images.float() / 255 - mean.to(images.device)) / std.to(images.device)


def image_size(model) -> int:
    size = model.visual.preprocess_cfg["size"]
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def resume_key(model_name: str, cfg: TrainConfig, corpus: Corpus) -> str:
    recipe = {k: v for k, v in cfg.to_dict().items() if k not in ("device", "checkpoint_every", "compile")}
    blob = json.dumps([model_name, recipe, corpus.ids, list(corpus.images.shape)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def default_work_dir(out: Path) -> Path:
    return Path(out).parent / f".{Path(out).name}.pretrain"


def pretrain(
    out: Path,
    dataset,
    model_name: str,
    cfg: TrainConfig,
    *,
    work_dir: Path | None = None,
    on_step: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> Path:
    """Train CLIP_0 from scratch on every set's `train` pairs and publish the snapshot `out`.

    `on_step` gets {"step", "total", "loss", "seconds"} after every step (an exception from
    it cuts the run short, as a kill would; the next call resumes from the last checkpoint).
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; pretraining never overwrites a checkpoint")
    work_dir = Path(work_dir) if work_dir is not None else default_work_dir(out)
    make_dirs(work_dir)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model, preprocess, tokenizer = create_model(model_name, device=device)
    pairs = [p for d in dataset.domains for p in dataset.train(d)]
    if len(pairs) < 2:
        raise ValueError(f"pretraining needs at least 2 train pairs, the corpus has {len(pairs)}")
    corpus = corpus_tensors(pairs, image_size(model), tokenizer)
    stats = _train(model, corpus, cfg, work_dir / CHECKPOINT, resume_key(model_name, cfg, corpus), on_step, progress)
    if distributed.is_main():  # under torchrun rank 0 alone evaluates and publishes
        _publish(model, preprocess, tokenizer, dataset, out, model_name, cfg, stats)
        (work_dir / CHECKPOINT).unlink(missing_ok=True)
    distributed.barrier()
    return out


def _publish(model, preprocess, tokenizer, dataset, out: Path, model_name: str, cfg: TrainConfig, stats: dict):
    evaluation = evaluate_corpus(model, preprocess, tokenizer, dataset)
    info = dict(dataset.info())
    info.pop("cache_dir", None)
    save_snapshot(
        model,
        out,
        model_name=model_name,
        version=0,
        parent=None,
        phase=None,
        method="pretrain",
        hparams=cfg.to_dict(),
        extra={"train": stats, "corpus": info, "evaluation": evaluation},
    )


def _train(model, corpus: Corpus, cfg: TrainConfig, ckpt: Path, key: str, on_step, progress: bool) -> dict:
    device = torch.device(cfg.device)
    model.train()
    optimizer = make_optimizer(model, cfg, device)
    normalise = normaliser(model)
    wrapped = distributed.wrap(model, device)

    def batch_loss(step: int, idx: torch.Tensor) -> torch.Tensor:
        mine = distributed.shard(idx)
        images = normalise(corpus.images[mine].to(device, non_blocking=True))
        if cfg.augment:
            images = augment(images, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
        return phase_loss(wrapped, model, images, corpus.tokens[mine].to(device, non_blocking=True), cfg)

    t0 = time.perf_counter()
    plan = epoch_plan(len(corpus), cfg)
    run = run_steps(
        model,
        wrapped,
        optimizer,
        plan,
        cfg,
        batch_loss,
        ckpt=ckpt,
        key=key,
        on_step=on_step,
        desc="pretrain",
        progress=progress,
    )
    return {"steps": len(plan), **run, "pairs": len(corpus), "seconds": round(time.perf_counter() - t0, 1)}


def evaluate_corpus(model, preprocess, tokenizer, dataset) -> dict:
    """R@K per set on the held-out concepts (validation, test), and R@1 averaged over sets."""
    out = {}
    for split in ("validation", "test"):
        probes = {d: getattr(dataset, split)(d) for d in dataset.domains}
        recall = evaluate_model(model, preprocess, tokenizer, {d: ps for d, ps in probes.items() if len(ps) > 1}).recall
        per_set = [r1(r) for r in recall.values()]
        out[split] = {
            "per_set": recall,
            "mean_r1": float(np.mean(per_set)) if per_set else None,
            "pairs": {d: len(ps) for d, ps in probes.items()},
        }
    return out


def run_preset(
    out: Path,
    preset: str = "cpu",
    *,
    sets: Sequence[str] | None = None,
    cache_dir: Path | None = None,
    work_dir: Path | None = None,
    npm=None,
    **overrides,
) -> tuple[Path, str]:
    """`modx pretrain`: PRESETS[preset] with `overrides` (model, epochs, batch_size, lr,
    max_per_set, device, seed, ...), on `sets` (default every pretraining set). Returns the
    snapshot path and a summary of its held-out R@1."""
    from trainer.datasets.icons import PRETRAIN_SETS, IconDataset
    from trainer.datasets.npm import run_npm
    from trainer.model import model_config

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    chosen = {**PRESETS[preset], **overrides}
    model_name, max_per_set = chosen.pop("model"), chosen.pop("max_per_set")
    size = int(model_config(model_name)["vision_cfg"]["image_size"])
    dataset = IconDataset(
        sets or tuple(PRETRAIN_SETS), size=size, max_per_set=max_per_set, cache_dir=cache_dir, npm=npm or run_npm
    )
    cfg = TrainConfig(method="ct", **chosen)
    path = pretrain(out, dataset, model_name, cfg, work_dir=work_dir)
    return path, summary(json.loads((path / "snapshot.json").read_text()))


def summary(record: dict) -> str:
    ev, train = record["evaluation"], record["train"]
    lines = [
        f"{record['model']}: {train['pairs']} train pairs, {train['steps']} steps, final loss {train['final_loss']:.3f}"
    ]
    for split in ("validation", "test"):
        if ev[split]["mean_r1"] is not None:
            n = sum(ev[split]["pairs"].values())
            lines.append(f"held-out {split} concepts ({n} pairs): R@1 {ev[split]['mean_r1']:.3f} (mean over sets)")
    return "\n".join(lines)
