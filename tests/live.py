"""A live modx stack for the client-side tests: the API (uvicorn on a free port), consumer,
trainer and indexer as processes, on the session's Tansu broker with private topics and a
Redis database of their own (db 1: other tests flush db 0). Tiny model, fast polls."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.infra import free_port, start_process, stop_process
from service.settings import Settings
from tests.helpers import make_key, private_settings, settings_env

ROLES = ("consumer", "trainer", "indexer")


@dataclass
class Live:
    url: str
    key: str
    settings: Settings
    data_dir: Path

    def env(self) -> dict[str, str]:
        """What a client-side `modx` verb needs to reach this stack (and its limits)."""
        return {"MODX_URL": self.url, "MODX_API_KEY": self.key, "MODX_DATA_DIR": str(self.data_dir)}


@contextmanager
def live_stack(kafka: str, redis_server: str, data_dir: Path, name: str):
    redis_url = redis_server.rsplit("/", 1)[0] + "/1"
    import redis

    with redis.Redis.from_url(redis_url) as r:
        r.flushdb()
    settings = private_settings(
        data_dir,
        kafka,
        redis_url,
        name,
        consumer_poll_ms=100,
        seal_min_interval_s=0,
        seal_wait_s=20,
        worker_poll_s=0.3,
        index_poll_s=0.3,
        serving_poll_s=0.2,
        recipe={"epochs": 1, "batch_size": 16},
    )
    env = settings_env(settings)
    port = free_port()
    argvs = {role: [sys.executable, "-m", "service.cli", role] for role in ROLES}
    argvs["api"] = [sys.executable, "-m", "service.cli", "api", "--port", str(port)]
    data_dir.mkdir(parents=True, exist_ok=True)
    procs = {role: start_process(argv, data_dir / f"{role}.log", env) for role, argv in argvs.items()}
    live = Live(f"http://127.0.0.1:{port}", make_key(settings, "admin"), settings, data_dir)
    try:
        _wait_ready(live, procs)
        yield live
    finally:
        for proc in procs.values():
            stop_process(proc, timeout_s=10)


def _wait_ready(live: Live, procs, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dead = [role for role, p in procs.items() if p.poll() is not None]
        assert not dead, f"{dead} exited: " + (live.data_dir / f"{dead[0]}.log").read_text()[-3000:]
        try:
            if httpx.get(live.url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("the live stack was not ready in time: " + (live.data_dir / "api.log").read_text()[-3000:])
