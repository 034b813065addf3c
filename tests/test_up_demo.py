"""The README's main job: `modx up` (its own Tansu broker and redis-server) then `modx demo`
against it, as a user runs them; Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from service.infra import free_port
from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def modx(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


def test_up_then_demo(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODX_")}
    env.update(MODX_TRAIN_EPOCHS="2", MODX_WORKER_POLL_S="0.3", MODX_INDEX_POLL_S="0.3")  # a short demo
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen(modx("up", "--port", str(port), "--data-dir", str(tmp_path / "data")), cwd=ROOT, env=env,
                              stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "modx is up" not in log.read_text():
            assert up.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        demo = subprocess.run(modx("demo", "--url", f"http://127.0.0.1:{port}", "--phases", "2", "--pairs", "60",
                                   "--timeout", "300"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        out = demo.stdout
        assert "sealed phase 2" in out and "index v2 serving" in out
        table = out[out.rindex("snapshot  status"):out.index("drift (mean degrees)")]
        assert "v1" in table and "v2" in table and "phase 2" in table  # every snapshot, every phase's probe
        assert "v0 -> v1" in out and "v1 -> v2" in out  # drift of each transition
        assert out.count("(snapshot v2, index v2)") == 3  # the searches, answered by the newest pair
    finally:
        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(60) == 0, log.read_text()[-3000:]
    assert "modx stopped" in log.read_text()
