"""API keys: random secrets, shown once, stored only as SHA-256 hashes.

Disk holds the truth, `<data_dir>/keys.json`, written atomically (trainer.atomic) under an
flock on `keys.json.lock`, so two writers (API replicas, `modx keys` offline) never lose
each other's change:

    {"version": n, "keys": {name: {name, scope, hash, rate, created, last_used, revoked}}}

`version` grows with every change of the key set (not with last-used times). Redis caches
the live keys, so every API replica sees a new or revoked key on its next request:

    modx:keys           hash    sha256 hex -> JSON record (live keys only)
    modx:keys:version   string  the version of keys.json that modx:keys holds

A change writes disk first, then reloads the cache; a load never replaces a newer version
(a Lua script compares them), and a cache without a version (flushed) is reloaded from disk
on the next lookup. With Redis down, lookups read the file (re-parsed only when it changed).

A secret is `modx_` + 43 URL-safe characters (32 random bytes). SHA-256 is enough for
secrets this random (no salt or slow hash needed); the stored hash is compared in constant
time.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import redis

from trainer import layout
from trainer.atomic import fsync_dir, make_dirs, read_json, temp_name, write_json_atomic

log = logging.getLogger("modx.keys")

SCOPES = ("read", "write", "admin")  # each scope includes the ones before it
SECRET_PREFIX = "modx_"
NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

_LOAD = """
local current = redis.call('GET', KEYS[2])
if current and ARGV[2] == '0' and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('SET', KEYS[2], ARGV[1])
return 1
"""


class KeyProblem(ValueError):
    """A key request that cannot be done (bad scope or name, unknown or taken name)."""

    def __init__(self, status: int, error: str, message: str):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


@dataclass(frozen=True)
class Key:
    name: str
    scope: str
    hash: str
    created: float
    rate: float | None = None  # requests/s; None: the `key_rate` setting
    last_used: float | None = None
    revoked: float | None = None

    def allows(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def public(self) -> dict:
        """What `GET /v1/keys` and `modx keys list` show: everything but the hash."""
        return {k: v for k, v in asdict(self).items() if k != "hash"}


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise KeyProblem(422, "invalid_scope", f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    return scope


class KeyFile:
    """keys.json: read (cached by the file's identity), changed under a lock, written atomically."""

    def __init__(self, data_dir: str | Path):
        self.path, self.lock_path = layout.keys_file(data_dir), layout.keys_lock(data_dir)
        self._seen: tuple | None = None
        self._doc: dict = {"version": 0, "keys": {}}

    def read(self) -> dict:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {"version": 0, "keys": {}}
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen != self._seen:
            self._doc, self._seen = read_json(self.path) or {"version": 0, "keys": {}}, seen
        return self._doc

    def keys(self) -> list[Key]:
        return [Key(**rec) for rec in self.read()["keys"].values()]

    @contextmanager
    def change(self, bump: bool = True) -> Iterator[dict]:
        """Read-modify-write under the lock; the yielded document is written on success."""
        make_dirs(self.path.parent)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc = read_json(self.path) or {"version": 0, "keys": {}}
            yield doc
            if bump:
                doc["version"] = doc.get("version", 0) + 1
            write_json_atomic(self.path, doc)


class KeyStore:
    """Keys on disk, cached in Redis (`redis_client` may be None: disk only)."""

    def __init__(self, data_dir: str | Path, redis_client: redis.Redis | None, prefix: str = "modx:"):
        self.file = KeyFile(data_dir)
        self.r = redis_client
        self.hash_key, self.version_key = prefix + "keys", prefix + "keys:version"
        self._load = redis_client.register_script(_LOAD) if redis_client is not None else None

    # ------------------------------------------------------------ changes (disk first, then the cache)

    def create(self, scope: str, name: str | None = None, rate: float | None = None) -> tuple[Key, str]:
        """A new key; returns it and its secret (the only time the secret exists outside the caller)."""
        check_scope(scope)
        if rate is not None and not rate > 0:
            raise KeyProblem(422, "invalid_rate", f"rate must be > 0 requests/s, not {rate}")
        secret = new_secret()
        with self.file.change() as doc:
            name = name or self._free_name(doc, scope)
            if not NAME.match(name):
                raise KeyProblem(422, "invalid_name", f"key name must be 1-64 of A-Z a-z 0-9 . _ -, not {name!r}")
            if name in doc["keys"]:
                raise KeyProblem(409, "name_taken", f"a key named {name!r} exists (revoked keys keep their name)")
            key = Key(name=name, scope=scope, hash=digest(secret), created=time.time(), rate=rate)
            doc["keys"][name] = asdict(key)
        self.refresh()
        return key, secret

    def revoke(self, name: str) -> Key:
        with self.file.change() as doc:
            rec = doc["keys"].get(name)
            if rec is None:
                raise KeyProblem(404, "not_found", f"no key named {name!r}")
            if rec["revoked"] is None:
                rec["revoked"] = time.time()
        self.refresh()
        return Key(**rec)

    def touch(self, last_used: dict[str, float]) -> None:
        """Record last-used times (sha256 -> time), keeping the latest; one write for all."""
        if not last_used:
            return
        with self.file.change(bump=False) as doc:
            for rec in doc["keys"].values():
                if rec["hash"] in last_used:
                    rec["last_used"] = max(rec["last_used"] or 0.0, last_used[rec["hash"]])

    def list(self) -> list[Key]:
        return sorted(self.file.keys(), key=lambda k: k.created)

    @staticmethod
    def _free_name(doc: dict, scope: str) -> str:
        n = 1
        while f"{scope}-{n}" in doc["keys"]:
            n += 1
        return f"{scope}-{n}"

    # ------------------------------------------------------------ the Redis cache

    def refresh(self, force: bool = False) -> bool:
        """Load keys.json into Redis unless Redis already holds this version or a newer one;
        False when Redis is unavailable (lookups then read the file)."""
        if self.r is None:
            return False
        doc = self.file.read()
        live = [rec for rec in doc["keys"].values() if rec["revoked"] is None]
        args = [doc["version"], int(force)]
        for rec in live:
            args += [rec["hash"], json.dumps({k: v for k, v in rec.items() if k != "last_used"})]
        try:
            self._load(keys=[self.hash_key, self.version_key], args=args)
            return True
        except redis.RedisError as e:
            log.warning("key cache not refreshed, Redis unavailable: %s", e)
            return False

    def check(self) -> None:
        """Reload the cache if its version is not the file's (e.g. keys.json restored from a backup)."""
        if self.r is None:
            return
        try:
            cached = self.r.get(self.version_key)
        except redis.RedisError:
            return
        if cached is None or int(cached) != self.file.read()["version"]:
            self.refresh(force=True)

    def lookup(self, secret: str) -> Key | None:
        """The live key with this secret, or None (unknown or revoked)."""
        h = digest(secret)
        rec = self._cached(h)
        if rec is None:
            return None
        return Key(**{**rec, "last_used": None}) if hmac.compare_digest(rec["hash"], h) else None

    def _cached(self, h: str) -> dict | None:
        if self.r is not None:
            try:
                for _ in range(2):
                    pipe = self.r.pipeline(transaction=True)
                    raw, version = pipe.hget(self.hash_key, h).get(self.version_key).execute()
                    if version is not None:
                        return json.loads(raw) if raw else None
                    if not self.refresh():
                        break
            except redis.RedisError as e:
                log.warning("key lookup from disk, Redis unavailable: %s", e)
        return next(
            (rec for rec in self.file.read()["keys"].values() if rec["hash"] == h and rec["revoked"] is None), None
        )


def write_secret(path: str | Path, secret: str) -> None:
    """`secret` at `path`, mode 0600 from the first byte, published atomically."""
    path = Path(path)
    make_dirs(path.parent)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def ensure_admin_key(store: KeyStore, data_dir: str | Path) -> tuple[Path, bool]:
    """`<data_dir>/admin.key` holding a live admin key; made (key named `admin` if free) when
    the file is missing or its key is unknown or revoked. Returns the path and whether it is new."""
    path = layout.admin_key_file(data_dir)
    secret = path.read_text().strip() if path.exists() else ""
    if secret and any(k.hash == digest(secret) and k.revoked is None and k.scope == "admin" for k in store.list()):
        return path, False
    try:
        _, secret = store.create("admin", "admin")
    except KeyProblem:
        _, secret = store.create("admin")
    write_secret(path, secret)
    return path, True
