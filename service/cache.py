"""Redis as a cache of the disk: an update made after the disk write, which never fails it.

Every role writes disk first and Redis second (service.status, the consumer, the workers'
shared metrics). When Redis is away or flushed mid-way the update is logged and dropped:
disk is ahead, and the next `status.sync`, `Registry.sync_sealed` or rebuild from disk
(`Registry.ensure`) catches Redis up.
"""

from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger("modx.cache")


def update_cache(update: Callable[[], object], what: str = "Redis cache") -> bool:
    """Run `update`; False (logged) if it failed, True if it went through."""
    try:
        update()
    except Exception as e:  # Redis down, flushed or failing mid-way: disk holds the truth
        log.warning("%s not updated (disk is; a later sync or rebuild catches up): %s", what, e)
        return False
    return True
