"""Liveness and readiness (no key needed) and Prometheus metrics (an admin key).

Readiness is split by what a request needs: `/readyz/search` (Redis, a snapshot and its
index), `/readyz/ingest` (Kafka, Redis). `/readyz`, what a load balancer should use, is
search readiness plus an `ingest` report: a search replica stays ready while Kafka is down.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import metrics
from service.auth import AUTH_RESPONSES, require
from service.deps import get_registry, get_serving, get_settings
from service.infra import kafka_ready
from service.registry import Registry
from service.serving import ServingState
from service.settings import Settings

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """Liveness: the process answers HTTP."""
    return {"status": "ok"}


def _redis_ok(registry: Registry) -> bool:
    try:
        return registry.ping()
    except Exception:
        return False


def _faults(registry: Registry) -> dict[str, str]:
    """What the other roles report they cannot do now (e.g. the consumer: 'ENOSPC: ...').
    Search still answers, so these do not make the API unready."""
    try:
        return registry.faults()
    except Exception:
        return {}


READY = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {"status": {"type": "string"}, "checks": {"type": "object"}},
}
READY_RESPONSES = {
    200: {"description": "ready", "content": {"application/json": {"schema": READY}}},
    503: {
        "description": "not ready: `failed` names what is missing",
        "content": {"application/json": {"schema": READY}},
    },
}


def search_checks(registry: Registry, serving: ServingState) -> dict[str, bool]:
    """What answering searches needs: Redis (keys, rate limits) and a loaded snapshot and index."""
    return {"redis": _redis_ok(registry), "snapshot_and_index": serving.holder.ready}


def ingest_checks(settings: Settings, registry: Registry) -> dict[str, bool]:
    """What taking pairs needs: the Kafka broker and Redis (keys, duplicate ids)."""
    return {"kafka": kafka_ready(settings.kafka_bootstrap), "redis": _redis_ok(registry)}


def answer(role: str, checks: dict[str, bool], registry: Registry, serving: ServingState, **extra) -> JSONResponse:
    failed = [name for name, ok in checks.items() if not ok]
    body = {"status": "ready" if not failed else "not ready", "role": role, "checks": checks, **extra}
    body["faults"] = _faults(registry)
    if serving.holder.ready:
        current = serving.holder.get()
        body["serving"] = {"snapshot": current.snapshot, "index": current.index.snapshot, "size": current.index.size}
    if failed:
        body["failed"] = failed
        body["message"] = f"not ready for {role}: " + ", ".join(f"{name} is not available" for name in failed)
    return JSONResponse(body, status_code=503 if failed else 200)


@router.get("/readyz", responses=READY_RESPONSES)
def readyz(
    settings: Settings = Depends(get_settings),
    registry: Registry = Depends(get_registry),
    serving: ServingState = Depends(get_serving),
):
    """What a load balancer should use: search readiness (Redis, a snapshot and an index
    loaded), so a replica keeps serving searches while Kafka is down; `ingest` says whether
    it can take pairs now (a POST answers 503 `kafka_unavailable` when it cannot)."""
    ingest = ingest_checks(settings, registry)
    return answer(
        "search",
        search_checks(registry, serving),
        registry,
        serving,
        ingest={"ready": all(ingest.values()), "checks": ingest},
    )


@router.get("/readyz/search", responses=READY_RESPONSES)
def readyz_search(registry: Registry = Depends(get_registry), serving: ServingState = Depends(get_serving)):
    """200 when this replica can answer searches: Redis answers, a snapshot and its index are loaded."""
    return answer("search", search_checks(registry, serving), registry, serving)


@router.get("/readyz/ingest", responses=READY_RESPONSES)
def readyz_ingest(
    settings: Settings = Depends(get_settings),
    registry: Registry = Depends(get_registry),
    serving: ServingState = Depends(get_serving),
):
    """200 when this replica can take pairs: Kafka and Redis answer (no index needed)."""
    return answer("ingest", ingest_checks(settings, registry), registry, serving)


@router.get(
    "/metrics",
    dependencies=[require("admin")],
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **AUTH_RESPONSES,
    },
)
def prometheus() -> Response:
    """This API process's metrics (HTTP, ingest, search); each worker serves its own on its metrics port."""
    return Response(generate_latest(metrics.API), media_type=CONTENT_TYPE_LATEST)
