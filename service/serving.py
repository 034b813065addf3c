"""What the API serves: the snapshot and its indexes (images and captions) named by the
serving pointer, plus a catalog of each pair's text and metadata for search results.

A background thread follows the pointer: when it names a new pair, the snapshot and its
index are loaded and swapped in as one object (indexer.index.IndexHolder); otherwise new
segments of the current index are applied, so new pairs become searchable.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from indexer.index import IndexHolder, index_dir, load_serving
from service import buffer
from service.registry import Registry
from service.training import snapshot_dir

log = logging.getLogger("modx.serving")


class Catalog:
    """id -> (text, metadata) of every buffered pair, read incrementally."""

    def __init__(self, data_dir: Path):
        self.tail = buffer.PhaseTail(data_dir)
        self.entries: dict[str, tuple[str, dict]] = {}

    def refresh(self) -> None:
        for _, r in self.tail.new():
            self.entries[r.id] = (r.text, r.metadata)

    def get(self, pair_id: str) -> tuple[str, dict]:
        if pair_id not in self.entries:
            self.refresh()
        return self.entries.get(pair_id, ("", {}))


class ServingState:
    def __init__(self, data_dir: Path, registry: Registry, device: str = "cpu", index_device: str = "auto"):
        self.data_dir, self.registry, self.device, self.index_device = Path(data_dir), registry, device, index_device
        self.holder = IndexHolder()
        self.catalog = Catalog(data_dir)
        self.swaps = 0

    def poll(self) -> None:
        pointer = self.registry.serving()
        if not pointer or pointer.get("index") is None:
            return
        current = self.holder.get() if self.holder.ready else None
        if current is None or current.snapshot != pointer["snapshot"] or current.index.snapshot != pointer["index"]:
            serving = load_serving(snapshot_dir(self.data_dir, pointer["snapshot"]),
                                   index_dir(self.data_dir, pointer["index"]), self.device, self.index_device,
                                   index_dir(self.data_dir, pointer["index"], "text"))  # fmt: skip
            self.holder.swap(serving)
            self.swaps += 1
            log.info("serving snapshot %d with index %d (%d pairs)", serving.snapshot, serving.index.snapshot, serving.index.size)
        else:
            for index in (current.index, current.texts):
                if index is not None:
                    index.refresh()
        self.catalog.refresh()

    def run(self, stop: threading.Event, interval_s: float) -> None:
        while not stop.is_set():
            try:
                self.poll()
            except Exception:  # keep serving the last good pair; say why in the log
                log.exception("could not refresh the serving pair")
            stop.wait(interval_s)
