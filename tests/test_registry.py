"""service.registry against a real redis-server: rebuilt from disk, seal requests, counters."""

from __future__ import annotations

import time

from service import buffer, status
from service.registry import Registry
from tests.helpers import api_client, incoming, open_buffer
from trainer import layout
from trainer.atomic import write_json_atomic


def put_json(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)


def disk_with_snapshots(path) -> dict:
    """Two phases (one sealed and trained), snapshots 0..2 (v1 from a data dir made before
    status.json: its verdict only in recall.json), an index of snapshot 1, the pointer."""
    with open_buffer(path, phase_size=2) as buf:
        result = buf.append(incoming("a", "b", "c"))
    buffer.write_phase_status(path, 1, "trained", snapshot=1)
    for version in (0, 1, 2):
        put_json(layout.record_file(path, version), {"version": version})
    status.write_status(path, 0, "superseded", "snapshot 1 accepted")
    write_json_atomic(layout.recall_file(path, 1), {"status": "serving"})  # the old word
    status.write_status(path, 2, "rejected", "mean old-probe R@1 fell")
    put_json(layout.index_dir(path, 1) / layout.META_FILE, {"snapshot": 1})
    status.set_serving(path, Registry.from_url("redis://127.0.0.1:1/0"), 1, 1)  # Redis away: disk only
    return result.sealed[0]


def test_rebuild_from_disk(tmp_path, redis_server, redis_client):
    sealed = disk_with_snapshots(tmp_path)
    registry = Registry.from_url(redis_server)
    assert not registry.rebuilt() and registry.phases() == registry.snapshots() == {} and registry.serving() is None
    assert registry.ensure(tmp_path) is True
    assert registry.known(["a", "b", "c", "zz"]) == [True, True, True, False]
    phases = registry.phases()
    assert [(n, p["status"], p["n"]) for n, p in phases.items()] == [(1, "trained", 2), (2, "open", 1)]
    assert phases[1]["snapshot"] == 1 and phases[1]["opened"] == sealed["opened"]
    statuses = {v: r.get("status") for v, r in registry.snapshots().items()}
    assert statuses == {0: "superseded", 1: "accepted", 2: "rejected"}
    assert registry.snapshot(2)["reason"] == "mean old-probe R@1 fell"
    assert registry.serving() == {"snapshot": 1, "index": 1}
    assert registry.ensure(tmp_path) is False  # rebuilt since the flush: one EXISTS, nothing done


def test_snapshot_0_keeps_its_status_through_every_rebuild(tmp_path, redis_server, redis_client):
    """Defect 2: rebuild_from_disk replaced each snapshot's record with snapshot.json, so
    CLIP_0 lost `accepted` and the next phase had no parent."""
    put_json(layout.record_file(tmp_path, 0), {"version": 0})
    registry = Registry.from_url(redis_server)
    status.judge(tmp_path, registry, 0, "accepted", "CLIP_0")
    for _ in range(3):  # e.g. the consumer restarting
        registry.rebuild_from_disk(tmp_path)
        assert registry.snapshot(0)["status"] == "accepted"
        assert status.accepted(tmp_path) == 0


def test_flush_while_traffic_flows_is_repaired(tmp_path, redis_server, redis_client):
    """Defect 3: after FLUSHALL the consumer's next batch refilled Redis first, so a check
    for an empty Redis never rebuilt it; the epoch marker does."""
    disk_with_snapshots(tmp_path)
    registry = Registry.from_url(redis_server)
    registry.ensure(tmp_path)
    before = registry.snapshots()
    redis_client.flushall()
    registry.record_written(["d"], {"phase": 2, "status": "open", "n": 2})  # a batch lands first
    assert registry.phase(2) is not None and not registry.rebuilt()  # not empty, yet not rebuilt
    assert registry.ensure(tmp_path) is True
    assert registry.snapshots() == before and registry.serving() == {"snapshot": 1, "index": 1}
    assert registry.known(["a", "b", "c"]) == [True, True, True]


def test_cache_disagreeing_with_disk_is_repaired(tmp_path, redis_server, redis_client):
    disk_with_snapshots(tmp_path)
    registry = Registry.from_url(redis_server)
    registry.ensure(tmp_path)
    registry.cache_snapshots(
        {1: {"status": "superseded"}, 7: {"status": "accepted"}}, pointer={"snapshot": 0, "index": 0}
    )
    assert status.sync(tmp_path, registry) is True
    assert {v: r["status"] for v, r in registry.snapshots().items()} == {0: "superseded", 1: "accepted", 2: "rejected"}
    assert registry.serving() == {"snapshot": 1, "index": 1}
    assert status.sync(tmp_path, registry) is False


def test_a_flush_during_a_rebuild_leaves_it_unmarked(tmp_path, redis_server, redis_client):
    disk_with_snapshots(tmp_path)
    registry = Registry.from_url(redis_server)
    redis_client.set("modx:rebuild", "someone-else", ex=60)
    assert registry.ensure(tmp_path) is False  # another role is rebuilding: not twice at once
    redis_client.flushall()  # ... and its lock went with the flush
    assert registry.ensure(tmp_path) is True and registry.rebuilt()


def test_register_sealed_is_one_transaction(redis_server, redis_client):
    registry = Registry.from_url(redis_server)
    registry.register_sealed({"phase": 1, "status": "sealed", "n": 3}, {"phase": 2, "status": "open", "n": 0})
    assert [p["status"] for p in registry.phases().values()] == ["sealed", "open"]
    registry.record_written(["x", "y"], {"phase": 2, "status": "open", "n": 2})
    assert registry.phase(2)["n"] == 2 and registry.known(["x", "y", "z"]) == [True, True, False]


def test_seal_requests_are_rate_limited_and_joined(redis_server, redis_client):
    registry = Registry.from_url(redis_server)
    first, new = registry.open_seal(min_interval_s=0.5, pending_ttl_s=60)
    assert new and registry.open_seal(0.5, 60) == (first, False)  # still pending: joined, not queued again
    registry.answer_seal(first, {"sealed": {"phase": 4}})
    registry.answer_seal(first, {"sealed": None})  # a replayed marker: the first answer stands
    assert registry.wait_seal(first, 1.0) == registry.wait_seal(first, 0) == {"sealed": {"phase": 4}}
    wait = registry.open_seal(0.5, 60)
    assert isinstance(wait, float) and 0 < wait <= 0.5  # answered, but too soon for a new one
    time.sleep(wait + 0.05)
    second, new = registry.open_seal(0.5, 60)
    assert new and second != first
    assert registry.wait_seal(second, 0.1) is None
    registry.drop_seal(second)  # it never reached Kafka
    assert registry.open_seal(0.5, 60)[1] is True


def test_the_snapshot_listing_names_each_snapshot_by_its_number(settings):
    """/v1/snapshots says `snapshot` for the number, as /v1/recall, search and the pointer do."""
    disk_with_snapshots(settings.data_dir)
    with api_client(settings, "read") as client:
        answer = client.get("/v1/snapshots").json()
    assert [s["snapshot"] for s in answer["snapshots"]] == [0, 1, 2]
    assert not any("version" in s for s in answer["snapshots"])
    assert [s["status"] for s in answer["snapshots"]] == ["superseded", "accepted", "rejected"]
    assert answer["serving"] == {"snapshot": 1, "index": 1}
