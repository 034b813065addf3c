"""The offline continual protocol (the paper's Experiment A) on any Dataset.

Phase 0 trains CLIP_0 on domain 0 from a fresh model; phase t >= 1 trains on domain t from
the previous snapshot (joint: on domains 0..t from CLIP_0). After every phase every
domain's probe is evaluated; drift is measured on all probes between consecutive phases.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from trainer.config import TrainConfig
from trainer.data import Dataset, Pair
from trainer.evaluate import evaluate, transition_drift
from trainer.metrics import continual
from trainer.model import create_model
from trainer.phase import train_phase
from trainer.snapshot import read_record, save_snapshot, snapshot_name

log = logging.getLogger("modx.simulate")


def initial_snapshot(model_name: str, out: Path, seed: int, pretrained: str | None = None) -> Path:
    """Snapshot 'init': a fresh model from the config (or a local pretrained checkpoint)."""
    torch.manual_seed(seed)
    model, _, _ = create_model(model_name, pretrained=pretrained)
    return save_snapshot(model, out, model_name=model_name, version=-1, parent=None, phase=None, method="init")


def r1(rec: dict) -> float:
    return (rec["i2t"]["r1"] + rec["t2i"]["r1"]) / 2


def simulate(
    dataset: Dataset,
    cfg: TrainConfig,
    *,
    model_name: str = "modx-tiny",
    phases: int | None = None,
    first_epochs: int | None = None,
    work_dir: Path | None = None,
    pretrained: str | None = None,
) -> dict:
    """Run the protocol; return the result JSON (see README) as a dict."""
    domains = list(dataset.domains[: phases or len(dataset.domains)])
    probes = {d: dataset.probe(d) for d in domains}
    work = Path(work_dir or tempfile.mkdtemp(prefix="modx-sim-"))
    snaps = work / f"{cfg.method}-seed{cfg.seed}"
    snaps.mkdir(parents=True, exist_ok=True)
    init = initial_snapshot(model_name, snaps / "init", cfg.seed, pretrained)
    # CLIP_0 is plain contrastive training on domain 0 (EWC also records its Fisher there).
    cfg0 = cfg.with_(method="ewc" if cfg.method == "ewc" else "ct", epochs=first_epochs or cfg.epochs, replay_fraction=0.0)

    results, prev, clip0 = [], None, None
    for t, domain in enumerate(domains):
        out = snaps / snapshot_name(t)
        if t == 0:
            path = train_phase(init, dataset.train(domain), cfg0, out, version=0, phase=0)
            clip0 = path
        elif cfg.method == "joint":
            seen = [p for d in domains[: t + 1] for p in dataset.train(d)]
            path = train_phase(clip0, seen, cfg.with_(method="ct"), out, version=t, phase=t)
        else:
            past = [dataset.train(d) for d in domains[:t]]
            path = train_phase(prev, dataset.train(domain), cfg, out, version=t, phase=t, replay=past)
        ev = evaluate(path, probes, cfg.device)
        entry = {"phase": t, "domain": domain, "recall": ev.recall, "train": read_record(path)["train"]}
        if t > 0:
            entry["drift"] = transition_drift(prev_ev, ev)
        results.append(entry)
        log.info("phase %d (%s): %s", t, domain, {d: round(r1(r), 3) for d, r in ev.recall.items()})
        prev, prev_ev = path, ev

    return {
        "method": cfg.method,
        "dataset": dataset.name,
        "model": model_name,
        "domains": domains,
        "config": cfg.to_dict(),
        "phases": results,
        "summary": summarize(results, domains),
    }


def accuracy_matrix(results: list[dict], domains: list[str], key=r1) -> np.ndarray:
    return np.array([[key(entry["recall"][d]) for d in domains] for entry in results])


def summarize(results: list[dict], domains: list[str]) -> dict:
    acc = accuracy_matrix(results, domains)
    return {
        **continual(acc),
        "metric": "R@1, mean of i2t and t2i",
        "matrix": acc.round(4).tolist(),
        "samples": sum(e["train"]["samples"] for e in results[1:]),
    }


def table(result: dict) -> str:
    """Rows phases, columns domains, R@1 image->text / text->image."""
    domains = result["domains"]
    head = f"{'phase':<14}" + "".join(f"{d[:15]:>17}" for d in domains)
    lines = [f"{result['method']} on {result['dataset']} ({result['model']}); R@1 i2t/t2i", head]
    for e in result["phases"]:
        cells = "".join(f"{e['recall'][d]['i2t']['r1']:>8.3f}/{e['recall'][d]['t2i']['r1']:<8.3f}" for d in domains)
        lines.append(f"{e['phase']:<3}{e['domain'][:11]:<11}{cells}")
    s = result["summary"]
    lines.append(f"average {s['average']:.3f}  forgetting {s['forgetting']:.3f}  bwt {s['bwt']:+.3f}")
    return "\n".join(lines)
