"""POST /v1/search: a text or image query against the serving snapshot's indexes.

`target` picks what is ranked: the gallery's images (text -> image, image -> image) or its
captions (image -> text, text -> text). Either way the hits are pairs, with their text and
metadata, and the answer names the snapshot that encoded the query and embedded the index.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
from fastapi import APIRouter, Depends, HTTPException

from indexer.encoders import SnapshotEncoders
from service import metrics, tombstones
from service.auth import AUTH_RESPONSES, require
from service.buffer import read_image
from service.deps import get_limits, get_serving, get_settings, json_body
from service.errors import api_error, responses
from service.image_check import check_image, decode_base64
from service.limits import Limits, PairError, PixelBudget
from service.schemas import Hit, SearchRequest, SearchResponse
from service.serving import ServingState
from service.settings import Settings
from service.validation import check_json_values

router = APIRouter(tags=["search"], dependencies=[require("read")], responses=AUTH_RESPONSES)


def check_query(req: SearchRequest, limits: Limits, data_dir: Path) -> bytes | None:
    """The query image's bytes once it decodes completely (the stored image of pair `id`;
    None for a text query); a 4xx for anything wrong, whether or not an index is loaded yet."""
    try:
        check_json_values(req.text, "text")
        check_json_values(req.filter, "filter")
        if req.id is not None:
            return stored_image(data_dir, req.id)
        if req.image is None:
            return None
        data = decode_base64(req.image, limits)
        check_image(data, limits, PixelBudget(limits))
        return data
    except PairError as e:
        raise HTTPException(e.status, e.detail()) from e


def stored_image(data_dir: Path, pair_id: str) -> bytes:
    try:
        return read_image(data_dir, pair_id)[0]
    except (FileNotFoundError, ValueError):
        raise api_error(404, "not_found", f"no pair with id {pair_id!r}", id=pair_id) from None


def hit_filter(state: ServingState, wanted: dict) -> Callable[[str], bool] | None:
    """Which hits may be returned: never a deleted pair (service.tombstones), and only those
    whose metadata has every key -> value of `wanted`. None when every hit may."""
    gone = tombstones.deleted(state.data_dir)
    if not gone and not wanted:
        return None
    return lambda pid: pid not in gone and all(state.catalog.get(pid)[1].get(k) == v for k, v in wanted.items())


def encode_query(encoders: SnapshotEncoders, req: SearchRequest, image: bytes | None) -> np.ndarray:
    if image is None:
        return encoders.text([req.text])
    return encoders.image([image])


@router.post(
    "/v1/search",
    response_model=SearchResponse,
    responses=responses(400, 401, 403, 404, 413, 415, 422, 429, 503),
    dependencies=[Depends(json_body)],
)
def search(
    req: SearchRequest,
    state: ServingState = Depends(get_serving),
    limits: Limits = Depends(get_limits),
    settings: Settings = Depends(get_settings),
):
    """Rank the gallery for a text, an image, or an existing pair (`id`: its stored image)."""
    image = check_query(req, limits, Path(settings.data_dir))  # validate before readiness: a malformed query is 4xx
    try:
        serving = state.holder.get()  # one reference: this snapshot encodes, its index answers
    except LookupError:
        raise api_error(503, "not_ready", "no index is loaded yet: wait for the first snapshot and its index")
    t0 = time.perf_counter()
    query = encode_query(serving.encoders, req, image)
    t1 = time.perf_counter()
    metrics.SEARCH_ENCODE_SECONDS.labels("text" if image is None else "image").observe(t1 - t0)
    filter_fn = hit_filter(state, req.filter or {})
    index = serving.index if req.target == "image" else serving.texts
    if index is None:
        raise api_error(503, "not_ready", "no caption index is loaded for this snapshot yet")
    hits = index.search(query, req.k, min_score=req.min_score, filter_fn=filter_fn)[0]
    metrics.SEARCH_INDEX_SECONDS.labels(req.target).observe(time.perf_counter() - t1)
    results = [
        Hit(id=pid, score=score, text=state.catalog.get(pid)[0], metadata=state.catalog.get(pid)[1])
        for pid, score in hits
    ]
    return SearchResponse(snapshot=serving.snapshot, index=index.snapshot, target=req.target, results=results)
