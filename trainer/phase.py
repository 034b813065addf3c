"""One phase of continual training: train_phase(parent snapshot, pairs) -> child snapshot.

The student starts from the parent's weights; for lwf/modx a frozen copy of the parent is
the teacher. Read top to bottom: prepare data, set up, loop (trainer.loop), save.

Under torch.distributed (torchrun, or `modx simulate --nproc`) every rank runs train_phase
with the same arguments: the teacher cache is embedded in shards and gathered, each step
trains on the rank's shard of the global batch (trainer.objective), the student is
DDP-wrapped, and rank 0 alone writes checkpoints and the snapshot; the others wait for it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from trainer import distributed
from trainer.config import TrainConfig
from trainer.data import Pair
from trainer.embed import embed_image_tensor, embed_token_tensor, preprocess_images
from trainer.experts import Experts, rows_for
from trainer.loop import StepCallback, augment, epoch_plan, make_optimizer, phase_samples, run_steps
from trainer.objective import estimate_fisher, phase_loss
from trainer.replay import sample_replay
from trainer.snapshot import TRAINED, load_fisher, load_snapshot, save_snapshot


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


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


@torch.no_grad()
def teacher_cache(teacher, data: PhaseData, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's normalised image and text embeddings of the phase (or of `rows` of it,
    the others zero), computed once; under torch.distributed each rank embeds a shard of
    the rows and the shards are gathered."""
    if rows is None and not distributed.active():
        return embed_image_tensor(teacher, data.images), embed_token_tensor(teacher, data.tokens)
    if rows is not None and not len(rows):  # every distilled row has its stored expert
        zeros = torch.zeros(len(data), teacher.visual.output_dim, device=teacher.logit_scale.device)
        return zeros, zeros.clone()
    rows = torch.arange(len(data)) if rows is None else rows
    mine = distributed.shard(rows)
    image = distributed.gather(embed_image_tensor(teacher, data.images[mine]))
    text = distributed.gather(embed_token_tensor(teacher, data.tokens[mine]))
    full_i, full_t = image.new_zeros(len(data), image.shape[1]), text.new_zeros(len(data), text.shape[1])
    full_i[rows], full_t[rows] = image, text
    return full_i, full_t


def _resume_key(parent_record: dict, data: PhaseData, cfg: TrainConfig) -> str:
    """Identifies (parent, data, config): a checkpoint resumes only the phase it was made for."""
    blob = json.dumps([parent_record["version"], parent_record["created"], data.ids, cfg.to_dict()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _checkpoint_path(work_dir: Path | None) -> Path | None:
    if work_dir is None:
        return None
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    return Path(work_dir) / "checkpoint.pt"


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
    kw = dict(version=version, phase=phase, replay=replay, work_dir=work_dir, extra_record=extra_record)
    distributed.announce(train_phase, parent, pairs, cfg, out, **kw, experts=experts)  # followers join (no on_step)
    with distributed.together():
        return _train(parent, pairs, cfg, out, **kw, on_step=on_step, experts=experts)


def _train(parent, pairs, cfg, out, *, version, phase, replay, work_dir, on_step, extra_record, experts) -> Path:
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
    distilled = is_replay if cfg.distill_on == "replay" else torch.ones_like(is_replay)
    sources = scales = None
    if teacher is not None and cfg.teacher_scale:
        scales = torch.full((len(data),), float(teacher.logit_scale.exp()))
    if cfg.experts and teacher is not None:
        stored_i, stored_t, sources, stored_scale = rows_for(experts, data.ids)
        sources = torch.where(is_replay, sources, torch.full_like(sources, -1))
        if scales is not None:
            scales = torch.where(sources >= 0, stored_scale, scales)
    use_cache = teacher is not None and (cfg.cache_teacher and not cfg.augment or sources is not None)
    parent_rows = None if sources is None else torch.nonzero((sources < 0) & distilled).flatten()
    cached = teacher_cache(teacher, data, parent_rows) if use_cache else None
    if sources is not None and stored_i.shape[1]:
        have = sources >= 0
        cached[0][have.to(device)], cached[1][have.to(device)] = stored_i[have].to(device), stored_t[have].to(device)
    fisher = load_fisher(parent, device) if cfg.method == "ewc" else None
    anchor = {n: p.detach().clone() for n, p in student.named_parameters()} if fisher else None
    parent_state = {k: v.detach().clone() for k, v in student.state_dict().items()} if cfg.merge else None

    student.train()
    optimizer = make_optimizer(student, cfg, device)
    model = distributed.wrap(student, device)
    model = torch.compile(model) if cfg.compile else model
    aug_gen = torch.Generator().manual_seed(cfg.seed)

    def batch_loss(step: int, idx: torch.Tensor) -> torch.Tensor:
        """The loss of the global batch `idx`, from this rank's shard of it."""
        mine = distributed.shard(idx)
        images = data.images[mine].to(device, non_blocking=True)
        if cfg.augment:
            images = augment(images, aug_gen)  # one draw per step on every rank: the same shift
        on = idx.to(device)
        return phase_loss(
            model,
            student,
            images,
            data.tokens[mine].to(device, non_blocking=True),
            cfg,
            teacher=teacher,
            teacher_emb=(cached[0][on], cached[1][on]) if cached is not None else None,
            ewc=(fisher, anchor) if fisher else None,
            distill_rows=is_replay[idx].to(device) if cfg.distill_on == "replay" else None,
            sources=None if sources is None else sources[idx].to(device),
            scales=None if scales is None else scales[idx].to(device),
        )

    t0 = time.perf_counter()
    steps = epoch_plan(per_epoch, cfg, epoch_rows)
    ckpt = _checkpoint_path(work_dir)
    run = run_steps(
        student,
        model,
        optimizer,
        steps,
        cfg,
        batch_loss,
        ckpt=ckpt,
        key=_resume_key(parent_record, data, cfg),
        on_step=on_step,
        desc=f"phase {phase} {cfg.method}",
    )

    if parent_state is not None:
        merge_weights(student, parent_state, cfg.merge)
    new_fisher = None
    if cfg.method == "ewc":
        new_fisher = estimate_fisher(student, data.images, data.tokens, cfg, device)
        if fisher:
            new_fisher = {n: new_fisher[n] + fisher[n] for n in new_fisher}
    samples = phase_samples(per_epoch, cfg)
    parent_forwards = len(data) if parent_rows is None else len(parent_rows)
    stats = {
        "steps": len(steps),
        "samples": samples,
        "teacher_forwards": 0 if teacher is None else parent_forwards if cached is not None else samples,
        "pairs": len(pairs),
        "replayed": len(replayed),  # distinct older pairs over the phase
        "replayed_per_epoch": per_epoch - len(pairs),
        "expert_rows": 0 if sources is None else int((sources >= 0).sum()),
        "final_loss": run["final_loss"],
        "seconds": round(time.perf_counter() - t0, 3),
        **({"ranks": distributed.world()} if distributed.active() else {}),
    }
    if distributed.is_main():
        save_snapshot(
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
    distributed.barrier()  # the snapshot is there for every rank
    return Path(out)
