"""Sustained ingest: POST /v1/pairs -> Kafka (acks=all) -> consumer -> fsynced phase buffer.

    python -m bench.ingest --preset cpu --out results/ingest-cpu.json
    python -m bench.ingest --preset smoke
    python -m bench.ingest --pairs 50000 --batch 128 --concurrency 16 --api-workers 2

Starts a Tansu broker and a private redis-server (service.infra), `modx api` (one process
per --api-workers, each on its own port; client threads are spread over them round-robin)
and one `modx consumer`, each its own process with a temporary MODX_DATA_DIR. N pairs with
unique ids and ~10 KB noise PNGs are generated and JSON-encoded up front, so the client
threads (httpx) only send bytes. After a warm-up request per API process (producer
connected, consumer in its group), the clock starts and the threads POST every batch.

Reports: pairs/s acknowledged (a 202 means every pair is in Kafka with acks=all), p50/p99
ack latency per request, pairs/s end to end until every pair is fsynced in the phase
buffers (GET /v1/phases counts, summed over phases; Redis is told only after the fsync),
receive -> fsync latency per pair (the records' received_at / written_at), and the CPU
seconds each process spent per 1000 pairs. Every pair is checked on disk afterwards.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import queue
import resource
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import httpx
import numpy as np
from PIL import Image

from bench.common import apply_preset, finish, machine
from service import buffer
from service.infra import Server, free_port, kafka_broker, redis_server, start_process, stop_process
from service.ingest import ensure_topics
from service.stack import admin_key
from trainer import layout

PRESETS = {
    "smoke": dict(pairs=200, batch=20, concurrency=2, api_workers=1),
    "cpu": dict(pairs=20_000, batch=64, concurrency=8, api_workers=1),
}
TARGET_PAIRS_PER_S = 1000
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the stack (also used by bench.freshness)


@dataclass
class Stack:
    urls: list[str]
    env: dict[str, str]
    logs: Path
    procs: dict[str, object] = field(default_factory=dict)  # name -> Popen (roles and servers)
    headers: dict[str, str] = field(default_factory=dict)  # an admin key, as `modx up` makes it

    def client(self, i: int = 0, timeout_s: float = 60.0) -> httpx.Client:
        """A client of API `i` that sends the admin key."""
        return httpx.Client(base_url=self.urls[i], timeout=timeout_s, headers=self.headers)

    def cpu_seconds(self) -> dict[str, float]:
        """user + system CPU seconds of each process so far (Linux /proc)."""
        out = {}
        for name, proc in self.procs.items():
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                out[name] = (int(fields[11]) + int(fields[12])) / CLK_TCK
            except (OSError, IndexError, ValueError):
                out[name] = float("nan")
        return out

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, n: int = 3000) -> str:
        path = self.logs / f"{name.split('#')[0]}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""


def wait_healthy(stack: Stack, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    for url in stack.urls:
        while True:
            stack.check_alive()
            try:
                if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer /healthz in {timeout_s:.0f}s:\n{stack.log_tail('api')}")
            time.sleep(0.2)


@contextmanager
def service_stack(
    data_dir: Path, roles: Sequence[str], env: dict[str, str], api_workers: int = 1, partitions: int = 1
) -> Iterator[Stack]:
    """Tansu + redis-server + `python -m service.cli ROLE` per role (+ `api_workers` APIs); all
    stopped on the way out, roles first, servers last."""
    logs = layout.logs_dir(data_dir)
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as exit_stack:
        kafka: Server = exit_stack.enter_context(kafka_broker(log_dir=logs))
        redis: Server = exit_stack.enter_context(redis_server(log_dir=logs))
        env = {
            **os.environ,
            **env,
            "MODX_DATA_DIR": str(data_dir),
            "MODX_KAFKA_BOOTSTRAP": kafka.address,
            "MODX_REDIS_URL": redis.address,
            "MODX_TOPIC_PARTITIONS": str(partitions),
        }
        ensure_topics(
            kafka.address,
            [env.get("MODX_TOPIC", "modx.pairs"), env.get("MODX_DLQ_TOPIC", "modx.pairs.dlq")],
            partitions,
        )
        stack = Stack([], env, logs, {"tansu": kafka.process, "redis": redis.process})
        key_path, _ = admin_key(Path(data_dir), redis.address)
        stack.headers = {"Authorization": f"Bearer {key_path.read_text().strip()}"}
        started = []
        exit_stack.callback(lambda: [stop_process(p, timeout_s=15) for p in reversed(started)])
        argv = [sys.executable, "-m", "service.cli"]
        for role in roles:
            started.append(start_process([*argv, role], logs / f"{role}.log", env))
            stack.procs[role] = started[-1]
        for i in range(api_workers):
            port = free_port()
            started.append(start_process([*argv, "api", "--port", str(port)], logs / "api.log", env))
            stack.procs["api" if api_workers == 1 else f"api#{i}"] = started[-1]
            stack.urls.append(f"http://127.0.0.1:{port}")
        try:
            wait_healthy(stack)
            yield stack
        except Exception:  # the logs go with a temporary data dir: show their ends first
            for name in stack.procs:
                print(f"---- {name} log (end)\n{stack.log_tail(name)}", file=sys.stderr)
            raise


def buffered(client: httpx.Client) -> int:
    """Pairs written to the phase buffers (every phase, sealed or open), as Redis knows them."""
    return sum(p["n"] for p in client.get("/v1/phases").json()["phases"])


def wait_for(what: str, check, stack: Stack, timeout_s: float, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        stack.check_alive()
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def percentile(values, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if len(values) else None


def all_records(data_dir: Path) -> list[buffer.Record]:
    return [r for n in layout.phase_numbers(data_dir) for r in buffer.read_records(data_dir, n)]


# ---------------------------------------------------------------- the pairs


def noise_png(rng: np.random.Generator, target_bytes: int) -> bytes:
    """An RGB noise PNG of about `target_bytes` (noise does not compress; stored uncompressed)."""
    side = max(1, int((target_bytes / 3) ** 0.5))
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(out, format="PNG", compress_level=0)
    return out.getvalue()


def make_bodies(n: int, batch: int, image_bytes: int, tag: str, seed: int = 0) -> tuple[list, float]:
    """[(ids, JSON body)] per request, and the mean image size in bytes."""
    rng = np.random.default_rng(seed)
    bodies, sizes = [], []
    for start in range(0, n, batch):
        pairs = []
        for i in range(start, min(n, start + batch)):
            image = noise_png(rng, image_bytes)
            sizes.append(len(image))
            pairs.append(
                {
                    "id": f"{tag}-{i:07d}",
                    "text": f"pair {i}: noise of {len(image)} bytes",
                    "image": base64.b64encode(image).decode(),
                    "metadata": {"i": i},
                }
            )
        bodies.append(([p["id"] for p in pairs], json.dumps({"pairs": pairs}).encode()))
    return bodies, float(np.mean(sizes)) if sizes else 0.0


# ---------------------------------------------------------------- the clients


@dataclass
class Sent:
    start: float  # perf_counter
    latency_s: float
    status: int
    n: int
    queued: int


def post_all(urls: list[str], bodies: list[tuple[list[str], bytes]], concurrency: int, headers: dict) -> list[Sent]:
    """Post every body from `concurrency` threads (each with its own connection), as fast as acks come."""
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for item in bodies:
        todo.put(item)
    sent: list[Sent] = []
    lock = threading.Lock()

    def worker(url: str) -> None:
        headers_json = {**headers, "content-type": "application/json"}
        with httpx.Client(base_url=url, timeout=120.0, headers=headers_json) as client:
            while True:
                try:
                    ids, body = todo.get_nowait()
                except queue.Empty:
                    return
                t0 = time.perf_counter()
                try:
                    r = client.post("/v1/pairs", content=body)
                    status = r.status_code
                    queued = sum(a["status"] == "queued" for a in r.json()["accepted"]) if status == 202 else 0
                except httpx.HTTPError:
                    status, queued = 0, 0
                with lock:
                    sent.append(Sent(t0, time.perf_counter() - t0, status, len(ids), queued))

    threads = [threading.Thread(target=worker, args=(urls[i % len(urls)],)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sent


# ---------------------------------------------------------------- the run


def run(args) -> dict:
    tag = uuid.uuid4().hex[:8]
    t_gen = time.perf_counter()
    bodies, mean_image = make_bodies(args.pairs, args.batch, args.image_bytes, tag)
    print(
        f"generated {args.pairs} pairs ({mean_image:.0f} B images, {len(bodies)} requests) in "
        f"{time.perf_counter() - t_gen:.1f}s",
        flush=True,
    )
    env = {"MODX_CONSUMER_POLL_MS": str(args.consumer_poll_ms)}
    if args.phase_size:
        env["MODX_PHASE_SIZE"] = str(args.phase_size)
    with ExitStack() as cleanup:
        data_dir = Path(args.data_dir or cleanup.enter_context(tempfile.TemporaryDirectory(prefix="modx-ingest-")))
        stack = cleanup.enter_context(service_stack(data_dir, ["consumer"], env, args.api_workers, args.partitions))
        client = cleanup.enter_context(stack.client(timeout_s=30.0))
        warm, _ = make_bodies(len(stack.urls), 1, args.image_bytes, f"{tag}-warm", seed=1)
        sent = post_all(
            stack.urls, warm, len(stack.urls), stack.headers
        )  # one per API: producer connected, consumer joined
        assert all(s.status == 202 for s in sent), f"warm-up: {[s.status for s in sent]}\n{stack.log_tail('api')}"
        wait_for("the warm-up pairs", lambda: buffered(client) >= len(warm), stack, args.timeout)
        target = len(warm) + args.pairs

        cpu0, self0 = stack.cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)
        t0_wall, t0 = time.time(), time.perf_counter()
        sent = post_all(stack.urls, bodies, args.concurrency, stack.headers)
        acked_s = max(s.start + s.latency_s for s in sent) - t0
        failed = [s for s in sent if s.status != 202]
        wait_for(
            "every pair in the phase buffers",
            lambda: buffered(client) >= target - sum(s.n for s in failed),
            stack,
            args.timeout,
            interval_s=0.05,
        )
        e2e_s = time.perf_counter() - t0
        cpu1, self1 = stack.cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)

        records = [r for r in all_records(data_dir) if r.id.startswith(f"{tag}-") and "-warm-" not in r.id]
        ids = {r.id for r in records}
        lag = [buffer.epoch(r.written_at) - buffer.epoch(r.received_at) for r in records]
        last_written = max((buffer.epoch(r.written_at) for r in records), default=t0_wall) - t0_wall
        phases = client.get("/v1/phases").json()["phases"]

    cpu = {name: round(cpu1[name] - cpu0[name], 2) for name in cpu1}
    cpu["clients"] = round(self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime, 2)
    latencies = [s.latency_s for s in sent if s.status == 202]
    result = {
        "benchmark": "ingest",
        "args": vars(args),
        "pairs": args.pairs,
        "requests": len(sent),
        "mean_image_bytes": round(mean_image, 1),
        "mean_request_bytes": round(float(np.mean([len(b) for _, b in bodies])), 1),
        "acked_pairs": sum(s.n for s in sent if s.status == 202),
        "queued_pairs": sum(s.queued for s in sent),
        "failed_requests": len(failed),
        "failed_statuses": sorted({s.status for s in failed}),
        "buffered_pairs": len(ids),
        "duplicate_records": len(records) - len(ids),
        "phases": len(phases),
        "acked_s": round(acked_s, 3),
        "acked_pairs_per_s": round(args.pairs / acked_s, 1),
        "ack_latency_s": {
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "max": round(max(latencies), 4) if latencies else None,
        },
        "e2e_s": round(e2e_s, 3),
        "e2e_pairs_per_s": round(args.pairs / e2e_s, 1),
        "last_written_s": round(last_written, 3),
        "receive_to_written_s": {"p50": percentile(lag, 50), "p99": percentile(lag, 99)},
        "cpu_s": cpu,
        "cpu_ms_per_1k_pairs": {k: round(v * 1e6 / args.pairs, 1) for k, v in cpu.items()},
        "target_pairs_per_s": TARGET_PAIRS_PER_S,
        "machine": machine("cpu"),
    }
    result["machine"]["loadavg_1m_at_end"] = os.getloadavg()[0]
    return result


def table(r: dict) -> str:
    a = r["args"]
    rows = [
        ("pairs acknowledged (202) / buffered on disk", f"{r['acked_pairs']} / {r['buffered_pairs']}", str(r["pairs"])),
        ("acked pairs/s (in Kafka, acks=all)", f"{r['acked_pairs_per_s']}", f">= {r['target_pairs_per_s']}"),
        (
            "ack latency per request p50 / p99 (ms)",
            f"{r['ack_latency_s']['p50'] * 1e3:.0f} / {r['ack_latency_s']['p99'] * 1e3:.0f}",
            "",
        ),
        ("end-to-end pairs/s (all fsynced)", f"{r['e2e_pairs_per_s']}", f">= {r['target_pairs_per_s']}"),
        ("end-to-end s (last record written at)", f"{r['e2e_s']} ({r['last_written_s']})", ""),
        (
            "receive -> written per pair p50 / p99 (s)",
            f"{r['receive_to_written_s']['p50']} / {r['receive_to_written_s']['p99']}",
            "",
        ),
    ]
    rows += [(f"CPU ms per 1000 pairs: {name}", f"{ms:.0f}", "") for name, ms in r["cpu_ms_per_1k_pairs"].items()]
    head = (
        f"ingest: {r['pairs']} pairs, {r['mean_image_bytes'] / 1000:.1f} KB PNG images "
        f"({r['mean_request_bytes'] / 1e6:.2f} MB per request), batch {a['batch']}, {a['concurrency']} client "
        f"threads, {a['api_workers']} API process{'es (clients spread over them)' if a['api_workers'] > 1 else ''}, "
        f"1 consumer, {a['partitions']} partition(s), {r['machine']['cores']} cores, "
        f"load {r['machine']['loadavg_1m_at_end']:.1f} at end"
    )
    w = max(len(x[0]) for x in rows) + 2
    lines = [head, f"{'measure':<{w}}{'value':>16}{'target':>10}"]
    lines += [f"{name:<{w}}{value:>16}{target:>10}" for name, value, target in rows]
    if r["failed_requests"]:
        lines.append(f"FAILED requests: {r['failed_requests']} (statuses {r['failed_statuses']})")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--pairs", type=int)
    p.add_argument("--batch", type=int, help="pairs per request (the API takes at most 256)")
    p.add_argument("--concurrency", type=int, help="client threads, each with its own connection")
    p.add_argument("--api-workers", type=int, help="API processes, each on its own port")
    p.add_argument("--image-bytes", type=int, default=10_000, help="target PNG size")
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--phase-size", type=int, default=None, help="MODX_PHASE_SIZE (default: the service's)")
    p.add_argument("--consumer-poll-ms", type=int, default=500, help="MODX_CONSUMER_POLL_MS")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the buffers")
    p.add_argument("--data-dir", default=None, help="keep data and logs here (default: a temp dir)")
    p.add_argument("--out", default=None, help="JSON result path")
    args = p.parse_args(argv)
    apply_preset(args, PRESETS[args.preset])
    result = run(args)
    return finish(result, "bench.ingest", argv, table(result), args.out)


if __name__ == "__main__":
    main()
