"""open_clip models from named configs; weights only ever from a local file.

Built-in configs (ViT-B-32, RN50, ...) and the project's tiny ones in `model_configs/`
live in one registry, so `open_clip.get_tokenizer(name)` gives the matching context length.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import open_clip
import torch

CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(CONFIG_DIR)

LOGIT_SCALE_MAX = 4.6052  # ln(100), open_clip's clamp
WEIGHTS = "model.safetensors"
OPEN_CLIP_CONFIG = "open_clip_config.json"  # beside the weights: what open_clip's "local-dir:" reads


def model_config(name: str) -> dict:
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise KeyError(f"unknown model config {name!r}; known: {', '.join(open_clip.list_models())}")
    return cfg


def pretrained_weights(name: str, pretrained: str | Path) -> Path:
    """The weights file of a local checkpoint for model `name`.

    `pretrained` is a weights file, or a directory holding open_clip_config.json and
    model.safetensors (a snapshot, or what `modx pretrain` writes); a directory's model_cfg
    must be `name`'s (ValueError naming the matching config otherwise). Nothing is fetched.
    """
    path = Path(pretrained)
    if path.is_dir():
        cfg_path, weights = path / OPEN_CLIP_CONFIG, path / WEIGHTS
        if not cfg_path.is_file() or not weights.is_file():
            raise FileNotFoundError(f"pretrained directory {path} needs {OPEN_CLIP_CONFIG} and {WEIGHTS}")
        if json.loads(cfg_path.read_text()).get("model_cfg") != model_config(name):
            same = model_name_of(path)
            hint = f"it is {same!r}: set the model to that" if same else "its config matches no known model"
            raise ValueError(f"pretrained checkpoint {path} is not a {name!r} model ({hint})")
        return weights
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained checkpoint {pretrained} is not a local file or directory (nothing is fetched from a hub)"
        )
    return path


def weights_sha256(name: str, pretrained: str | Path) -> str:
    """The first 12 hex digits of the sha256 of a local checkpoint's weights: what names a
    checkpoint, since one path can hold different ones over time (pretraining is not
    bit-reproducible across machines)."""
    return hashlib.sha256(pretrained_weights(name, pretrained).read_bytes()).hexdigest()[:12]


def model_name_of(directory: str | Path) -> str | None:
    """The registered model config that a checkpoint directory's open_clip_config.json holds."""
    path = Path(directory) / OPEN_CLIP_CONFIG
    if not path.is_file():
        return None
    cfg = json.loads(path.read_text()).get("model_cfg")
    return next((n for n in open_clip.list_models() if open_clip.get_model_config(n) == cfg), None)


def create_model(name: str, pretrained: str | Path | None = None, device: str | torch.device = "cpu"):
    """Return (model, preprocess, tokenizer); `pretrained`: see `pretrained_weights`."""
    model_config(name)
    weights = pretrained_weights(name, pretrained) if pretrained is not None else None
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=str(weights) if weights else None, device=device
    )
    return model, preprocess, open_clip.get_tokenizer(name)


def clamp_logit_scale(model: torch.nn.Module) -> None:
    with torch.no_grad():
        model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)


def no_weight_decay(name: str, param: torch.nn.Parameter) -> bool:
    """open_clip's rule: gains, biases, norms and logit_scale are not decayed."""
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def autocast(device: torch.device):
    """bf16 autocast on CUDA, plain fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)
