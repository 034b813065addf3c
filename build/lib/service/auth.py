"""Who may call what: `Authorization: Bearer <key>` on every route but /healthz and /readyz.

    router = APIRouter(dependencies=[require("read")], responses=AUTH_RESPONSES)
    def route(key: AdminKey): ...           # the caller's Key, when the route needs it

Scopes nest: read (search, images, phases, snapshots, recall, drift) < write (+ POST pairs)
< admin (+ seal, keys, /metrics). Answers, all in the project's error body:
401 `missing_key` / `unknown_key` (unknown or revoked; with `WWW-Authenticate: Bearer`),
403 `insufficient_scope`, 429 `rate_limited` (with `Retry-After`; the route never ran).
The check runs once per request even when a router and its route both require a scope.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import responses
from service.keys import SCOPES, Key, KeyStore
from service.ratelimit import RateLimiter, retry_after
from service.registry import Registry
from service.settings import Settings

log = logging.getLogger("modx.auth")

bearer = HTTPBearer(auto_error=False, description="an API key: `modx keys create`, or `<data_dir>/admin.key`")

AUTH_RESPONSES = responses(401, 403, 429)


class Auth:
    """The API's view of the keys: lookups through the store, rates through Redis, and
    last-used times gathered in memory and written to disk every `key_sync_s`."""

    def __init__(self, settings: Settings, registry: Registry):
        self.settings = settings
        self.store = KeyStore(settings.data_dir, registry.r, registry.prefix)
        self.limiter = RateLimiter(registry.r, registry.prefix)
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def authenticate(self, secret: str | None) -> Key:
        if not secret:
            raise _unauthorized("missing_key", "this route needs an API key: send 'Authorization: Bearer <key>'")
        key = self.store.lookup(secret)
        if key is None:
            raise _unauthorized("unknown_key", "the API key is unknown or revoked")
        with self._lock:
            self._used[key.hash] = time.time()
        return key

    def limit(self, key: Key) -> None:
        rate = key.rate or self.settings.key_rate
        wait_s = self.limiter.take(key.hash, rate, self.settings.key_burst_s)
        if wait_s > 0:
            raise HTTPException(
                429,
                detail={
                    "error": "rate_limited",
                    "retry_after_s": round(wait_s, 3),
                    "message": f"key {key.name!r} is over its rate of {rate:g} requests/s",
                },
                headers={"Retry-After": retry_after(wait_s)},
            )

    def last_used(self) -> dict[str, float]:
        """Times not yet written to disk (sha256 -> time)."""
        with self._lock:
            return dict(self._used)

    def sync(self) -> None:
        """Write the gathered last-used times (one disk write) and check the Redis cache."""
        with self._lock:
            used, self._used = self._used, {}
        try:
            self.store.touch(used)
        except OSError as e:
            log.warning("last-used times not written (kept for the next try): %s", e)
            with self._lock:
                for h, t in used.items():
                    self._used[h] = max(t, self._used.get(h, 0.0))
        self.store.check()

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.key_sync_s):
            try:
                self.sync()
            except Exception:  # the thread must outlive any one failure
                log.exception("key sync failed")
        self.sync()


def _unauthorized(error: str, message: str) -> HTTPException:
    return HTTPException(401, detail={"error": error, "message": message}, headers={"WWW-Authenticate": "Bearer"})


def require(scope: str):
    """A dependency: the request's key, which must have `scope` (or a wider one)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def check(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Key:
        auth: Auth = request.app.state.auth
        key = getattr(request.state, "key", None)
        if key is None:
            key = auth.authenticate(credentials.credentials if credentials else None)
            if key.allows(scope):
                auth.limit(key)
            request.state.key = key
        if not key.allows(scope):
            raise HTTPException(
                403,
                detail={
                    "error": "insufficient_scope",
                    "required": scope,
                    "scope": key.scope,
                    "message": f"this route needs scope {scope!r}; key {key.name!r} has {key.scope!r}",
                },
            )
        return key

    return Depends(check)


ReadKey = Annotated[Key, require("read")]
WriteKey = Annotated[Key, require("write")]
AdminKey = Annotated[Key, require("admin")]
