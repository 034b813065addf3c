"""Replay covers the whole store: each epoch draws afresh, every stored pair comes back."""

from collections import Counter

from trainer.config import TrainConfig
from trainer.data import Pair
from trainer.replay import replay_plan, sample_replay


def store(sizes):
    return [[Pair(f"{g}-{i}", f"caption {g} {i}", b"") for i in range(n)] for g, n in enumerate(sizes)]


def counts(past, cfg, n_new):
    return Counter(p for epoch in replay_plan(past, cfg, n_new) for p in epoch)


def test_every_stored_pair_is_replayed_when_the_budget_allows():
    past = store([300, 120])  # balanced: 50 per older phase per epoch, 10 epochs = 500 >= 300
    cfg = TrainConfig(epochs=10, replay_fraction=1.0, replay_policy="balanced")
    seen = counts(past, cfg, n_new=100)
    assert set(seen) == {(g, i) for g, phase in enumerate(past) for i in range(len(phase))}
    for g in range(len(past)):  # about equally often: a cycled permutation, counts differ by at most 1
        c = [seen[(g, i)] for i in range(len(past[g]))]
        assert max(c) - min(c) <= 1, (g, min(c), max(c))
    uniform = counts(past, cfg.with_(replay_policy="uniform"), n_new=100)  # 100 x 10 >= 420
    assert len(uniform) == 420 and max(uniform.values()) - min(uniform.values()) <= 1


def test_the_budget_per_epoch_is_unchanged_and_draws_differ_between_epochs():
    past = store([300, 120])
    plan = replay_plan(past, TrainConfig(epochs=4, replay_fraction=0.5), n_new=100)
    assert [len(e) for e in plan] == [50] * 4
    assert len({tuple(e) for e in plan}) == 4


def test_a_fixed_subset_leaves_most_of_a_large_store_out():
    past = store([300])
    fixed = counts(past, TrainConfig(epochs=10, replay_fraction=0.5, replay_draw="phase"), n_new=100)
    assert len(fixed) == 50  # the old behaviour, kept as an option: 250 stored pairs never come back


def test_sample_replay_indexes_distinct_pairs_per_epoch():
    past = store([30, 30])
    replayed, per_epoch = sample_replay(past, TrainConfig(epochs=3, replay_fraction=1.0), n_new=20)
    assert len({p.id for p in replayed}) == len(replayed) == 60  # 20 per epoch x 3 covers both phases
    assert all(len(e) == 20 and len(set(e)) == 20 for e in per_epoch)
    assert replay_plan(past, TrainConfig(epochs=3, replay_fraction=1.0), 20) == replay_plan(
        past, TrainConfig(epochs=3, replay_fraction=1.0), 20
    )  # deterministic under the seed
