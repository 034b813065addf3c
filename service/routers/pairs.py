"""Ingest: POST pairs (JSON with base64 images, or one multipart upload) -> Kafka.

The whole request is validated before anything is produced; one bad pair refuses the
request with a 4xx naming the item and the reason. A 202 means every queued pair is in
Kafka (acks=all). Ids already buffered, or repeated within the request, come back as
"duplicate" and are not produced.
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.routing import APIRoute
from python_multipart import parse_form
from redis import RedisError

from service import metrics, tombstones
from service.auth import AUTH_RESPONSES, require
from service.backpressure import WriteGate
from service.deps import (
    form_body,
    get_ingestor,
    get_limits,
    get_pair_states,
    get_registry,
    get_settings,
    get_write_gate,
    json_body,
)
from service.errors import api_error, responses
from service.ingest import Ingestor, ProduceError
from service.limits import Limits, PairError, PixelBudget
from service.pair_state import PairStates
from service.registry import Registry
from service.schemas import Accepted, AcceptedOut, PairsIn
from service.settings import Settings
from service.validation import ValidPair, check_count, validate_batch, validate_fields

log = logging.getLogger("modx.api")
router = APIRouter(prefix="/v1/pairs", tags=["pairs"], dependencies=[require("write")], responses=AUTH_RESPONSES)
WRITE_ERRORS = responses(400, 401, 403, 413, 415, 422, 429, 503)
FORM_TEXT_FIELDS = ("text", "id", "metadata")
MAX_WAIT_S, WAIT_POLL_S = 60.0, 0.1


class RawBodyRoute(APIRoute):
    """A route that reads its whole body before FastAPI parses the form: the form is then
    parsed from that cached copy, and the route can check the fields' raw bytes
    (Starlette decodes a field that is not UTF-8 as Latin-1, silently)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def read_body_first(request: Request):
            request.state.raw_body = await request.body()
            return await handler(request)

        return read_body_first


def check_form_utf8(content_type: str, body: bytes) -> None:
    """Refuse a text field of a multipart body whose bytes are not UTF-8."""
    fields: dict[str, bytes] = {}
    try:
        parse_form(
            {"Content-Type": content_type.encode("latin-1")},
            io.BytesIO(body),
            lambda f: fields.__setitem__(f.field_name.decode("latin-1"), f.value or b""),
            lambda f: None,
        )
    except Exception:  # malformed multipart: FastAPI's own parse has already refused or accepted it
        return
    for name in FORM_TEXT_FIELDS:
        try:
            fields.get(name, b"").decode("utf-8")
        except UnicodeDecodeError as e:
            raise PairError(
                422,
                "invalid_utf8",
                f"{name} is not valid UTF-8 (byte {e.start}: {e.reason}); send form fields as UTF-8",
                item=0,
                field=name,
            ) from None


def already_buffered(registry: Registry, ids: list[str]) -> list[bool]:
    """Which ids Redis knows; if Redis is down, none (the consumer still drops repeats)."""
    try:
        return registry.known(ids)
    except RedisError as e:
        log.warning("duplicate check skipped, Redis unavailable: %s", e)
        return [False] * len(ids)


def enqueue(
    pairs: list[ValidPair], registry: Registry, ingestor: Ingestor, gate: WriteGate, data_dir: Path
) -> AcceptedOut:
    gate.check()  # 429 while the consumer lags or the disk is nearly full: nothing produced
    known = already_buffered(registry, [p.id for p in pairs])
    gone = tombstones.deleted(data_dir)  # a deleted id stays deleted
    seen: set[str] = set()
    statuses = []
    for pair, is_known in zip(pairs, known):
        statuses.append("deleted" if pair.id in gone else "duplicate" if is_known or pair.id in seen else "queued")
        seen.add(pair.id)
    fresh = [p for p, s in zip(pairs, statuses) if s == "queued"]
    try:
        ingestor.send(fresh)
    except ProduceError as e:
        metrics.INGEST_PRODUCE_ERRORS.inc()
        raise api_error(503, "kafka_unavailable", f"{e}; retry with the same ids") from None
    try:
        registry.mark_queued([p.id for p in fresh])
    except RedisError as e:  # only GET /v1/pairs/{id} loses sight of them until they are buffered
        log.warning("queued ids not recorded, Redis unavailable: %s", e)
    metrics.INGEST_ACCEPTED.inc(len(fresh))
    metrics.INGEST_DUPLICATES.inc(len(pairs) - len(fresh))
    return AcceptedOut(accepted=[Accepted(id=p.id, status=s) for p, s in zip(pairs, statuses)])


