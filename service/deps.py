"""Dependencies injected into the routers; all state hangs off `app.state` (set by
`service.app.create_app`), so tests and other routers can swap any of it."""

from __future__ import annotations

from fastapi import Depends, Request

from service.backpressure import WriteGate
from service.errors import api_error
from service.ingest import Ingestor
from service.limits import Limits
from service.pair_state import PairStates
from service.registry import Registry
from service.serving import ServingState
from service.settings import Settings


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


def get_pair_states(request: Request) -> PairStates:
    return request.app.state.pair_states


def get_write_gate(request: Request) -> WriteGate:
    return request.app.state.write_gate


def _content_type(request: Request, wanted: tuple[str, ...], what: str) -> None:
    """415 for a body whose Content-Type is not one of `wanted` (no body: the schema says what is missing)."""
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if has_body and not (media in wanted or (what == "json" and media.endswith("+json"))):
        got = f"not {media}" if media else "with a Content-Type header"
        raise api_error(
            415, "unsupported_content_type", f"send the body as {' or '.join(wanted)}, {got}", field="content-type"
        )


def json_body(request: Request) -> None:
    _content_type(request, ("application/json",), "json")


def form_body(request: Request) -> None:
    _content_type(request, ("multipart/form-data",), "form")
