"""Procedural image-text pairs in distinct domains.

Each scene holds one or two objects, each with a size, a colour, a shape and a position,
and the caption names them all ("a large red circle at the top left and a small blue
square at the bottom right"). Domains differ in what a model must learn anew:

| domain | shapes | colours | background |
|---|---|---|---|
| basic | circle, square, triangle | red, green, blue, yellow | plain black |
| outline | star, cross, ring | red, green, blue, yellow | dark grey stripes |
| pastel | circle, square, triangle | pink, cyan, orange, purple | white with noise |
| neon | diamond, hexagon, pentagon | lime, magenta, teal, white | dark gradient |
| mono | star, diamond, circle | black, grey, brown, navy | beige with noise |

Shared words ("red", "circle", "top left") mean different pixels across domains
(outline shapes, other backgrounds), and new words appear, so fine-tuning on one domain
moves the towers away from what an earlier domain needed: naive fine-tuning forgets.
Everything is a pure function of (seed, domain), ids included.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image, ImageDraw

from trainer.data import Pair, encode_png, split_pairs

COLOURS = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (235, 215, 40),
    "pink": (245, 150, 190), "cyan": (80, 210, 230), "orange": (245, 150, 40), "purple": (150, 70, 200),
    "lime": (170, 255, 60), "magenta": (255, 40, 220), "teal": (20, 150, 140), "white": (245, 245, 245),
    "black": (15, 15, 15), "grey": (128, 128, 128), "brown": (120, 70, 30), "navy": (20, 30, 110),
}  # fmt: skip
POSITIONS = {
    "top left": (0.28, 0.28), "top right": (0.72, 0.28), "bottom left": (0.28, 0.72),
    "bottom right": (0.72, 0.72), "center": (0.5, 0.5),
}  # fmt: skip
SIZES = {"small": 0.14, "large": 0.24}


@dataclass(frozen=True)
class Domain:
    name: str
    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    background: str


DOMAINS = (
    Domain("basic", ("circle", "square", "triangle"), ("red", "green", "blue", "yellow"), "plain"),
    Domain("outline", ("star", "cross", "ring"), ("red", "green", "blue", "yellow"), "stripes"),
    Domain("pastel", ("circle", "square", "triangle"), ("pink", "cyan", "orange", "purple"), "noise"),
    Domain("neon", ("diamond", "hexagon", "pentagon"), ("lime", "magenta", "teal", "white"), "gradient"),
    Domain("mono", ("star", "diamond", "circle"), ("black", "grey", "brown", "navy"), "beige"),
)


def _polygon(cx, cy, r, n, rotation=-math.pi / 2, inner=None):
    pts = []
    for k in range(n * (2 if inner else 1)):
        radius = inner if inner and k % 2 else r
        a = rotation + k * math.pi / (n if inner else n / 2)
        pts.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return pts


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, colour) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle((cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r), fill=colour)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, r, 3), fill=colour)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, r, 5, inner=0.45 * r), fill=colour)
    elif shape == "cross":
        w = 0.3 * r
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(0.35 * r)))
    elif shape == "diamond":
        draw.polygon(_polygon(cx, cy, r, 4), fill=colour)
    elif shape == "hexagon":
        draw.polygon(_polygon(cx, cy, r, 6), fill=colour)
    elif shape == "pentagon":
        draw.polygon(_polygon(cx, cy, r, 5), fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def background(style: str, size: int, rng: np.random.Generator) -> Image.Image:
    if style == "plain":
        arr = np.zeros((size, size, 3), np.uint8)
    elif style == "stripes":
        arr = np.full((size, size, 3), 60, np.uint8)
        arr[(np.arange(size) // 4) % 2 == 0] = 85
    elif style == "noise":
        arr = (235 + rng.integers(-20, 20, (size, size, 3))).clip(0, 255).astype(np.uint8)
    elif style == "gradient":
        ramp = np.linspace(10, 90, size, dtype=np.float32)
        arr = np.stack([ramp[None, :].repeat(size, 0) * f for f in (0.4, 0.2, 0.8)], -1).astype(np.uint8)
    elif style == "beige":
        arr = (np.array([225, 205, 160]) + rng.integers(-12, 12, (size, size, 3))).clip(0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unknown background {style!r}")
    return Image.fromarray(arr, "RGB")


def render(domain: Domain, objects: list[tuple[str, str, str, str]], size: int, rng) -> Image.Image:
    image = background(domain.background, size, rng)
    draw = ImageDraw.Draw(image)
    for size_word, colour, shape, position in objects:
        px, py = POSITIONS[position]
        draw_shape(draw, shape, px * size, py * size, SIZES[size_word] * size, COLOURS[colour])
    return image


def caption(objects: list[tuple[str, str, str, str]]) -> str:
    return " and ".join(f"a {s} {c} {sh} at the {p}" for s, c, sh, p in objects)


class SyntheticDataset:
    """The synthetic domain stream, implementing trainer.data.Dataset."""

    name = "synthetic"

    def __init__(self, n_domains: int = 4, pairs_per_domain: int = 600, image_size: int = 32,
                 probe_fraction: float = 0.1, seed: int = 0):  # fmt: skip
        if not 1 <= n_domains <= len(DOMAINS):
            raise ValueError(f"n_domains must be 1..{len(DOMAINS)}")
        self.specs = DOMAINS[:n_domains]
        self.domains = [d.name for d in self.specs]
        self.pairs_per_domain = pairs_per_domain
        self.image_size = image_size
        self.probe_fraction = probe_fraction
        self.seed = seed

    def generate(self, domain: str) -> list[Pair]:
        spec = next(d for d in self.specs if d.name == domain)
        index = self.domains.index(domain)
        rng = random.Random(self.seed * 1000 + index)
        nrng = np.random.default_rng(self.seed * 1000 + index)
        pairs, seen = [], set()
        while len(pairs) < self.pairs_per_domain:
            positions = rng.sample(sorted(POSITIONS), rng.choice((1, 2)))
            objects = [(rng.choice(sorted(SIZES)), rng.choice(spec.colours), rng.choice(spec.shapes), p) for p in positions]
            text = caption(objects)
            if text in seen:  # one caption per image, so recall by index is unambiguous
                continue
            seen.add(text)
            image = render(spec, objects, self.image_size, nrng)
            pid = f"{self.seed}-{domain}-{len(pairs):05d}"
            pairs.append(Pair(pid, text, encode_png(image), domain, {"domain": domain, "objects": len(objects)}))
        return pairs

    @cached_property
    def _splits(self) -> dict[str, tuple[list[Pair], list[Pair]]]:
        return {d: split_pairs(self.generate(d), self.probe_fraction) for d in self.domains}

    def train(self, domain: str) -> list[Pair]:
        return self._splits[domain][0]

    def probe(self, domain: str) -> list[Pair]:
        return self._splits[domain][1]

    def info(self) -> dict:
        return {
            "name": self.name,
            "domains": {d.name: {"shapes": d.shapes, "colours": d.colours, "background": d.background} for d in self.specs},
            "pairs_per_domain": self.pairs_per_domain,
            "image_size": self.image_size,
            "probe_fraction": self.probe_fraction,
            "seed": self.seed,
        }
