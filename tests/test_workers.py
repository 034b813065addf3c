"""The trainer and indexer workers on real phase buffers and a real redis-server (no Kafka:
the phases are written with the consumer's own PhaseBuffer): replay never trains on probe
pairs, the promotion guard keeps the last good snapshot, `reindex = keep` keeps the old
index and reports recall against it."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from bench import loopfs
from indexer.store import load_index
from service import buffer, trainer_worker
from service.indexer_worker import IndexerWorker
from service.registry import Registry
from service.trainer_worker import TrainerWorker, bootstrap, train_next
from service.training import guard
from tests.helpers import write_phases
from trainer import layout
from trainer.atomic import read_json
from trainer.datasets.synthetic import SyntheticDataset
from trainer.layout import RECALL_FILE, snapshot_dir
from trainer.snapshot import TRAINED

PHASES, PAIRS = 3, 40


@pytest.fixture
def stream():
    return SyntheticDataset(n_domains=PHASES, pairs_per_domain=PAIRS, seed=11)


@pytest.fixture
def worker_settings(settings):
    recipe = settings.recipe.with_(epochs=1, batch_size=16, replay_fraction=0.0)
    return settings.model_copy(update={"probe_fraction": 0.25, "recipe": recipe, "guard_max_drop": None})


def split_ids(data_dir, phase: int, split: str) -> set[str]:
    return {r.id for r in buffer.read_records(data_dir, phase) if r.split == split}


def test_replay_never_trains_on_probe_pairs(worker_settings, stream):
    s = worker_settings.model_copy(
        update={"recipe": worker_settings.recipe.with_(replay_fraction=10.0)}
    )  # ask for more than the past holds
    write_phases(s, stream, PHASES)
    registry = Registry.from_url(s.redis_url)
    bootstrap(s, registry)
    for _ in range(PHASES):
        assert train_next(s, registry).status == "accepted"
    probes = set().union(*(split_ids(s.data_dir, n, "probe") for n in range(1, PHASES + 1)))
    assert probes  # the test means something only if there are probe pairs to avoid
    for phase in range(1, PHASES + 1):
        trained = json.loads((snapshot_dir(s.data_dir, phase) / TRAINED).read_text())
        past_train = set().union(set(), *(split_ids(s.data_dir, n, "train") for n in range(1, phase)))
        assert set(trained["pairs"]) == split_ids(s.data_dir, phase, "train")
        assert set(trained["replayed"]) == past_train  # every older train pair, and nothing else
        assert not (set(trained["pairs"]) | set(trained["replayed"])) & probes


def test_guard_rejects_and_the_last_good_snapshot_keeps_serving(worker_settings, stream):
    write_phases(worker_settings, stream, PHASES)
    registry = Registry.from_url(worker_settings.redis_url)
    bootstrap(worker_settings, registry)
    assert train_next(worker_settings, registry).status == "accepted"  # phase 1 has no old probe to guard
    strict = worker_settings.model_copy(update={"guard_max_drop": -2.0})  # demands an impossible R@1 gain
    rejected = train_next(strict, registry)
    assert rejected.status == "rejected" and "R@1" in rejected.reason
    assert train_next(worker_settings, registry).status == "accepted"
    snaps = registry.snapshots()
    assert [snaps[v]["status"] for v in (0, 1, 2, 3)] == ["superseded", "superseded", "rejected", "accepted"]
    assert snaps[3]["parent"] == 1  # the rejected snapshot taught nothing
    assert registry.phase(2)["snapshot_status"] == "rejected"
    assert read_json(snapshot_dir(worker_settings.data_dir, 2) / RECALL_FILE)["status"] == "rejected"


def test_guard_compares_old_probes_only():
    rec = lambda r: {"i2t": {"r1": r}, "t2i": {"r1": r}}  # noqa: E731
    serving = {"1": rec(0.8), "2": rec(0.1)}
    assert guard({"1": rec(0.7), "2": rec(0.9)}, serving, ["1"], 0.2) == ("accepted", "")
    status, reason = guard({"1": rec(0.5), "2": rec(0.9)}, serving, ["1"], 0.2)
    assert status == "rejected" and "0.500" in reason
    assert guard({"1": rec(0.0)}, serving, ["1"], None)[0] == "accepted"  # off


@pytest.mark.parametrize("reindex", ["full", "keep"])
def test_reindex_full_follows_snapshots_and_keep_stays(worker_settings, stream, reindex):
    s = worker_settings.model_copy(update={"reindex": reindex})
    write_phases(s, stream, n=2)
    registry = Registry.from_url(s.redis_url)
    bootstrap(s, registry)
    indexer = IndexerWorker(s, registry)
    indexer.tick()
    assert registry.serving() == {"snapshot": 0, "index": 0}
    assert indexer.index.size == indexer.indexes["text"].size == 2 * PAIRS
    for phase in (1, 2):
        train_next(s, registry)
        indexer.tick()
    expected = 2 if reindex == "full" else 0
    assert registry.serving() == {"snapshot": expected, "index": expected}
    recall = read_json(snapshot_dir(s.data_dir, 2) / RECALL_FILE)
    assert recall["old_gallery_snapshot"] == (1 if reindex == "full" else 0)
    assert set(recall["old_gallery"]) == set(recall["recall"]) == {"1", "2"}
    for probe in recall["old_gallery"].values():
        assert 0 <= probe["t2i"]["r1"] <= probe["t2i"]["r10"] <= 1


def test_the_indexer_re_embeds_in_shards_to_the_index_one_worker_builds(worker_settings, stream):
    """`embed_devices`: one shard of the gallery per device, merged into one index; the same
    ids in the same order and the same vectors as one worker (two CPU "devices" here)."""
    write_phases(worker_settings, stream, n=2)
    registry = Registry.from_url(worker_settings.redis_url)
    bootstrap(worker_settings, registry)
    built = {}
    for devices in ([], ["cpu", "cpu"]):
        for modality in layout.MODALITIES:
            shutil.rmtree(layout.index_dir(worker_settings.data_dir, 0, modality), ignore_errors=True)
        indexer = IndexerWorker(worker_settings.model_copy(update={"embed_devices": devices}), registry)
        indexer.tick()
        assert len(indexer.shards["image"]) == len(devices)
        built[len(devices)] = {
            m: load_index(layout.index_dir(worker_settings.data_dir, 0, m), "cpu") for m in ("image", "text")
        }
    for modality in ("image", "text"):
        one, two = built[0][modality], built[2][modality]
        assert one.size == two.size == 2 * PAIRS and one.ids == two.ids
        np.testing.assert_allclose(two.raw.reconstruct_n(0, two.size), one.raw.reconstruct_n(0, one.size), atol=1e-5)


def test_phase_trains_after_a_consumer_restart_and_a_flush(worker_settings, stream, redis_client):
    """Defects 2 and 3: a rebuild (every consumer start) dropped CLIP_0's status, and a
    FLUSHALL was never repaired, so phase 1 had no parent and failed for good."""
    s, registry = worker_settings, Registry.from_url(worker_settings.redis_url)
    worker = TrainerWorker(s, registry)
    assert worker.tick() is False  # CLIP_0 made, nothing to train yet
    registry.rebuild_from_disk(s.data_dir)  # what the consumer does at every start
    redis_client.flushall()
    write_phases(s, stream, 1)
    assert worker.tick() is True
    assert buffer.phase_info(s.data_dir, 1).status == "trained"
    assert {v: r["status"] for v, r in registry.snapshots().items()} == {0: "superseded", 1: "accepted"}
    assert registry.phase(1)["status"] == "trained" and registry.phase(1)["snapshot_status"] == "accepted"


@pytest.mark.skipif(loopfs.available() is not None, reason=str(loopfs.available()))
def test_training_on_a_full_disk_is_retried_once_space_is_freed(worker_settings, stream, tmp_path):
    """Defect 6: ENOSPC while training marked the phase failed for good."""
    with loopfs.loop_fs(tmp_path / "disk", size_mb=96) as fs:
        s = worker_settings.model_copy(update={"data_dir": fs.mount / "data", "train_retry_first_s": 0.05})
        write_phases(s, stream, 1)
        registry = Registry.from_url(s.redis_url)
        bootstrap(s, registry)
        worker = TrainerWorker(s, registry)
        worker.ready = True
        fs.fill(leave_bytes=64 << 10)  # room for a status file, not for a snapshot
        assert worker.tick() is False
        assert worker.retries.phases[1].error  # it tried, and failed
        assert buffer.phase_info(s.data_dir, 1).status != "failed"
        assert not snapshot_dir(s.data_dir, 1).exists()
        assert not layout.snapshot_temps(s.data_dir)  # nothing half-written
        assert worker.tick() is False  # still full: waits, the attempt does not count
        assert worker.retries.phases[1].count == 0
        fs.free()
        time.sleep(0.2)  # the backoff
        assert worker.tick() is True
        assert buffer.phase_info(s.data_dir, 1).status == "trained"
        assert registry.snapshot(1)["status"] == "accepted"


def test_accepted_snapshots_store_expert_embeddings_and_later_phases_distil_against_them(worker_settings, stream):
    from service.training import stored_experts
    from trainer.experts import EXPERTS, load_experts
    from trainer.snapshot import TRAINED, read_record

    # the default recipe: expert-embedding Mod-X, a replayed pair's expert refreshed by the snapshot that replays it
    recipe = worker_settings.recipe.with_(replay_fraction=1.0)
    assert recipe.experts and recipe.expert_refresh
    s = worker_settings.model_copy(update={"recipe": recipe})
    write_phases(s, stream, PHASES)
    registry = Registry.from_url(s.redis_url)
    bootstrap(s, registry)
    for _ in range(PHASES):
        assert train_next(s, registry).status == "accepted"
    for phase in range(1, PHASES + 1):
        experts = load_experts(snapshot_dir(s.data_dir, phase) / EXPERTS)
        replayed = set(json.loads((snapshot_dir(s.data_dir, phase) / TRAINED).read_text())["replayed"])
        assert (phase == 1) == (not replayed)
        assert set(experts.ids) == split_ids(s.data_dir, phase, "train") | replayed
        assert (experts.version == phase).all() and experts.image.shape == experts.text.shape
        assert abs(float((experts.image**2).sum(1).mean()) - 1) < 1e-4 and (experts.logit_scale > 0).all()
    # what the next phase distils against: each pair's newest expert
    store = stored_experts(s.data_dir, PHASES + 1)
    newest = {}
    for phase in range(1, PHASES + 1):
        newest |= dict.fromkeys(load_experts(snapshot_dir(s.data_dir, phase) / EXPERTS).ids, phase)
    assert dict(zip(store.ids, store.version.tolist())) == newest
    last = read_record(snapshot_dir(s.data_dir, PHASES))["train"]
    assert last["expert_rows"] == last["replayed"] > 0  # every replayed pair had its expert's embeddings
    assert last["teacher_forwards"] == last["pairs"]  # the parent ran on the new pairs only


def test_the_trainer_repairs_a_stale_cache_every_cache_sync_s_not_every_tick(worker_settings, stream):
    """The idle trainer compares Redis with disk at most every CACHE_SYNC_S (it reads every
    snapshot's files); a stale snapshot entry is rewritten from disk at the next comparison."""
    s, registry = worker_settings, Registry.from_url(worker_settings.redis_url)
    worker = TrainerWorker(s, registry)
    assert worker.tick() is False  # CLIP_0 made and cached
    registry.cache_snapshots({0: {"snapshot": 0, "status": "rejected"}})  # a cache update lost, say
    assert worker.tick() is False
    assert registry.snapshot(0)["status"] == "rejected"  # within CACHE_SYNC_S of the last comparison
    worker.synced -= trainer_worker.CACHE_SYNC_S  # as if CACHE_SYNC_S had passed
    assert worker.tick() is False
    assert registry.snapshot(0)["status"] == "accepted"  # what disk says
