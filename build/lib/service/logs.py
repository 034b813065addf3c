"""Logging of every role: JSON lines when stderr is not a terminal, readable text on one.

    setup("trainer", verbose=False)            # once per process (the `modx` commands do it)
    with context(phase=3, snapshot=2): ...     # these fields go on every record logged inside
    REQUEST_ID.set("3f2a...")                  # the API's request middleware sets it per request

A JSON line: {"ts": ISO-8601 UTC, "level", "role", "logger", "message", "request_id"?,
"phase"?, "snapshot"?, "exc"?, plus any `extra=` fields of the call}. `MODX_LOG_FORMAT`
(auto | json | text) overrides the choice.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from contextlib import contextmanager
from datetime import datetime, timezone

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
PHASE: contextvars.ContextVar[int | None] = contextvars.ContextVar("phase", default=None)
SNAPSHOT: contextvars.ContextVar[int | None] = contextvars.ContextVar("snapshot", default=None)
CONTEXT = {"request_id": REQUEST_ID, "phase": PHASE, "snapshot": SNAPSHOT}
RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


@contextmanager
def context(**fields):
    """Set `phase` / `snapshot` / `request_id` for the records logged inside the block."""
    tokens = [(CONTEXT[name], CONTEXT[name].set(value)) for name, value in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def _fields(record: logging.LogRecord) -> dict:
    out = {name: var.get() for name, var in CONTEXT.items() if var.get() is not None}
    out.update({k: v for k, v in vars(record).items() if k not in RECORD_FIELDS and not k.startswith("_")})
    return out


class JsonFormatter(logging.Formatter):
    def __init__(self, role: str):
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "role": self.role,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, role: str):
        super().__init__("%(asctime)s " + role + " %(levelname)s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return f"{text}  [{extra}]" if extra else text


def setup(role: str, verbose: bool = False, fmt: str = "auto") -> None:
    """One handler on stderr for the whole process; modx's loggers at INFO (DEBUG if verbose)."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(role) if fmt == "json" else TextFormatter(role))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("modx").setLevel(logging.DEBUG if verbose else logging.INFO)
