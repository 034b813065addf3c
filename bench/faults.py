"""Fault injection against the whole stack: `modx up` (every role its own process) on a
small loop-mounted data disk, pairs streamed through the API while a search loop runs, and
a driver that injects, at random moments: kill -9 of consumer, trainer, indexer and API;
Redis FLUSHALL and a Redis restart; a full data disk, then space freed; a read-only data
directory for a while. Then it checks: every acknowledged id in exactly one phase buffer,
every sealed phase trained to an accepted or rejected snapshot (none failed), the
statuses those of a run without faults, no 5xx from search (connection refused only
while the API is down), and how long each fault took to recover from.

    sudo nice -n 10 python -m bench.faults --preset full      # 10k pairs, 100 kills
    python -m bench.faults --preset small                      # the suite's version

Disk faults need root (mount -o loop); without it they are skipped and the report says so.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from PIL import Image

from bench import loopfs
from bench.common import finish, machine
from service import buffer, status
from service.infra import free_port, redis_argv, redis_ready, stop_process
from trainer import layout

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("consumer", "trainer", "indexer", "api")
KILL_ORDER = ("consumer", "trainer", "indexer", "consumer", "trainer", "indexer", "api")  # the API restarts slowest
PRESETS = {
    "full": dict(pairs=10_000, kills=104, phase_size=2000, rate=60.0, disk_mb=1024, settle_s=1200),
    "small": dict(pairs=1000, kills=10, phase_size=500, rate=100.0, disk_mb=160, settle_s=480, disk_hold_s=5.0),
}


def png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256)).save(buf, format="PNG")
    return buf.getvalue()


def pair(i: int) -> dict:
    import base64

    return {
        "id": f"f{i:06d}",
        "text": f"square number {i} of shade {i % 17}",
        "image": base64.b64encode(png(i)).decode(),
        "metadata": {"n": i},
    }


@dataclass
class Log:
    """What the threads saw, with times relative to t0 (seconds)."""

    t0: float = field(default_factory=time.monotonic)
    acked: set = field(default_factory=set)
    writes: dict = field(default_factory=dict)  # status or error -> count
    searches: dict = field(default_factory=dict)
    refused_at: list = field(default_factory=list)  # search connection errors
    search_5xx: list = field(default_factory=list)
    faults: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def count(self, table: dict, key) -> None:
        with self.lock:
            table[key] = table.get(key, 0) + 1


class Stack:
    """`modx up` with our own redis-server (so it can be flushed and restarted)."""

    def __init__(self, work: Path, data_dir: Path, env_extra: dict):
        self.work, self.data_dir = work, data_dir
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.redis_port, self.api_port = free_port(), free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.redis_proc = None
        self.start_redis()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODX_")}
        env.update(MODX_REDIS_URL=self.redis_url, MODX_LOG_DIR=str(self.logs), **env_extra)
        out = open(work / "up.log", "ab")
        self.up = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "up", "--port", str(self.api_port), "--data-dir", str(data_dir)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while "modx is up" not in (work / "up.log").read_text(errors="replace"):
            if self.up.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("modx up did not start:\n" + (work / "up.log").read_text()[-3000:])
            time.sleep(0.5)
        self.key = layout.admin_key_file(data_dir).read_text().strip()
        # "modx is up" means /healthz; search answers 503 by design until CLIP_0 is indexed
        if wait_until(self.ready, timeout_s=max(1.0, deadline - time.monotonic())) is None:
            raise RuntimeError("the API did not become ready:\n" + (work / "up.log").read_text()[-3000:])

    def ready(self) -> bool:
        return httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200

    def start_redis(self) -> None:
        # not service.infra.start_process: its PDEATHSIG would stop Redis with the thread that restarted it
        with open(self.logs / "redis.log", "ab") as out:
            self.redis_proc = subprocess.Popen(
                redis_argv(self.redis_port, self.logs), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 15
        while not redis_ready(self.redis_url):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def restart_redis(self) -> None:
        self.redis_proc.kill()
        self.redis_proc.wait()
        self.start_redis()

    def roles(self) -> dict[str, int]:
        """role -> pid of the role processes `modx up` runs now."""
        out = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.up.pid and b"service.cli" in argv:
                role = argv[argv.index(b"service.cli") + 1].decode()
                out[role] = int(pid)
        return out

    def client(self, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=timeout)

    def stop(self) -> dict:
        t0 = time.monotonic()
        self.up.send_signal(signal.SIGINT)
        try:
            code = self.up.wait(300)
        except subprocess.TimeoutExpired:
            self.up.send_signal(signal.SIGINT)  # a second Ctrl-C abandons what is left
            code = self.up.wait(60)
        stop_process(self.redis_proc)
        text = (self.work / "up.log").read_text(errors="replace")
        return {
            "exit_code": code,
            "stop_s": round(time.monotonic() - t0, 1),
            "stopped": "modx stopped" in text,
            "abandoned": "abandoned" in text,
        }


def writer(stack: Stack, log: Log, n: int, rate: float, stop: threading.Event, batch: int = 20) -> None:
    """POST every pair, in batches, at about `rate` pairs/s; retry a batch (same ids) until a 202."""
    with stack.client() as client:
        for start in range(0, n, batch):
            body = {"pairs": [pair(i) for i in range(start, min(n, start + batch))]}
            while not stop.is_set():
                try:
                    r = client.post("/v1/pairs", json=body)
                    log.count(log.writes, r.status_code)
                    if r.status_code == 202:
                        with log.lock:
                            log.acked.update(a["id"] for a in r.json()["accepted"])
                        break
                    time.sleep(min(2.0, float(r.headers.get("Retry-After", 0.5))))
                except httpx.HTTPError as e:
                    log.count(log.writes, type(e).__name__)
                    time.sleep(0.3)
            time.sleep(batch / rate)


def searcher(stack: Stack, log: Log, stop: threading.Event, interval_s: float = 0.2) -> None:
    with stack.client(timeout=30) as client:
        while not stop.is_set():
            try:
                r = client.post("/v1/search", json={"text": f"square number {random.randrange(10_000)}", "k": 5})
                log.count(log.searches, r.status_code)
                if r.status_code >= 500:
                    with log.lock:
                        log.search_5xx.append((log.now(), r.status_code, r.text[:300]))
            except httpx.HTTPError as e:
                log.count(log.searches, type(e).__name__)
                with log.lock:
                    log.refused_at.append(log.now())
            stop.wait(interval_s)


def wait_until(condition, timeout_s: float, interval_s: float = 0.2) -> float | None:
    """Seconds until `condition()` held, or None after `timeout_s`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            if condition():
                return round(time.monotonic() - t0, 2)
        except Exception:
            pass
        time.sleep(interval_s)
    return None


