"""Evaluate a snapshot on probe sets: recall per probe, embeddings kept for drift."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.data import Pair
from trainer.embed import encode_images, encode_texts
from trainer.metrics import drift, recall
from trainer.snapshot import load_snapshot


@dataclass
class Evaluation:
    recall: dict  # probe name -> {"i2t": {...}, "t2i": {...}}
    embeddings: dict  # probe name -> (image, text) arrays
    captions: dict = field(default_factory=dict)  # probe name -> captions (identical ones match each other)

    def stacked(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.concatenate([e[0] for e in self.embeddings.values()]),
            np.concatenate([e[1] for e in self.embeddings.values()]),
        )


def evaluate_model(model, preprocess, tokenizer, probes: dict[str, list[Pair]]) -> Evaluation:
    emb = {
        name: (
            encode_images(model, preprocess, [p.image for p in pairs]),
            encode_texts(model, tokenizer, [p.text for p in pairs]),
        )
        for name, pairs in probes.items()
        if pairs
    }
    captions = {name: [p.text for p in probes[name]] for name in emb}
    return Evaluation({name: recall(*e, captions=captions[name]) for name, e in emb.items()}, emb, captions)


def evaluate(snapshot: Path, probes: dict[str, list[Pair]], device: str = "cpu") -> Evaluation:
    model, preprocess, tokenizer, _ = load_snapshot(snapshot, device)
    return evaluate_model(model, preprocess, tokenizer, probes)


def old_gallery_recall(new: Evaluation, old: Evaluation) -> dict:
    """Queries encoded by the new snapshot against a gallery embedded by the old one.

    What a `reindex = keep` deployment serves: new query encoder, old index.
    """
    return {
        name: recall(old.embeddings[name][0], new.embeddings[name][1], captions=new.captions.get(name))
        for name in new.embeddings
        if name in old.embeddings
    }


def transition_drift(before: Evaluation, after: Evaluation) -> dict:
    """Drift between two snapshots: per probe (`domains`; the paper measures it on old-domain
    data, `first` names the first domain's), and over all probes stacked (`pooled`, which mixes
    old domains' drift with learning the new one)."""
    common = [n for n in before.embeddings if n in after.embeddings]
    b = Evaluation({}, {n: before.embeddings[n] for n in common}).stacked()
    a = Evaluation({}, {n: after.embeddings[n] for n in common}).stacked()
    domains = {n: drift(before.embeddings[n], after.embeddings[n]) for n in common}
    return {"first": common[0] if common else None, "domains": domains, "pooled": drift(b, a)}
