"""Key management (admin): create (the secret is shown once, in this answer), list, revoke.

A change is written to `keys.json` first, then to the Redis cache every replica reads, so
a new or revoked key takes effect on every replica's next request.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.auth import AUTH_RESPONSES, Auth, require
from service.deps import json_body
from service.errors import api_error, responses
from service.keys import KeyProblem
from service.schemas import KeyIn, KeyOut, KeysOut, NewKey

router = APIRouter(prefix="/v1/keys", tags=["keys"], dependencies=[require("admin")], responses=AUTH_RESPONSES)


def _auth(request: Request) -> Auth:
    return request.app.state.auth


@router.post(
    "",
    status_code=201,
    response_model=NewKey,
    responses=responses(400, 409, 415, 422),
    dependencies=[Depends(json_body)],
)
def create_key(body: KeyIn, request: Request) -> NewKey:
    try:
        key, secret = _auth(request).store.create(body.scope, body.name, body.rate)
    except KeyProblem as e:
        raise api_error(e.status, e.error, e.message) from None
    return NewKey(**key.public(), key=secret)


@router.get("")
def list_keys(request: Request) -> KeysOut:
    """Every key, revoked ones included; `last_used` may lag by up to `key_sync_s` on other replicas."""
    auth = _auth(request)
    pending = auth.last_used()
    out = []
    for key in auth.store.list():
        used = max(key.last_used or 0.0, pending.get(key.hash, 0.0)) or None
        out.append(KeyOut(**{**key.public(), "last_used": used}))
    return KeysOut(keys=out)


@router.delete("/{name}", response_model=KeyOut, responses=responses(404))
def revoke_key(name: str, request: Request) -> KeyOut:
    try:
        key = _auth(request).store.revoke(name)
    except KeyProblem as e:
        raise api_error(e.status, e.error, e.message) from None
    return KeyOut(**key.public())