def buffered_ids(data_dir: Path) -> list[str]:
    return [r.id for n in layout.phase_numbers(data_dir) for r in buffer.read_records(data_dir, n)]


def api_ready(stack: Stack) -> bool:
    return httpx.get(f"{stack.url}/readyz", timeout=2).status_code == 200


def epoch_set(stack: Stack) -> bool:
    with redis.Redis.from_url(stack.redis_url, socket_timeout=1) as r:
        return bool(r.exists("modx:epoch"))


# ---------------------------------------------------------------- the faults


KILL_LOCKS = {role: threading.Lock() for role in ROLES}


def kill(stack: Stack, log: Log, role: str) -> dict:
    """kill -9 of one role, once it runs (kills of one role never overlap); the time until it
    is back (the API: until /readyz answers 200)."""
    with KILL_LOCKS[role]:
        return _kill(stack, log, role)


def _kill(stack: Stack, log: Log, role: str) -> dict:
    wait_until(lambda: stack.roles().get(role), 60)  # still restarting after the last kill: wait for it
    before = stack.roles().get(role)
    event = {"fault": f"kill -9 {role}", "at": log.now()}
    if before is None:
        return {**event, "skipped": "not running (restarting)"}
    os.kill(before, signal.SIGKILL)
    back = wait_until(lambda: stack.roles().get(role) not in (None, before), 120)
    event["process_back_s"] = back
    if role == "api":
        event["recover_s"] = wait_until(lambda: api_ready(stack), 180)
    else:
        event["recover_s"] = back
    return event


def redis_fault(stack: Stack, log: Log, kind: str) -> dict:
    event = {"fault": f"redis {kind}", "at": log.now()}
    if kind == "flushall":
        with redis.Redis.from_url(stack.redis_url) as r:
            r.flushall()
    else:
        stack.restart_redis()
    event["recover_s"] = wait_until(lambda: epoch_set(stack), 120)  # some role rebuilt it from disk
    return event


