"""Batched, L2-normalised embeddings of images and texts."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from trainer.data import decode_image
from trainer.model import autocast


def preprocess_images(preprocess: Callable, images: Sequence[bytes | Image.Image]) -> torch.Tensor:
    """Decode (if bytes) and preprocess into one (n, 3, H, W) float tensor."""
    return torch.stack([preprocess(decode_image(im) if isinstance(im, bytes) else im) for im in images])


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def embed_image_tensor(model, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Embeddings (float32, normalised, on the model's device) of preprocessed images."""
    device = model_device(model)
    out = []
    for i in range(0, len(images), batch_size):
        with autocast(device):
            out.append(model.encode_image(images[i : i + batch_size].to(device, non_blocking=True)).float())
    return F.normalize(torch.cat(out), dim=-1)


@torch.inference_mode()
def embed_token_tensor(model, tokens: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    device = model_device(model)
    out = []
    for i in range(0, len(tokens), batch_size):
        with autocast(device):
            out.append(model.encode_text(tokens[i : i + batch_size].to(device, non_blocking=True)).float())
    return F.normalize(torch.cat(out), dim=-1)


def encode_images(model, preprocess, images: Sequence[bytes | Image.Image], batch_size: int = 256) -> np.ndarray:
    was_training = model.training
    model.eval()
    try:
        out = [
            embed_image_tensor(model, preprocess_images(preprocess, images[i : i + batch_size]), batch_size)
            for i in range(0, len(images), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, model.text_projection.shape[1]), np.float32)


def encode_texts(model, tokenizer, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    was_training = model.training
    model.eval()
    try:
        emb = embed_token_tensor(model, tokenizer(list(texts)), batch_size)
    finally:
        model.train(was_training)
    return emb.cpu().numpy()
