"""Replay: which older pairs a phase mixes in.

The past is given as one sequence per earlier phase. Sequences may be lazy (the service's
phase buffers load an image only when its pair is indexed), so a policy touches only the
pairs it picks. Callers pass train pairs only: probe pairs are never replayed.
"""

from __future__ import annotations

import random
from typing import Sequence

from trainer.config import TrainConfig
from trainer.data import Pair


def replay_count(cfg: TrainConfig, n_new: int) -> int:
    return int(round(cfg.replay_fraction * n_new))


def _uniform(past: Sequence[Sequence[Pair]], n: int, rng: random.Random) -> list[tuple[int, int]]:
    """n positions drawn uniformly over all older pairs."""
    sizes = [len(s) for s in past]
    flat = rng.sample(range(sum(sizes)), min(n, sum(sizes)))
    out = []
    for i in flat:
        g = 0
        while i >= sizes[g]:
            i -= sizes[g]
            g += 1
        out.append((g, i))
    return out


def _balanced(past: Sequence[Sequence[Pair]], n: int, rng: random.Random) -> list[tuple[int, int]]:
    """An equal share from every older phase (a small phase gives what it has)."""
    groups = [g for g in range(len(past)) if len(past[g])]
    out = []
    for k, g in enumerate(groups):
        share = n // len(groups) + (1 if k < n % len(groups) else 0)
        out += [(g, i) for i in rng.sample(range(len(past[g])), min(share, len(past[g])))]
    return out


def _reservoir(past: Sequence[Sequence[Pair]], capacity: int, rng: random.Random) -> list[tuple[int, int]]:
    """Algorithm R over the stream of older pairs in phase order: a fixed-size memory."""
    memory: list[tuple[int, int]] = []
    seen = 0
    for g, group in enumerate(past):
        for i in range(len(group)):
            if len(memory) < capacity:
                memory.append((g, i))
            else:
                j = rng.randrange(seen + 1)
                if j < capacity:
                    memory[j] = (g, i)
            seen += 1
    return memory


def sample_replay(past: Sequence[Sequence[Pair]], cfg: TrainConfig, n_new: int) -> list[Pair]:
    """The older pairs to mix into this phase, deterministic under cfg.seed."""
    n = replay_count(cfg, n_new)
    if n == 0 or not past:
        return []
    rng = random.Random(cfg.seed * 7919 + len(past))
    if cfg.replay_policy == "uniform":
        chosen = _uniform(past, n, rng)
    elif cfg.replay_policy == "balanced":
        chosen = _balanced(past, n, rng)
    else:
        memory = _reservoir(past, cfg.replay_size, rng)
        chosen = rng.sample(memory, min(n, len(memory)))
    return [past[g][i] for g, i in chosen]
