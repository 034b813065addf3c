"""One error body for the whole API: `{"detail": {"error": code, "message": text, ...}}`,
where `...` names what is wrong (item index, field, id).

Framework errors are reshaped into it too: an unparseable body (invalid UTF-8, JSON syntax,
nesting too deep, an integer too long) is 400 `invalid_json`, an unknown path 404
`not_found`, a wrong method 405 `method_not_allowed`. `responses(...)` declares the body
and the statuses a route can answer in the OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import metrics
from service.limits import PairError
from service.validation import shown

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "unavailable",
}
WHEN = {
    400: "the body cannot be parsed (invalid UTF-8, JSON or multipart, nesting too deep, an integer too long)",
    401: "no API key, or an unknown or revoked one (missing_key, unknown_key)",
    403: "the key lacks the route's scope (insufficient_scope)",
    404: "not found",
    409: "a conflict with what exists (a key name taken, nothing to seal)",
    413: "a size limit is exceeded (the error names it)",
    415: "an image that is not PNG, JPEG or WebP, or a body of the wrong Content-Type",
    422: "the request is well-formed JSON but invalid (the error names the field)",
    429: "slow down: over the key's rate, or writes paused (consumer lag, low disk); see Retry-After",
    503: "a dependency is not available yet (Kafka, the index)",
}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    error: str = Field(description="machine-readable code, e.g. invalid_unicode")
    message: str = Field(description="what is wrong, for a person")
    item: int | None = Field(None, description="index of the offending pair in the request")
    field: str | None = Field(None, description="the offending field, dotted (metadata.a.0)")


class ErrorBody(BaseModel):
    detail: ErrorDetail


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route: each status with the error body and when it happens."""
    return {
        status: {"model": ErrorBody, "description": WHEN.get(status, CODES.get(status, "error"))} for status in statuses
    }


def api_error(status: int, error: str, message: str, headers: dict[str, str] | None = None, **extra) -> HTTPException:
    return HTTPException(status, detail={"error": error, "message": message, **extra}, headers=headers)


def _pair_error(request: Request, exc: PairError) -> JSONResponse:
    metrics.INGEST_REJECTED.labels(exc.error).inc()
    return JSONResponse({"detail": exc.detail()}, status_code=exc.status)


def _unparseable(exc: BaseException | None) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"the body is not valid UTF-8 (byte {exc.start}: {exc.reason})"
    if isinstance(exc, RecursionError):
        return "the body's JSON is nested too deeply"
    if isinstance(exc, ValueError) and "digits" in str(exc):
        return f"the body holds an integer too long to parse: {exc}"
    return f"the body cannot be parsed: {exc!r}" if exc is not None else "the body cannot be parsed"


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Framework HTTPExceptions (FastAPI's 400, Starlette's 404/405) in the project's body."""
    if isinstance(exc.detail, dict) and "error" in exc.detail:
        detail = exc.detail
    elif exc.status_code == 400:
        form = request.headers.get("content-type", "").startswith("multipart/")
        detail = {"error": "invalid_multipart" if form else "invalid_json", "message": _unparseable(exc.__cause__)}
    else:
        detail = {"error": CODES.get(exc.status_code, f"http_{exc.status_code}"), "message": str(exc.detail)}
        if exc.status_code == 404:
            detail["message"] = f"no route {request.url.path}"
        elif exc.status_code == 405:
            detail["message"] = f"{request.method} is not allowed on {request.url.path}"
    if request.url.path.startswith("/v1/pairs") and 400 <= exc.status_code < 500:
        metrics.INGEST_REJECTED.labels(detail["error"]).inc()
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


def _request_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's body/query checks, reshaped: the first problem named, item index included."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        error = (first.get("ctx") or {}).get("error", "invalid JSON")
        detail = {
            "error": "invalid_json",
            "message": f"the body is not valid JSON: {error} at position {first.get('loc', ('', '?'))[-1]}",
        }
        return JSONResponse({"detail": detail}, status_code=400)
    loc = [shown(p) if isinstance(p, str) else p for p in first.get("loc", ()) if p != "body"]
    where = ".".join(map(str, loc)) or "request"
    code = "invalid_unicode" if first.get("type") == "string_unicode" else "invalid_request"
    detail = {"error": code, "message": f"{where}: {first.get('msg', 'invalid')}"}
    if len(loc) >= 2 and loc[0] == "pairs" and isinstance(loc[1], int):
        detail["item"] = loc[1]
        if len(loc) >= 3:
            detail["field"] = ".".join(map(str, loc[2:]))
    elif loc:
        detail["field"] = ".".join(map(str, loc))
    detail["errors"] = [
        {
            "loc": [shown(p) if isinstance(p, str) else p for p in e.get("loc", ())],
            "msg": e.get("msg"),
            "type": e.get("type"),
        }
        for e in errors[:10]
    ]
    if request.url.path.startswith("/v1/pairs"):
        metrics.INGEST_REJECTED.labels(code).inc()
    return JSONResponse({"detail": detail}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PairError, _pair_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
