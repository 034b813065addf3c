"""Pairs, datasets and the deterministic train / validation / probe split.

A *pair* is one image with its caption. A *dataset* is a list of domains, each a list of
pairs; the continual protocol turns each domain into one phase. The split is a pure
function of the pair id, so every process (consumer, trainer, benchmark) agrees on it:

    probe        held out; recall and drift are reported on it
    validation   held out; hyper-parameters are chosen on it (offline protocol only)
    train        what a phase trains on
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

from PIL import Image

SPLITS = ("train", "validation", "probe")


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


def split_of(pair_id: str, probe_fraction: float = 0.1, validation_fraction: float = 0.0) -> str:
    """'probe' or 'validation' for held-out slices chosen by hash of the id, else 'train'.

    The probe slice depends on `probe_fraction` only, so adding a validation slice never
    moves a pair into or out of the probe.
    """
    u = id_fraction(pair_id, "probe:")
    if u < probe_fraction:
        return "probe"
    return "validation" if u < probe_fraction + validation_fraction else "train"


def split_pairs(
    pairs: Iterable[Pair], probe_fraction: float = 0.1, validation_fraction: float = 0.0
) -> dict[str, list[Pair]]:
    """{split: pairs} for every split in SPLITS."""
    out: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for p in pairs:
        out[split_of(p.id, probe_fraction, validation_fraction)].append(p)
    return out


class Dataset(Protocol):
    """What the continual protocol needs from a data source.

    `train(domain)` is what a phase trains on; `probe(domain)` is held out and measures
    recall and drift; `validation(domain)`, held out too, is what hyper-parameters are
    chosen on. A dataset may name further evaluation splits in `eval_splits` (e.g. the
    emoji styles' `test` gallery of concepts never trained on); each is a method too.
    """

    name: str
    domains: Sequence[str]
    eval_splits: Sequence[str]

    def train(self, domain: str) -> list[Pair]: ...

    def validation(self, domain: str) -> list[Pair]: ...

    def probe(self, domain: str) -> list[Pair]: ...

    def info(self) -> dict: ...
