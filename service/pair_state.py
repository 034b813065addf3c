"""Where a pair is on its way through the service, for GET /v1/pairs/{id} and `wait=searchable`.

    queued      produced to Kafka (acks=all), not yet in a phase buffer
    buffered    written to phase n's buffer (durable on disk)
    searchable  in the index being served (snapshot, index)
    trained     a snapshot's phase trained on it (its own phase, or as replay)
    deleted     tombstoned: out of search, replay and every later phase

`state` names the furthest step reached; the other fields say where. Trained weights cannot
forget a deleted pair, so `trained_in` lists those snapshots even after a delete.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from redis import RedisError

from service import tombstones
from service.registry import Registry
from service.schemas import PairState, Searchable
from service.serving import ServingState
from trainer import layout


class TrainedIds:
    """snapshot -> the ids its phase trained on (trained.json, immutable once published)."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self._by_snapshot: dict[int, frozenset[str]] = {}
        self._lock = threading.Lock()

    def _load(self, snapshot: int) -> frozenset[str]:
        path = layout.snapshot_dir(self.data_dir, snapshot) / layout.TRAINED_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return frozenset()
        return frozenset(data.get("pairs", [])) | frozenset(data.get("replayed", []))

    def snapshots_of(self, pair_id: str) -> list[int]:
        with self._lock:
            for snapshot in layout.snapshot_numbers(self.data_dir):
                if snapshot not in self._by_snapshot:
                    self._by_snapshot[snapshot] = self._load(snapshot)
            return [v for v, ids in sorted(self._by_snapshot.items()) if pair_id in ids]


def searchable_in(serving: ServingState, pair_id: str) -> Searchable | None:
    if not serving.holder.ready:
        return None
    served = serving.holder.get()
    return Searchable(snapshot=served.snapshot, index=served.index.snapshot) if pair_id in served.index else None


def is_queued(registry: Registry, pair_id: str) -> bool:
    try:
        return registry.queued(pair_id)
    except RedisError:
        return False


@dataclass
class PairStates:
    """Answers where any pair is, from what this API process follows (`app.state.pair_states`)."""

    serving: ServingState
    registry: Registry
    trained: TrainedIds

    def of(self, pair_id: str) -> PairState:
        return pair_state(pair_id, self.serving, self.registry, self.trained)

    def searchable(self, pair_id: str) -> bool:
        """In the index being served (one set lookup)."""
        return searchable_in(self.serving, pair_id) is not None


def pair_state(pair_id: str, serving: ServingState, registry: Registry, trained: TrainedIds) -> PairState:
    trained_in = trained.snapshots_of(pair_id)
    if pair_id in tombstones.deleted(serving.data_dir):
        return PairState(id=pair_id, state="deleted", trained_in=trained_in)
    phase = serving.catalog.phase(pair_id)
    found = searchable_in(serving, pair_id) if phase is not None else None
    if trained_in:
        state = "trained"
    elif found is not None:
        state = "searchable"
    elif phase is not None:
        state = "buffered"
    else:
        state = "queued" if is_queued(registry, pair_id) else "unknown"
    return PairState(id=pair_id, state=state, phase=phase, searchable=found, trained_in=trained_in)
