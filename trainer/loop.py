"""The optimisation loop shared by a phase (trainer.phase) and pretraining (trainer.pretrain).

    plan = epoch_plan(n, cfg)                      the global batches, a pure function of the seed
    run_steps(student, model, optimizer, plan, cfg, batch_loss, ...)

Each step sets the learning rate (warmup then cosine), asks `batch_loss(step, rows)` for
the loss of the global batch `rows`, and takes one AdamW step. Under torch.distributed every
rank walks the same plan; `batch_loss` takes its shard of `rows` (trainer.distributed) and
gathers features, so every rank holds the global loss. Rank 0 alone writes the resumable
checkpoint (atomically) every `cfg.checkpoint_every` steps; every rank resumes from it.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from trainer import distributed
from trainer.atomic import atomic_file
from trainer.config import TrainConfig
from trainer.model import clamp_logit_scale, no_weight_decay

log = logging.getLogger("modx.trainer")

StepCallback = Callable[[dict], None]
BatchLoss = Callable[[int, torch.Tensor], torch.Tensor]  # (step, global batch rows) -> loss


def steps_per_epoch(n: int, batch_size: int) -> int:
    return 1 if n <= batch_size else n // batch_size


def phase_samples(n: int, cfg: TrainConfig) -> int:
    """Samples a phase of `n` pairs processes under `cfg` (the ragged last batch is dropped)."""
    return cfg.epochs * steps_per_epoch(n, cfg.batch_size) * min(cfg.batch_size, n)


def batches(n: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """The shuffled batches of one epoch; a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g)
    if n <= batch_size:
        return [order]
    return list(order[: n - n % batch_size].split(batch_size))  # drop the ragged last batch


def epoch_plan(n: int, cfg: TrainConfig, rows: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Every step's global batch over `cfg.epochs` epochs of `n` samples; with `rows` (one
    row order per epoch, each n long) the batches index those rows."""
    plan = []
    for epoch in range(cfg.epochs):
        for b in batches(n, cfg.batch_size, cfg.seed, epoch):
            plan.append(b if rows is None else rows[epoch][b])
    return plan


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warmup over `cfg.warmup` of the steps, then cosine decay to 0 (open_clip's cosine_lr)."""
    warmup = int(cfg.warmup * total)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress)) * cfg.lr


def tower(name: str) -> str:
    """Which tower an open_clip CLIP parameter belongs to: image, text, or shared (logit scale)."""
    if name.startswith("visual."):
        return "image"
    return "shared" if name.startswith("logit_") else "text"


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW, one parameter group per (tower, decay or not); each group's `lr_mult` scales lr_at."""
    mult = {"image": cfg.lr_image, "text": cfg.lr_text, "shared": 1.0}
    groups: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((tower(name), not no_weight_decay(name, p)), []).append(p)
    params = [
        {"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr_mult": mult[t]}
        for (t, decay), ps in groups.items()
    ]
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, fused=device.type == "cuda")


def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Small random translation (pad 2, random crop), per batch."""
    pad = 2
    h, w = images.shape[-2:]
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=g).tolist()
    return F.pad(images, (pad,) * 4, mode="replicate")[..., dy : dy + h, dx : dx + w]


def save_checkpoint(path: Path, step: int, model, optimizer, key: str) -> None:
    with atomic_file(path) as f:
        torch.save({"step": step, "key": key, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, f)


def load_checkpoint(path: Path | None, model, optimizer, key: str) -> int:
    """Restore a mid-run checkpoint made for the same run (`key`); else step 0."""
    if path is None or not path.exists():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["key"] != key:
        log.warning("ignoring checkpoint %s made for another run", path)
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    log.info("resuming from step %d", state["step"])
    return int(state["step"])


def run_steps(
    student: torch.nn.Module,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    plan: Sequence[torch.Tensor],
    cfg: TrainConfig,
    batch_loss: BatchLoss,
    *,
    ckpt: Path | None = None,
    key: str = "",
    on_step: StepCallback | None = None,
    desc: str = "train",
    progress: bool = True,
) -> dict:
    """Train over `plan` from the last checkpoint at `ckpt` (made for `key`); return
    {"resumed_at", "final_loss"}. `model` runs the forward (maybe DDP- or compile-wrapped),
    `student` is the module it wraps (checkpointed, its logit scale clamped). `on_step` gets
    {"step", "total", "loss", "seconds"} after each step on rank 0; an exception from it cuts
    the run short, as a kill would, after that step's checkpoint."""
    total = len(plan)
    distributed.barrier()  # nobody reads a checkpoint rank 0 may still be writing
    start = load_checkpoint(ckpt, student, optimizer, key)
    bar = _progress(total, start, desc, progress and distributed.is_main())
    last_loss = float("nan")
    for step in range(start, total):
        t_step = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, cfg) * group["lr_mult"]
        loss = batch_loss(step, plan[step])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clamp_logit_scale(student)
        done, last_loss = step + 1, loss.item()
        bar(done, last_loss)
        if not distributed.is_main():
            continue
        if ckpt and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
            save_checkpoint(ckpt, done, student, optimizer, key)
        if on_step:
            on_step({"step": done, "total": total, "loss": last_loss, "seconds": time.perf_counter() - t_step})
    return {"resumed_at": start, "final_loss": last_loss}


def _progress(total: int, start: int, desc: str, enabled: bool):
    """A tqdm bar (on a terminal) plus a log line every tenth of the run."""
    if not enabled:
        return lambda step, loss: None
    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, desc=desc, disable=None, leave=False)
    every = max(1, total // 10)

    def update(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if step % every == 0 or step == total:
            log.info("%s step=%d total=%d loss=%.4f", desc, step, total, loss)
        if step >= total:
            bar.close()

    return update
