"""Phases: list them (read); seal the open one now (admin).

The consumer owns the phase buffer, so a seal is a request: a marker put in the topic
after every pair acknowledged so far (service.ingest.produce_seal), which the consumer
answers when it reaches it; the endpoint waits up to `seal_wait_s` for the answer. A
request while another is still unanswered joins it; a new one is allowed once per
`seal_min_interval_s` (429 with Retry-After), so repeated seals cannot queue a training
run each.
"""

import math

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse

from service.auth import AUTH_RESPONSES, require
from service.backpressure import WriteGate
from service.deps import get_ingestor, get_registry, get_settings, get_write_gate
from service.errors import ErrorBody, api_error, responses
from service.ingest import Ingestor, ProduceError
from service.paging import Page, get_page
from service.registry import Registry
from service.schemas import PhasesOut, SealOut
from service.settings import Settings

router = APIRouter(prefix="/v1/phases", tags=["phases"], responses=AUTH_RESPONSES)


@router.get("", dependencies=[require("read")], responses=responses(422))
def list_phases(
    registry: Registry = Depends(get_registry),
    settings: Settings = Depends(get_settings),
    gate: WriteGate = Depends(get_write_gate),
    page: Page = Depends(get_page),
) -> PhasesOut:
    """Every phase (a page of them with `limit`): status open / sealed / training / trained /
    retry / failed, counts and times; the open phase and the consumer's lag."""
    registry.ensure(settings.data_dir)
    phases = list(registry.phases().values())
    open_phase = next((p["phase"] for p in phases if p["status"] == "open"), None)
    chosen, next_cursor = page.take((p["phase"], p) for p in phases)
    return PhasesOut(phases=chosen, open=open_phase, lag=gate.consumer_lag(), next_cursor=next_cursor)


@router.post(
    "/seal",
    dependencies=[require("admin")],
    response_model=SealOut,
    responses={
        202: {"model": SealOut, "description": "requested; the consumer has not answered yet"},
        409: {
            "model": ErrorBody,
            "description": "the open phase is empty: every pair acknowledged before the request is sealed",
        },
        429: {
            "model": ErrorBody,
            "description": "a seal was requested less than seal_min_interval_s ago (Retry-After)",
        },
        503: {"model": ErrorBody, "description": "Kafka did not take the request"},
    },
)
def seal(
    registry: Registry = Depends(get_registry),
    settings: Settings = Depends(get_settings),
    ingestor: Ingestor = Depends(get_ingestor),
):
    """Seal the open phase once every pair acknowledged before this request is in it."""
    claim = registry.open_seal(settings.seal_min_interval_s, pending_ttl_s=max(600.0, 10 * settings.seal_wait_s))
    if not isinstance(claim, tuple):
        message = f"a seal was requested less than {settings.seal_min_interval_s:g}s ago; retry in {claim:.1f}s"
        raise HTTPException(
            429,
            detail={"error": "seal_rate_limited", "message": message},
            headers={"Retry-After": str(max(1, math.ceil(claim)))},
        )
    request_id, new = claim
    if new:
        try:
            ingestor.send_seal(request_id)
        except ProduceError as e:
            registry.drop_seal(request_id)
            raise api_error(503, "kafka_unavailable", f"{e}; retry the seal") from None
    answer = registry.wait_seal(request_id, settings.seal_wait_s)
    if answer is None:
        return JSONResponse(
            {
                "status": "requested",
                "request": request_id,
                "joined": not new,
                "message": "the consumer has not reached the request yet; it seals when it does",
            },
            status_code=202,
        )
    if answer["sealed"] is None:
        raise api_error(409, "empty_phase", f"nothing to seal: {answer.get('reason', 'the open phase is empty')}")
    return {"status": "sealed", "phase": answer["sealed"], "request": request_id}
