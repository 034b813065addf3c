"""The suite's version of `python -m bench.faults`: the whole stack as processes, 1k pairs,
10 kill -9 over consumer, trainer, indexer and API, a Redis FLUSHALL and restart, and (as
root) a full and a read-only data disk; nothing acknowledged is lost or duplicated, every
sealed phase is trained to an accepted snapshot, and search never answers 5xx."""

from __future__ import annotations

import pytest

from bench import faults

pytestmark = pytest.mark.slow


def test_small_fault_run_loses_nothing(tmp_path):
    result = faults.main(["--preset", "small", "--work", str(tmp_path), "--out", str(tmp_path / "faults.json")])
    verdict = result["verdict"]
    assert result["acknowledged"] == 1000 and verdict["lost"] == 0 and verdict["duplicated"] == 0
    assert verdict["kills"] == 10 and verdict["refused_outside_api_down"] == 0
    assert verdict["search_5xx"] == 0, (result["search_5xx_samples"], result["faults"])
    assert verdict["phases_failed"] == verdict["phases_not_trained"] == 0
    assert verdict["statuses_match_no_fault_run"] and verdict["ok"]
    kinds = {e["fault"] for e in result["faults"]}
    assert {"redis flushall", "redis restart"} <= kinds
    assert all(e.get("recover_s") is not None for e in result["faults"]), result["faults"]
    if result["disk_faults"] == "on":
        disk = [e for e in result["faults"] if e["fault"] in ("disk full", "read-only data dir")]
        assert len(disk) == 2 and all(e["reason"] for e in disk)  # the consumer said why it stopped
    assert result["modx_up_stop"]["stopped"] and not result["modx_up_stop"]["abandoned"]
