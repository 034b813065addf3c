"""The FastAPI application factory.

    app = create_app(settings)                       # the default routers (ROUTERS)
    app = create_app(settings, routers=[health.router, search.router])   # only these

Everything a router needs is on `app.state` (settings, registry, ingestor, auth) and reaches
it through the dependencies in `service.deps` and `service.auth`. CORS is off unless
`cors_origins` names origins.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from typing import Sequence

import faiss
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from service.auth import Auth
from service.backpressure import WriteGate
from service.body_limit import BodyLimit
from service.errors import install_error_handlers
from service.ingest import Ingestor
from service.observe import RequestObserver
from service.pair_state import PairStates, TrainedIds
from service.registry import Registry
from service.routers import dashboard, health, images, keys, pair, pairs, phases, search, snapshots
from service.serving import ServingState
from service.settings import Settings, get_settings
from service.timeline import Timeline

ROUTERS: list[APIRouter] = [
    health.router,
    pairs.router,
    pair.router,
    images.router,
    phases.router,
    search.router,
    snapshots.router,
    keys.router,
    dashboard.router,
]


@asynccontextmanager
async def lifespan(app: FastAPI):
    faiss.omp_set_num_threads(app.state.settings.search_threads)
    app.state.serving.load_first()  # before uvicorn listens: a restarted API never answers 503 for an index it has
    stop = threading.Event()
    poller = threading.Thread(
        target=app.state.serving.run, args=(stop, app.state.settings.serving_poll_s), name="serving-poller", daemon=True
    )
    poller.start()
    key_sync = threading.Thread(target=app.state.auth.run, args=(stop,), name="key-sync", daemon=True)
    key_sync.start()
    timeline = threading.Thread(target=app.state.timeline.run, args=(stop,), name="timeline", daemon=True)
    timeline.start()
    yield
    stop.set()
    for thread in (poller, key_sync, timeline):
        thread.join(timeout=10)
    app.state.ingestor.close()
    app.state.write_gate.close()
    app.state.registry.close()


def create_app(settings: Settings | None = None, routers: Sequence[APIRouter] | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="modx",
        version="0.1.0",
        lifespan=lifespan,
        description="Streaming continual CLIP training (Mod-X) and text-to-image search",
    )
    app.state.settings = settings
    app.state.registry = Registry.from_url(settings.redis_url)
    app.state.ingestor = Ingestor(settings)
    app.state.write_gate = WriteGate(settings)
    app.state.serving = ServingState(settings.data_dir, app.state.registry, settings.device, settings.index_device)
    app.state.pair_states = PairStates(app.state.serving, app.state.registry, TrainedIds(settings.data_dir))
    app.state.auth = Auth(settings, app.state.registry)
    app.state.timeline = Timeline(
        app.state.registry, app.state.write_gate, settings.timeline_interval_s, settings.timeline_window_s
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    app.add_middleware(RequestObserver)  # outermost of ours: every answer has its request id, counted and logged
    for router in ROUTERS if routers is None else routers:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC), name="static")
    return app
