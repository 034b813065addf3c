"""Pairs, datasets and the deterministic train/probe split.

A *pair* is one image with its caption. A *dataset* is a list of domains, each a list of
pairs; the continual protocol turns each domain into one phase. The split is a pure
function of the pair id, so every process (consumer, trainer, benchmark) agrees on it.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

from PIL import Image

SPLITS = ("train", "probe")


@dataclass(frozen=True)
class Pair:
    id: str
    text: str
    image: bytes  # encoded PNG / JPEG / WebP
    domain: str = ""
    metadata: dict = field(default_factory=dict, hash=False, compare=False)

    def pil(self) -> Image.Image:
        return decode_image(self.image)


def decode_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def id_fraction(pair_id: str, salt: str = "") -> float:
    """A stable number in [0, 1) from a pair id (sha256, not Python's salted hash)."""
    digest = hashlib.sha256(f"{salt}{pair_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(pair_id: str, probe_fraction: float = 0.1) -> str:
    """'probe' for a held-out slice chosen by hash of the id, else 'train'."""
    return "probe" if id_fraction(pair_id, "probe:") < probe_fraction else "train"


def split_pairs(pairs: Iterable[Pair], probe_fraction: float = 0.1) -> tuple[list[Pair], list[Pair]]:
    train, probe = [], []
    for p in pairs:
        (probe if split_of(p.id, probe_fraction) == "probe" else train).append(p)
    return train, probe


class Dataset(Protocol):
    """What the continual protocol needs from a data source.

    `train(domain)` is what a phase trains on; `probe(domain)` is held out and measures
    recall and drift; `validation(domain)` (a slice of train pairs, never probe pairs) is
    what hyper-parameters are tuned on.
    """

    name: str
    domains: Sequence[str]

    def train(self, domain: str) -> list[Pair]: ...

    def probe(self, domain: str) -> list[Pair]: ...

    def info(self) -> dict: ...
