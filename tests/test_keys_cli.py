"""`modx keys create | list | revoke`, on the data dir when no API answers, and through a
running API (a real uvicorn server over the test's Kafka and Redis) with an admin key from
--api-key or <data_dir>/admin.key."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from service.app import create_app
from service.cli import app as cli
from service.infra import free_port
from service.keys import KeyStore, write_secret
from tests.helpers import bearer, make_key, settings_env
from trainer.layout import ADMIN_KEY_FILE, KEYS_FILE

runner = CliRunner()


def modx(settings, *args: str, url: str):
    result = runner.invoke(cli, list(args), env={**settings_env(settings), "MODX_URL": url, "MODX_API_KEY": ""})
    return result.exit_code, result.output


@pytest.fixture
def server(settings):
    """The API served over HTTP on a free port; yields its URL."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(15)


def test_offline_create_list_revoke(settings):
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: the verbs use the data dir
    code, out = modx(settings, "keys", "create", "--scope", "write", "--name", "ingest", "--rate", "5", url=nowhere)
    assert code == 0, out
    assert "(offline)" in out
    secret = out.strip().splitlines()[-1]
    key = KeyStore(settings.data_dir, None).lookup(secret)
    assert key is not None and key.name == "ingest" and key.scope == "write" and key.rate == 5
    assert secret not in (settings.data_dir / KEYS_FILE).read_text()
    code, out = modx(settings, "keys", "list", url=nowhere)
    assert code == 0 and "ingest" in out and "write" in out and secret not in out
    code, out = modx(settings, "keys", "revoke", "ingest", url=nowhere)
    assert code == 0, out
    assert KeyStore(settings.data_dir, None).lookup(secret) is None
    code, out = modx(settings, "keys", "revoke", "nobody", url=nowhere)
    assert code == 1 and "no key named 'nobody'" in out
    code, out = modx(settings, "keys", "create", "--scope", "root", url=nowhere)
    assert code == 1 and "invalid_scope" in out


def test_offline_changes_reach_a_running_api_at_once(settings, server):
    admin = make_key(settings)
    code, out = modx(settings, "keys", "create", "--scope", "read", "--name", "r", "--offline", url=server)
    assert code == 0 and "(offline)" in out, out
    secret = out.strip().splitlines()[-1]
    assert httpx.get(f"{server}/v1/phases", headers=bearer(secret)).status_code == 200
    assert modx(settings, "keys", "revoke", "r", "--offline", url=server)[0] == 0
    assert httpx.get(f"{server}/v1/phases", headers=bearer(secret)).status_code == 401
    assert httpx.get(f"{server}/v1/phases", headers=bearer(admin)).status_code == 200


def test_online_create_list_revoke(settings, server):
    admin = make_key(settings, name="ops")
    code, out = modx(settings, "keys", "create", "--scope", "read", "--name", "viewer", "--api-key", admin, url=server)
    assert code == 0 and server in out and "(offline)" not in out, out
    secret = out.strip().splitlines()[-1]
    assert httpx.get(f"{server}/v1/phases", headers=bearer(secret)).status_code == 200
    code, out = modx(settings, "keys", "list", "--api-key", admin, url=server)
    assert code == 0 and "viewer" in out and "ops" in out
    code, out = modx(settings, "keys", "revoke", "viewer", "--api-key", admin, url=server)
    assert code == 0 and server in out
    assert httpx.get(f"{server}/v1/phases", headers=bearer(secret)).status_code == 401


def test_online_needs_an_admin_key(settings, server):
    code, out = modx(settings, "keys", "list", url=server)  # no --api-key, no admin.key yet
    assert code == 1 and "401" in out and "missing_key" in out
    reader = make_key(settings, "read")
    code, out = modx(settings, "keys", "create", "--scope", "admin", "--api-key", reader, url=server)
    assert code == 1 and "403" in out and "insufficient_scope" in out
    write_secret(settings.data_dir / ADMIN_KEY_FILE, make_key(settings))  # as `modx up` leaves it
    code, out = modx(settings, "keys", "list", url=server)
    assert code == 0, out
    assert (settings.data_dir / ADMIN_KEY_FILE).stat().st_mode & 0o777 == 0o600
