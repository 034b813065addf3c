"""The last minutes of ingest, consumer lag and phase fill, sampled by the API for the dashboard.

Every `timeline_interval_s` the API records one sample `{"t": Unix seconds, "pairs": pairs
written to phase buffers so far, "phase": open phase, "fill": pairs in it, "lag": messages
the consumer group is behind}` (a field it could not read now is null: Redis or Kafka
away) and keeps `timeline_window_s` of them (`GET /v1/timeline`). The dashboard draws the
ingest rate from consecutive `pairs`. Each replica keeps its own; nothing is stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

log = logging.getLogger("modx.timeline")


class Timeline:
    def __init__(self, registry, write_gate, interval_s: float, window_s: float):
        self.registry, self.write_gate, self.interval_s = registry, write_gate, interval_s
        self.samples: deque[dict] = deque(maxlen=max(2, int(window_s / interval_s) + 1))

    def sample(self) -> dict:
        out = {"t": round(time.time(), 3), "pairs": None, "phase": None, "fill": None, "lag": None}
        try:
            phases = list(self.registry.phases().values())
            out["pairs"] = sum(int(p.get("n", 0)) for p in phases)
            current = next((p for p in phases if p.get("status") == "open"), None)
            if current is not None:
                out["phase"], out["fill"] = current["phase"], int(current.get("n", 0))
        except Exception as e:  # Redis away: the sample says so with nulls
            log.debug("timeline without phases: %r", e)
        out["lag"] = self.write_gate.consumer_lag()
        self.samples.append(out)
        return out

    def get(self) -> list[dict]:
        return list(self.samples)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.sample()
            except Exception:
                log.exception("timeline sample failed")
            stop.wait(self.interval_s)
