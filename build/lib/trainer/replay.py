"""Replay: which older pairs a phase mixes in, epoch by epoch.

The past is given as one sequence per earlier phase. Sequences may be lazy (the service's
phase buffers load an image only when its pair is indexed), so a policy touches only the
pairs it picks. Callers pass train pairs only: probe pairs are never replayed.

Every epoch mixes in `round(replay_fraction * n_new)` older pairs (the budget). With
`replay_draw = "epoch"` (the default) each epoch takes the next pairs of a permutation of
the whole store (per older phase for `balanced`), cycled, so over a phase every stored
pair is replayed about equally often, and each one at least once when the budget allows
(epochs x share >= the phase's size). `"phase"` keeps one subset for every epoch.
"""

from __future__ import annotations

import random
from typing import Sequence

from trainer.config import TrainConfig
from trainer.data import Pair

Position = tuple[int, int]  # (older phase, index in it)


def replay_count(cfg: TrainConfig, n_new: int) -> int:
    return int(round(cfg.replay_fraction * n_new))


def _cycled(items: list, take: int, epochs: int, rng: random.Random) -> list[list]:
    """Per epoch the next `take` items of a permutation of `items`, wrapping around."""
    order = rng.sample(items, len(items))
    take = min(take, len(order))
    return [[order[(e * take + k) % len(order)] for k in range(take)] for e in range(epochs)]


def _uniform(past: Sequence[Sequence[Pair]], n: int, epochs: int, rng: random.Random) -> list[list[Position]]:
    """n positions per epoch, uniformly over all older pairs."""
    return _cycled([(g, i) for g in range(len(past)) for i in range(len(past[g]))], n, epochs, rng)


def _balanced(past: Sequence[Sequence[Pair]], n: int, epochs: int, rng: random.Random) -> list[list[Position]]:
    """An equal share per epoch from every older phase (a small phase gives what it has)."""
    groups = [g for g in range(len(past)) if len(past[g])]
    plan = [[] for _ in range(epochs)]
    for k, g in enumerate(groups):
        share = n // len(groups) + (1 if k < n % len(groups) else 0)
        for e, chosen in enumerate(_cycled([(g, i) for i in range(len(past[g]))], share, epochs, rng)):
            plan[e] += chosen
    return plan


def _reservoir(past: Sequence[Sequence[Pair]], capacity: int, rng: random.Random) -> list[Position]:
    """Algorithm R over the stream of older pairs in phase order: a fixed-size memory."""
    memory: list[Position] = []
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


def replay_plan(past: Sequence[Sequence[Pair]], cfg: TrainConfig, n_new: int) -> list[list[Position]]:
    """The older pairs each epoch mixes in (positions into `past`), deterministic under cfg.seed."""
    n = replay_count(cfg, n_new)
    if n == 0 or not any(len(p) for p in past):
        return [[] for _ in range(cfg.epochs)]
    rng = random.Random(cfg.seed * 7919 + len(past))
    epochs = cfg.epochs if cfg.replay_draw == "epoch" else 1
    if cfg.replay_policy == "uniform":
        plan = _uniform(past, n, epochs, rng)
    elif cfg.replay_policy == "balanced":
        plan = _balanced(past, n, epochs, rng)
    else:
        plan = _cycled(_reservoir(past, cfg.replay_size, rng), n, epochs, rng)
    return plan if cfg.replay_draw == "epoch" else plan * cfg.epochs


def sample_replay(past: Sequence[Sequence[Pair]], cfg: TrainConfig, n_new: int) -> tuple[list[Pair], list[list[int]]]:
    """(the distinct older pairs a phase replays, per epoch the indices into that list)."""
    plan = replay_plan(past, cfg, n_new)
    distinct = list(dict.fromkeys(pos for epoch in plan for pos in epoch))
    where = {pos: k for k, pos in enumerate(distinct)}
    return [past[g][i] for g, i in distinct], [[where[pos] for pos in epoch] for epoch in plan]
