"""What every client-side `modx` verb shares: where the API is and which key to send.

    def verb(url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None):
        with api_client(url, api_key) as client: ...

`--url` defaults to $MODX_URL, else http://127.0.0.1:8000; `--api-key` to $MODX_API_KEY,
else the secret in `<data_dir>/admin.key` (the one `modx up` makes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer

from service.settings import Settings
from trainer import layout

DEFAULT_URL = "http://127.0.0.1:8000"

UrlOption = Annotated[str, typer.Option("--url", envvar="MODX_URL", help="the API of a running stack (modx up)")]
ApiKeyOption = Annotated[
    Optional[str],
    typer.Option(
        "--api-key", envvar="MODX_API_KEY", show_envvar=True, help="default: the secret in <data_dir>/admin.key"
    ),
]


def admin_key_path() -> Path:
    return layout.admin_key_file(Settings().data_dir)


def resolve_key(api_key: str | None) -> str | None:
    """The given key, else `<data_dir>/admin.key`'s, else None (the API will answer 401)."""
    if api_key:
        return api_key.strip()
    try:
        return admin_key_path().read_text().strip() or None
    except OSError:
        return None


def api_client(url: str, api_key: str | None, timeout_s: float = 60.0) -> httpx.Client:
    key = resolve_key(api_key)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, timeout=timeout_s, headers=headers)
