"""service.registry against a real redis-server: rebuilt from disk, seal requests, counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from service import buffer
from trainer.atomic import write_json_atomic
from service.metrics import SharedMetrics
from service.registry import Registry
from tests.test_buffer import incoming, open_buffer


def test_rebuild_from_disk(tmp_path, redis_server, redis_client):
    with open_buffer(tmp_path, phase_size=2) as buf:
        result = buf.append(incoming("a", "b", "c"))
    buffer.write_phase_status(tmp_path, 1, "trained", snapshot=1)
    for version, status in ((0, None), (1, "serving"), (2, "rejected")):
        (tmp_path / "snapshots" / f"v{version:06d}").mkdir(parents=True)
        write_json_atomic(tmp_path / "snapshots" / f"v{version:06d}" / "snapshot.json", {"version": version})
        if status:
            write_json_atomic(tmp_path / "snapshots" / f"v{version:06d}" / "recall.json", {"status": status})
    (tmp_path / "indexes" / "v000001").mkdir(parents=True)
    write_json_atomic(tmp_path / "indexes" / "v000001" / "index.json", {"snapshot": 1})

    registry = Registry.from_url(redis_server)
    assert registry.is_empty()
    assert registry.ensure(tmp_path) is True
    assert registry.known(["a", "b", "c", "zz"]) == [True, True, True, False]
    phases = registry.phases()
    assert [(n, p["status"], p["n"]) for n, p in phases.items()] == [(1, "trained", 2), (2, "open", 1)]
    assert phases[1]["snapshot"] == 1 and phases[1]["opened"] == result.sealed[0]["opened"]
    assert {v: r.get("status") for v, r in registry.snapshots().items()} == {0: None, 1: "serving", 2: "rejected"}
    assert registry.serving() == {"snapshot": 1, "index": 1}
    assert registry.ensure(tmp_path) is False  # not empty any more: left alone


def test_register_sealed_is_one_transaction(redis_server, redis_client):
    registry = Registry.from_url(redis_server)
    registry.register_sealed({"phase": 1, "status": "sealed", "n": 3}, {"phase": 2, "status": "open", "n": 0})
    assert [p["status"] for p in registry.phases().values()] == ["sealed", "open"]
    registry.record_written(["x", "y"], {"phase": 2, "status": "open", "n": 2})
    assert registry.phase(2)["n"] == 2 and registry.n_ids() == 2


def test_seal_requests_round_trip(redis_server, redis_client):
    registry = Registry.from_url(redis_server)
    first, second = registry.request_seal(), registry.request_seal()
    assert registry.take_seal_requests() == [first, second]
    assert registry.take_seal_requests() == []
    registry.answer_seal(first, {"sealed": {"phase": 4}})
    assert registry.wait_seal(first, 1.0) == {"sealed": {"phase": 4}}
    assert registry.wait_seal(second, 0.1) is None


def test_shared_counters_exported(redis_server, redis_client):
    registry = Registry.from_url(redis_server)
    registry.add_counters({"consumer_written": 3})
    registry.incr("consumer_written", 2)
    registry.set_gauge("phase_fill", 7)
    assert registry.counters() == {"consumer_written": 5.0, "phase_fill": 7.0}
    prom = CollectorRegistry()
    prom.register(SharedMetrics(registry))
    text = generate_latest(prom).decode()
    assert 'modx_shared{name="consumer_written"} 5.0' in text
