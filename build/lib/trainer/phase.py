"""One phase of continual training: train_phase(parent snapshot, pairs) -> child snapshot.

The student starts from the parent's weights; for lwf/modx a frozen copy of the parent is
the teacher. Read top to bottom: prepare data, set up, loop, save.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from trainer.atomic import atomic_file
from trainer.config import TrainConfig
from trainer.data import Pair
from trainer.embed import embed_image_tensor, embed_token_tensor, preprocess_images
from trainer.experts import Experts, rows_for
from trainer.losses import clip_loss, ewc_penalty, feature_loss, grouped_modx_loss, modx_loss
from trainer.model import autocast, clamp_logit_scale, no_weight_decay
from trainer.replay import sample_replay
from trainer.snapshot import TRAINED, load_fisher, load_snapshot, save_snapshot

log = logging.getLogger("modx.trainer")

StepCallback = Callable[[dict], None]


@dataclass
class PhaseData:
    ids: list[str]
    images: torch.Tensor  # (n, 3, H, W) preprocessed
    tokens: torch.Tensor  # (n, context_length)

    def __len__(self) -> int:
        return len(self.ids)


def prepare(pairs: Sequence[Pair], preprocess, tokenizer) -> PhaseData:
    return PhaseData(
        ids=[p.id for p in pairs],
        images=preprocess_images(preprocess, [p.image for p in pairs]),
        tokens=tokenizer([p.text for p in pairs]),
    )


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


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Small random translation (pad 2, random crop), per batch."""
    pad = 2
    h, w = images.shape[-2:]
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=g).tolist()
    return F.pad(images, (pad,) * 4, mode="replicate")[..., dy : dy + h, dx : dx + w]


@torch.no_grad()
def teacher_cache(teacher, data: PhaseData, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's normalised image and text embeddings of the phase (or of `rows` of it,
    the others zero), computed once."""
    if rows is None:
        return embed_image_tensor(teacher, data.images), embed_token_tensor(teacher, data.tokens)
    image, text = embed_image_tensor(teacher, data.images[rows]), embed_token_tensor(teacher, data.tokens[rows])
    full_i, full_t = image.new_zeros(len(data), image.shape[1]), text.new_zeros(len(data), text.shape[1])
    full_i[rows], full_t[rows] = image, text
    return full_i, full_t


def estimate_fisher(model, data: PhaseData, cfg: TrainConfig, device) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: mean squared gradient of the contrastive loss per batch."""
    model.train()
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    chosen = batches(len(data), cfg.batch_size, cfg.seed, epoch=-1)[: cfg.fisher_batches]
    for idx in chosen:
        model.zero_grad(set_to_none=True)
        with autocast(device):
            img = F.normalize(model.encode_image(data.images[idx].to(device)), dim=-1)
            txt = F.normalize(model.encode_text(data.tokens[idx].to(device)), dim=-1)
            loss = clip_loss(img.float(), txt.float(), model.logit_scale.exp())
        loss.backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2 / len(chosen)
    model.zero_grad(set_to_none=True)
    return fisher


