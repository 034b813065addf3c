"""Phases: list them; seal the open one now.

The consumer owns the phase buffer, so sealing is a request through Redis that the consumer
answers between batches; the endpoint waits up to `seal_wait_s` for the answer.
"""

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from service.deps import get_registry, get_settings
from service.errors import api_error
from service.registry import Registry
from service.settings import Settings

router = APIRouter(prefix="/v1/phases", tags=["phases"])


@router.get("")
def list_phases(registry: Registry = Depends(get_registry), settings: Settings = Depends(get_settings)) -> dict:
    """Every phase: status open / sealed / training / trained / failed, counts and times."""
    registry.ensure(settings.data_dir)
    phases = list(registry.phases().values())
    open_phase = next((p["phase"] for p in phases if p["status"] == "open"), None)
    return {"phases": phases, "open": open_phase}


@router.post("/seal", responses={202: {"description": "requested; the consumer has not answered yet"},
                                 409: {"description": "the open phase is empty"}})  # fmt: skip
def seal(registry: Registry = Depends(get_registry), settings: Settings = Depends(get_settings)):
    request_id = registry.request_seal()
    answer = registry.wait_seal(request_id, settings.seal_wait_s)
    if answer is None:
        return JSONResponse({"status": "requested", "request": request_id,
                             "message": "no consumer answered yet; it will seal when it next runs"},
                            status_code=202)  # fmt: skip
    if answer["sealed"] is None:
        raise api_error(409, "empty_phase", f"nothing to seal: {answer.get('reason', 'the open phase is empty')}")
    return {"status": "sealed", "phase": answer["sealed"]}
