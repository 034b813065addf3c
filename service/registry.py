"""Redis coordination: known pair ids, the phase registry, the cache of snapshot statuses
and of the serving pointer, shared metric counters and seal requests. Disk holds the truth;
everything here but the counters is rebuilt from the data directory (`rebuild_from_disk`).

    modx:ids                 set     every pair id written to a phase buffer
    modx:phases              hash    phase -> JSON {phase, status, n, n_train, n_probe, opened, sealed, ...}
    modx:snapshots           hash    snapshot -> JSON snapshot summary + status (cache of service.status)
    modx:serving             string  JSON {"snapshot": v, "index": v} (cache of serving.json)
    modx:epoch               string  set by the last complete rebuild: missing = flushed or new, rebuild
    modx:rebuild             string  held (with a TTL) by the role that is rebuilding
    modx:seal:pending        string  the id of the seal request the consumer has not answered yet
    modx:seal:recent         string  the id of the last new seal request (expires: the rate limit)
    modx:seal:result:<id>    string  the consumer's answer to one request (expires)
    modx:fault:<role>        string  why a role cannot do its work now, e.g. ENOSPC (expires)

Only `service.status` writes the snapshot and serving entries (disk first, then here).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import redis

from service import buffer, status

log = logging.getLogger("modx.registry")

PREFIX = "modx:"
RESULT_TTL_S = 300
REBUILD_TTL_S = 120
CHUNK = 10_000
# the rebuild's end: mark the epoch only if this rebuild still holds the lock (a FLUSHALL
# in the middle of it removed the lock, and what it wrote before the flush is gone)
MARK_EPOCH = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('set', KEYS[2], ARGV[2])
  redis.call('del', KEYS[1])
  return 1
end
return 0
"""
DEL_IF = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