def phase_loss(
    model,
    student,
    images: torch.Tensor,
    tokens: torch.Tensor,
    cfg: TrainConfig,
    *,
    teacher=None,
    teacher_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ewc: tuple[dict, dict] | None = None,
    distill_rows: torch.Tensor | None = None,
    sources: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss of one batch: InfoNCE (+ alpha * Mod-X/LwF KL) (+ EWC penalty).

    `model` is what runs the forward (maybe compiled), `student` the module it wraps.
    The teacher's embeddings come from `teacher_emb` (cache) or a live `teacher` forward.
    `distill_rows` limits the KL to those samples' rows (cfg.distill_on = "replay").
    `sources` (cfg.expert): per row the snapshot whose embeddings `teacher_emb` holds, -1 for
    the parent; the KL is taken per source (grouped_modx_loss), and rows with a stored
    expert add beta * (1 - cos) on both towers.
    """
    device = images.device
    with autocast(device):
        img = F.normalize(model.encode_image(images), dim=-1).float()
        txt = F.normalize(model.encode_text(tokens), dim=-1).float()
        loss = clip_loss(img, txt, student.logit_scale.exp())
        if teacher_emb is None and teacher is not None:
            with torch.no_grad():
                teacher_emb = (
                    F.normalize(teacher.encode_image(images), dim=-1).float(),
                    F.normalize(teacher.encode_text(tokens), dim=-1).float(),
                )
        if teacher_emb is not None and sources is not None:
            loss = loss + cfg.alpha * grouped_modx_loss(
                img, txt, *teacher_emb, sources, cfg.temperature, cfg.kl_reduction
            )
            if cfg.beta:
                old = sources >= 0
                loss = loss + cfg.beta * feature_loss(img[old], txt[old], teacher_emb[0][old], teacher_emb[1][old])
        elif teacher_emb is not None:
            kl = modx_loss(img, txt, *teacher_emb, cfg.temperature, cfg.kl_reduction, cfg.screening, distill_rows)
            loss = loss + cfg.alpha * kl
        if ewc is not None:
            loss = loss + cfg.ewc_lambda * ewc_penalty(student, *ewc)
    return loss


def _resume_key(parent_record: dict, data: PhaseData, cfg: TrainConfig) -> str:
    """Identifies (parent, data, config): a checkpoint resumes only the phase it was made for."""
    blob = json.dumps([parent_record["version"], parent_record["created"], data.ids, cfg.to_dict()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _checkpoint_path(work_dir: Path | None) -> Path | None:
    if work_dir is None:
        return None
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    return Path(work_dir) / "checkpoint.pt"


def save_checkpoint(path: Path, step: int, model, optimizer, key: str) -> None:
    with atomic_file(path) as f:
        torch.save({"step": step, "key": key, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, f)


def load_checkpoint(path: Path | None, model, optimizer, key: str) -> int:
    """Restore a mid-phase checkpoint made for the same (parent, data, config); else step 0."""
    if path is None or not path.exists():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["key"] != key:
        log.warning("ignoring checkpoint %s made for another phase", path)
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    log.info("resuming from step %d", state["step"])
    return int(state["step"])


def merge_weights(model, parent_state: dict[str, torch.Tensor], weight: float) -> None:
    """WiSE-FT: theta <- (1 - weight) * theta_new + weight * theta_parent."""
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.is_floating_point():
                p.lerp_(parent_state[name].to(p.device), weight)


def train_phase(
    parent: Path,
    pairs: Sequence[Pair],
    cfg: TrainConfig,
    out: Path,
    *,
    version: int,
    phase: int | None = None,
    replay: Sequence[Sequence[Pair]] = (),
    work_dir: Path | None = None,
    on_step: StepCallback | None = None,
    extra_record: dict | None = None,
    experts: Experts | None = None,
) -> Path:
    """Train one phase from the `parent` snapshot on `pairs` (+ replay) and publish `out`.

    Each epoch trains on every new pair and that epoch's replayed pairs (trainer.replay).
    `experts` (cfg.expert): stored embeddings of older pairs; replayed pairs found there are
    distilled against them, the rest (and every new pair) against the parent.
    """
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    student, preprocess, tokenizer, parent_record = load_snapshot(parent, device)
    replayed, plan = sample_replay(replay, cfg, len(pairs))
    data = prepare(list(pairs) + replayed, preprocess, tokenizer)
    is_replay = torch.arange(len(data)) >= len(pairs)
    epoch_rows = [torch.cat([torch.arange(len(pairs)), len(pairs) + torch.tensor(e, dtype=torch.long)]) for e in plan]
    per_epoch = len(epoch_rows[0])
    if per_epoch < 2:
        raise ValueError(f"a phase needs at least 2 pairs to train, got {per_epoch}")

    teacher = freeze(copy.deepcopy(student)) if cfg.distills else None
    sources = None
    if cfg.experts and teacher is not None:
        stored_i, stored_t, sources = rows_for(experts, data.ids)
        sources = torch.where(is_replay, sources, torch.full_like(sources, -1))
    use_cache = teacher is not None and (cfg.cache_teacher and not cfg.augment or sources is not None)
    parent_rows = None if sources is None else torch.nonzero(sources < 0).flatten()
    cached = teacher_cache(teacher, data, parent_rows) if use_cache else None
    if sources is not None and stored_i.shape[1]:
        have = sources >= 0
        cached[0][have.to(device)], cached[1][have.to(device)] = stored_i[have].to(device), stored_t[have].to(device)
    fisher = load_fisher(parent, device) if cfg.method == "ewc" else None
    anchor = {n: p.detach().clone() for n, p in student.named_parameters()} if fisher else None
    parent_state = {k: v.detach().clone() for k, v in student.state_dict().items()} if cfg.merge else None

    student.train()
    optimizer = make_optimizer(student, cfg, device)
    model = torch.compile(student) if cfg.compile else student
    total = cfg.epochs * steps_per_epoch(per_epoch, cfg.batch_size)
    ckpt = _checkpoint_path(work_dir)
    key = _resume_key(parent_record, data, cfg)
    start = load_checkpoint(ckpt, student, optimizer, key)
    aug_gen = torch.Generator().manual_seed(cfg.seed)
    bar = _progress(total, start, f"phase {phase} {cfg.method}")
    last_loss, t0 = float("nan"), time.perf_counter()

    step = 0
    for epoch in range(cfg.epochs):
        for idx in (epoch_rows[epoch][b] for b in batches(per_epoch, cfg.batch_size, cfg.seed, epoch)):
            if step < start:
                step += 1
                continue
            t_step = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, cfg) * group["lr_mult"]
            images = data.images[idx].to(device, non_blocking=True)
            tokens = data.tokens[idx].to(device, non_blocking=True)
            if cfg.augment:
                images = augment(images, aug_gen)
            teacher_emb = (cached[0][idx.to(device)], cached[1][idx.to(device)]) if cached is not None else None
            rows = is_replay[idx].to(device) if cfg.distill_on == "replay" else None
            loss = phase_loss(
                model,
                student,
                images,
                tokens,
                cfg,
                teacher=teacher,
                teacher_emb=teacher_emb,
                ewc=(fisher, anchor) if fisher else None,
                distill_rows=rows,
                sources=None if sources is None else sources[idx].to(device),
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clamp_logit_scale(student)
            step += 1
            last_loss = loss.item()
            bar(step, last_loss)
            if on_step:
                on_step({"step": step, "total": total, "loss": last_loss, "seconds": time.perf_counter() - t_step})
            if ckpt and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
                save_checkpoint(ckpt, step, student, optimizer, key)

    if parent_state is not None:
        merge_weights(student, parent_state, cfg.merge)
    new_fisher = None
    if cfg.method == "ewc":
        new_fisher = estimate_fisher(student, data, cfg, device)
        if fisher:
            new_fisher = {n: new_fisher[n] + fisher[n] for n in new_fisher}
    samples = phase_samples(per_epoch, cfg)
    parent_forwards = len(data) if parent_rows is None else len(parent_rows)
    stats = {
        "steps": total,
        "samples": samples,
        "teacher_forwards": 0 if teacher is None else parent_forwards if cached is not None else samples,
        "pairs": len(pairs),
        "replayed": len(replayed),  # distinct older pairs over the phase
        "replayed_per_epoch": per_epoch - len(pairs),
        "expert_rows": 0 if sources is None else int((sources >= 0).sum()),
        "final_loss": last_loss,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    path = save_snapshot(
        student,
        out,
        model_name=parent_record["model"],
        version=version,
        parent=parent_record["version"],
        phase=phase,
        method=cfg.method,
        hparams=cfg.to_dict(),
        fisher=new_fisher,
        extra={"train": stats, **(extra_record or {})},
        files={TRAINED: {"pairs": [p.id for p in pairs], "replayed": [p.id for p in replayed]}},
    )
    if ckpt and ckpt.exists():
        ckpt.unlink()
    return path


def _progress(total: int, start: int, desc: str):
    """A tqdm bar on a terminal, structured log lines otherwise."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc=desc, leave=False)

        def update(step, loss):
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if step >= total:
                bar.close()

        return update
    every = max(1, total // 10)

    def log_line(step, loss):
        if step % every == 0 or step == total:
            log.info("train step=%d total=%d loss=%.4f phase=%s", step, total, loss, desc)

    return log_line
