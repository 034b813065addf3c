"""The dashboard: a static page at `/` (no key: it holds no data) that reads the API with a
read key kept in the browser's session storage; and `GET /v1/timeline` (read), the last
minutes of ingest, lag and phase fill it draws (service.timeline).

The page and its chart library (uPlot, vendored under service/static/vendor/) ship in the
package: nothing is built or fetched to run it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from service.auth import AUTH_RESPONSES, require

STATIC = Path(__file__).resolve().parents[1] / "static"
router = APIRouter(tags=["dashboard"])


@router.get("/", include_in_schema=False)
def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/v1/timeline", dependencies=[require("read")], responses=AUTH_RESPONSES)
def timeline(request: Request) -> dict:
    """Samples of the last `timeline_window_s`: `{"t", "pairs", "phase", "fill", "lag"}` every
    `timeline_interval_s` (null: not readable then); the ingest rate is the slope of `pairs`."""
    tl = request.app.state.timeline
    return {"interval_s": tl.interval_s, "samples": tl.get()}
