"""The API's request observer (an ASGI middleware): request id, access log, HTTP metrics.

Every response carries `X-Request-ID`: the client's own (1-128 of A-Z a-z 0-9 . _ : -),
else a new one; it is on every log record of the request (service.logs.REQUEST_ID). Each
request is counted and timed by route template (`/v1/images/{pair_id}`, never the raw
path; `unmatched` for a 404 no route took), and logged as one access line at INFO.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from service import metrics
from service.logs import REQUEST_ID

log = logging.getLogger("modx.access")
HEADER = b"x-request-id"
VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
QUIET = {"/healthz", "/readyz", "/readyz/search", "/readyz/ingest", "/metrics"}  # probes: counted, logged at DEBUG


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == HEADER:
            given = value.decode("latin-1")
            if VALID_ID.fullmatch(given):
                return given
    return uuid.uuid4().hex


class RequestObserver:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = request_id(scope.get("headers", []))
        token = REQUEST_ID.set(rid)
        status = 500
        t0 = time.perf_counter()

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.record(scope, status, time.perf_counter() - t0)
            REQUEST_ID.reset(token)

    @staticmethod
    def record(scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        method = scope.get("method", "")
        metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
        metrics.HTTP_SECONDS.labels(method, route).observe(seconds)
        level = logging.DEBUG if route in QUIET and status < 500 else logging.INFO
        log.log(
            level,
            "%s %s %d %.1fms",
            method,
            scope.get("path", ""),
            status,
            seconds * 1000,
            extra={"method": method, "route": route, "status": status, "duration_s": round(seconds, 6)},
        )
