"""The README's main job: `modx up` (its own Tansu broker and redis-server) then `modx demo`
against it, as a user runs them from a clean clone: `modx up` makes the admin key, `modx demo`
finds it in ./data/admin.key with no step between; Ctrl-C stops everything."""

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
    env.update(MODX_RECIPE__EPOCHS="2", MODX_WORKER_POLL_S="0.3", MODX_INDEX_POLL_S="0.3")  # a short demo
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    log = tmp_path / "up.log"
    with open(log, "wb") as out:  # run where a user runs it: both default to ./data, no key handed over
        up = subprocess.Popen(
            modx("up", "--port", str(port)), cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while "modx is up" not in log.read_text():
            assert up.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        argv = modx("demo", "--url", f"http://127.0.0.1:{port}", "--phases", "2", "--pairs", "60", "--timeout", "300")
        demo = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        out = demo.stdout
        assert "sealed phase 2" in out and "index v2 serving" in out
        table = out[out.rindex("snapshot  status") : out.index("drift (mean degrees)")]
        assert "v1" in table and "v2" in table and "phase 2" in table  # every snapshot, every phase's probe
        assert "v0 -> v1" in out and "v1 -> v2" in out  # drift of each transition
        assert out.count("(snapshot v2, index v2)") == 3  # the searches, answered by the newest snapshot and its index
    finally:
        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(60) == 0, log.read_text()[-3000:]
    assert "modx stopped" in log.read_text()
    key = tmp_path / "data" / "admin.key"
    assert f"admin key: {key.relative_to(tmp_path)} (new)" in log.read_text()
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.read_text().strip() not in (tmp_path / "data" / "keys.json").read_text()  # stored as a hash only