def disk_fault(stack: Stack, log: Log, fs: loopfs.LoopFS, kind: str, hold_s: float) -> dict:
    """Fill the disk (or remount it read-only) for `hold_s`, then free it; recovery is the
    time until the consumer has written every pair acknowledged before the disk came back."""
    event = {"fault": "disk full" if kind == "full" else "read-only data dir", "at": log.now()}
    if kind == "full":
        event["filled_bytes"] = fs.fill()
    else:
        event["remount_s"] = round(fs.read_only(timeout_s=60), 2)
    with redis.Redis.from_url(stack.redis_url, decode_responses=True, socket_timeout=2) as r:
        event["reported_s"] = wait_until(lambda: r.get("modx:fault:consumer"), hold_s)
        event["reason"] = r.get("modx:fault:consumer")
        time.sleep(max(0.0, hold_s - (event["reported_s"] or hold_s)))
        fs.free() if kind == "full" else fs.read_write(timeout_s=60)
        t_back = time.monotonic()
        with log.lock:
            acked = set(log.acked)
        caught_up = wait_until(lambda: acked <= set(buffered_ids(stack.data_dir)), 300, 1.0)
        event["fault_cleared_s"] = wait_until(lambda: not r.get("modx:fault:consumer"), 120)
    event["recover_s"] = caught_up if caught_up is not None else None
    event["freed_at"] = round(t_back - log.t0, 2)
    return event


def schedule(args, fs) -> list[tuple[float, str]]:
    """(fraction of the pairs acknowledged, fault), at random points of the stream; disk faults
    never overlap. Progress, not time, paces them: while the API is down nothing moves on."""
    rng = random.Random(args.seed)
    events = [(rng.uniform(0.02, 0.97), f"kill:{KILL_ORDER[i % len(KILL_ORDER)]}") for i in range(args.kills)]
    events += [(rng.uniform(0.1, 0.9), "redis:flushall"), (rng.uniform(0.1, 0.9), "redis:restart")]
    if fs is not None:
        events += [(0.3, "disk:full"), (0.65, "disk:read_only")]
    return sorted(events)


def inject(stack: Stack, log: Log, args, fs, fault: str) -> None:
    kind, what = fault.split(":")
    try:
        if kind == "kill":
            event = kill(stack, log, what)
        elif kind == "redis":
            event = redis_fault(stack, log, what)
        else:
            event = disk_fault(stack, log, fs, what, args.disk_hold_s)
    except Exception as e:  # the harness reports, it does not stop
        event = {"fault": fault, "at": log.now(), "error": repr(e)}
    print(f"[{event['at']:7.1f}s] {event['fault']}: recovered in {event.get('recover_s')}s", flush=True)
    with log.lock:
        log.faults.append(event)


def driver(stack: Stack, log: Log, args, fs, stop: threading.Event) -> None:
    """Kills run in their own threads (each times its recovery); the rest one after another."""
    running: list[threading.Thread] = []
    for frac, fault in schedule(args, fs):
        while len(log.acked) < frac * args.pairs and not stop.is_set():
            time.sleep(0.05)
        if stop.is_set():
            break
        if fault.startswith("kill"):
            t = threading.Thread(target=inject, args=(stack, log, args, fs, fault), daemon=True)
            t.start()
            running.append(t)
            time.sleep(0.2)
        else:
            inject(stack, log, args, fs, fault)
    for t in running:
        t.join(600)


# ---------------------------------------------------------------- settle and check


def settle(stack: Stack, log: Log, timeout_s: float) -> dict:
    """Every acknowledged pair written, the rest sealed, every sealed phase trained, the newest
    accepted snapshot indexed and served."""
    data_dir, t0 = stack.data_dir, time.monotonic()
    out = {"written_s": wait_until(lambda: log.acked <= set(buffered_ids(data_dir)), timeout_s, 1.0)}
    with stack.client(timeout=60) as client:
        for _ in range(30):
            try:
                r = client.post("/v1/phases/seal")
            except httpx.HTTPError:
                time.sleep(2)
                continue
            if r.status_code in (200, 409):
                break
            time.sleep(float(r.headers.get("Retry-After", 2)))

    def trained() -> bool:
        phases = buffer.list_phases(data_dir)
        return all(p.status in ("open", "trained", "failed") for p in phases) and phases[-1].status != "sealed"

    out["trained_s"] = wait_until(trained, timeout_s - (time.monotonic() - t0), 2.0)

    def served() -> bool:
        newest = status.accepted(data_dir)
        return (status.read_serving(data_dir) or {}).get("index") == newest and api_ready(stack)

    out["served_s"] = wait_until(served, max(60.0, timeout_s - (time.monotonic() - t0)), 2.0)
    return out


