"""The consumer's write fault: why a batch could not be written, when it tries again, and
who is told.

A batch that cannot be written (a full or read-only disk, any error) sets the fault and a
backoff (`consumer_retry_cap_s` at most); the consumer waits it out with its partitions
paused. The fault is reported in the `modx_consumer_write_fault{reason}` gauge (ENOSPC,
EROFS, EDQUOT, EIO or other) and in Redis (`modx:fault:consumer`, expiring unless
refreshed), and so in `/readyz`. While idle the consumer
probes the disk, so it says when the disk fails, and when it takes writes again, without a
batch to try. The next batch written (or a good probe) clears the fault.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from service import faults, metrics
from service.registry import Registry
from service.settings import Settings

log = logging.getLogger("modx.consumer")

PROBE_EVERY_S = 2.0  # the idle disk probe's period (shorter if consumer_retry_cap_s is)


class WriteFault:
    def __init__(self, settings: Settings, registry: Registry, data_dir: Path):
        self.settings, self.registry, self.data_dir = settings, registry, data_dir
        self.reason: str | None = None
        self.retry_at = 0.0
        self.backoff = faults.Backoff(0.5, settings.consumer_retry_cap_s)
        self.probed = float("-inf")  # when the disk was last probed while idle

    def waiting(self) -> bool:
        """Whether a fault's backoff still runs (the consumer only keeps its group membership)."""
        return self.reason is not None and time.monotonic() < self.retry_at

    def failed(self, exc: BaseException) -> None:
        """A batch was not written because of `exc`: record why, back off, report it."""
        self.reason = faults.disk_error(exc) or f"{type(exc).__name__}: {exc}"
        delay = self.backoff.next()
        self.retry_at = time.monotonic() + delay
        log.warning("batch not written (%s); nothing committed, retrying in %.1fs", self.reason, delay)
        self.report()

    def report(self) -> None:
        """The gauges and `modx:fault:consumer` say the fault (or its absence); refreshes the key."""
        code = self.reason.split(":", 1)[0] if self.reason else None
        codes = list(faults.DISK_ERRNOS.values())
        code = code if code in codes or code is None else "other"
        for reason in [*codes, "other"]:
            metrics.CONSUMER_WRITE_FAULT.labels(reason).set(1 if code == reason else 0)
        try:
            self.registry.set_fault("consumer", self.reason, ttl_s=max(30.0, 3 * self.settings.consumer_retry_cap_s))
        except Exception as e:
            log.warning("could not report the fault to Redis: %s", e)

    def probe(self) -> None:
        """Idle (nothing to write, e.g. while the group rebalances): still say when the disk
        cannot take writes, and when it can again; at most every PROBE_EVERY_S seconds, or
        every `consumer_retry_cap_s` if that is shorter."""
        if time.monotonic() - self.probed < min(PROBE_EVERY_S, self.settings.consumer_retry_cap_s):
            return
        self.probed = time.monotonic()
        reason = faults.disk_fault(self.data_dir)
        if reason is None:
            self.recovered()
        elif reason != self.reason:
            log.warning("the data directory cannot take writes: %s", reason)
            self.reason = reason
            self.report()

    def recovered(self) -> None:
        """A batch was written (or the disk probed fine): clear the fault and its backoff."""
        if self.reason is not None:
            log.info("writing again after: %s", self.reason)
            self.reason = None
            self.backoff.reset()
            self.report()
