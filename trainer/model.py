"""open_clip models from named configs; weights only ever from a local file.

Built-in configs (ViT-B-32, RN50, ...) and the project's tiny ones in `model_configs/`
live in one registry, so `open_clip.get_tokenizer(name)` gives the matching context length.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip
import torch

CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(CONFIG_DIR)

LOGIT_SCALE_MAX = 4.6052  # ln(100), open_clip's clamp


def model_config(name: str) -> dict:
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise KeyError(f"unknown model config {name!r}; known: {', '.join(open_clip.list_models())}")
    return cfg


def register_config(name: str, cfg: dict) -> None:
    """Register a config (e.g. read back from a snapshot) the way open_clip expects."""
    if open_clip.get_model_config(name) == cfg:
        return
    path = Path(tempfile.mkdtemp(prefix="modx-cfg-")) / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)


def create_model(name: str, pretrained: str | Path | None = None, device: str | torch.device = "cpu"):
    """Return (model, preprocess, tokenizer). `pretrained` must be a local checkpoint file."""
    model_config(name)
    if pretrained is not None and not Path(pretrained).is_file():
        raise FileNotFoundError(f"pretrained checkpoint {pretrained} is not a local file (nothing is fetched from a hub)")
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=str(pretrained) if pretrained else None, device=device
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
