"""Liveness and readiness (no key needed) and Prometheus metrics (an admin key)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from service.auth import AUTH_RESPONSES, require
from service.deps import get_registry, get_serving, get_settings
from service.infra import kafka_ready
from service.metrics import SharedMetrics
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


@router.get(
    "/readyz",
    responses={
        200: {"description": "ready", "content": {"application/json": {"schema": READY}}},
        503: {
            "description": "not ready: `failed` names what is missing",
            "content": {"application/json": {"schema": READY}},
        },
    },
)
def readyz(
    settings: Settings = Depends(get_settings),
    registry: Registry = Depends(get_registry),
    serving: ServingState = Depends(get_serving),
):
    """200 only when Kafka and Redis answer and a snapshot and an index are loaded; `faults`
    names what another role cannot do now (the consumer on a full or read-only disk)."""
    checks = {
        "kafka": kafka_ready(settings.kafka_bootstrap),
        "redis": _redis_ok(registry),
        "snapshot_and_index": serving.holder.ready,
    }
    failed = [name for name, ok in checks.items() if not ok]
    body = {"status": "ready" if not failed else "not ready", "checks": checks, "faults": _faults(registry)}
    if serving.holder.ready:
        current = serving.holder.get()
        body["serving"] = {"snapshot": current.snapshot, "index": current.index.snapshot, "size": current.index.size}
    if failed:
        body["failed"] = failed
        body["message"] = "not ready: " + ", ".join(f"{name} is not available" for name in failed)
    return JSONResponse(body, status_code=503 if failed else 200)


@router.get(
    "/metrics",
    dependencies=[require("admin")],
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **AUTH_RESPONSES,
    },
)
def prometheus(request: Request, registry: Registry = Depends(get_registry)) -> Response:
    """This process's metrics plus the counters other modx processes keep in Redis."""
    shared = getattr(request.app.state, "shared_metrics", None)
    if shared is None:
        shared = request.app.state.shared_metrics = CollectorRegistry()
        shared.register(SharedMetrics(registry))
    return Response(generate_latest(REGISTRY) + generate_latest(shared), media_type=CONTENT_TYPE_LATEST)