QUEUED_TTL_S = 86_400  # a pair queued longer than this has lagged a day: GET then says unknown


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

    def mark_queued(self, ids: Sequence[str], ttl_s: int = QUEUED_TTL_S) -> None:
        """Ids just produced to Kafka (GET /v1/pairs/{id} says `queued` until they are buffered)."""
        pipe = self.r.pipeline(transaction=False)
        for pair_id in ids:
            pipe.set(self.key("queued", pair_id), 1, ex=ttl_s)
        pipe.execute()

    def queued(self, pair_id: str) -> bool:
        return bool(self.r.exists(self.key("queued", pair_id)))

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

    def set_phase_status(self, data_dir: str | Path, phase: int, phase_status: str, **extra) -> dict:
        """training / trained / retry / failed: status.json on disk first, then the registry."""
        buffer.write_phase_status(data_dir, phase, phase_status, **extra)
        record = buffer.phase_info(data_dir, phase).to_dict()
        try:
            self.r.hset(self.key("phases"), str(phase), json.dumps(record))
        except redis.RedisError as e:  # disk has it; `sync_sealed` repairs the cache
            log.warning("phase %d status not cached: %s", phase, e)
        return record

    def sync_sealed(self, data_dir: str | Path) -> list[int]:
        """Rewrite the sealed phases whose record here disagrees with disk; returns them."""
        cached = self.phases()
        disk = [buffer.phase_info(data_dir, n).to_dict() for n in buffer.sealed_phases(data_dir)]
        stale = [record for record in disk if cached.get(record["phase"]) != record]
        if stale:
            self.r.hset(self.key("phases"), mapping={str(r["phase"]): json.dumps(r) for r in stale})
        return [r["phase"] for r in stale]

    # ------------------------------------------------------------ snapshots and serving

    def snapshots(self) -> dict[int, dict]:
        raw = self.r.hgetall(self.key("snapshots"))
        return {int(k): json.loads(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    def snapshot(self, version: int) -> dict | None:
        raw = self.r.hget(self.key("snapshots"), str(version))
        return json.loads(raw) if raw else None

    def serving(self) -> dict | None:
        raw = self.r.get(self.key("serving"))
        return json.loads(raw) if raw else None

    def cache_snapshots(self, records: dict[int, dict], gone: Sequence[int] = (), pointer: dict | None = None) -> None:
        """service.status's cache writes, in one transaction (nothing else calls this)."""
        pipe = self.r.pipeline(transaction=True)
        for version, record in records.items():
            pipe.hset(self.key("snapshots"), str(version), json.dumps(record))
        if gone:
            pipe.hdel(self.key("snapshots"), *map(str, gone))
        if pointer is not None:
            pipe.set(self.key("serving"), json.dumps(pointer))
        pipe.execute()

    def cache_serving(self, pointer: dict) -> None:
        self.r.set(self.key("serving"), json.dumps(pointer))

    # ------------------------------------------------------------ seal requests

    def open_seal(self, min_interval_s: float, pending_ttl_s: float) -> tuple[str, bool] | float:
        """A seal request to make or join: (request id, True) for a new one, (id, False) for the
        one still waiting for the consumer (de-duplicated), or the seconds to wait before a new
        one may be made (at most one per `min_interval_s`)."""
        pending = self.r.get(self.key("seal", "pending"))
        if pending:
            return pending, False
        left_ms = self.r.pttl(self.key("seal", "recent"))
        if left_ms > 0:
            return left_ms / 1000
        request_id = uuid.uuid4().hex
        if not self.r.set(self.key("seal", "pending"), request_id, nx=True, ex=max(1, int(pending_ttl_s))):
            return self.r.get(self.key("seal", "pending")) or request_id, False
        self.r.set(self.key("seal", "recent"), request_id, px=max(1, int(min_interval_s * 1000)))
        return request_id, True

    def drop_seal(self, request_id: str) -> None:
        """Forget a request that never reached Kafka."""
        for name in ("pending", "recent"):
            self.r.eval(DEL_IF, 1, self.key("seal", name), request_id)

    def answer_seal(self, request_id: str, result: dict) -> None:
        """The consumer's answer (the first one stands: a replayed request is not answered twice)."""
        self.r.set(self.key("seal", "result", request_id), json.dumps(result), nx=True, ex=RESULT_TTL_S)
        self.r.eval(DEL_IF, 1, self.key("seal", "pending"), request_id)

    def wait_seal(self, request_id: str, timeout_s: float, interval_s: float = 0.05) -> dict | None:
        """The consumer's answer, or None if it did not come within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            raw = self.r.get(self.key("seal", "result", request_id))
            if raw:
                return json.loads(raw)
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))

    # ------------------------------------------------------------ faults a role reports

    def set_fault(self, role: str, reason: str | None, ttl_s: float = 60) -> None:
        """`role` cannot do its work now, and why (expires unless refreshed); None clears it."""
        if reason is None:
            self.r.delete(self.key("fault", role))
        else:
            self.r.set(self.key("fault", role), reason, ex=max(1, int(ttl_s)))

    def faults(self) -> dict[str, str]:
        keys = sorted(self.r.scan_iter(match=self.key("fault", "*"), count=100))
        values = self.r.mget(keys) if keys else []
        start = len(self.key("fault", ""))
        return {k[start:]: v for k, v in zip(keys, values) if v is not None}

    # ------------------------------------------------------------ rebuild

    def rebuilt(self) -> bool:
        """Whether a complete rebuild happened since this Redis started or was last flushed."""
        return bool(self.r.exists(self.key("epoch")))

    def ensure(self, data_dir: str | Path) -> bool:
        """Rebuild from disk unless it was rebuilt since Redis started or was flushed: one
        EXISTS when nothing is to be done, cheap enough for every role's loop. While another
        role rebuilds, this one does not wait for it. True if this call rebuilt."""
        if self.rebuilt():
            return False
        return self.rebuild_from_disk(data_dir, only_if_free=True) is not None

    def rebuild_from_disk(self, data_dir: str | Path, only_if_free: bool = False) -> dict | None:
        """Upsert everything the data directory knows: ids, phases, snapshots with their status,
        the serving pointer; then mark the epoch. None if `only_if_free` and another role holds
        the rebuild lock."""
        token = uuid.uuid4().hex
        if not self.r.set(self.key("rebuild"), token, nx=only_if_free, ex=REBUILD_TTL_S):
            return None
        data_dir = Path(data_dir)
        phases = buffer.list_phases(data_dir)
        ids = [r.id for p in phases for r in buffer.read_records(data_dir, p.phase)]
        self.add_ids(ids)
        for info in phases:
            self.r.hset(self.key("phases"), str(info.phase), json.dumps(info.to_dict()))
        snapshots = status.disk_snapshots(data_dir)
        gone = [v for v in self.snapshots() if v not in snapshots]
        serving = status.read_serving(data_dir)
        self.cache_snapshots(snapshots, gone, serving)
        marked = self.r.eval(MARK_EPOCH, 2, self.key("rebuild"), self.key("epoch"), token, str(time.time()))
        summary = {
            "ids": len(ids),
            "phases": len(phases),
            "snapshots": len(snapshots),
            "serving": serving,
            "complete": bool(marked),
        }
        log.info("registry rebuilt from %s: %s", data_dir, summary)
        return summary
