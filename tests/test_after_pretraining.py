"""The paper's regime offline: CLIP_0 is a pretrained checkpoint as it is, domain 0 its
pretraining corpus (evaluated after every phase, never trained or replayed), then the stream."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from trainer.config import TrainConfig
from trainer.datasets.after_pretraining import CORPUS, AfterPretraining
from trainer.datasets.synthetic import SyntheticDataset
from trainer.layout import snapshot_name
from trainer.phase import train_phase
from trainer.simulate import simulate
from trainer.snapshot import TRAINED, initial_snapshot, load_snapshot

CFG = TrainConfig(epochs=1, batch_size=16, lr=5e-4, checkpoint_every=0)


@pytest.fixture(scope="module")
def regime(tmp_path_factory):
    root = tmp_path_factory.mktemp("after-pretraining")
    corpus = SyntheticDataset(n_domains=1, pairs_per_domain=64, seed=1)
    stream = SyntheticDataset(n_domains=3, pairs_per_domain=48, seed=2)
    init = initial_snapshot("modx-tiny", root / "init", seed=5)
    pretrained = train_phase(init, corpus.train("basic"), CFG.with_(epochs=2), root / "pretrained", version=0)
    return AfterPretraining(corpus, stream, corpus_pairs=20), pretrained, root


def test_clip0_is_the_checkpoint_and_the_corpus_is_never_trained_or_replayed(regime):
    dataset, pretrained, root = regime
    assert dataset.domains == [CORPUS, "basic", "blocky", "neon"]
    assert len(dataset.train(CORPUS)) == 20 and len(dataset.probe(CORPUS)) <= 20
    result = simulate(dataset, CFG, pretrained=str(pretrained), work_dir=root / "default")  # the default recipe
    assert [e["domain"] for e in result["phases"]] == dataset.domains
    clip0 = result["phases"][0]
    assert clip0["train"] == {} and set(clip0["recall"]) == set(dataset.domains)
    clip0_dir = next((root / "default").glob("clip0-*")) / snapshot_name(0)
    got, want = load_snapshot(clip0_dir)[0].state_dict(), load_snapshot(pretrained)[0].state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)  # CLIP_0 is the pretrained model, untrained
    corpus_ids = {p.id for p in dataset.corpus.train("basic")}
    run = next((root / "default").glob("modx-*"))
    for t in (1, 2, 3):
        trained = json.loads((run / snapshot_name(t) / TRAINED).read_text())
        assert {p.id for p in dataset.train(dataset.domains[t])} == set(trained["pairs"])
        assert not corpus_ids & set(trained["pairs"] + trained["replayed"])  # the corpus never comes back
        assert {i.split("-")[1] for i in trained["replayed"]} == set(
            dataset.domains[1:t]
        )  # every older streamed domain
    assert result["phases"][1]["train"]["replayed"] == 0  # phase 1 has no older streamed pair to replay
    later = result["phases"][3]["train"]
    assert later["expert_rows"] == later["replayed"] > 0  # the streamed pairs' experts are stored from phase 1 on
    # the accuracy matrix is square, domain 0 "learnt" in phase 0 (pretraining)
    assert len(result["summary"]["matrix"]) == 4 and len(result["summary"]["matrix"][0]) == 4


def test_joint_trains_on_the_stream_so_far_from_the_pretrained_clip0(regime):
    dataset, pretrained, root = regime
    result = simulate(dataset, CFG.with_(method="joint"), pretrained=str(pretrained), work_dir=root / "joint")
    run = next((root / "joint").glob("joint-*"))
    for t in (1, 2, 3):
        trained = json.loads((run / snapshot_name(t) / TRAINED).read_text())
        assert set(trained["pairs"]) == {p.id for d in dataset.domains[1 : t + 1] for p in dataset.train(d)}
        assert json.loads((run / snapshot_name(t) / "snapshot.json").read_text())["parent"] == 0
    # joint's samples per phase count the streamed pairs only (not the corpus)
    sizes = [len(dataset.train(d)) for d in dataset.domains[1:]]
    assert result["summary"]["compute"]["samples"][-1] == (sum(sizes) // 16) * 16


def test_without_a_checkpoint_clip0_is_the_fresh_model_the_from_scratch_reference(regime):
    dataset, pretrained, root = regime
    result = simulate(dataset, CFG.with_(replay_fraction=0.0), work_dir=root / "scratch")
    clip0_dir = next((root / "scratch").glob("clip0-*")) / snapshot_name(0)
    fresh = load_snapshot(initial_snapshot("modx-tiny", root / "fresh", seed=CFG.seed))[0].state_dict()
    got = load_snapshot(clip0_dir)[0].state_dict()
    assert all(torch.equal(got[k], fresh[k]) for k in fresh)
    assert [e["domain"] for e in result["phases"]] == dataset.domains


def test_clip0_is_cached_per_seed_when_fresh_and_by_its_weights_when_pretrained(regime, tmp_path):
    dataset, pretrained, _ = regime
    work = tmp_path / "work"

    def clip0s() -> dict:
        return {d.name: load_snapshot(d / snapshot_name(0))[0].state_dict() for d in work.glob("clip0-*")}

    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    for seed in (2, 3):  # from scratch, two seeds in one work directory: each draws its own fresh model
        simulate(dataset, CFG.with_(seed=seed), phases=1, work_dir=work)
    fresh = clip0s()
    assert len(fresh) == 2 and not same(*fresh.values())
    # one checkpoint path holding two checkpoints in turn: the second is not served the first's CLIP_0
    path = tmp_path / "clip0"
    for source in (pretrained, initial_snapshot("modx-tiny", tmp_path / "other", seed=9)):
        before = clip0s()
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(source, path)
        simulate(dataset, CFG, phases=1, pretrained=str(path), work_dir=work)
        (new,) = [w for name, w in clip0s().items() if name not in before]
        assert same(new, load_snapshot(source)[0].state_dict())
