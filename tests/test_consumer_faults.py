"""The consumer on a full and on a read-only data disk (a real loop-mounted ext4, so root):
it stops writing, keeps its group membership, says why (Redis fault key, readyz, metric),
commits nothing it did not write, and writes every pair exactly once when the disk is back."""

from __future__ import annotations

import time

import pytest

from bench import loopfs
from service import metrics
from service.registry import Registry
from tests.helpers import api_client, buffered, committed, consumer_thread, pair_json, wait_for

pytestmark = pytest.mark.skipif(loopfs.available() is not None, reason=str(loopfs.available()))


@pytest.mark.parametrize("fault", ["full", "read_only"])
def test_consumer_survives_a_disk_fault(settings, tmp_path, fault):
    with loopfs.loop_fs(tmp_path / "disk", size_mb=48) as fs:
        s = settings.model_copy(
            update={"data_dir": fs.mount / "data", "consumer_retry_cap_s": 0.5, "min_free_bytes": 0}
        )  # the API refuses nothing: the consumer meets the fault
        registry = Registry.from_url(s.redis_url)
        with consumer_thread(s) as thread:
            with api_client(s) as client:
                post = lambda ids: client.post("/v1/pairs", json={"pairs": [pair_json(i) for i in ids]})  # noqa: E731
                assert post([f"a{i}" for i in range(20)]).status_code == 202
                wait_for(lambda: len(buffered(s.data_dir)) == 20, message="the first pairs written")
                fs.fill() if fault == "full" else fs.read_only()
                reason = wait_for(lambda: registry.faults().get("consumer"), message="the fault reported while idle")
                assert post([f"b{i}" for i in range(20)]).status_code == 202
                time.sleep(1.0)  # the consumer polls them, cannot write them, and keeps saying why
                reason = registry.faults()["consumer"]
                assert reason.startswith("ENOSPC" if fault == "full" else "EROFS"), reason
                assert client.get("/readyz").json()["faults"]["consumer"] == reason
                code = reason.split(":")[0]
                assert metrics.CONSUMER.get_sample_value("modx_consumer_write_fault", {"reason": code}) == 1
                assert thread.is_alive() and committed(s) == 20  # nothing committed past what was written
                fs.free() if fault == "full" else fs.read_write()
                wait_for(
                    lambda: len(buffered(s.data_dir)) == 40, timeout_s=60, message="every pair once the disk is back"
                )
                wait_for(lambda: "consumer" not in registry.faults(), message="the fault cleared")
                wait_for(lambda: committed(s) == 40, message="offsets committed")
            ids = buffered(s.data_dir)
            assert sorted(ids) == sorted([f"a{i}" for i in range(20)] + [f"b{i}" for i in range(20)])
