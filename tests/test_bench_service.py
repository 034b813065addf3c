"""The service benchmarks run end to end at their smoke presets (real Tansu, redis-server and
role processes, started by the benchmarks themselves) and write sane JSON. No timing limits."""

from __future__ import annotations

import json

import pytest

from bench import freshness, ingest

pytestmark = pytest.mark.slow  # about 15 s + 40 s on 2 cores


def test_ingest_smoke(tmp_path):
    out = tmp_path / "ingest.json"
    ingest.main(["--preset", "smoke", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["benchmark"] == "ingest"
    n = ingest.PRESETS["smoke"]["pairs"]
    assert saved["pairs"] == n and saved["failed_requests"] == 0
    assert saved["acked_pairs"] == saved["queued_pairs"] == saved["buffered_pairs"] == n  # every pair fsynced
    assert saved["duplicate_records"] == 0
    assert saved["requests"] == -(-n // ingest.PRESETS["smoke"]["batch"])
    assert 8_000 <= saved["mean_image_bytes"] <= 12_000
    assert saved["acked_pairs_per_s"] > 0 and saved["e2e_pairs_per_s"] > 0
    # every request started after the clock did and was answered by the last ack (up to rounding), and the acks
    # came before everything was buffered
    assert 0 < saved["ack_latency_s"]["max"] <= saved["acked_s"] + 1e-3 and saved["acked_s"] <= saved["e2e_s"]
    assert saved["receive_to_written_s"]["p50"] is not None
    assert {"api", "consumer", "tansu", "redis", "clients"} <= set(saved["cpu_s"])
    assert {"cores", "date", "command"} <= set(saved["machine"]) and "bench.ingest" in saved["machine"]["command"]


def test_freshness_smoke(tmp_path):
    out = tmp_path / "freshness.json"
    freshness.main(["--preset", "smoke", "--out", str(out)])
    saved = json.loads(out.read_text())
    preset = freshness.PRESETS["smoke"]
    assert saved["benchmark"] == "freshness"
    fresh = saved["fresh"]
    assert fresh["n"] == fresh["found"] == preset["fresh"]  # every fresh pair became searchable
    assert all(p["searchable_s"] is not None and p["searchable_s"] > 0 for p in fresh["pairs"])
    assert all(p["buffered_s"] is not None for p in fresh["pairs"])
    assert fresh["searchable_s"]["p50"] <= fresh["searchable_s"]["max"]
    assert [p["phase"] for p in saved["phases"]] == list(range(1, preset["phases"] + 1))
    for phase in saved["phases"]:
        assert phase["pairs"] == preset["pairs"] and phase["snapshot_status"] == "accepted"
        assert phase["index_size"] >= preset["pairs"] and phase["train_steps"] > 0
        for key in (
            "seal_to_search_s",
            "wait_for_trainer_s",
            "train_s",
            "train_loop_s",
            "evaluate_s",
            "reindex_s",
            "api_swap_s",
        ):
            assert phase[key] is not None, key
    assert {"index_poll_s", "worker_poll_s", "consumer_poll_ms", "serving_poll_s"} <= set(saved["settings"])
    assert "bench.freshness" in saved["machine"]["command"]
