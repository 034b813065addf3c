"""A snapshot's encoders: its image tower and its text tower, each L2-normalised and batched.

The indexer embeds the gallery with them and the API encodes queries with the same
objects, so a query and the index it searches go through one code path per modality.
Encoding runs in eval mode under inference_mode, with bf16 autocast on CUDA (trainer.embed).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from trainer.data import decode_image
from trainer.embed import embed_image_tensor, embed_token_tensor
from trainer.snapshot import load_snapshot


@contextmanager
def eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class SnapshotImageEncoder:
    """Images (encoded bytes, PIL images, or tensors from `prepare`) -> (n, d) embeddings.

    `prepare` (the preprocessing) is separate so the gallery's worker threads can run it
    while the previous batch is encoded.
    """

    def __init__(self, model: torch.nn.Module, preprocess: Callable, batch_size: int = 256):
        self.model, self.preprocess, self.batch_size = model, preprocess, batch_size
        self.dim = int(getattr(model.visual, "output_dim", 0) or 0)

    def prepare(self, image: Image.Image) -> torch.Tensor:
        return self.preprocess(image)

    def __call__(self, items: Sequence[bytes | Image.Image | torch.Tensor]) -> np.ndarray:
        x = torch.stack([it if isinstance(it, torch.Tensor) else self.preprocess(_pil(it)) for it in items])
        with eval_mode(self.model):
            return embed_image_tensor(self.model, x, self.batch_size).cpu().numpy()


def _pil(item: bytes | Image.Image) -> Image.Image:
    return decode_image(item) if isinstance(item, bytes) else item


class SnapshotTextEncoder:
    """Texts (captions or queries) -> (n, d) embeddings."""

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, batch_size: int = 256):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.dim = int(model.text_projection.shape[1])

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        with eval_mode(self.model):
            return embed_token_tensor(self.model, self.tokenizer(list(texts)), self.batch_size).cpu().numpy()


@dataclass(frozen=True, eq=False)
class SnapshotEncoders:
    """Both towers of one snapshot (`snapshot` is its version)."""

    snapshot: int
    image: SnapshotImageEncoder
    text: SnapshotTextEncoder

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu", batch_size: int = 256) -> "SnapshotEncoders":
        """The encoders of the snapshot saved in `directory`, on `device`."""
        model, preprocess, tokenizer, record = load_snapshot(Path(directory), device)
        model.eval()
        image = SnapshotImageEncoder(model, preprocess, batch_size)
        return cls(record["version"], image, SnapshotTextEncoder(model, tokenizer, batch_size))
