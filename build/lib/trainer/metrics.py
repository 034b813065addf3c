"""Retrieval recall, drift between snapshots (SAM, RAM, ImAV) and continual metrics.

Everything takes L2-normalised embeddings of the same probe pairs, row i of the image
matrix matching row i of the text matrix.
"""

from __future__ import annotations

import numpy as np

KS = (1, 5, 10)
SAM_BINS = (0, 5, 10, 15, 20, 180)
RAM_BINS = (0, 15, 20, 25, 30, 180)
IMAV_BINS = (0, 5, 10, 15, 20, 180)


def hit_rates(sim: np.ndarray, correct: np.ndarray, ks=KS) -> dict[int, float]:
    """R@K of each row's queries: the chance that a correct candidate is in the top K.

    `correct[i, j]` marks the candidates that answer query i (its own match, and every item
    with the identical caption, as COCO's five captions are handled). Ties are broken at
    random, in expectation: a wrong candidate scoring exactly as high as the best correct one
    is a miss as often as a hit, so collapsed embeddings score R@1 = 1/n, not 1.
    """
    best = np.where(correct, sim, -np.inf).max(axis=1, keepdims=True)
    wrong = ~correct
    higher = (wrong & (sim > best)).sum(axis=1)
    tied = (wrong & (sim == best)).sum(axis=1).astype(float)
    mates = (correct & (sim == best)).sum(axis=1).astype(float)
    out = {}
    for k in ks:
        slots = k - higher  # tied wrong candidates that may still come before a correct one
        all_wrong_first = np.ones(len(sim))  # P(the first `slots` of the tied ones are all wrong)
        for i in range(max(ks)):
            step = np.clip(tied - i, 0, None) / np.maximum(tied + mates - i, 1)
            all_wrong_first *= np.where(i < slots, step, 1.0)
        out[k] = float(np.where(slots > 0, 1 - all_wrong_first, 0.0).mean())
    return out


def recall(image: np.ndarray, text: np.ndarray, ks=KS, captions=None) -> dict:
    """R@K in both directions (hit_rates); `captions` (one per pair) makes identical
    captions count as one another's matches."""
    sim = image.astype(np.float64) @ text.astype(np.float64).T
    n = len(sim)
    if captions is None:
        correct = np.eye(n, dtype=bool)
    else:
        c = np.asarray(list(captions), dtype=object)
        correct = c[:, None] == c[None, :]
    out = {}
    for direction, s in (("i2t", sim), ("t2i", sim.T)):
        out[direction] = {f"r{k}": v for k, v in hit_rates(s, correct, ks).items()}
    return out


def angles(cos: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def histogram(values: np.ndarray, bins) -> dict:
    counts, _ = np.histogram(values, bins=bins)
    n = max(len(values), 1)
    return {
        "bins": list(bins),
        "counts": counts.tolist(),
        "fractions": (counts / n).tolist(),
        "mean": float(np.mean(values)) if len(values) else None,
        "median": float(np.median(values)) if len(values) else None,
        "n": int(len(values)),
    }


def sam_change(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """|SAM_t - SAM_t+1| over the distinct pairs (upper triangle) of one modality, degrees."""
    iu = np.triu_indices(len(before), k=1)
    sam_before = angles((before @ before.T)[iu])
    sam_after = angles((after @ after.T)[iu])
    return np.abs(sam_before - sam_after)


def ram(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Rotation angle of each sample between two snapshots, degrees."""
    return angles(np.sum(before * after, axis=1))


def imav(before_image, before_text, after_image, after_text) -> np.ndarray:
    """For pairs the earlier snapshot retrieved correctly (image->text top-1), the change of
    the angle between their image and text embeddings, degrees."""
    sim = before_image @ before_text.T
    correct = sim.argmax(axis=1) == np.arange(len(sim))
    a_before = angles(np.sum(before_image * before_text, axis=1))
    a_after = angles(np.sum(after_image * after_text, axis=1))
    return np.abs(a_after - a_before)[correct]


def drift(before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray]) -> dict:
    """SAM change, RAM (per modality) and ImAV histograms between two snapshots."""
    (bi, bt), (ai, at) = before, after
    ram_i, ram_t = ram(bi, ai), ram(bt, at)
    return {
        "sam_change": {
            "image": histogram(sam_change(bi, ai), SAM_BINS),
            "text": histogram(sam_change(bt, at), SAM_BINS),
        },
        "ram": {"image": histogram(ram_i, RAM_BINS), "text": histogram(ram_t, RAM_BINS)},
        "imav": histogram(imav(bi, bt, ai, at), IMAV_BINS),
        # inter-modal deviation: how differently the two spaces rotate
        "inter_modal_deviation": float(np.mean(ram_i) - np.mean(ram_t)),
    }


def continual(acc: np.ndarray) -> dict:
    """Average, forgetting and backward transfer from an accuracy matrix.

    acc[t, d] is the score on domain d after phase t (phases 0..T, domain d is learnt in
    phase d). Forgetting: mean over old domains of (best earlier score - final score).
    BWT: mean over old domains of (final score - score right after learning it).
    """
    acc = np.asarray(acc, dtype=float)
    last = len(acc) - 1
    average = float(acc[last, : last + 1].mean())
    if last == 0:
        return {"average": average, "forgetting": 0.0, "bwt": 0.0}
    old = range(last)
    forgetting = float(np.mean([acc[d:last, d].max() - acc[last, d] for d in old]))
    bwt = float(np.mean([acc[last, d] - acc[d, d] for d in old]))
    return {"average": average, "forgetting": forgetting, "bwt": bwt}


def r1(rec: dict) -> float:
    """R@1 of one recall record, the mean of image->text and text->image."""
    return (rec["i2t"]["r1"] + rec["t2i"]["r1"]) / 2
