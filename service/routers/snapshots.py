"""GET /v1/snapshots, /v1/recall and /v1/drift: what each snapshot learnt and forgot."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from fastapi import APIRouter, Depends

from service.auth import AUTH_RESPONSES, require
from service.deps import get_registry, get_settings
from service.registry import Registry
from service.settings import Settings
from trainer import layout
from trainer.atomic import read_json

router = APIRouter(tags=["snapshots"], dependencies=[require("read")], responses=AUTH_RESPONSES)


def get_data_dir(settings: Settings = Depends(get_settings)) -> Path:
    return Path(settings.data_dir)


@router.get("/v1/snapshots")
def snapshots(registry: Registry = Depends(get_registry), data_dir: Path = Depends(get_data_dir)):
    """Every snapshot: version, parent, phase, method, recipe, status (accepted / rejected /
    superseded) and its reason, created, recall summary; and the serving pointer."""
    registry.ensure(data_dir)
    serving = registry.serving() or {}
    return {"serving": serving, "snapshots": [{"version": v, **rec} for v, rec in registry.snapshots().items()]}


def _per_snapshot(data_dir: Path, registry: Registry, file: Callable[[Path, int], Path]) -> list[tuple[int, dict]]:
    """(snapshot, what `file(data_dir, snapshot)` holds) for each snapshot that has one."""
    out = []
    for version in registry.snapshots():
        data = read_json(file(data_dir, version))
        if data is not None:
            out.append((version, data))
    return out


@router.get("/v1/recall")
def recall(registry: Registry = Depends(get_registry), data_dir: Path = Depends(get_data_dir)):
    """For each snapshot and each phase's probe: R@1/5/10 in both directions.

    `old_gallery` is the same probe searched with the snapshot's text tower against images
    embedded by `old_gallery_snapshot` (the snapshot behind the index served when it was
    trained): what not re-indexing (`reindex = keep`) would answer.
    """
    return {
        "snapshots": [
            {
                "snapshot": v,
                "parent": d["parent"],
                "status": d["status"],
                "recall": d["recall"],
                "old_gallery": d["old_gallery"],
                "old_gallery_snapshot": d.get("old_gallery_snapshot", d["parent"]),
                "mean_r1_old": d["mean_r1_old"],
                "mean_r1_all": d["mean_r1_all"],
            }
            for v, d in _per_snapshot(data_dir, registry, layout.recall_file)
        ]
    }


@router.get("/v1/drift")
def drift(registry: Registry = Depends(get_registry), data_dir: Path = Depends(get_data_dir)):
    """For each transition parent -> snapshot: SAM change, RAM and ImAV histograms per modality."""
    return {"transitions": [d for _, d in _per_snapshot(data_dir, registry, layout.drift_file)]}