def check(stack: Stack, log: Log) -> dict:
    data_dir = stack.data_dir
    ids = buffered_ids(data_dir)
    written = set(ids)
    phases = buffer.list_phases(data_dir)
    snapshots = {v: (status.read_status(data_dir, v) or {}).get("status") for v in layout.snapshot_numbers(data_dir)}
    sealed = [p for p in phases if p.status != "open"]
    down = api_down_windows(log)
    refused_outside = [t for t in log.refused_at if not any(a <= t <= b for a, b in down)]
    return {
        "acknowledged": len(log.acked),
        "buffered": len(ids),
        "lost": len(log.acked - written),
        "duplicated": len(ids) - len(written),
        "unacknowledged_but_buffered": len(written - log.acked),  # a 5xx/timeout whose pairs got in anyway
        "phases": [
            {
                "phase": p.phase,
                "status": p.status,
                "n": p.n,
                "snapshot_status": (p.status_record or {}).get("snapshot_status"),
                "error": (p.status_record or {}).get("error"),
            }
            for p in phases
        ],
        "phases_failed": sum(p.status == "failed" for p in phases),
        "phases_not_trained": sum(p.status != "trained" for p in sealed),
        "snapshot_statuses": snapshots,
        "search": dict(log.searches),
        "search_5xx": len(log.search_5xx),
        "search_5xx_samples": log.search_5xx[:5],
        "search_refused": len(log.refused_at),
        "search_refused_outside_api_down": len(refused_outside),
        "writes": dict(log.writes),
    }


def api_down_windows(log: Log, slack_s: float = 2.0) -> list[tuple[float, float]]:
    """[kill, ready] of every API kill (with slack), when connection refused is expected."""
    out = []
    for e in log.faults:
        if e["fault"] == "kill -9 api" and "skipped" not in e:
            out.append((e["at"] - slack_s, e["at"] + (e.get("recover_s") or 600) + slack_s))
    return out


def expected_statuses(n_snapshots: int) -> dict[int, str]:
    """A run without faults with the guard off: every snapshot accepted, all but the newest superseded."""
    return {v: "accepted" if v == n_snapshots - 1 else "superseded" for v in range(n_snapshots)}


