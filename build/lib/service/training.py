"""The trainer worker's work for one sealed phase, and the promotion guard.

Parent (the teacher) = the newest accepted snapshot (service.status). The child is published
atomically by trainer.phase; its recall on every phase's probe and its drift from the
parent are written beside it.
Snapshot versions follow phases: phase t trains snapshot t; version 0 is CLIP_0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from trainer.atomic import read_json, write_json_atomic
from trainer.config import TrainConfig
from trainer.data import Pair
from trainer.evaluate import Evaluation, evaluate, old_gallery_recall, transition_drift
from trainer.experts import EXPERTS, embed_experts, load_experts, merge, save_experts
from trainer.layout import drift_file, experts_file, recall_file, snapshot_dir, work_dir
from trainer.metrics import r1
from trainer.phase import train_phase
from trainer.snapshot import TRAINED, initial_snapshot

log = logging.getLogger("modx.trainer_worker")


def ensure_clip0(data_dir: Path, model: str, pretrained: str | None, seed: int = 0) -> Path:
    """Snapshot 0, the starting model: a local checkpoint, or a fresh init from the config."""
    return initial_snapshot(model, snapshot_dir(data_dir, 0), seed, pretrained, version=0, phase=0)


def mean_r1(recall: dict, probes: Sequence[str]) -> float | None:
    vals = [r1(recall[p]) for p in probes if p in recall]
    return sum(vals) / len(vals) if vals else None


@dataclass
class Outcome:
    version: int
    status: str  # accepted | rejected
    recall: dict
    reason: str = ""


def guard(new: dict, parent: dict, old_probes: Sequence[str], max_drop: float | None) -> tuple[str, str]:
    """Reject a snapshot whose mean old-probe R@1 falls more than `max_drop` below its parent's.

    None turns the guard off; a negative `max_drop` demands an improvement of at least that much.
    """
    if max_drop is None or not old_probes:
        return "accepted", ""
    new_r1, old_r1 = mean_r1(new, old_probes), mean_r1(parent, old_probes)
    if new_r1 is not None and old_r1 is not None and new_r1 < old_r1 - max_drop:
        return "rejected", f"mean old-probe R@1 {new_r1:.3f} < parent {old_r1:.3f} - {max_drop}"
    return "accepted", ""


def stored_experts(data_dir: Path, before: int):
    """The expert embeddings stored by the accepted snapshots older than `before`, newest winning."""
    paths = [experts_file(data_dir, v) for v in range(before)]
    return merge([load_experts(p) for p in paths if p.exists()])


def store_experts(out: Path, pairs: Sequence[Pair], replay: Sequence[Sequence[Pair]], cfg: TrainConfig) -> None:
    """An accepted snapshot's embeddings of the pairs it trained on (and, with
    `expert_refresh`, of those it replayed), beside it in EXPERTS."""
    if (out / EXPERTS).exists():
        return
    chosen = list(pairs)
    if cfg.expert_refresh:
        replayed = set(read_json(out / TRAINED)["replayed"])
        ids = lambda seq: [r.id for r in seq.records] if hasattr(seq, "records") else [p.id for p in seq]  # noqa: E731
        chosen += [phase[i] for phase in replay for i, pid in enumerate(ids(phase)) if pid in replayed]
    save_experts(embed_experts(out, chosen, cfg.device), out / EXPERTS)


def train_and_evaluate(
    data_dir: Path,
    phase: int,
    pairs: Sequence[Pair],
    probes: dict[str, list[Pair]],
    cfg: TrainConfig,
    parent: int,
    *,
    replay: Sequence[Sequence[Pair]] = (),
    max_drop: float | None = None,
    gallery: int | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> Outcome:
    """Train snapshot `phase` from snapshot `parent` on `pairs`, evaluate, apply the guard.

    `probes` maps a phase name ("1", "2", ...) to its probe pairs, this phase's included.
    `gallery` is the snapshot that embedded the index being served (default: `parent`):
    recall of the new text tower against that old gallery is reported beside the recall
    against a re-embedded one, which is what `reindex = keep` trades.
    """
    data_dir = Path(data_dir)
    parent_dir = snapshot_dir(data_dir, parent)
    out = snapshot_dir(data_dir, phase)
    if not out.exists():
        recipe = cfg.recipe()
        experts = stored_experts(data_dir, phase) if cfg.experts else None
        train_phase(
            parent_dir,
            pairs,
            cfg,
            out,
            version=phase,
            phase=phase,
            replay=replay,
            work_dir=work_dir(data_dir, phase),
            on_step=on_step,
            extra_record={"recipe": recipe},
            experts=experts,
        )
    new_eval: Evaluation = evaluate(out, probes, cfg.device)
    parent_eval: Evaluation = evaluate(parent_dir, probes, cfg.device)
    gallery = parent if gallery is None else gallery
    gallery_eval = parent_eval if gallery == parent else evaluate(snapshot_dir(data_dir, gallery), probes, cfg.device)
    old = [name for name in probes if name != str(phase)]
    status, reason = guard(new_eval.recall, parent_eval.recall, old, max_drop)
    if status == "accepted":
        store_experts(out, pairs, replay, cfg)
    write_json_atomic(
        recall_file(data_dir, phase),
        {
            "snapshot": phase,
            "parent": parent,
            "recall": new_eval.recall,
            "parent_recall": parent_eval.recall,
            "old_gallery": old_gallery_recall(new_eval, gallery_eval),
            "old_gallery_snapshot": gallery,
            "mean_r1_old": mean_r1(new_eval.recall, old),
            "mean_r1_all": mean_r1(new_eval.recall, list(probes)),
            "status": status,
            "reason": reason,
        },
    )
    write_json_atomic(
        drift_file(data_dir, phase), {"from": parent, "to": phase, **transition_drift(parent_eval, new_eval)}
    )
    log.info("snapshot %d from %d: %s %s", phase, parent, status, reason)
    return Outcome(phase, status, new_eval.recall, reason)
