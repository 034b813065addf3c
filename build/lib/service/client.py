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
import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import httpx
from pydantic import BaseModel

from service import schemas
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


@dataclass
class Call:
    """One request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], Any]
    json: Any = None
    params: dict | None = None
    files: dict | None = None
    data: dict | None = None

    def send_kwargs(self) -> dict:
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        out = {"params": params or None, "files": self.files, "data": self.data}
        if self.json is not None:
            out["json"] = self.json
        return out


def model(cls: type[BaseModel]) -> Callable[[httpx.Response], Any]:
    return lambda r: cls.model_validate(r.json())


def as_base64(image: bytes | str | Path) -> str:
    """A pair's or a query's image for the JSON API: bytes or a path are encoded, a str is taken as base64."""
    if isinstance(image, Path):
        image = image.read_bytes()
    return base64.b64encode(image).decode() if isinstance(image, bytes) else image


def pair_in(pair: schemas.PairIn | Mapping[str, Any]) -> dict:
    if isinstance(pair, schemas.PairIn):
        return pair.model_dump(exclude_none=True)
    body = {k: v for k, v in pair.items() if v is not None}
    body["image"] = as_base64(body["image"])
    return schemas.PairIn.model_validate(body).model_dump(exclude_none=True)


class Endpoints:
    """Every endpoint once; `_call` (sync or async) sends it. Listings take `limit`/`cursor`."""

    def _call(self, call: Call):
        raise NotImplementedError

    def post(self, pairs: Sequence[schemas.PairIn | Mapping[str, Any]]) -> schemas.AcceptedOut:
        """Queue pairs ({"id"?, "text", "image": bytes | Path | base64, "metadata"?}); all or none."""
        body = schemas.PairsIn.model_validate({"pairs": [pair_in(p) for p in pairs]})
        return self._call(
            Call("POST", "/v1/pairs", model(schemas.AcceptedOut), json=body.model_dump(exclude_none=True))
        )

    def upload(
        self, image: bytes | Path, text: str, id: str | None = None, metadata: dict | None = None
    ) -> schemas.AcceptedOut:
        """Queue one pair as multipart form data."""
        data = image.read_bytes() if isinstance(image, Path) else image
        form = {"text": text, "id": id, "metadata": json.dumps(metadata) if metadata is not None else None}
        return self._call(
            Call(
                "POST",
                "/v1/pairs/upload",
                model(schemas.AcceptedOut),
                files={"image": ("image", data)},
                data={k: v for k, v in form.items() if v is not None},
            )
        )

    def search(
        self,
        text: str | None = None,
        image: bytes | str | Path | None = None,
        id: str | None = None,
        k: int = 10,
        target: str = "image",
        min_score: float | None = None,
        filter: dict | None = None,
    ) -> schemas.SearchResponse:
        """Rank the gallery for one query: a text, an image, or an existing pair's id."""
        req = schemas.SearchRequest(
            text=text,
            image=as_base64(image) if image is not None else None,
            id=id,
            k=k,
            target=target,
            min_score=min_score,
            filter=filter,
        )
        return self._call(
            Call("POST", "/v1/search", model(schemas.SearchResponse), json=req.model_dump(exclude_none=True))
        )

    def seal(self) -> schemas.SealOut:
        """Seal the open phase (admin); status "requested" while the consumer has not answered."""
        return self._call(Call("POST", "/v1/phases/seal", model(schemas.SealOut)))

    def phases(self, limit: int | None = None, cursor: int | None = None) -> schemas.PhasesOut:
        return self._call(Call("GET", "/v1/phases", model(schemas.PhasesOut), params=_page(limit, cursor)))

    def snapshots(self, limit: int | None = None, cursor: int | None = None) -> schemas.SnapshotsOut:
        return self._call(Call("GET", "/v1/snapshots", model(schemas.SnapshotsOut), params=_page(limit, cursor)))

    def recall(self, limit: int | None = None, cursor: int | None = None) -> schemas.RecallOut:
        return self._call(Call("GET", "/v1/recall", model(schemas.RecallOut), params=_page(limit, cursor)))

    def drift(self, limit: int | None = None, cursor: int | None = None) -> schemas.DriftOut:
        return self._call(Call("GET", "/v1/drift", model(schemas.DriftOut), params=_page(limit, cursor)))

    def download(self, snapshot: int) -> bytes:
        """Snapshot `snapshot` as a tar of `v<N:06d>/` (admin)."""
        return self._call(Call("GET", f"/v1/snapshots/{snapshot}/download", lambda r: r.content))

    def image(self, pair_id: str) -> bytes:
        """A pair's stored image."""
        return self._call(Call("GET", f"/v1/images/{pair_id}", lambda r: r.content))

    def health(self) -> dict:
        """Liveness (/healthz)."""
        return self._call(Call("GET", "/healthz", lambda r: r.json()))

    def ready(self) -> schemas.Ready:
        """Readiness (/readyz); a 503 (not ready) is returned, not raised: see `.status`, `.failed`."""
        return self._call(Call("GET", "/readyz", model(schemas.Ready)))

    def metrics(self) -> str:
        """Prometheus text (admin)."""
        return self._call(Call("GET", "/metrics", lambda r: r.text))

    def create_key(self, scope: str, name: str | None = None, rate: float | None = None) -> schemas.NewKey:
        body = schemas.KeyIn(scope=scope, name=name, rate=rate).model_dump(exclude_none=True)
        return self._call(Call("POST", "/v1/keys", model(schemas.NewKey), json=body))

    def keys(self) -> schemas.KeysOut:
        return self._call(Call("GET", "/v1/keys", model(schemas.KeysOut)))

    def revoke_key(self, name: str) -> schemas.KeyOut:
        return self._call(Call("DELETE", f"/v1/keys/{name}", model(schemas.KeyOut)))


def _page(limit: int | None, cursor: int | None) -> dict:
    return {"limit": limit, "cursor": cursor}


def _failed(call: Call, response: httpx.Response) -> bool:
    return response.is_error and not (call.path == "/readyz" and response.status_code == 503)


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
