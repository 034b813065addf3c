"""One error body for the whole API: `{"detail": {"error": code, "message": text, ...}}`,
where `...` names what is wrong (item index, field, id)."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service import metrics
from service.validation import PairError


def api_error(status: int, error: str, message: str, **extra) -> HTTPException:
    return HTTPException(status, detail={"error": error, "message": message, **extra})


def _pair_error(request: Request, exc: PairError) -> JSONResponse:
    metrics.INGEST_REJECTED.labels(exc.error).inc()
    return JSONResponse({"detail": exc.detail()}, status_code=exc.status)


def _request_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's body/query checks, reshaped: the first problem named, item index included."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [p for p in first.get("loc", ()) if p != "body"]
    where = ".".join(map(str, loc)) or "request"
    detail = {"error": "invalid_request", "message": f"{where}: {first.get('msg', 'invalid')}"}
    if len(loc) >= 2 and loc[0] == "pairs" and isinstance(loc[1], int):
        detail["item"] = loc[1]
        if len(loc) >= 3:
            detail["field"] = str(loc[2])
    elif loc:
        detail["field"] = str(loc[-1])
    detail["errors"] = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                        for e in errors[:10]]  # fmt: skip
    if request.url.path.startswith("/v1/pairs"):
        metrics.INGEST_REJECTED.labels("invalid_request").inc()
    return JSONResponse({"detail": detail}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PairError, _pair_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
