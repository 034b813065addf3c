"""GET /v1/snapshots, /v1/recall and /v1/drift: what each snapshot learnt and forgot; and a
snapshot's directory as a tar stream (admin), which open_clip's "local-dir:" loads once unpacked.

The listings page with `?limit=N&cursor=C` (service.paging), ordered by snapshot.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Callable, Iterator

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from service.auth import AUTH_RESPONSES, require
from service.deps import get_registry, get_settings
from service.errors import api_error, responses
from service.paging import Page, get_page
from service.registry import Registry
from service.schemas import DriftOut, RecallOut, SnapshotsOut
from service.settings import Settings
from trainer import layout
from trainer.atomic import read_json

router = APIRouter(tags=["snapshots"], dependencies=[require("read")], responses=AUTH_RESPONSES)


def get_data_dir(settings: Settings = Depends(get_settings)) -> Path:
    return Path(settings.data_dir)


@router.get("/v1/snapshots", responses=responses(422))
def snapshots(
    registry: Registry = Depends(get_registry), data_dir: Path = Depends(get_data_dir), page: Page = Depends(get_page)
) -> SnapshotsOut:
    """Every snapshot: version, parent, phase, method, recipe, status (accepted / rejected /
    superseded) and its reason, created, recall summary; and the serving pointer."""
    registry.ensure(data_dir)
    serving = registry.serving() or {}
    chosen, next_cursor = page.take((v, {"version": v, **rec}) for v, rec in registry.snapshots().items())
    return SnapshotsOut(serving=serving, snapshots=chosen, next_cursor=next_cursor)


def _per_snapshot(data_dir: Path, registry: Registry, file: Callable[[Path, int], Path]) -> list[tuple[int, dict]]:
    """(snapshot, what `file(data_dir, snapshot)` holds) for each snapshot that has one."""
    out = []
    for version in registry.snapshots():
        data = read_json(file(data_dir, version))
        if data is not None:
            out.append((version, data))
    return out


@router.get("/v1/recall", responses=responses(422))
def recall(
    registry: Registry = Depends(get_registry), data_dir: Path = Depends(get_data_dir), page: Page = Depends(get_page)
) -> RecallOut:
    """For each snapshot and each phase's probe: R@1/5/10 in both directions.

    `old_gallery` is the same probe searched with the snapshot's text tower against images
    embedded by `old_gallery_snapshot` (the snapshot behind the index served when it was
    trained): what not re-indexing (`reindex = keep`) would answer.
    """
    rows = (
        (
            v,
            {
                "snapshot": v,
                "parent": d["parent"],
                "status": d["status"],
                "recall": d["recall"],
                "old_gallery": d["old_gallery"],
                "old_gallery_snapshot": d.get("old_gallery_snapshot", d["parent"]),
                "mean_r1_old": d["mean_r1_old"],
                "mean_r1_all": d["mean_r1_all"],
            },
        )
        for v, d in _per_snapshot(data_dir, registry, layout.recall_file)
    )
    chosen, next_cursor = page.take(rows)
    return RecallOut(snapshots=chosen, next_cursor=next_cursor)


@router.get("/v1/drift", responses=responses(422))
def drift(
    registry: Registry = Depends(get_registry), data_dir: Path = Depends(get_data_dir), page: Page = Depends(get_page)
) -> DriftOut:
    """For each transition parent -> snapshot: SAM change, RAM and ImAV histograms per modality."""
    chosen, next_cursor = page.take(_per_snapshot(data_dir, registry, layout.drift_file))
    return DriftOut(transitions=chosen, next_cursor=next_cursor)


def tar_stream(directory: Path, name: str, chunk: int = 1 << 20) -> Iterator[bytes]:
    """An uncompressed tar of `directory`'s files under `name/`, produced file by file (a
    published snapshot never changes, so the sizes read first are the sizes sent)."""
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        info = tarfile.TarInfo(f"{name}/{path.relative_to(directory).as_posix()}")
        stat = path.stat()
        info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        with open(path, "rb") as f:
            while data := f.read(chunk):
                yield data
        if info.size % tarfile.BLOCKSIZE:
            yield b"\0" * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


@router.get(
    "/v1/snapshots/{snapshot}/download",
    dependencies=[require("admin")],
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}}, **responses(401, 403, 404, 422, 429)},
)
def download(snapshot: int, registry: Registry = Depends(get_registry), data_dir: Path = Depends(get_data_dir)):
    """The snapshot's directory (model.safetensors, open_clip_config.json, its records) as a
    tar of `v<N>/`; `open_clip.create_model_and_transforms("local-dir:v<N>")` loads it."""
    registry.ensure(data_dir)
    directory = layout.snapshot_dir(data_dir, snapshot)
    if snapshot not in registry.snapshots() or not directory.is_dir():
        raise api_error(404, "not_found", f"no snapshot {snapshot}", snapshot=snapshot)
    name = directory.name
    return StreamingResponse(
        tar_stream(directory, name),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{name}.tar"'},
    )
