"""Retries of a phase whose training failed: bounded, with backoff, once the cause is gone.

    retries = PhaseRetries(settings, registry)
    if (why := retries.wait_reason(phase)) is None:
        try: train(phase); retries.succeeded(phase)
        except Exception as e: retries.failed(phase, e)

A disk fault (full, read-only) does not count as an attempt: the phase waits, with
backoff, until the data directory takes writes again (`faults.disk_fault`). Any other
error counts; after `train_max_attempts` the phase is `failed` with the last error. An
error of a kind a retry cannot fix (`faults.permanent`: bad data, a bug) fails it at once.
Between attempts the phase's status.json says `retry` with the attempt count and the error.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from service import faults
from service.registry import Registry
from service.settings import Settings

log = logging.getLogger("modx.retry")


@dataclass
class Attempts:
    backoff: faults.Backoff  # a step per failure, disk waits included
    count: int = 0
    not_before: float = 0.0  # time.monotonic()
    error: str = ""


class PhaseRetries:
    def __init__(self, s: Settings, registry: Registry):
        self.s, self.registry = s, registry
        self.phases: dict[int, Attempts] = {}

    def wait_reason(self, phase: int) -> str | None:
        """Why `phase` must not be trained now (its disk is faulty, its backoff runs), or None."""
        disk = faults.disk_fault(self.s.data_dir)
        if disk is not None:
            return disk
        state = self.phases.get(phase)
        if state is not None and time.monotonic() < state.not_before:
            return f"attempt {state.count + 1} in {state.not_before - time.monotonic():.0f}s after: {state.error}"
        return None

    def succeeded(self, phase: int) -> None:
        self.phases.pop(phase, None)

    def failed(self, phase: int, exc: BaseException) -> str:
        """Record a failure; returns the phase's status now: 'retry' or 'failed'."""
        error = f"{type(exc).__name__}: {exc}"[:2000]
        state = self.phases.setdefault(phase, Attempts(self._backoff()))
        disk = faults.disk_error(exc) or faults.disk_fault(self.s.data_dir)
        if faults.permanent(exc):
            return self._fail(phase, f"cannot be fixed by a retry: {error}", state)
        if disk is None:
            state.count += 1
        if state.count >= self.s.train_max_attempts:
            return self._fail(phase, f"gave up after {state.count} attempts: {error}", state)
        delay = state.backoff.next()
        state.error, state.not_before = error, time.monotonic() + delay
        log.warning("phase %d: training failed (%s); attempt %d in %.0fs", phase, disk or error, state.count + 1, delay)
        self._set(phase, "retry", attempts=state.count, error=error, disk=disk, retry_in_s=delay)
        return "retry"

    def _backoff(self) -> faults.Backoff:
        return faults.Backoff(self.s.train_retry_first_s, self.s.train_retry_cap_s)

    def _fail(self, phase: int, reason: str, state: Attempts) -> str:
        log.error("phase %d failed for good: %s", phase, reason)
        self._set(phase, "failed", attempts=state.count, error=reason)
        self.phases.pop(phase, None)
        return "failed"

    def _set(self, phase: int, status: str, **extra) -> None:
        try:
            self.registry.set_phase_status(self.s.data_dir, phase, status, **extra)
        except Exception as e:  # the disk (or Redis) is still away: the state above is kept in memory
            log.warning("phase %d: could not record status %s: %s", phase, status, e)
