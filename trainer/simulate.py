"""The offline continual protocol (the paper's Experiment A) on any Dataset.

Phase 0 trains CLIP_0 (snapshot 0, as in the service; parent None: the fresh model it
starts from is no numbered snapshot) on domain 0; phase t >= 1 trains snapshot t on domain t from
the previous snapshot (joint, the upper bound: on domains 0..t from CLIP_0, with the same
epochs per phase unless `joint_epochs` says otherwise, e.g. CLIP_0's for a joint model
trained as fully as CLIP_0 was). After every phase every
domain's probe is evaluated (and its validation split, and any `dataset.eval_splits`, and
its train split for retention); drift is measured on all probes between phases.

Snapshots are cached under the work directory by a digest of everything that determines
them (dataset, model, recipe, seed, and a pretrained checkpoint by the digest of its weights,
not its path), so CLIP_0 is built once per seed and shared by every method and sweep point,
and a rerun resumes where it stopped.

Under torch.distributed (torchrun, or `modx simulate --nproc N`, which spawns the ranks)
every rank runs the same protocol: phases train data-parallel (trainer.phase), rank 0
writes every file into the one work directory (the others wait, then read them), and
every rank evaluates, so each returns the same result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from trainer import distributed
from trainer.config import TrainConfig
from trainer.data import Dataset, Pair
from trainer.evaluate import evaluate, transition_drift
from trainer.experts import embed_experts, load_experts, save_experts
from trainer.experts import merge as merge_experts
from trainer.layout import snapshot_name
from trainer.metrics import continual, r1
from trainer.model import weights_sha256
from trainer.phase import phase_samples, train_phase
from trainer.snapshot import TRAINED, built_once, initial_snapshot, read_record

log = logging.getLogger("modx.simulate")

EVAL_SPLITS = ("validation", "train")  # beside the probe; plus dataset.eval_splits


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def dataset_key(dataset: Dataset) -> dict:
    info = dict(dataset.info())
    info.pop("cache_dir", None)  # where the data is cached does not change it
    return info


PLAIN = dict(replay_fraction=0.0, merge=0.0, expert=False, beta=0.0, expert_refresh=False, lr_image=1.0, lr_text=1.0)


def clip0_config(cfg: TrainConfig, first_epochs: int | None, first_lr: float | None = None) -> TrainConfig:
    """CLIP_0 is plain contrastive training on domain 0 (EWC also records its Fisher there),
    with its own epochs and peak learning rate, so recipes that differ after it share it."""
    method = "ewc" if cfg.method == "ewc" else "ct"
    return cfg.with_(method=method, epochs=first_epochs or cfg.epochs, lr=first_lr or cfg.lr, **PLAIN)


def joint_config(cfg: TrainConfig, epochs: int) -> TrainConfig:
    return cfg.with_(method="ct", epochs=epochs, **PLAIN)


def joint_samples(sizes: list[int], joint_cfg: TrainConfig) -> list[int]:
    """Samples joint training processes per phase: all data so far, from CLIP_0."""
    return [phase_samples(sum(sizes[: t + 1]), joint_cfg) for t in range(len(sizes))]


def evaluation_sets(dataset: Dataset, domains: list[str]) -> dict[str, dict[str, list[Pair]]]:
    """split -> domain -> pairs, for the probe and every other split evaluated."""
    splits = ["probe", *EVAL_SPLITS, *getattr(dataset, "eval_splits", ())]
    return {s: {d: getattr(dataset, s)(d) for d in domains} for s in splits if hasattr(dataset, s)}


def simulate(
    dataset: Dataset,
    cfg: TrainConfig,
    *,
    model_name: str = "modx-tiny",
    phases: int | None = None,
    first_epochs: int | None = None,
    first_lr: float | None = None,
    joint_epochs: int | None = None,
    work_dir: Path | None = None,
    pretrained: str | None = None,
) -> dict:
    """Run the protocol; return the result JSON (see README) as a dict."""
    domains = list(dataset.domains[: phases or len(dataset.domains)])
    sets = evaluation_sets(dataset, domains)
    work_dir = work_dir or (tempfile.mkdtemp(prefix="modx-sim-") if distributed.is_main() else None)
    work = Path(distributed.broadcast(str(work_dir)))  # one work directory for every rank
    data_key = dataset_key(dataset)
    cfg0 = clip0_config(cfg, first_epochs, first_lr)
    joint = joint_config(cfg, joint_epochs or cfg.epochs)
    # domain 0 is CLIP_0's pretraining corpus (the paper's regime): CLIP_0 is the pretrained
    # checkpoint as it is (without one, the fresh model: the from-scratch reference), and domain 0
    # is evaluated after every phase but never trained or replayed
    corpus_first = bool(getattr(dataset, "corpus_first", False))
    first = 1 if corpus_first else 0  # the first domain a phase trains on
    # a checkpoint is named by its weights, not its path; a pretrained CLIP_0 is those weights
    # whatever the seed, a fresh one is drawn under the seed
    weights = weights_sha256(model_name, pretrained) if pretrained else None
    if not corpus_first:
        clip0_key = cfg0.key()
    elif pretrained:
        clip0_key = "as pretrained"
    else:
        clip0_key = f"fresh, seed {cfg.seed}"
    base = work / f"clip0-{digest(data_key, domains[0], model_name, weights, clip0_key)}"
    base.mkdir(parents=True, exist_ok=True)
    with distributed.main_first():
        if corpus_first:
            clip0 = initial_snapshot(model_name, base / snapshot_name(0), cfg.seed, pretrained, version=0, phase=0)
        else:
            init = initial_snapshot(model_name, base / "init", cfg.seed, pretrained)
    if not corpus_first:
        clip0 = built_once(
            base / snapshot_name(0),
            lambda out: train_phase(init, dataset.train(domains[0]), cfg0, out, version=0, phase=0),
        )
    recipe = joint if cfg.method == "joint" else cfg
    run = work / f"{cfg.method}-{digest(base.name, data_key, domains, recipe.key())}"
    run.mkdir(parents=True, exist_ok=True)

    results, prev, prev_ev, stores = [], clip0, None, []
    for t, domain in enumerate(domains):
        trained_so_far = [p for d in domains[first : t + 1] for p in dataset.train(d)]
        if t == 0:
            path = clip0
        elif cfg.method == "joint":
            path = built_once(
                run / snapshot_name(t), lambda out: train_phase(clip0, trained_so_far, joint, out, version=t, phase=t)
            )
        else:
            past = [dataset.train(d) for d in domains[first:t]]
            experts = merge_experts(stores) if cfg.experts else None
            path = built_once(
                run / snapshot_name(t),
                lambda out: train_phase(
                    prev, dataset.train(domain), cfg, out, version=t, phase=t, replay=past, experts=experts
                ),
            )
        if cfg.experts and trained_so_far:
            stores.append(
                _expert_store(path, (base if t == 0 else run) / f"experts-{snapshot_name(t)}.npz", trained_so_far, cfg)
            )
        evals = {split: evaluate(path, pairs, cfg.device) for split, pairs in sets.items()}
        record = read_record(path)
        entry = {
            "phase": t,
            "snapshot": record["version"],
            "parent": record["parent"],
            "domain": domain,
            "recall": evals["probe"].recall,
            "splits": {s: e.recall for s, e in evals.items() if s != "probe"},
            "train": record.get("train", {}),  # none for a pretrained CLIP_0
        }
        if prev_ev is not None:
            entry["drift"] = transition_drift(prev_ev, evals["probe"])
        results.append(entry)
        log.info("phase %d (%s): probe R@1 %s", t, domain, {d: round(r1(r), 3) for d, r in entry["recall"].items()})
        prev, prev_ev = path, evals["probe"]

    sizes = [0 if t < first else len(dataset.train(d)) for t, d in enumerate(domains)]  # joint's data per phase
    return {
        "method": cfg.method,
        "dataset": dataset.name,
        "model": model_name,
        "domains": domains,
        "config": cfg.to_dict(),
        "first_epochs": cfg0.epochs,
        "first_lr": cfg0.lr,
        "joint_epochs": joint.epochs,
        "phases": results,
        "summary": summarize(results, domains, sizes, cfg, joint),
    }


def _expert_store(snapshot: Path, out: Path, seen: list[Pair], cfg: TrainConfig):
    """The experts the accepted `snapshot` contributes: its phase's pairs (and, with
    `expert_refresh`, the pairs it replayed), embedded by it; kept at `out`."""
    with distributed.main_first():
        if not out.exists():
            trained = json.loads((snapshot / TRAINED).read_text())
            ids = set(trained["pairs"]) | (set(trained["replayed"]) if cfg.expert_refresh else set())
            save_experts(embed_experts(snapshot, [p for p in seen if p.id in ids], cfg.device), out)
    return load_experts(out)


def accuracy_matrix(results: list[dict], domains: list[str], split: str = "probe", key=r1) -> np.ndarray:
    rows = [e["recall"] if split == "probe" else e["splits"][split] for e in results]
    return np.array([[key(row[d]) for d in domains] for row in rows])


def compute(results: list[dict], sizes: list[int], cfg: TrainConfig, joint_cfg: TrainConfig) -> dict:
    """Samples processed per phase after CLIP_0, against fine-tuning on the new phase alone
    (same epochs) and against joint training (the upper bound's epochs)."""
    samples = [e["train"]["samples"] for e in results[1:]]
    new = [phase_samples(n, cfg) for n in sizes[1:]]
    joint = joint_samples(sizes, joint_cfg)[1:]
    return {
        "samples": samples,
        "teacher_forwards": [e["train"].get("teacher_forwards", 0) for e in results[1:]],
        "vs_new": [round(s / n, 3) for s, n in zip(samples, new)],
        "vs_joint": [round(s / j, 3) for s, j in zip(samples, joint)],
        "total_vs_joint": round(sum(samples) / max(1, sum(joint)), 3),
    }


def summarize(
    results: list[dict], domains: list[str], sizes: list[int], cfg: TrainConfig, joint_cfg: TrainConfig
) -> dict:
    splits = ["probe", *results[0]["splits"]]
    by_split = {}
    for split in splits:
        acc = accuracy_matrix(results, domains, split)
        by_split[split] = {**continual(acc), "matrix": acc.round(4).tolist()}
    return {
        **by_split["probe"],
        "metric": "R@1, mean of i2t and t2i",
        "samples": sum(e["train"]["samples"] for e in results[1:]),
        "splits": {s: v for s, v in by_split.items() if s != "probe"},
        "compute": compute(results, sizes, cfg, joint_cfg),
    }


def table(result: dict, split: str = "probe") -> str:
    """Rows phases, columns domains, R@1 image->text / text->image."""
    domains = result["domains"]
    head = f"{'phase':<14}" + "".join(f"{d[:15]:>17}" for d in domains)
    lines = [f"{result['method']} on {result['dataset']} ({result['model']}); {split} R@1 i2t/t2i", head]
    for e in result["phases"]:
        rec = e["recall"] if split == "probe" else e["splits"][split]
        cells = "".join(f"{rec[d]['i2t']['r1']:>8.3f}/{rec[d]['t2i']['r1']:<8.3f}" for d in domains)
        lines.append(f"{e['phase']:<3}{e['domain'][:11]:<11}{cells}")
    s = result["summary"] if split == "probe" else result["summary"]["splits"][split]
    lines.append(f"average {s['average']:.3f}  forgetting {s['forgetting']:.3f}  bwt {s['bwt']:+.3f}")
    if split == "probe":
        c = result["summary"]["compute"]
        lines.append(f"samples per phase vs the new phase alone {c['vs_new']}, vs joint {c['vs_joint']}")
    return "\n".join(lines)