def recovery_summary(faults: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for e in faults:
        kind = e["fault"]
        row = out.setdefault(kind, {"n": 0, "recovered": 0, "times": []})
        row["n"] += 1
        if e.get("recover_s") is not None:
            row["recovered"] += 1
            row["times"].append(e["recover_s"])
    for row in out.values():
        times = sorted(row.pop("times"))
        row.update(median_s=times[len(times) // 2] if times else None, max_s=times[-1] if times else None)
    return out


# ---------------------------------------------------------------- a run


def run(args, faults_on: bool = True) -> dict:
    work = Path(tempfile.mkdtemp(prefix="modx-faults-", dir=args.work))
    why_not = loopfs.available() if faults_on else "no faults in this run"
    # a loop filesystem when disk faults are possible, else nothing (fs is None)
    with contextlib.nullcontext() if why_not else loopfs.loop_fs(work / "disk", args.disk_mb) as fs:
        data_dir = (fs.mount if fs else work) / "data"
        env = {
            "MODX_MODEL": "modx-tiny",
            "MODX_TRAIN_EPOCHS": str(args.epochs),
            "MODX_PHASE_SIZE": str(args.phase_size),
            "MODX_PHASE_MAX_AGE_S": "86400",
            "MODX_WORKER_POLL_S": "0.5",
            "MODX_INDEX_POLL_S": "1",
            "MODX_MIN_FREE_BYTES": str(8 << 20),
            "MODX_CONSUMER_RETRY_CAP_S": "2",
            "MODX_TRAIN_RETRY_FIRST_S": "2",
            "MODX_TRAIN_RETRY_CAP_S": "20",
            "MODX_SEAL_MIN_INTERVAL_S": "1",
            "MODX_SEAL_WAIT_S": "10",
        }
        stack = Stack(work, data_dir, env)
        log, stop = Log(), threading.Event()
        threads = [
            threading.Thread(target=writer, args=(stack, log, args.pairs, args.rate, stop), daemon=True),
            threading.Thread(target=searcher, args=(stack, log, stop), daemon=True),
        ]
        if faults_on:
            threads.append(threading.Thread(target=driver, args=(stack, log, args, fs, stop), daemon=True))
        try:
            for t in threads:
                t.start()
            threads[0].join()  # every pair acknowledged
            for t in threads[2:]:
                t.join()  # the last fault recovered
            streamed_s = log.now()
            settled = settle(stack, log, args.settle_s)
            time.sleep(2)
            stop.set()
            threads[1].join(60)
            result = {
                "streamed_s": streamed_s,
                "settle": settled,
                **check(stack, log),
                "faults": log.faults,
                "recovery": recovery_summary(log.faults),
                "disk_faults": why_not or "on",
            }
        finally:
            stop.set()
            result_stop = stack.stop()
        result["modx_up_stop"] = result_stop
    return result


def verdict(result: dict, baseline: dict | None) -> dict:
    n = len(result["snapshot_statuses"])
    reference = baseline["snapshot_statuses"] if baseline else expected_statuses(n)
    same = {int(k): v for k, v in reference.items()} == {int(k): v for k, v in result["snapshot_statuses"].items()}
    kills = sum(1 for e in result["faults"] if e["fault"].startswith("kill") and e.get("process_back_s") is not None)
    return {
        "lost": result["lost"],
        "duplicated": result["duplicated"],
        "search_5xx": result["search_5xx"],
        "phases_failed": result["phases_failed"],
        "phases_not_trained": result["phases_not_trained"],
        "statuses_match_no_fault_run": same,
        "kills": kills,
        "refused_outside_api_down": result["search_refused_outside_api_down"],
        "ok": result["lost"] == 0
        and result["duplicated"] == 0
        and result["search_5xx"] == 0
        and result["phases_failed"] == 0
        and result["phases_not_trained"] == 0
        and same,
    }


def table(result: dict) -> str:
    v = result["verdict"]
    lines = [
        f"acknowledged {result['acknowledged']}, buffered {result['buffered']}: lost {v['lost']}, "
        f"duplicated {v['duplicated']}",
        f"phases: {[(p['phase'], p['status'], p['n']) for p in result['phases']]}",
        f"snapshots: {result['snapshot_statuses']} (match a run without faults: {v['statuses_match_no_fault_run']})",
        f"search: {result['search']} (5xx {v['search_5xx']}, refused outside API downtime "
        f"{v['refused_outside_api_down']})",
        f"kills: {v['kills']}; disk faults: {result['disk_faults']}",
        "recovery (s):",
    ]
    for kind, row in result["recovery"].items():
        lines.append(
            f"  {kind:24s} n={row['n']:3d} recovered={row['recovered']:3d} median={row['median_s']} max={row['max_s']}"
        )
    lines.append(f"OK: {v['ok']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="full")
    p.add_argument("--pairs", type=int)
    p.add_argument("--kills", type=int)
    p.add_argument("--phase-size", type=int)
    p.add_argument("--rate", type=float, help="pairs/s the writer aims at")
    p.add_argument("--disk-mb", type=int)
    p.add_argument("--settle-s", type=float)
    p.add_argument("--disk-hold-s", type=float, help="how long a disk fault lasts (default 15 s)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", action="store_true", help="also run without faults and compare the statuses")
    p.add_argument("--work", default=None, help="where the temporary stacks live")
    p.add_argument("--out", default=None, help="result JSON (default bench/results/faults/<preset>.json)")
    args = p.parse_args(argv)
    for name, value in {"disk_hold_s": 15.0, **PRESETS[args.preset]}.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    out = args.out or ROOT / "bench" / "results" / "faults" / f"{args.preset}.json"
    result = {
        "benchmark": "faults",
        "preset": args.preset,
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work")},
        **run(args),
    }
    baseline = None
    if args.baseline:  # after the faulted run, so its figures exist even if this one is cut short
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).with_suffix(".partial.json").write_text(json.dumps(result, indent=1, default=str))
        baseline = run(argparse.Namespace(**{**vars(args), "rate": args.rate * 4}), faults_on=False)
        print("baseline (no faults):", baseline["snapshot_statuses"], flush=True)
        result["baseline"] = {k: baseline[k] for k in ("snapshot_statuses", "phases", "lost", "duplicated")}
    result["verdict"] = verdict(result, baseline)
    return finish(result, "bench.faults", argv, table(result), out)


if __name__ == "__main__":
    main()
