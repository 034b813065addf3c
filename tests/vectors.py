"""Embedding-like test data: clustered unit vectors, ids, and brute-force ground truth."""

import numpy as np

D = 32


def normed(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n, d=D, centres=40, seed=0):
    """Embedding-like data: a mixture of tight clusters on the sphere."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    return normed(c[rng.integers(0, centres, n)] + 0.5 * rng.normal(size=(n, d)))


def near(x, seed=1, noise=0.1):
    rng = np.random.default_rng(seed)
    return normed(x + noise * rng.normal(size=x.shape))


def make_ids(n, prefix="p"):
    return [f"{prefix}{i}" for i in range(n)]


def brute_force(x, q, k):
    s = q @ x.T
    top = np.argsort(-s, axis=1)[:, :k]
    return top, np.take_along_axis(s, top, axis=1)


def positions(hits):
    return [int(pid[1:]) for pid, _ in hits]


def recall_at(results, exact, k=10):
    return float(np.mean([len(set(positions(r)) & set(e[:k].tolist())) / k for r, e in zip(results, exact)]))
