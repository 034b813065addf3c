"""Continual benchmark: the paper's Experiment A on emoji styles, recipes x seeds.

    python -m bench.continual --preset cpu --out bench/results/emoji-cpu             # final recipes, 3 seeds
    python -m bench.continual --preset cpu --recipes sweep --seeds 0 --out bench/results/emoji-cpu-sweep
    python -m bench.continual --preset gpu --out bench/results/emoji-gpu             # ViT-B-32 from scratch
    python -m bench.continual --preset smoke --out /tmp/smoke                        # seconds, synthetic
    python -m bench.continual --preset synthetic --recipes baselines --out bench/results/synthetic-cpu

Every recipe of a run shares CLIP_0 per seed (trainer.simulate caches it) and the budget; a
combined result (--combine) can join runs from different CLIP_0 checkpoints, and its report then
gives one CLIP_0 row per checkpoint, named by the recipes that started from it.
Writes results.json (every run), report.md (paper-style tables, mean +- std over seeds:
R@1/5/10 both directions per style, the accuracy matrix, average / forgetting / BWT,
samples processed against joint, drift histograms) and one PNG per split of R@1 per phase
per style for every recipe (like the paper's Figure 10). With several recipes it also
chooses one on validation (never on probe, test or train numbers).

Splits (trainer.simulate): `train` = retention on the pairs trained on; `probe` and
`validation` = held-out pairs of trained concepts (by hash of pair id); `test` = concepts
never trained on in any style.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.common import apply_preset, command, machine, write_result
from trainer.config import PAPER_LOSS, PAPER_MODX, TrainConfig
from trainer.datasets import get_dataset
from trainer.model import weights_sha256
from trainer.simulate import simulate

PRESETS = {
    "smoke": dict(
        dataset="synthetic",
        dataset_kw=dict(n_domains=3, pairs_per_domain=48),
        model="modx-tiny",
        first_epochs=1,
        epochs=1,
        batch_size=16,
        lr=5e-4,
        seeds=[0],
        device="cpu",
    ),
    # what a 2-core machine shared with other work finishes in minutes: 3 synthetic domains
    "mini": dict(
        dataset="synthetic",
        dataset_kw=dict(n_domains=3, pairs_per_domain=300),
        model="modx-tiny",
        first_epochs=30,
        epochs=10,
        batch_size=64,
        lr=5e-4,
        seeds=[0],
        device="cpu",
    ),
    # all five synthetic domains at a size a shared 2-core machine finishes for the whole `front` set
    "mini5": dict(
        dataset="synthetic",
        dataset_kw=dict(n_domains=5, pairs_per_domain=200),
        model="modx-tiny",
        first_epochs=20,
        epochs=8,
        batch_size=32,
        lr=5e-4,
        seeds=[1, 2, 3],
        device="cpu",
    ),
    # the same at mini's per-domain size and budget (300 pairs, CLIP_0 30 epochs, 10 per phase)
    "mini5-large": dict(
        dataset="synthetic",
        dataset_kw=dict(n_domains=5, pairs_per_domain=300),
        model="modx-tiny",
        first_epochs=30,
        epochs=10,
        batch_size=32,
        lr=5e-4,
        seeds=[1, 2, 3],
        device="cpu",
    ),
    "synthetic": dict(
        dataset="synthetic",
        dataset_kw={},
        model="modx-tiny",
        first_epochs=30,
        epochs=20,
        batch_size=64,
        lr=5e-4,
        seeds=[0, 1, 2],
        device="cpu",
    ),  # the `modx simulate` defaults
    "cpu": dict(
        dataset="emoji",
        dataset_kw=dict(size=32),
        model="modx-tiny",
        first_epochs=40,
        epochs=15,
        batch_size=128,
        lr=5e-4,
        seeds=[0, 1, 2],
        device="cpu",
    ),
    # the size of the reference run: 4-layer towers of width 128, 60 + 20 epochs
    "reference": dict(
        dataset="emoji",
        dataset_kw=dict(size=32),
        model="modx-small",
        first_epochs=60,
        epochs=20,
        batch_size=128,
        lr=5e-4,
        seeds=[0, 1, 2],
        device="cuda",
    ),
    # the paper's regime (issue 12): CLIP_0 is `modx pretrain`'s checkpoint (--pretrained; without it the
    # fresh model, the from-scratch reference), domain 0 its icon corpus (evaluated only), then the stream
    "pretrained-emoji": dict(
        dataset="after-pretraining",
        dataset_kw=dict(stream="emoji", size=32),
        model="modx-small",
        first_epochs=0,
        joint_epochs=30,
        epochs=10,
        batch_size=128,
        lr=2e-4,
        seeds=[1, 2, 3],
        device="cpu",
    ),
    "gpu": dict(
        dataset="emoji",
        dataset_kw=dict(size=224),
        model="ViT-B-32",
        first_epochs=100,
        epochs=40,
        batch_size=256,
        lr=5e-4,
        seeds=[0, 1, 2],
        device="cuda",
    ),
}
PRESETS["pretrained-icons"] = dict(PRESETS["pretrained-emoji"], dataset_kw=dict(stream="icons", size=32))

# name -> TrainConfig fields over the preset's budget. TrainConfig's defaults are the service's
# default recipe ("modx (default)": expert-embedding Mod-X, full-coverage replay 1, balanced, drawn
# afresh each epoch, warmup over 20% of a phase's steps); PAPER_LOSS spells out the paper's Mod-X
# loss, which every earlier tuning round's recipes start from.
NO_REPLAY = dict(replay_fraction=0.0)
CONVERGED_JOINT = "joint (converged)"  # joint trained per phase for as many epochs as CLIP_0 was
JOINT = "joint (same epochs)"
DEFAULT = "modx (default)"
BASELINES = {
    CONVERGED_JOINT: dict(method="joint"),
    JOINT: dict(method="joint"),
    "ct": dict(method="ct", **NO_REPLAY),
    "ewc": dict(method="ewc", **NO_REPLAY),
    "lwf": dict(PAPER_MODX, method="lwf"),
    "modx (paper form)": PAPER_MODX,
}
EXPERT = dict(PAPER_LOSS, method="modx", expert=True)
SWEEP = {
    "ct + replay": dict(method="ct"),
    "ct + replay fixed subset": dict(method="ct", replay_draw="phase"),
    "ct + replay merge0.2": dict(method="ct", merge=0.2),
    "modx logit a0.5 + replay": dict(PAPER_LOSS, method="modx", alpha=0.5, temperature=0.01, kl_reduction="mean"),
    "modx expert a1": dict(EXPERT, alpha=1.0),
    "modx expert a1 b1": dict(EXPERT, alpha=1.0, beta=1.0),
    "modx expert a5 b1": dict(EXPERT, alpha=5.0, beta=1.0),
    "modx expert logit a0.5 b1": dict(EXPERT, alpha=0.5, temperature=0.01, kl_reduction="mean", beta=1.0),
    "modx expert a1 b1 refresh": dict(EXPERT, alpha=1.0, beta=1.0, expert_refresh=True),
    "modx expert a1 b1 merge0.2": dict(EXPERT, alpha=1.0, beta=1.0, merge=0.2),
    "modx expert a1 b1 lr0.5x": dict(EXPERT, alpha=1.0, beta=1.0, lr=2.5e-4),
}
# the second tuning round (seed 0 only, at 2x): what each beyond-the-paper control of expert Mod-X buys,
# against ct + replay under the same learning-rate and averaging changes
EXPERT_A1B1 = dict(EXPERT, alpha=1.0, beta=1.0)
SCALED = dict(EXPERT, teacher_scale=True, kl_reduction="mean")
TUNE = {
    "ct + replay": dict(method="ct"),
    "ct + replay lr0.5x": dict(method="ct", lr=2.5e-4),
    "ct + replay merge0.2": dict(method="ct", merge=0.2),
    "modx expert a1 b1": EXPERT_A1B1,
    "modx expert a1 b1 replay-only": dict(EXPERT_A1B1, distill_on="replay"),
    "modx expert a1 b1 forgotten": dict(EXPERT_A1B1, forgotten_only=True),
    "modx expert a1 b1 replay-only forgotten": dict(EXPERT_A1B1, distill_on="replay", forgotten_only=True),
    "modx expert a20 forgotten": dict(EXPERT, alpha=20.0, forgotten_only=True),
    "modx expert scaled a1": dict(SCALED, alpha=1.0),
    "modx expert scaled a1 b1": dict(SCALED, alpha=1.0, beta=1.0),
    "modx expert scaled a1 forgotten": dict(SCALED, alpha=1.0, forgotten_only=True),
    "modx expert scaled a1 b1 replay-only forgotten": dict(
        SCALED, alpha=1.0, beta=1.0, distill_on="replay", forgotten_only=True
    ),
    "modx expert a1 b1 refresh": dict(EXPERT_A1B1, expert_refresh=True),
    "modx expert a1 b1 lr0.5x": dict(EXPERT_A1B1, lr=2.5e-4),
    "modx expert a1 b1 merge0.2": dict(EXPERT_A1B1, merge=0.2),
}
# the third round (seed 0 of the emoji styles, where forgetting binds, and of the synthetic stream):
# the controls that kept plasticity above, and alpha
TUNE_EMOJI = {
    "ct + replay": dict(method="ct"),
    "modx expert a1 b1": EXPERT_A1B1,
    "modx expert a1 b1 refresh": dict(EXPERT_A1B1, expert_refresh=True),
    "modx expert a1 b1 forgotten": dict(EXPERT_A1B1, forgotten_only=True),
    "modx expert scaled a1": dict(SCALED, alpha=1.0),
    "modx expert scaled a1 forgotten": dict(SCALED, alpha=1.0, forgotten_only=True),
    "modx expert scaled a1 replay-only forgotten": dict(SCALED, alpha=1.0, distill_on="replay", forgotten_only=True),
    **{
        f"modx expert scaled a{a:g} forgotten refresh": dict(SCALED, alpha=a, forgotten_only=True, expert_refresh=True)
        for a in (0.5, 1.0, 2.0, 4.0)
    },
    "modx expert scaled a2 forgotten": dict(SCALED, alpha=2.0, forgotten_only=True),
}
CHOSEN = "modx expert scaled a0.5 forgotten refresh"  # what the tuning chose: TrainConfig's defaults
# quality against samples per phase (issue 10's front): each name says its nominal budget, 1 + replay_fraction
# times the new phase's samples; the report's `samples × new phase` column is the measured one
FRONT = {
    "ct 1x": dict(method="ct", **NO_REPLAY),
    **{f"ct + replay {1 + f:g}x": dict(method="ct", replay_fraction=f) for f in (0.5, 1.0, 2.0)},
    "modx (paper form) 1x": PAPER_MODX,
    **{f"modx (default) {1 + f:g}x": dict(replay_fraction=f) for f in (0.5, 1.0, 2.0)},
}
FRONT_A1B1 = {f"modx expert a1 b1 {1 + f:g}x": dict(EXPERT_A1B1, replay_fraction=f) for f in (0.5, 1.0, 2.0)}
RECIPES = BASELINES | SWEEP | TUNE | TUNE_EMOJI | FRONT | FRONT_A1B1 | {DEFAULT: {}}
FINAL = [CONVERGED_JOINT, JOINT, "ct", "modx (paper form)", "ct + replay", DEFAULT]
RECIPE_SETS = {
    "baselines": BASELINES,
    "sweep": {n: RECIPES[n] for n in [CONVERGED_JOINT, *SWEEP]},
    "tune": {n: RECIPES[n] for n in [CONVERGED_JOINT, *TUNE]},
    "tune-emoji": {n: RECIPES[n] for n in [CONVERGED_JOINT, *TUNE_EMOJI]},
    "final": {n: RECIPES[n] for n in FINAL},
    "front": {CONVERGED_JOINT: RECIPES[CONVERGED_JOINT], **FRONT},
    # the paper's regime (issue 12): every method, and replay with each
    "regime": {
        n: RECIPES[n] for n in [CONVERGED_JOINT, "ct", "ewc", "lwf", "modx (paper form)", "ct + replay", DEFAULT]
    },
}
SELECT_SPLIT = "train"  # the target measures retention of trained pairs
SPLITS = ("train", "probe", "validation", "test")


def mean_std(values) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def fmt(values, digits: int = 3) -> str:
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def split_recall(entry: dict, split: str) -> dict:
    return entry["recall"] if split == "probe" else entry["splits"][split]


def splits_of(result: dict) -> list[str]:
    return [s for s in SPLITS if s == "probe" or s in result["phases"][0]["splits"]]


def summary_of(result: dict, split: str) -> dict:
    return result["summary"] if split == "probe" else result["summary"]["splits"][split]


# ------------------------------------------------------------------ tables


def clip0_rows(runs: dict) -> dict[str, list[dict]]:
    """The CLIP_0 rows (the model after phase 0): one, "CLIP_0", when the recipes of each seed
    share it, as in one run; else one per distinct CLIP_0, named by the recipes that started from
    it (a combined result can join runs that started from different checkpoints)."""
    groups: list[tuple[list[str], dict]] = []  # recipe names, seed -> phase 0
    for name, seeds in runs.items():
        mine = {s: r["phases"][0] for s, r in seeds.items()}
        for names, phase0 in groups:
            if all(evaluated(phase0[s]) == evaluated(mine[s]) for s in phase0.keys() & mine.keys()):
                names.append(name)
                phase0.update(mine)
                break
        else:
            groups.append(([name], dict(mine)))
    if len(groups) == 1:
        return {"CLIP_0": list(groups[0][1].values())}
    return {f"CLIP_0 of {', '.join(names)}": list(phase0.values()) for names, phase0 in groups}


def evaluated(phase: dict) -> tuple:
    return phase["recall"], phase.get("splits")


def final_table(runs: dict, split: str) -> list[str]:
    """Paper style: after the last phase, R@1/5/10 both directions per style, mean ± std.

    The first rows are CLIP_0 (see clip0_rows)."""
    rows = clip0_rows(runs) | {name: [r["phases"][-1] for r in seeds.values()] for name, seeds in runs.items()}
    domains = next(iter(next(iter(runs.values())).values()))["domains"]
    lines = ["| recipe | style | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 |", "|" + "---|" * 8]
    for name, entries in rows.items():
        for d in domains:
            cells = [
                fmt([split_recall(e, split)[d][dir_][k] for e in entries])
                for dir_ in ("i2t", "t2i")
                for k in ("r1", "r5", "r10")
            ]
            lines.append(f"| {name} | {d} | " + " | ".join(cells) + " |")
    return lines


def phase_table(runs: dict, split: str) -> list[str]:
    """R@1/5/10 both directions for every domain after every phase (the paper's tables, every row)."""
    lines = ["| recipe | after phase | domain | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 |"]
    lines.append("|" + "---|" * 9)
    for name, seeds in runs.items():
        results = list(seeds.values())
        domains = results[0]["domains"]
        for t in range(len(results[0]["phases"])):
            for d in domains:
                cells = [
                    fmt([split_recall(r["phases"][t], split)[d][dir_][k] for r in results])
                    for dir_ in ("i2t", "t2i")
                    for k in ("r1", "r5", "r10")
                ]
                lines.append(f"| {name} | {t} {domains[t]} | {d} | " + " | ".join(cells) + " |")
    return lines


def matrix_table(runs: dict, split: str) -> list[str]:
    """The accuracy matrix (R@1, mean of both directions): rows phases, columns styles."""
    lines = []
    for name, seeds in runs.items():
        results = list(seeds.values())
        domains = results[0]["domains"]
        lines += [f"**{name}**", "", "| after phase | " + " | ".join(domains) + " |", "|" + "---|" * (len(domains) + 1)]
        mats = np.array([summary_of(r, split)["matrix"] for r in results])
        for t in range(mats.shape[1]):
            lines.append(f"| {t} {domains[t]} | " + " | ".join(fmt(mats[:, t, d]) for d in range(len(domains))) + " |")
        lines.append("")
    return lines


def continual_table(runs: dict, split: str) -> list[str]:
    """Average, forgetting, BWT, samples processed, and the distance to each joint run."""
    joints = [n for n, seeds in runs.items() if next(iter(seeds.values()))["method"] == "joint"]
    header = "| recipe | average | forgetting | BWT | samples × new phase | samples × joint |"
    for j in joints:
        header += f" % of `{j}` average | min over styles of % of `{j}` |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, seeds in runs.items():
        results = list(seeds.values())
        s = [summary_of(r, split) for r in results]
        row = [
            fmt([x["average"] for x in s]),
            fmt([x["forgetting"] for x in s]),
            fmt([x["bwt"] for x in s]),
            fmt([max(r["summary"]["compute"]["vs_new"]) for r in results], 2),
            fmt([r["summary"]["compute"]["total_vs_joint"] for r in results], 2),
        ]
        for j in joints:
            ratios, worst = [], []
            for seed, r in seeds.items():
                if seed in runs[j]:
                    final, jfinal = summary_of(r, split)["matrix"][-1], summary_of(runs[j][seed], split)["matrix"][-1]
                    ratios.append(100 * np.mean(final) / np.mean(jfinal))
                    worst.append(100 * min(f / jf for f, jf in zip(final, jfinal) if jf > 0))
            row += [fmt(ratios, 1) if ratios else "-", fmt(worst, 1) if worst else "-"]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return lines


def drift_views(drift: dict) -> dict:
    """The drift figures a report shows: on the first domain's probe (the paper's measure) and pooled."""
    return {f"first domain ({drift['first']})": drift["domains"][drift["first"]], "pooled": drift["pooled"]}


def drift_table(runs: dict) -> list[str]:
    """SAM change / RAM / ImAV: fraction of probe samples (or sample pairs) per degree bin."""
    lines = []
    for name, seeds in runs.items():
        results = list(seeds.values())
        for t, entry in enumerate(results[0]["phases"]):
            if "drift" not in entry:
                continue
            for on in drift_views(entry["drift"]):
                for metric, parts in (("sam_change", ("image", "text")), ("ram", ("image", "text")), ("imav", (None,))):
                    for part in parts:
                        views = [drift_views(r["phases"][t]["drift"])[on][metric] for r in results]
                        hists = views if part is None else [v[part] for v in views]
                        bins = hists[0]["bins"]
                        labels = [f"{a}-{b}°" for a, b in zip(bins[:-1], bins[1:])]
                        fractions = np.array([h["fractions"] for h in hists])
                        cells = " | ".join(f"{fractions[:, i].mean():.2f}" for i in range(len(labels)))
                        what = metric + (f" {part}" if part else "")
                        means = [h["mean"] for h in hists if h["mean"] is not None]
                        lines.append(
                            f"| {name} | {t - 1}→{t} | {on} | {what} | {cells} | "
                            f"{fmt(means, 1) if means else '-'} | " + " ".join(labels) + " |"
                        )
    head = [
        "| recipe | transition | probe | measure | bin 1 | bin 2 | bin 3 | bin 4 | bin 5 | mean ° | bins |",
        "|" + "---|" * 11,
    ]
    return head + lines if lines else []


def retention_vs_joint(result: dict, joint: dict, split: str = SELECT_SPLIT) -> tuple[float, float]:
    """(final average as a fraction of the joint's, min over domains of final / joint's final)."""
    final, jfinal = summary_of(result, split)["matrix"][-1], summary_of(joint, split)["matrix"][-1]
    return float(np.mean(final) / np.mean(jfinal)), float(min(f / j for f, j in zip(final, jfinal) if j > 0))


def choose(runs: dict, seeds: list[int]) -> dict | None:
    """The continual recipe with the best minimum over domains of final retention as a
    fraction of the converged joint's (the target's criterion), on the tuning `seeds` only."""
    if CONVERGED_JOINT not in runs:
        return None
    points, joint = {}, {str(k): v for k, v in runs[CONVERGED_JOINT].items()}
    for name, by_seed in runs.items():
        if next(iter(by_seed.values()))["method"] == "joint":  # the upper bounds are not candidates
            continue
        by_seed = {str(k): v for k, v in by_seed.items()}
        pts = [
            retention_vs_joint(by_seed[str(s)], joint[str(s)]) for s in seeds if str(s) in by_seed and str(s) in joint
        ]
        if pts:
            points[name] = {
                "min_vs_joint": float(np.mean([p[1] for p in pts])),
                "average_vs_joint": float(np.mean([p[0] for p in pts])),
            }
    if len(points) < 2:
        return None
    best = max(points, key=lambda n: points[n]["min_vs_joint"])
    modx = [n for n in points if next(iter(runs[n].values()))["method"] == "modx"]
    best_modx = max(modx, key=lambda n: points[n]["min_vs_joint"]) if modx else None
    return {
        "select_on": f"min over domains of final {SELECT_SPLIT} R@1 / `{CONVERGED_JOINT}`'s, seeds {seeds}",
        "chosen": best,
        "chosen_modx": best_modx,
        "points": points,
    }


def data_lines(info: dict) -> list[str]:
    """Where the data came from: packages, versions, licences, pairs per split."""
    domains = [("style", n, s, f"art licence: {s['art_license']}") for n, s in info.get("styles", {}).items()]
    domains += [("icon set", n, s, f"licence: {s['license']['spdx']}") for n, s in info.get("sets", {}).items()]
    lines = []
    for kind, name, source, licence in domains:
        counts = ", ".join(f"{k} {v}" for k, v in info["counts"][name].items())
        lines.append(f"- {kind} `{name}`: {source['package']}@{source['version']} ({licence}); pairs: {counts}")
    if "names" in info:
        n = info["names"]
        lines.append(f"- captions: {n['package']}@{n['version']} ({n['license']}), CLDR names in `{n['language']}`")
    if "corpus" in info:
        c = info["corpus"]
        sets = ", ".join(f"{k}@{v['version']}" for k, v in c["sets"].items())
        lines.append(
            f"- domain 0, the pretraining corpus: {len(c['sets'])} Iconify sets ({sets}); each split evaluated on a "
            f"fixed sample of {info['corpus_pairs']} pairs pooled over the sets"
        )
        lines += data_lines(info["stream"])
    return lines


def clip0_line(args: dict) -> str:
    if args["first_epochs"] != 0:
        return f"CLIP_0 {args['first_epochs']} epochs on the first domain"
    if args.get("pretrained"):
        return f"CLIP_0 = the pretrained checkpoint `{args['pretrained']}` (domain 0: its corpus, evaluated only)"
    return "CLIP_0 = a fresh model (from scratch; domain 0, the pretraining corpus, evaluated only)"


def machine_words(machine: dict) -> str:
    """Where a run ran, in words: its GPU or CPU, cores and torch, and which CLIP_0 checkpoint."""
    words = f"{machine.get('gpu') or machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}"
    return words + (f", CLIP_0 weights sha256 {machine['clip0_sha256']}" if machine.get("clip0_sha256") else "")


def report(result: dict) -> str:
    runs, args = result["runs"], result["args"]
    first = next(iter(next(iter(runs.values())).values()))
    lines = [
        f"# Continual benchmark: {first['dataset']} ({', '.join(first['domains'])})",
        "",
        f"- command: `{result['machine']['command']}`",
        f"- machine: {machine_words(result['machine'])}; date {result['machine']['date']}; "
        f"commit {result['machine']['commit']}",
        f"- model {args['model']}, {clip0_line(args)}, {args['epochs']} epochs per phase, "
        f"converged joint {args.get('joint_epochs') or args['first_epochs']} epochs per phase, "
        f"batch {args['batch_size']}, lr {args['lr']}, seeds {args['seeds']}, device {args['device']}",
        *[
            f"- combined from: `{m['command']}` ({machine_words(m)}; date {m['date']}, commit {m['commit']})"
            for m in result.get("parts", [])
        ],
        "- R@K as fractions; mean ± sample std over seeds; R@1 of a matrix cell = mean of i2t and t2i",
        *data_lines(result.get("dataset", {})),
        "",
    ]
    chosen = result.get("choice")
    if chosen:
        lines += [
            f"**Chosen on {chosen['select_on']}: `{chosen['chosen']}`; best Mod-X recipe: `{chosen['chosen_modx']}`**",
            "",
            "| recipe (tuning seeds) | min domain % of converged joint | average % of converged joint |",
            "|---|---|---|",
        ]
        lines += [
            f"| {n} | {100 * p['min_vs_joint']:.1f} | {100 * p['average_vs_joint']:.1f} |"
            for n, p in sorted(chosen["points"].items(), key=lambda kv: -kv[1]["min_vs_joint"])
        ]
        lines.append("")
    for split in splits_of(first):
        lines += [
            f"## Split `{split}`",
            "",
            "### After the last phase",
            "",
            *final_table(runs, split),
            "",
            "### Continual metrics",
            "",
            *continual_table(runs, split),
            "",
            "### Accuracy matrices (R@1)",
            "",
            *matrix_table(runs, split),
        ]
        if split == "test" and args["first_epochs"] == 0:
            lines += ["### After every phase (held-out test concepts)", "", *phase_table(runs, split), ""]
    drift = drift_table(runs)
    if drift:
        lines += ["## Drift on the probes (fraction per degree bin, mean over seeds)", "", *drift, ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ plots


def plot(result: dict, out: Path) -> list[Path]:
    """R@1 per phase per style for every recipe, one PNG per split (the paper's Figure 10)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    first = next(iter(next(iter(runs.values())).values()))
    domains, paths = first["domains"], []
    for split in splits_of(first):
        fig, axes = plt.subplots(1, len(domains), figsize=(4 * len(domains), 3.4), sharey=True, squeeze=False)
        colours = plt.get_cmap("tab20")
        for i, (name, seeds) in enumerate(runs.items()):
            mats = np.array([summary_of(r, split)["matrix"] for r in seeds.values()])
            style = dict(marker="os^v"[i // 20 % 4], capsize=2, color=colours(i % 20), label=name)
            for d, ax in enumerate(axes[0]):
                x = np.arange(mats.shape[1])
                ax.errorbar(x, mats[:, :, d].mean(0), yerr=mats[:, :, d].std(0), **style)
        for d, ax in enumerate(axes[0]):
            ax.set_title(f"{domains[d]} ({split})")
            ax.set_xlabel("after phase")
            ax.set_xticks(range(len(domains)), [f"{t}:{n[:8]}" for t, n in enumerate(domains)])
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("R@1 (mean of i2t, t2i)")
        fig.tight_layout()
        fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        path = out / f"r1_per_phase_{split}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


# ------------------------------------------------------------------ main


def run(args) -> dict:
    preset = PRESETS[args.preset]
    recipes = RECIPE_SETS.get(args.recipes) or {n: RECIPES[n] for n in args.recipes.split(",")}
    base = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device)
    dataset = get_dataset(preset["dataset"], **preset["dataset_kw"])
    runs: dict[str, dict[int, dict]] = {}
    for seed in args.seeds:
        for name, fields_ in recipes.items():
            cfg = base.with_(seed=seed, **fields_)
            print(f"== {name} seed {seed}", flush=True)
            joint_epochs = (args.joint_epochs or args.first_epochs) if name == CONVERGED_JOINT else None
            runs.setdefault(name, {})[seed] = simulate(
                dataset,
                cfg,
                model_name=args.model,
                first_epochs=args.first_epochs,
                first_lr=args.lr,
                joint_epochs=joint_epochs,
                work_dir=args.work_dir,
                pretrained=args.pretrained,
            )
    result = {
        "benchmark": "continual",
        "preset": args.preset,
        "args": {k: v for k, v in vars(args).items() if k not in ("work_dir", "argv")},
        "recipes": recipes,
        "machine": machine(args.device, command("bench.continual", args.argv)),
        "dataset": dataset.info(),
        "runs": runs,
    }
    if args.pretrained:
        result["machine"]["clip0_sha256"] = weights_sha256(args.model, args.pretrained)
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument(
        "--recipes", default="final", help="final | baselines | sweep | front | comma-separated recipe names"
    )
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument(
        "--tune-seeds",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[0],
        help="the seeds the recipe is chosen on (report the others)",
    )
    p.add_argument("--model")
    p.add_argument("--first-epochs", type=int)
    p.add_argument("--joint-epochs", type=int, help="the converged joint's epochs per phase (default: CLIP_0's)")
    p.add_argument("--pretrained", help="CLIP_0's checkpoint (modx pretrain --out), for the pretrained-* presets")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--device")
    p.add_argument("--work-dir", type=Path, default=Path(".cache/bench-continual"), help="snapshot cache")
    p.add_argument("--out", type=Path, required=True, help="directory for results.json, report.md and plots")
    p.add_argument(
        "--render", action="store_true", help="only redraw report.md and the plots from --out's results.json"
    )
    p.add_argument(
        "--combine",
        type=lambda s: [Path(x) for x in s.split(",")],
        default=None,
        help="directories of earlier runs (other seeds or recipes) to combine into --out",
    )
    args = p.parse_args(argv)
    if args.render:
        return render(json.loads((args.out / "results.json").read_text()), args.out)
    if args.combine:
        args.out.mkdir(parents=True, exist_ok=True)
        result = combine([json.loads((d / "results.json").read_text()) for d in args.combine], args.tune_seeds)
        write_result(args.out / "results.json", result)
        return render(result, args.out)
    args.argv = argv
    apply_preset(args, {k: v for k, v in PRESETS[args.preset].items() if k not in ("dataset", "dataset_kw")})
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    write_result(args.out / "results.json", result)
    return render(result, args.out)


def combine(results: list[dict], tune_seeds: list[int]) -> dict:
    """One result from runs of the same preset (their runs merged by recipe and seed, in the
    order given); each part's machine and command are kept under `parts`, those of an earlier
    combination included."""
    parts = [m for r in results for m in r.get("parts", [r["machine"]])]
    out = dict(results[0], runs={}, recipes={}, parts=parts)
    for r in results:
        for name, by_seed in r["runs"].items():
            out["runs"].setdefault(name, {}).update(by_seed)
        out["recipes"].update(r["recipes"])
    seeds = sorted({int(s) for by_seed in out["runs"].values() for s in by_seed})
    out["args"] = dict(results[0]["args"], seeds=seeds, tune_seeds=tune_seeds)
    return out


def render(result: dict, out: Path) -> dict:
    """report.md and the plots of a result (its choice made again, so report code can change)."""
    result["choice"] = choose(result["runs"], result["args"].get("tune_seeds") or [0])
    text = report(result)
    (out / "report.md").write_text(text + "\n")
    plot(result, out)
    print(text)
    return result


if __name__ == "__main__":
    main()
