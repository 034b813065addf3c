"""Dependencies injected into the routers; all state hangs off `app.state` (set by
`service.app.create_app`), so tests and other routers can swap any of it."""

from __future__ import annotations

from fastapi import Depends, Request

from service.backpressure import WriteGate
from service.ingest import Ingestor
from service.registry import Registry
from service.settings import Settings
from service.serving import ServingState
from service.validation import Limits


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_limits(settings: Settings = Depends(get_settings)) -> Limits:
    return Limits.from_settings(settings)


def get_registry(request: Request) -> Registry:
    return request.app.state.registry


def get_ingestor(request: Request) -> Ingestor:
    return request.app.state.ingestor


def get_serving(request: Request) -> ServingState:
    return request.app.state.serving


def get_write_gate(request: Request) -> WriteGate:
    return request.app.state.write_gate
