"""`modx keys create | list | revoke`: through a running API (an admin key), else on the data dir.

When `--url` answers, the verbs call /v1/keys with the admin key (`--api-key`, $MODX_API_KEY,
else `<data_dir>/admin.key`); when nothing listens there, or with `--offline`, they change
`<data_dir>/keys.json` directly (reaching the data dir is the authority) and refresh the
Redis cache when $MODX_REDIS_URL answers. `create` prints the new key on its last line.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Annotated, Optional

import httpx
import redis
import typer

from service.cli_client import ApiKeyOption, UrlOption
from service.client import DEFAULT_URL, Client
from service.keys import KeyProblem, KeyStore
from service.settings import Settings

app = typer.Typer(help="API keys: create (shown once), list, revoke", no_args_is_help=True)

OfflineOption = Annotated[bool, typer.Option("--offline", help="change <data_dir>/keys.json even if an API answers")]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _online(url: str, offline: bool) -> bool:
    if offline:
        return False
    try:
        httpx.get(f"{url}/healthz", timeout=3.0)
        return True
    except httpx.TransportError:
        return False


def _request(url: str, api_key: str | None, method: str, path: str, **kw) -> dict:
    with Client(url, api_key, timeout_s=30.0) as client:
        resp = client.http.request(method, path, **kw)
    if resp.status_code >= 400:
        try:
            detail = resp.json()["detail"]
            message = f"{detail['error']}: {detail['message']}"
        except (ValueError, KeyError, TypeError):
            message = resp.text[:300]
        _fail(f"{url} answered {resp.status_code} {message}")
    return resp.json()


def _store() -> KeyStore:
    settings = Settings()
    logging.getLogger("modx.keys").setLevel(logging.ERROR)  # a stack that is down has no Redis: not news
    client = redis.Redis.from_url(
        settings.redis_url, decode_responses=True, socket_connect_timeout=0.5, socket_timeout=2.0
    )
    return KeyStore(settings.data_dir, client)


def _offline(action):
    try:
        return action(_store())
    except KeyProblem as e:
        _fail(f"{e.error}: {e.message}")


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if t else "-"


@app.command()
def create(
    scope: Annotated[str, typer.Option(help="read | write | admin")],
    name: Annotated[Optional[str], typer.Option(help="default: <scope>-<n>")] = None,
    rate: Annotated[Optional[float], typer.Option(help="requests/s (default: the key_rate setting)")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    offline: OfflineOption = False,
):
    """Make a key; its secret is printed once, on the last line, and stored only as a hash."""
    if _online(url, offline):
        body = {"scope": scope, "name": name, "rate": rate}
        made = _request(url, api_key, "POST", "/v1/keys", json={k: v for k, v in body.items() if v is not None})
        where = url
    else:
        key, secret = _offline(lambda store: store.create(scope, name, rate))
        made, where = {**key.public(), "key": secret}, f"{Settings().data_dir} (offline)"
    rate_text = f"{made['rate']:g}/s" if made["rate"] else "the default rate"
    typer.echo(f"created key {made['name']!r} (scope {made['scope']}, {rate_text}) in {where}; it is shown only now:")
    typer.echo(made["key"])


@app.command("list")
def list_(url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, offline: OfflineOption = False):
    """Every key: name, scope, rate, created, last used, revoked (never the secret)."""
    if _online(url, offline):
        keys = _request(url, api_key, "GET", "/v1/keys")["keys"]
    else:
        keys = [k.public() for k in _offline(lambda store: store.list())]
    typer.echo(f"{'name':<24} {'scope':<6} {'rate':>8}  {'created':<20} {'last used':<20} revoked")
    for k in keys:
        rate = f"{k['rate']:g}" if k["rate"] else "default"
        typer.echo(
            f"{k['name']:<24} {k['scope']:<6} {rate:>8}  {_when(k['created']):<20} {_when(k['last_used']):<20} "
            f"{_when(k['revoked'])}"
        )


@app.command()
def revoke(name: str, url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, offline: OfflineOption = False):
    """Revoke a key by name: refused by every API replica from its next request."""
    if _online(url, offline):
        key = _request(url, api_key, "DELETE", f"/v1/keys/{name}")
        where = url
    else:
        key = _offline(lambda store: store.revoke(name)).public()
        where = f"{Settings().data_dir} (offline)"
    typer.echo(f"revoked key {key['name']!r} ({key['scope']}) in {where}")
