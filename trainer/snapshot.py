"""Snapshots: a directory with safetensors weights and a JSON record, written atomically.

    v000003/
      model.safetensors     weights of the uncompiled module
      open_clip_config.json {"model_cfg", "preprocess_cfg"}: what open_clip's "local-dir:" reads
      snapshot.json         model config, version, parent, phase, method, hparams, created
      fisher.safetensors    (EWC only) the accumulated diagonal Fisher
      trained.json          ids of the pairs the phase trained on: {"pairs", "replayed"}

Loading never unpickles: weights come from safetensors, the record from JSON. Any snapshot
opens with plain open_clip, no modx code:
`open_clip.create_model_and_transforms("local-dir:" + path)` and `open_clip.get_tokenizer(...)`.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import open_clip
import torch
from safetensors.torch import load_file, save_file

from trainer import layout
from trainer.atomic import publish_dir, temp_dir
from trainer.model import OPEN_CLIP_CONFIG, WEIGHTS, create_model, model_config

RECORD, FISHER, TRAINED = layout.RECORD_FILE, layout.FISHER_FILE, layout.TRAINED_FILE  # files of a snapshot


def _cpu_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under torch.compile / DDP, whose state_dict keys carry no prefix."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def save_snapshot(
    model: torch.nn.Module,
    directory: Path,
    *,
    model_name: str,
    version: int | None,
    parent: int | None,
    phase: int | None,
    method: str,
    hparams: dict | None = None,
    fisher: dict[str, torch.Tensor] | None = None,
    extra: dict | None = None,
    files: dict[str, dict] | None = None,
) -> Path:
    """Write the snapshot directory atomically; `files` are further JSON files inside it."""
    directory = Path(directory)
    tmp = temp_dir(directory)
    try:
        save_file(_cpu_tensors(unwrap(model).state_dict()), tmp / WEIGHTS)
        (tmp / OPEN_CLIP_CONFIG).write_text(json.dumps(open_clip_config(unwrap(model), model_name), indent=1))
        if fisher is not None:
            save_file(_cpu_tensors(fisher), tmp / FISHER)
        record = {
            "format": 1,
            "model": model_name,
            "model_config": model_config(model_name),
            "version": version,
            "parent": parent,
            "phase": phase,
            "method": method,
            "hparams": hparams or {},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(extra or {}),
        }
        (tmp / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True))
        for name, data in (files or {}).items():
            (tmp / name).write_text(json.dumps(data))
        return publish_dir(tmp, directory)  # snapshots are immutable: an existing one is refused
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def open_clip_config(model: torch.nn.Module, model_name: str) -> dict:
    """The `open_clip_config.json` of a snapshot: the model config and its preprocessing."""
    preprocess = open_clip.get_model_preprocess_cfg(model)
    return {"model_cfg": model_config(model_name), "preprocess_cfg": json.loads(json.dumps(preprocess))}


def read_record(directory: Path) -> dict:
    return json.loads((Path(directory) / RECORD).read_text())


def load_snapshot(directory: Path, device: str | torch.device = "cpu"):
    """Return (model, preprocess, tokenizer, record) for a snapshot directory.

    The model comes from the directory's own open_clip_config.json ("local-dir:"); a snapshot
    written before that file existed is built from its model name, whose registered config
    must still be the one it recorded.
    """
    directory = Path(directory)
    record = read_record(directory)
    if (directory / OPEN_CLIP_CONFIG).is_file():
        source = f"local-dir:{directory.resolve()}"
        model, _, preprocess = open_clip.create_model_and_transforms(source, device=device)
        return model, preprocess, open_clip.get_tokenizer(source), record
    if open_clip.get_model_config(record["model"]) != record["model_config"]:
        raise ValueError(
            f"{directory} has no {OPEN_CLIP_CONFIG} and its model config differs from the "
            f"registered {record['model']!r}; it cannot be loaded"
        )
    model, preprocess, tokenizer = create_model(record["model"], pretrained=directory / WEIGHTS, device=device)
    return model, preprocess, tokenizer, record


def load_fisher(directory: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor] | None:
    path = Path(directory) / FISHER
    return load_file(path, device=str(device)) if path.exists() else None


def initial_snapshot(
    model_name: str,
    out: Path,
    seed: int,
    pretrained: str | None = None,
    *,
    version: int | None = None,
    phase: int | None = None,
) -> Path:
    """Snapshot 'init' at `out` (kept if there): a fresh model from the config under the
    seed, or a local pretrained checkpoint. Its `version` is None unless it is a numbered
    snapshot itself (the service's CLIP_0 is snapshot 0), so a model trained from it has no
    parent snapshot: offline as online, CLIP_0 is snapshot 0 with parent None."""

    def build(out: Path) -> Path:
        torch.manual_seed(seed)
        model, _, _ = create_model(model_name, pretrained=pretrained)
        return save_snapshot(
            model,
            out,
            model_name=model_name,
            version=version,
            parent=None,
            phase=phase,
            method="init",
            hparams={"pretrained": pretrained, "seed": seed},
        )

    return built_once(out, build)


def built_once(out: Path, build) -> Path:
    """The snapshot at `out`, built by `build(out)` unless a finished one is there.

    Snapshots are immutable, so two builders of the same one (runs that share a work
    directory, side by side) race only to publish: the one published first is kept and the
    other builder returns it instead of failing."""
    if out.exists():
        return out
    try:
        return build(out)
    except FileExistsError:
        if not out.exists():
            raise
        return out