def wait_searchable(out: AcceptedOut, response: Response, pair_states: PairStates, timeout_s: float) -> AcceptedOut:
    """Poll until every pair that is not deleted is searchable (200), or answer 202 with the
    states at the timeout. A poll only asks the served index; the full states (snapshot
    listing, tombstones) are read once, for the answer."""
    ids = [a.id for a in out.accepted if a.status != "deleted"]
    pending, deadline = ids, time.monotonic() + timeout_s
    while pending := [i for i in pending if not pair_states.searchable(i)]:
        if time.monotonic() >= deadline:
            break
        time.sleep(WAIT_POLL_S)
    else:
        response.status_code = 200
    return out.model_copy(update={"states": [pair_states.of(i) for i in ids]})


@router.post(
    "",
    status_code=202,
    response_model=AcceptedOut,
    responses={200: {"model": AcceptedOut, "description": "with wait=searchable: every pair is searchable"}}
    | WRITE_ERRORS,
    dependencies=[Depends(json_body)],
)
def post_pairs(
    body: PairsIn,
    response: Response,
    limits: Limits = Depends(get_limits),
    registry: Registry = Depends(get_registry),
    ingestor: Ingestor = Depends(get_ingestor),
    gate: WriteGate = Depends(get_write_gate),
    settings: Settings = Depends(get_settings),
    pair_states: PairStates = Depends(get_pair_states),
    wait: Literal["searchable"] | None = Query(None, description="answer once the pairs are searchable"),
    timeout: float = Query(10.0, gt=0, le=MAX_WAIT_S, description="seconds `wait` waits at most"),
) -> AcceptedOut:
    """Queue a batch of pairs: `{"pairs": [{"id"?, "text", "image": base64, "metadata"?}]}`.

    With `?wait=searchable&timeout=S` the answer comes once every pair is searchable (200),
    or after S seconds (202) with each pair's state, as Qdrant's `wait=true` does."""
    check_count(len(body.pairs), limits)
    pairs = validate_batch([p.model_dump() for p in body.pairs], limits)
    out = enqueue(pairs, registry, ingestor, gate, settings.data_dir)
    return wait_searchable(out, response, pair_states, timeout) if wait else out


def parse_metadata(metadata: str | None) -> Any:
    try:
        return json.loads(metadata) if metadata else None
    except (ValueError, RecursionError) as e:
        raise PairError(422, "invalid_metadata", f"metadata is not JSON: {e}", item=0, field="metadata") from None


def upload_pair(
    request: Request,
    image: UploadFile = File(description="PNG, JPEG or WebP"),
    text: str = Form(),
    id: str | None = Form(None),
    metadata: str | None = Form(None, description="a JSON object"),
    limits: Limits = Depends(get_limits),
    registry: Registry = Depends(get_registry),
    ingestor: Ingestor = Depends(get_ingestor),
    gate: WriteGate = Depends(get_write_gate),
    settings: Settings = Depends(get_settings),
) -> AcceptedOut:
    """Queue one pair sent as multipart form data (text fields in UTF-8)."""
    check_form_utf8(request.headers.get("content-type", ""), request.state.raw_body)
    data = image.file.read(limits.max_image_bytes + 1)  # one byte over is enough to refuse
    try:
        pair = validate_fields(
            id=id or None,
            text=text,
            image=data,
            metadata=parse_metadata(metadata),
            limits=limits,
            budget=PixelBudget(limits),
        )
    except PairError as e:
        raise e.at(0) from None
    return enqueue([pair], registry, ingestor, gate, settings.data_dir)


router.add_api_route(
    "/upload",
    upload_pair,
    methods=["POST"],
    status_code=202,
    response_model=AcceptedOut,
    responses=WRITE_ERRORS,
    route_class_override=RawBodyRoute,
    dependencies=[Depends(form_body)],
)
