"""What tests/test_distributed.py runs on every rank (spawned processes import it from here)
and, with the same functions, in one process for the reference."""

from __future__ import annotations

from pathlib import Path

import open_clip.loss
import torch

from indexer.encoders import SnapshotEncoders
from indexer.gallery import reindex
from trainer import distributed
from trainer.config import TrainConfig
from trainer.loop import batches
from trainer.objective import phase_loss
from trainer.phase import freeze, prepare, teacher_cache, train_phase
from trainer.snapshot import load_snapshot

GLOBAL_BATCH = 16
BASE = TrainConfig(epochs=2, batch_size=GLOBAL_BATCH, lr=1e-3, warmup=0.2, checkpoint_every=0, replay_fraction=0)
RECIPES = {
    "ct": BASE.with_(method="ct"),
    "modx": BASE.with_(method="modx", cache_teacher=True),  # screened KL over the global matrix, cached teacher
    "ewc": BASE.with_(method="ewc", fisher_batches=3),
}


class Stop(Exception):
    pass


def train(parent, pairs, method: str, out: Path, *, losses=None, work_dir=None, stop_at=None, checkpoint_every=2):
    """train_phase under RECIPES[method]; per-step losses appended to `losses` (rank 0);
    `stop_at`: cut short at that step (after a checkpoint every `checkpoint_every`)."""
    cfg = RECIPES[method].with_(checkpoint_every=checkpoint_every if work_dir else 0)

    def on_step(info):
        if losses is not None:
            losses.append(info["loss"])
        if info["step"] == stop_at:
            raise Stop

    return train_phase(parent, pairs, cfg, out, version=1, phase=1, work_dir=work_dir, on_step=on_step)


def grads_of_one_batch(parent, pairs, method: str) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and parameter gradients of the first global batch (this rank's shard of it,
    DDP-reduced), with the teacher cache for modx."""
    cfg = RECIPES[method]
    student, preprocess, tokenizer, _ = load_snapshot(parent)
    data = prepare(pairs, preprocess, tokenizer)
    cached = teacher_cache(freeze(load_snapshot(parent)[0]), data) if cfg.distills else None
    model = distributed.wrap(student.train(), torch.device("cpu"))
    idx = batches(len(data), GLOBAL_BATCH, cfg.seed, 0)[0]
    mine = distributed.shard(idx)
    emb = (cached[0][idx], cached[1][idx]) if cached else None
    loss = phase_loss(model, student, data.images[mine], data.tokens[mine], cfg, teacher_emb=emb)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}


def check_gather() -> dict:
    """trainer.distributed.gather against open_clip's gather_features, and on ragged shards."""
    r, n = distributed.rank(), distributed.world()
    g = torch.Generator().manual_seed(r)
    img, txt = torch.randn(4, 8, generator=g, requires_grad=True), torch.randn(4, 8, generator=g, requires_grad=True)
    weight = torch.randn(4 * n, 8, generator=torch.Generator().manual_seed(99))

    def grads(gathered):
        img.grad = txt.grad = None
        ((gathered[0] * weight).sum() + (gathered[1] ** 2).sum()).backward()
        return img.grad.clone(), txt.grad.clone()

    ours = (distributed.gather(img), distributed.gather(txt))
    theirs = open_clip.loss.gather_features(img, txt, local_loss=False, gather_with_grad=True, rank=r, world_size=n)
    same = all(torch.equal(a, b) for a, b in zip(ours, theirs))
    same_grads = all(torch.allclose(a, b) for a, b in zip(grads(ours), grads(theirs)))
    rows = torch.arange(5)
    x = torch.ones(len(distributed.shard(rows)), 2, requires_grad=True)
    whole = distributed.gather(x)
    (whole * (torch.arange(5.0)[:, None] + 1)).sum().backward()  # every rank the same loss
    mine = distributed.shard(rows)
    expected = n * (mine.float()[:, None] + 1).expand(-1, 2)  # each rank's loss contributes
    sizes = [len(s) for s in rows.tensor_split(n)]
    return {
        "equal_to_open_clip": same,
        "grads_equal_to_open_clip": same_grads,
        "ragged_sizes": sizes if len(whole) == 5 else None,
        "ragged_grad_ok": torch.allclose(x.grad, expected),
    }


def gallery(pairs) -> list[tuple[str, bytes]]:
    """21 records (ragged over 2 ranks), one id repeated across the shard boundary."""
    recs = [(p.id, p.image) for p in pairs[:20]]
    return recs[:10] + [recs[12]] + recs[10:]


def reindex_gallery(parent, pairs, out: Path):
    """The gallery's flat index under the parent's image tower: (ids, vectors)."""
    index = reindex(0, gallery(pairs), SnapshotEncoders.load(parent).image, out, kind="flat", batch_size=4)
    return index.ids, index.raw.reconstruct_n(0, index.size)


def run_jobs(parent, pairs, out: Path, crashed: Path) -> dict:
    """Every distributed job of the test, on each rank; rank 0's results are returned."""
    torch.set_num_threads(1)
    result = {
        "gather": check_gather(),
        "grads": {},
        "train": {},
        "reindex": reindex_gallery(parent, pairs, out / "index"),
    }
    for method in ("ct", "modx"):
        loss, grads = grads_of_one_batch(parent, pairs, method)
        result["grads"][method] = {"loss": loss, "grads": grads}
    for method in RECIPES:
        losses = []
        path = train(parent, pairs, method, out / method, losses=losses, work_dir=out / f"work-{method}")
        result["train"][method] = {"losses": losses, "out": path}
    if distributed.is_main():  # as `modx trainer` under torchrun: rank 0 leads, the others follow
        with distributed.leading():
            result["led"] = train(parent, pairs, "ct", out / "led")
    else:
        distributed.follow()
    steps = []
    path = train(parent, pairs, "modx", out / "resumed", losses=steps, work_dir=crashed)
    result["resumed"] = {"first_step": len(result["train"]["modx"]["losses"]) - len(steps) + 1, "out": path}
    return result


def fail_one_rank() -> None:
    """Rank 1 fails inside a data-parallel block while rank 0 waits for it in a collective,
    and the failure is caught, as the trainer worker's loop catches a failed phase; rank 1
    would then wait for the next phase, rank 0 for rank 1, for good."""
    try:
        with distributed.together():
            if distributed.rank() == 1:
                raise ValueError("a fault on rank 1")
            distributed.barrier()
    except ValueError:
        pass
    distributed.broadcast(None)
