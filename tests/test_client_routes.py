"""Every route of the API has its call in service.client (and no call names a route that
does not exist): the client is checked against the app's own route table."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute

from service.app import ROUTERS
from service.endpoints import Call, Endpoints


class Recorder(Endpoints):
    def __init__(self):
        self.calls: list[Call] = []

    def _call(self, call: Call):
        self.calls.append(call)


def every_call() -> set[tuple[str, str]]:
    r = Recorder()
    r.post([{"id": "a", "text": "t", "image": b"\x89PNG"}], wait="searchable", timeout=1)
    r.upload(b"\x89PNG", "t", id="a")
    r.pair("a"), r.delete("a"), r.delete_many(ids=["a"]), r.image("a")
    r.search(text="t"), r.seal(), r.phases(), r.snapshots(), r.recall(), r.drift(), r.download(1)
    r.health(), r.ready(), r.ready("search"), r.ready("ingest"), r.metrics(), r.timeline()
    r.create_key("read"), r.keys(), r.revoke_key("k")
    return {(c.method, c.path) for c in r.calls}


def matches(template: str, path: str) -> bool:
    return re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path) is not None


def test_every_route_has_a_client_call_and_back():
    routes = {
        (method, route.path)
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in route.methods
    }
    calls = every_call()
    uncalled = {(m, t) for m, t in routes if not any(m == cm and matches(t, cp) for cm, cp in calls)}
    assert not uncalled, f"routes without a client call: {sorted(uncalled)}"
    unrouted = {(m, p) for m, p in calls if not any(m == rm and matches(t, p) for rm, t in routes)}
    assert not unrouted, f"client calls no route answers: {sorted(unrouted)}"
