"""Ingest: POST pairs (JSON with base64 images, or one multipart upload) -> Kafka.

The whole request is validated before anything is produced; one bad pair refuses the
request with a 4xx naming the item and the reason. A 202 means every queued pair is in
Kafka (acks=all). Ids already buffered, or repeated within the request, come back as
"duplicate" and are not produced.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from redis import RedisError

from service import metrics
from service.deps import get_ingestor, get_limits, get_registry
from service.errors import api_error
from service.ingest import Ingestor, ProduceError
from service.registry import Registry
from service.validation import Limits, PairError, ValidPair, check_count, validate_batch, validate_fields

log = logging.getLogger("modx.api")
router = APIRouter(prefix="/v1/pairs", tags=["pairs"])


class PairIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="1-128 of A-Z a-z 0-9 . _ : - ; generated when absent")
    text: str = Field(description="the caption")
    image: str = Field(description="PNG, JPEG or WebP bytes, standard base64")
    metadata: dict[str, Any] | None = None


class PairsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pairs: list[PairIn]


class Accepted(BaseModel):
    id: str
    status: Literal["queued", "duplicate"]


class AcceptedOut(BaseModel):
    accepted: list[Accepted]


def already_buffered(registry: Registry, ids: list[str]) -> list[bool]:
    """Which ids Redis knows; if Redis is down, none (the consumer still drops repeats)."""
    try:
        return registry.known(ids)
    except RedisError as e:
        log.warning("duplicate check skipped, Redis unavailable: %s", e)
        return [False] * len(ids)


def enqueue(pairs: list[ValidPair], registry: Registry, ingestor: Ingestor) -> AcceptedOut:
    known = already_buffered(registry, [p.id for p in pairs])
    seen: set[str] = set()
    statuses = []
    for pair, is_known in zip(pairs, known):
        statuses.append("duplicate" if is_known or pair.id in seen else "queued")
        seen.add(pair.id)
    fresh = [p for p, s in zip(pairs, statuses) if s == "queued"]
    try:
        ingestor.send(fresh)
    except ProduceError as e:
        metrics.INGEST_PRODUCE_ERRORS.inc()
        raise api_error(503, "kafka_unavailable", f"{e}; retry with the same ids") from None
    metrics.INGEST_ACCEPTED.inc(len(fresh))
    metrics.INGEST_DUPLICATES.inc(len(pairs) - len(fresh))
    return AcceptedOut(accepted=[Accepted(id=p.id, status=s) for p, s in zip(pairs, statuses)])


@router.post("", status_code=202, response_model=AcceptedOut)
def post_pairs(body: PairsIn, limits: Limits = Depends(get_limits), registry: Registry = Depends(get_registry),
               ingestor: Ingestor = Depends(get_ingestor)) -> AcceptedOut:  # fmt: skip
    """Queue a batch of pairs: `{"pairs": [{"id"?, "text", "image": base64, "metadata"?}]}`."""
    check_count(len(body.pairs), limits)
    pairs = validate_batch([p.model_dump() for p in body.pairs], limits)
    return enqueue(pairs, registry, ingestor)


@router.post("/upload", status_code=202, response_model=AcceptedOut)
def upload_pair(image: UploadFile = File(description="PNG, JPEG or WebP"), text: str = Form(),
                id: str | None = Form(None), metadata: str | None = Form(None, description="a JSON object"),
                limits: Limits = Depends(get_limits), registry: Registry = Depends(get_registry),
                ingestor: Ingestor = Depends(get_ingestor)) -> AcceptedOut:  # fmt: skip
    """Queue one pair sent as multipart form data."""
    data = image.file.read(limits.max_image_bytes + 1)  # one byte over is enough to refuse
    try:
        meta = json.loads(metadata) if metadata else None
    except ValueError as e:
        raise PairError(422, "invalid_metadata", f"metadata is not JSON: {e}", item=0, field="metadata") from None
    try:
        pair = validate_fields(id=id or None, text=text, image=data, metadata=meta, limits=limits)
    except PairError as e:
        raise e.at(0) from None
    return enqueue([pair], registry, ingestor)
