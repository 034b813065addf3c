"""The loss of one global batch from the models (forward, gather, trainer.losses), and
EWC's diagonal Fisher.

Under torch.distributed each rank forwards its shard of the batch; the features are
gathered (trainer.distributed.gather, gradients flowing back to the local rows), so
InfoNCE, the Mod-X teacher and student matrices, screening and the KL are computed over
the global batch on every rank, as in the Mod-X authors' code. Teacher embeddings and the
masks given per row (`distill_rows`, `sources`) are for the global batch already.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer import distributed
from trainer.config import TrainConfig
from trainer.loop import batches
from trainer.losses import clip_loss, ewc_penalty, feature_loss, grouped_modx_loss, modx_loss
from trainer.model import autocast


def features(model, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float32 image and text features of the global batch, from this rank's shard.

    `model` is called (open_clip's forward normalises), so a DistributedDataParallel wrapper
    sees the forward it needs to reduce the gradients."""
    img, txt = model(images, tokens)[:2]
    return distributed.gather(img.float()), distributed.gather(txt.float())


@torch.no_grad()
def teacher_features(teacher, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        distributed.gather(F.normalize(teacher.encode_image(images), dim=-1).float()),
        distributed.gather(F.normalize(teacher.encode_text(tokens), dim=-1).float()),
    )


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
    scales: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss of one global batch: InfoNCE (+ alpha * Mod-X/LwF KL) (+ EWC penalty).

    `images`, `tokens`: this rank's shard (the whole batch in one process). `model` is what
    runs the forward (maybe DDP- or compile-wrapped), `student` the module it wraps.
    The teacher's embeddings of the global batch come from `teacher_emb` (cache) or a live
    `teacher` forward of the shard, gathered. `distill_rows` limits the KL to those samples'
    rows (cfg.distill_on = "replay").
    `sources` (cfg.expert): per row the snapshot whose embeddings `teacher_emb` holds, -1 for
    the parent; the KL is taken per source (grouped_modx_loss), and rows with a stored
    expert add beta * (1 - cos) on both towers.
    `scales` (cfg.teacher_scale): per row the logit scale of the teacher that embedded it;
    the KL's softmaxes then run at temperature 1 / scale.
    """
    with autocast(images.device):
        img, txt = features(model, images, tokens)
        loss = clip_loss(img, txt, student.logit_scale.exp())
        if teacher_emb is None and teacher is not None:
            teacher_emb = teacher_features(teacher, images, tokens)
        if teacher_emb is not None and sources is not None:
            on = slice(None) if distill_rows is None else distill_rows
            loss = loss + cfg.alpha * grouped_modx_loss(
                img[on],
                txt[on],
                teacher_emb[0][on],
                teacher_emb[1][on],
                sources[on],
                cfg.temperature,
                cfg.kl_reduction,
                scales=None if scales is None else scales[on],
                forgotten_only=cfg.forgotten_only,
            )
            if cfg.beta:
                old = sources >= 0
                loss = loss + cfg.beta * feature_loss(img[old], txt[old], teacher_emb[0][old], teacher_emb[1][old])
        elif teacher_emb is not None:
            temperature = cfg.temperature if scales is None else 1.0 / scales[0]
            kl = modx_loss(
                img, txt, *teacher_emb, temperature, cfg.kl_reduction, cfg.screening, distill_rows, cfg.forgotten_only
            )
            loss = loss + cfg.alpha * kl
        if ewc is not None:
            loss = loss + cfg.ewc_lambda * ewc_penalty(student, *ewc)
    return loss


def estimate_fisher(model, images: torch.Tensor, tokens: torch.Tensor, cfg: TrainConfig, device):
    """Diagonal empirical Fisher: mean squared gradient of the contrastive loss per batch.

    `model` is the bare module (not DDP-wrapped). Under torch.distributed each rank takes
    every world-th of the batches whole, and the sums are all-reduced: the same estimate
    as one process's, at 1/world of the cost."""
    model.train()
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    chosen = batches(len(images), cfg.batch_size, cfg.seed, epoch=-1)[: cfg.fisher_batches]
    for idx in chosen[distributed.rank() :: distributed.world()]:
        model.zero_grad(set_to_none=True)
        with autocast(device):
            img, txt = model(images[idx].to(device), tokens[idx].to(device))[:2]
            loss = clip_loss(img.float(), txt.float(), model.logit_scale.exp())
        loss.backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2 / len(chosen)
    model.zero_grad(set_to_none=True)
    distributed.all_reduce_sum_(fisher.values())
    return fisher
