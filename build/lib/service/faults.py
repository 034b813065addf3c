"""Faults the roles survive: a full or read-only data disk, and failures worth retrying.

    reason = disk_fault(data_dir, min_free_bytes)   # None when the disk takes writes again
    if disk_error(exc): ...                          # ENOSPC / EROFS / EDQUOT / EIO in the chain
    backoff = Backoff(first_s=0.5, cap_s=30); delay = backoff.next(); backoff.reset()

A disk fault is never the data's fault: whoever meets one stops writing, waits with
backoff, and writes again once `disk_fault` says the cause is gone. Errors of the
permanent kinds below are the data's or the code's; a retry cannot fix them.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from trainer import layout

DISK_ERRNOS = {errno.ENOSPC: "ENOSPC", errno.EROFS: "EROFS", errno.EDQUOT: "EDQUOT", errno.EIO: "EIO"}
DISK_WORDS = {
    "No space left": "ENOSPC",
    "Read-only file system": "EROFS",
    "Disk quota": "EDQUOT",
    "file write failed": "ENOSPC",
}  # safetensors / torch.save wrap the OSError in their own error
PERMANENT = (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def disk_error(exc: BaseException) -> str | None:
    """'ENOSPC: ...' (or EROFS, EDQUOT, EIO) when `exc` or what caused it is a disk fault."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            return f"{DISK_ERRNOS[e.errno]}: {e}"
        for words, code in DISK_WORDS.items():
            if words in str(e):
                return f"{code}: {e}"
    return None


def permanent(exc: BaseException) -> bool:
    """Whether a retry cannot fix `exc` (bad data or a bug), never for a disk fault."""
    return disk_error(exc) is None and isinstance(exc, PERMANENT)


def disk_fault(data_dir: str | Path, min_free_bytes: int = 0) -> str | None:
    """Why the data directory cannot take writes now (read-only, full), or None.

    Probes with a small file written, fsynced and removed, so a read-only remount or a
    full filesystem is seen before any real write fails half-way."""
    data_dir = Path(data_dir)
    try:
        free = shutil.disk_usage(data_dir).free
    except OSError as e:
        return f"{DISK_ERRNOS.get(e.errno, 'EIO')}: {e}"
    if free < min_free_bytes:
        return f"ENOSPC: {free} bytes free in {data_dir}, under {min_free_bytes}"
    probe = layout.disk_check_file(data_dir)
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return f"{DISK_ERRNOS.get(e.errno, 'EIO')}: {e}"
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return None


@dataclass
class Backoff:
    """Exponential delays: first_s, 2*first_s, ... up to cap_s."""

    first_s: float = 0.5
    cap_s: float = 30.0
    attempts: int = field(default=0, init=False)

    def next(self) -> float:
        delay = min(self.cap_s, self.first_s * 2**self.attempts)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
