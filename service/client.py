"""A typed Python client of the modx REST API, sync (`Client`) and async (`AsyncClient`).

    from service.client import Client
    with Client("http://127.0.0.1:8000") as modx:           # key: $MODX_API_KEY, else <data_dir>/admin.key
        modx.post([{"id": "cat-1", "text": "a cat", "image": Path("cat.png").read_bytes()}])
        hits = modx.search(text="a cat", k=5).results

Every call sends the request the router declares and parses the answer into the router's
own model (service.schemas), so the two cannot drift. A 4xx/5xx raises `ApiError` with the
status and the API's error body. With `retries=N`, a 429 or 503 is retried up to N times
after its Retry-After (which a write refused by backpressure or a rate limit carries).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Mapping

import httpx

from service.endpoints import Call, Endpoints
from trainer import layout

DEFAULT_URL = "http://127.0.0.1:8000"
RETRIED = (429, 503)


def admin_key_path() -> Path:
    return layout.admin_key_file(os.environ.get("MODX_DATA_DIR", "data"))


def resolve_key(api_key: str | None) -> str | None:
    """The given key, else $MODX_API_KEY, else `<data_dir>/admin.key`'s, else None (the API answers 401)."""
    api_key = api_key or os.environ.get("MODX_API_KEY")
    if api_key:
        return api_key.strip()
    try:
        return admin_key_path().read_text().strip() or None
    except OSError:
        return None


class ApiError(Exception):
    """The API answered an error: `status`, and its body's `error` code, `message` and `detail`."""

    def __init__(self, status: int, detail: dict, headers: Mapping[str, str] | None = None):
        self.status, self.detail = status, detail
        self.error, self.message = detail.get("error", "unknown"), detail.get("message", "")
        self.retry_after = _retry_after(headers or {})
        super().__init__(f"{status} {self.error}: {self.message}")

    @classmethod
    def of(cls, response: httpx.Response) -> "ApiError":
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = None
        if not isinstance(detail, dict):
            detail = {"error": f"http_{response.status_code}", "message": response.text[:500]}
        return cls(response.status_code, detail, response.headers)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _failed(call: Call, response: httpx.Response) -> bool:
    return response.is_error and not (call.path.startswith("/readyz") and response.status_code == 503)


def _headers(api_key: str | None) -> dict[str, str]:
    key = resolve_key(api_key)
    return {"Authorization": f"Bearer {key}"} if key else {}


class Client(Endpoints):
    """Sync client. `http` wraps an existing httpx.Client (e.g. FastAPI's TestClient) instead of opening one."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        retries: int = 0,
        max_wait_s: float = 60.0,
        http: httpx.Client | None = None,
    ):
        self.retries, self.max_wait_s = retries, max_wait_s
        self.http = http or httpx.Client(base_url=url, timeout=timeout_s)
        self.http.headers.update(_headers(api_key) if api_key or http is None else {})

    def _call(self, call: Call):
        for attempt in range(self.retries + 1):
            r = self.http.request(call.method, call.path, **call.send_kwargs())
            if r.status_code not in RETRIED or attempt == self.retries:
                break
            time.sleep(_wait(r, attempt, self.max_wait_s))
        if _failed(call, r):
            raise ApiError.of(r)
        return call.parse(r)

    def download_to(self, snapshot: int, path: Path, chunk: int = 1 << 20) -> Path:
        """Stream snapshot `snapshot`'s tar into the file `path` (admin), never whole in memory."""
        with self.http.stream("GET", f"/v1/snapshots/{snapshot}/download") as r:
            if r.is_error:
                r.read()
                raise ApiError.of(r)
            with open(path, "wb") as f:
                for data in r.iter_bytes(chunk):
                    f.write(data)
        return path

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(Endpoints):
    """The async twin of `Client`: the same calls, awaited (`await modx.search(text=...)`)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        retries: int = 0,
        max_wait_s: float = 60.0,
        http: httpx.AsyncClient | None = None,
    ):
        self.retries, self.max_wait_s = retries, max_wait_s
        self.http = http or httpx.AsyncClient(base_url=url, timeout=timeout_s)
        self.http.headers.update(_headers(api_key) if api_key or http is None else {})

    async def _call(self, call: Call):
        for attempt in range(self.retries + 1):
            r = await self.http.request(call.method, call.path, **call.send_kwargs())
            if r.status_code not in RETRIED or attempt == self.retries:
                break
            await asyncio.sleep(_wait(r, attempt, self.max_wait_s))
        if _failed(call, r):
            raise ApiError.of(r)
        return call.parse(r)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


def _wait(response: httpx.Response, attempt: int, cap_s: float) -> float:
    """Retry-After when the API sent one, else 0.5 s doubled per attempt; at most `cap_s`."""
    after = _retry_after(response.headers)
    return min(cap_s, after if after is not None else 0.5 * 2**attempt)
