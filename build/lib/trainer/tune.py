"""Tuning without peeking: run a grid of recipes, choose on validation, report the front.

A recipe is a TrainConfig; a grid varies some of its fields (`{"alpha": [5, 20],
"replay_fraction": [0, 0.5]}`). Every recipe runs the same protocol (same CLIP_0, seed and
budget). The chosen recipe is the one with the best final *validation* average; the probe
and test numbers are reported beside it, never used to choose. The front is the set of
recipes no other recipe beats on both validation quality and samples processed.
"""

from __future__ import annotations

import itertools
from dataclasses import fields

from trainer.config import TrainConfig
from trainer.data import Dataset
from trainer.simulate import simulate

SELECT_ON = "validation"


def grid(base: TrainConfig, axes: dict[str, list]) -> list[TrainConfig]:
    """Every distinct recipe among the combinations of the axes' values, applied to `base`."""
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(axes) - names)
    if unknown:
        raise ValueError(f"cannot sweep {unknown}: not TrainConfig fields")
    keys, out = list(axes), {}
    for values in itertools.product(*(axes[k] for k in keys)):
        cfg = base.with_(**dict(zip(keys, values)))
        out.setdefault(cfg.canonical(), cfg)  # ct with alpha 5 and with alpha 20 is one recipe
    return list(out.values())


def point(result: dict, axes) -> dict:
    """One row of the sweep: the recipe, its final averages per split, its compute."""
    s = result["summary"]
    cfg = TrainConfig.from_dict(result["config"])
    averages = {"probe": s["average"], **{k: v["average"] for k, v in s["splits"].items()}}
    return {
        "recipe": {k: getattr(cfg, k) for k in dict.fromkeys(["method", *axes])},
        "average": averages,
        "forgetting": s["forgetting"],
        "bwt": s["bwt"],
        "samples_vs_new": max(s["compute"]["vs_new"], default=0.0),
        "samples_vs_joint": s["compute"]["total_vs_joint"],
    }


def pareto(points: list[dict], split: str = SELECT_ON) -> list[int]:
    """Indices of the points no other point beats on quality (higher) and compute (lower)."""

    def beaten(i):
        a = points[i]
        return any(
            b["average"][split] >= a["average"][split]
            and b["samples_vs_joint"] <= a["samples_vs_joint"]
            and (b["average"][split], -b["samples_vs_joint"]) != (a["average"][split], -a["samples_vs_joint"])
            for b in points
        )

    return [i for i in range(len(points)) if not beaten(i)]


def sweep(dataset: Dataset, base: TrainConfig, axes: dict[str, list], **simulate_kw) -> dict:
    """Run every recipe of the grid; choose on validation; return every point and result."""
    results = [simulate(dataset, cfg, **simulate_kw) for cfg in grid(base, axes)]
    points = [point(r, axes) for r in results]
    chosen = max(range(len(points)), key=lambda i: points[i]["average"][SELECT_ON])
    return {
        "axes": axes,
        "select_on": SELECT_ON,
        "points": points,
        "chosen": chosen,
        "front": pareto(points),
        "results": results,
    }


def sweep_table(result: dict) -> str:
    """One line per recipe: final averages per split, forgetting, samples; chosen and front marked."""
    points = result["points"]
    splits = list(points[0]["average"])
    keys = list(points[0]["recipe"])
    head = "".join(f"{k[:14]:>15}" for k in keys) + "".join(f"{s[:10]:>11}" for s in splits)
    lines = [
        f"final average R@1 per split (chosen on {result['select_on']}: *, front: f)",
        f"  {head}{'forget':>8}{'x new':>7}{'x joint':>8}",
    ]
    for i, p in enumerate(points):
        mark = ("*" if i == result["chosen"] else " ") + ("f" if i in result["front"] else " ")
        cells = "".join(f"{str(p['recipe'][k])[:14]:>15}" for k in keys)
        cells += "".join(f"{p['average'][s]:>11.3f}" for s in splits)
        lines.append(f"{mark}{cells}{p['forgetting']:>8.3f}{p['samples_vs_new']:>7.2f}{p['samples_vs_joint']:>8.2f}")
    return "\n".join(lines)
