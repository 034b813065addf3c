"""Held-out test-concept R@1 of a pretrained CLIP_0 against a from-scratch (random init) model.

    python -m bench.pretrain_eval --checkpoint PATH --model modx-small --out DIR

PATH is a `modx pretrain` output (a snapshot directory) or one of its step checkpoints
(`.<out>.pretrain/checkpoint.pt`, for a run that has not finished). Zero-shot, nothing is
trained here: R@1 (mean of image->text and text->image) on the `test` concepts of
- the icon pretraining corpus (concepts no pretraining set trained on), per set, averaged;
- the held-out Iconify sets (EVAL_SETS; their test concepts are test concepts of the corpus too);
- the emoji styles (google, twitter, fluent; the emoji test concepts, chosen by hash of the emoji).
Writes DIR/results.json with machine, date, commit and command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench.common import command, machine
from trainer.datasets.emoji import emoji_stream
from trainer.datasets.icons import EVAL_SETS, PRETRAIN_SETS, IconDataset
from trainer.evaluate import evaluate_model
from trainer.metrics import r1
from trainer.model import create_model


def load(checkpoint: Path, model_name: str):
    if checkpoint.suffix == ".pt":
        model, preprocess, tokenizer = create_model(model_name)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        return model, preprocess, tokenizer, {"step": state["step"]}
    model, preprocess, tokenizer = create_model(model_name, pretrained=checkpoint)
    return model, preprocess, tokenizer, {"step": "final"}


def test_r1(model, preprocess, tokenizer, dataset) -> dict:
    probes = {d: dataset.test(d) for d in dataset.domains}
    recall = evaluate_model(model, preprocess, tokenizer, {d: p for d, p in probes.items() if len(p) > 1}).recall
    per = {d: r1(r) for d, r in recall.items()}
    chance = {d: 1 / len(probes[d]) for d in per}
    return {
        "mean_r1": float(np.mean(list(per.values()))),
        "per_domain": per,
        "mean_chance": float(np.mean(list(chance.values()))),
        "pairs": {d: len(p) for d, p in probes.items()},
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--model", default="modx-small")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    size = 32
    domains = {
        "icons (pretraining sets)": IconDataset(tuple(PRETRAIN_SETS), size=size),
        "icons (held-out sets)": IconDataset(tuple(EVAL_SETS), size=size),
        "emoji": emoji_stream(size=size),
    }
    torch.manual_seed(0)
    scratch = create_model(args.model)
    pretrained = load(args.checkpoint, args.model)
    results = {}
    for name, ds in domains.items():
        results[name] = {"pretrained": test_r1(*pretrained[:3], ds), "from_scratch": test_r1(*scratch, ds)}
    record = {
        "benchmark": "pretrain_eval",
        "checkpoint": str(args.checkpoint),
        "checkpoint_step": pretrained[3]["step"],
        "model": args.model,
        "results": results,
        "machine": machine("cpu", command("bench.pretrain_eval", argv)),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({k: {m: round(v[m]["mean_r1"], 4) for m in v} for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
