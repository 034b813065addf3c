"""Redis coordination: known pair ids, the phase registry, snapshots, the serving pointer,
shared metric counters and seal requests. Disk holds the truth; everything here can be
rebuilt from the data directory (`rebuild_from_disk`).

    modx:ids                 set     every pair id written to a phase buffer
    modx:phases              hash    phase -> JSON {phase, status, n, n_train, n_probe, opened, sealed, ...}
    modx:snapshots           hash    version -> JSON snapshot record (+ status)
    modx:serving             string  JSON {"snapshot": v, "index": v}
    modx:metrics:<name>      string  counters shared across processes (INCRBYFLOAT)
    modx:seal:requests       list    JSON {"id", "at"}: POST /v1/phases/seal -> the consumer
    modx:seal:result:<id>    list    the consumer's answer to one request (expires)
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import redis

from service import buffer
from trainer.atomic import read_json

log = logging.getLogger("modx.registry")

PREFIX = "modx:"
RESULT_TTL_S = 300
CHUNK = 10_000


def _chunks(items: Sequence[str], n: int = CHUNK) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class Registry:
    def __init__(self, client: redis.Redis, prefix: str = PREFIX):
        self.r, self.prefix = client, prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = PREFIX) -> "Registry":
        return cls(redis.Redis.from_url(url, decode_responses=True), prefix)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def close(self) -> None:
        self.r.close()

    def ping(self) -> bool:
        return bool(self.r.ping())

    # ------------------------------------------------------------ pair ids

    def known(self, ids: Sequence[str]) -> list[bool]:
        """For each id, whether it is already in a phase buffer."""
        if not ids:
            return []
        return [bool(x) for x in self.r.smismember(self.key("ids"), list(ids))]

    def add_ids(self, ids: Sequence[str]) -> None:
        for chunk in _chunks(list(ids)):
            self.r.sadd(self.key("ids"), *chunk)

    def n_ids(self) -> int:
        return self.r.scard(self.key("ids"))

    # ------------------------------------------------------------ phases

    def phases(self) -> dict[int, dict]:
        raw = self.r.hgetall(self.key("phases"))
        return {int(k): json.loads(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    def phase(self, n: int) -> dict | None:
        raw = self.r.hget(self.key("phases"), str(n))
        return json.loads(raw) if raw else None

    def record_written(self, ids: Sequence[str], open_phase: dict, sealed: Sequence[dict] = ()) -> None:
        """After an fsynced batch: its ids, the phases it sealed and the open phase, in one transaction."""
        pipe = self.r.pipeline(transaction=True)
        for chunk in _chunks(list(ids)):
            pipe.sadd(self.key("ids"), *chunk)
        for record in [*sealed, open_phase]:
            pipe.hset(self.key("phases"), str(record["phase"]), json.dumps(record))
        pipe.execute()

    def register_sealed(self, record: dict, open_phase: dict | None = None) -> None:
        """A phase whose manifest is on disk: its record (and the new open phase), atomically."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.key("phases"), str(record["phase"]), json.dumps(record))
        if open_phase is not None:
            pipe.hset(self.key("phases"), str(open_phase["phase"]), json.dumps(open_phase))
        pipe.execute()

    def set_phase_status(self, data_dir: str | Path, phase: int, status: str, **extra) -> dict:
        """training / trained / failed: status.json on disk first, then the registry."""
        buffer.write_phase_status(data_dir, phase, status, **extra)
        record = buffer.phase_info(data_dir, phase).to_dict()
        self.r.hset(self.key("phases"), str(phase), json.dumps(record))
        return record

    # ------------------------------------------------------------ snapshots and serving

    def put_snapshot(self, version: int, record: dict) -> None:
        self.r.hset(self.key("snapshots"), str(version), json.dumps(record))

    def snapshots(self) -> dict[int, dict]:
        raw = self.r.hgetall(self.key("snapshots"))
        return {int(k): json.loads(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    def snapshot(self, version: int) -> dict | None:
        raw = self.r.hget(self.key("snapshots"), str(version))
        return json.loads(raw) if raw else None

    def set_serving(self, snapshot: int, index: int | None) -> None:
        self.r.set(self.key("serving"), json.dumps({"snapshot": snapshot, "index": index}))

    def serving(self) -> dict | None:
        raw = self.r.get(self.key("serving"))
        return json.loads(raw) if raw else None

    # ------------------------------------------------------------ shared metrics

    def incr(self, name: str, by: float = 1) -> None:
        self.r.incrbyfloat(self.key("metrics", name), by)

    def add_counters(self, counts: dict[str, float]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for name, by in counts.items():
            if by:
                pipe.incrbyfloat(self.key("metrics", name), by)
        pipe.execute()

    def set_gauge(self, name: str, value: float) -> None:
        self.r.set(self.key("metrics", name), value)

    def counters(self) -> dict[str, float]:
        keys = sorted(self.r.scan_iter(match=self.key("metrics", "*"), count=1000))
        values = self.r.mget(keys) if keys else []
        start = len(self.key("metrics", ""))
        return {k[start:]: float(v) for k, v in zip(keys, values) if v is not None}

    # ------------------------------------------------------------ seal requests

    def request_seal(self) -> str:
        request_id = uuid.uuid4().hex
        self.r.rpush(self.key("seal", "requests"), json.dumps({"id": request_id}))
        return request_id

    def take_seal_requests(self) -> list[str]:
        """Every pending request id, removed from the queue."""
        pipe = self.r.pipeline(transaction=True)
        pipe.lrange(self.key("seal", "requests"), 0, -1)
        pipe.delete(self.key("seal", "requests"))
        raw, _ = pipe.execute()
        return [json.loads(x)["id"] for x in raw]

    def answer_seal(self, request_id: str, result: dict) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.rpush(self.key("seal", "result", request_id), json.dumps(result))
        pipe.expire(self.key("seal", "result", request_id), RESULT_TTL_S)
        pipe.execute()

    def wait_seal(self, request_id: str, timeout_s: float) -> dict | None:
        """The consumer's answer, or None if it did not come within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            # short blocking pops: the client's socket timeout (5 s by default) must not fire first
            got = self.r.blpop([self.key("seal", "result", request_id)], timeout=min(left, 1.0))
            if got:
                return json.loads(got[1])
        return None

    # ------------------------------------------------------------ rebuild

    def is_empty(self) -> bool:
        return not self.r.exists(self.key("ids"), self.key("phases"), self.key("snapshots"), self.key("serving"))

    def ensure(self, data_dir: str | Path) -> bool:
        """Rebuild from disk when Redis holds nothing (a fresh or flushed Redis); True if it did."""
        if not self.is_empty():
            return False
        self.rebuild_from_disk(data_dir)
        return True

    def rebuild_from_disk(self, data_dir: str | Path) -> dict:
        """Upsert everything the data directory knows: ids, phases, snapshots, serving."""
        data_dir = Path(data_dir)
        phases = buffer.list_phases(data_dir)
        ids = [r.id for p in phases for r in buffer.read_records(data_dir, p.phase)]
        self.add_ids(ids)
        for info in phases:
            self.r.hset(self.key("phases"), str(info.phase), json.dumps(info.to_dict()))
        snapshots = disk_snapshots(data_dir)
        for version, record in snapshots.items():
            self.put_snapshot(version, record)
        serving = disk_serving(data_dir, snapshots)
        if serving is not None and self.serving() is None:
            self.set_serving(**serving)
        summary = {"ids": len(ids), "phases": len(phases), "snapshots": len(snapshots), "serving": serving}
        log.info("registry rebuilt from %s: %s", data_dir, summary)
        return summary


def disk_snapshots(data_dir: Path) -> dict[int, dict]:
    """snapshots/v*/snapshot.json, with the guard's status from recall.json when there is one."""
    out = {}
    for path in sorted((data_dir / "snapshots").glob("v[0-9]*/snapshot.json")):
        record = read_json(path) or {}
        guard = read_json(path.parent / "recall.json") or {}
        if "status" in guard:
            record["status"] = guard["status"]
        out[int(path.parent.name[1:])] = record
    return out


def disk_serving(data_dir: Path, snapshots: dict[int, dict]) -> dict | None:
    """The pointer to restore: serving.json if a worker wrote one, else the newest snapshot
    not rejected by the guard and the newest published index."""
    saved = read_json(data_dir / "serving.json")
    if saved is not None:
        return {"snapshot": saved["snapshot"], "index": saved.get("index")}
    ok = [v for v, rec in snapshots.items() if rec.get("status", "serving") != "rejected"]
    if not ok:
        return None
    indexes = sorted(int(p.parent.name[1:]) for p in (data_dir / "indexes").glob("v[0-9]*/index.json"))
    return {"snapshot": max(ok), "index": indexes[-1] if indexes else None}
