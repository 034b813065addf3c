"""Expert embeddings: for each pair a snapshot trained on, that snapshot's view of it.

When a phase's snapshot is accepted, the L2-normalised image and text embeddings of the
pairs it trained on are stored with the snapshot's logit scale and version (float32: 1 KB
per pair at width 128), in `experts.npz` (EXPERTS) written atomically. A later phase that
replays the pair distils it against these embeddings (trainer.losses.grouped_modx_loss)
instead of running the parent on it. With `expert_refresh` the snapshot that replayed a
pair stores it again, and the newest entry wins when stores are merged.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from trainer import layout
from trainer.atomic import write_bytes_atomic
from trainer.data import Pair
from trainer.embed import encode_images, encode_texts
from trainer.snapshot import load_snapshot

EXPERTS = layout.EXPERTS_FILE  # its name in a snapshot directory


@dataclass
class Experts:
    ids: list[str]
    image: np.ndarray  # (n, d) float32, L2-normalised
    text: np.ndarray  # (n, d)
    logit_scale: np.ndarray  # (n,) the source snapshot's exp(logit_scale)
    version: np.ndarray  # (n,) int64, the source snapshot

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        """Row of each id in this store, -1 where it has none."""
        where = {k: i for i, k in enumerate(self.ids)}
        return np.array([where.get(k, -1) for k in ids], dtype=np.int64)


def empty(dim: int = 0) -> Experts:
    z = np.zeros((0, dim), np.float32)
    return Experts([], z, z.copy(), np.zeros(0, np.float32), np.zeros(0, np.int64))


def embed_experts(snapshot: Path, pairs: Sequence[Pair], device: str = "cpu") -> Experts:
    """The snapshot's embeddings of `pairs`, tagged with its version and logit scale."""
    model, preprocess, tokenizer, record = load_snapshot(snapshot, device)
    image = encode_images(model, preprocess, [p.image for p in pairs])
    text = encode_texts(model, tokenizer, [p.text for p in pairs])
    n = len(pairs)
    scale = float(model.logit_scale.exp().item())
    return Experts(
        [p.id for p in pairs], image, text, np.full(n, scale, np.float32), np.full(n, int(record["version"]), np.int64)
    )


def save_experts(experts: Experts, path: Path) -> Path:
    buf = io.BytesIO()
    np.savez(
        buf,
        ids=np.array(experts.ids, dtype=str),
        image=experts.image,
        text=experts.text,
        logit_scale=experts.logit_scale,
        version=experts.version,
    )
    write_bytes_atomic(path, buf.getvalue())
    return path


def load_experts(path: Path) -> Experts:
    with np.load(path, allow_pickle=False) as z:
        return Experts([str(x) for x in z["ids"]], z["image"], z["text"], z["logit_scale"], z["version"])


def merge(stores: Sequence[Experts]) -> Experts:
    """One store from several, oldest first: a later entry for an id replaces an earlier one."""
    stores = [s for s in stores if len(s)]
    if not stores:
        return empty()
    rows: dict[str, tuple[int, int]] = {}
    for s_i, s in enumerate(stores):
        for r, k in enumerate(s.ids):
            rows[k] = (s_i, r)
    pick = lambda attr: np.stack([getattr(stores[s_i], attr)[r] for s_i, r in rows.values()])  # noqa: E731
    return Experts(list(rows), pick("image"), pick("text"), pick("logit_scale"), pick("version"))


def rows_for(experts: Experts | None, ids: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """(image, text, source version, logit scale) for `ids`: version -1, scale 0 and zero
    rows where none is stored."""
    n = len(ids)
    dim = experts.image.shape[1] if experts is not None and len(experts) else 0
    if not dim:
        return torch.zeros(n, 0), torch.zeros(n, 0), torch.full((n,), -1, dtype=torch.long), torch.zeros(n)
    row = experts.lookup(ids)
    have = row >= 0
    image = np.zeros((n, dim), np.float32)
    text = np.zeros((n, dim), np.float32)
    version = np.full(n, -1, np.int64)
    scale = np.zeros(n, np.float32)
    image[have], text[have] = experts.image[row[have]], experts.text[row[have]]
    version[have], scale[have] = experts.version[row[have]], experts.logit_scale[row[have]]
    return torch.from_numpy(image), torch.from_numpy(text), torch.from_numpy(version), torch.from_numpy(scale)
