"""Every endpoint of the modx API once, as a `Call` (the request, and how to read its answer
into the router's own model, service.schemas); service.client's `Client` and `AsyncClient`
send them, sync and async. Listings take `limit`/`cursor` (service.paging).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import httpx
from pydantic import BaseModel

from service import schemas


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

    def post(
        self, pairs: Sequence[schemas.PairIn | Mapping[str, Any]], wait: str | None = None, timeout: float | None = None
    ) -> schemas.AcceptedOut:
        """Queue pairs ({"id"?, "text", "image": bytes | Path | base64, "metadata"?}); all or none.
        `wait="searchable"`: answer once they are searchable, or with their `states` after `timeout` s."""
        body = schemas.PairsIn.model_validate({"pairs": [pair_in(p) for p in pairs]}).model_dump(exclude_none=True)
        params = {"wait": wait, "timeout": timeout}
        return self._call(Call("POST", "/v1/pairs", model(schemas.AcceptedOut), json=body, params=params))

    def pair(self, pair_id: str) -> schemas.PairState:
        """Where a posted pair is: queued, buffered (phase), searchable (snapshot, index), trained (by whom)."""
        return self._call(Call("GET", f"/v1/pairs/{pair_id}", model(schemas.PairState)))

    def delete(self, pair_id: str) -> schemas.Deleted:
        """Delete one pair: out of search, replay and later phases, its image removed (404 if unknown)."""
        return self._call(Call("DELETE", f"/v1/pairs/{pair_id}", model(schemas.Deleted)))

    def delete_many(self, ids: Sequence[str] | None = None, filter: dict | None = None) -> schemas.Deleted:
        """Delete by ids (all known, else a 404 and nothing deleted) or every pair whose metadata matches `filter`."""
        body = schemas.DeleteRequest(ids=list(ids) if ids is not None else None, filter=filter)
        return self._call(
            Call("POST", "/v1/pairs/delete", model(schemas.Deleted), json=body.model_dump(exclude_none=True))
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

    def ready(self, role: str | None = None) -> schemas.Ready:
        """Readiness: /readyz (searches, and `ingest` beside), or `role` "search" / "ingest" alone.
        A 503 (not ready) is returned, not raised: see `.status`, `.failed`."""
        path = "/readyz" if role is None else f"/readyz/{role}"
        return self._call(Call("GET", path, model(schemas.Ready)))

    def timeline(self) -> dict:
        """The dashboard's samples of ingest, lag and phase fill (/v1/timeline)."""
        return self._call(Call("GET", "/v1/timeline", lambda r: r.json()))

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
