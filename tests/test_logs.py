"""service.logs: JSON lines when stderr is a pipe or a file, readable text on a terminal; the
context fields (request id, phase, snapshot) reach every record logged inside their block;
the API answers a request id in X-Request-ID (its own or the client's, if well-formed)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from tests.helpers import ROOT, api_client

SCRIPT = """
import logging
from service import logs
logs.setup("trainer")
log = logging.getLogger("modx.test")
with logs.context(phase=3, snapshot=2):
    log.info("training %s", "now", extra={"step": 7})
try:
    1 / 0
except ZeroDivisionError:
    log.exception("it failed")
"""


def run(stderr) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", SCRIPT], stderr=stderr, env=env, check=True, timeout=60)


def test_json_lines_off_a_terminal(tmp_path):
    out = tmp_path / "trainer.log"
    with open(out, "w") as f:
        run(f)
    first, second = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["role"] == "trainer" and first["level"] == "info" and first["logger"] == "modx.test"
    assert first["message"] == "training now" and first["phase"] == 3 and first["snapshot"] == 2
    assert first["step"] == 7 and first["ts"].endswith("+00:00")
    assert "phase" not in second and "ZeroDivisionError" in second["exc"] and second["level"] == "error"


def test_readable_text_on_a_terminal():
    leader, follower = pty.openpty()
    try:
        run(follower)
        os.close(follower)
        follower = None
        text = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            text += chunk
    finally:
        os.close(leader)
        if follower is not None:
            os.close(follower)
    lines = text.decode().splitlines()
    assert " trainer INFO modx.test: training now" in lines[0] and "phase=3" in lines[0] and "step=7" in lines[0]
    assert not lines[0].startswith("{") and "ZeroDivisionError" in text.decode()


def test_every_answer_carries_a_request_id(settings):
    with api_client(settings) as client:
        given = client.get("/v1/phases", headers={"X-Request-ID": "client-id.1"})
        made = client.get("/v1/phases", headers={"X-Request-ID": "not ok: spaces"})
        refused = client.get("/v1/phases", headers={"Authorization": "Bearer nope"})
    assert given.headers["x-request-id"] == "client-id.1"
    assert made.headers["x-request-id"] != "not ok: spaces" and len(made.headers["x-request-id"]) == 32
    assert refused.status_code == 401 and len(refused.headers["x-request-id"]) == 32  # errors too
