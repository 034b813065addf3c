"""Procedural image-text pairs in distinct domains (styles).

Each scene holds one or two objects, each with a size, a colour, a shape and a position,
and the caption names them all ("a large red circle at the top left and a small blue
star at the bottom right"). Every domain draws the same concepts with the same words, in
its own style, the way emoji designers draw the same emoji:

| domain | how objects are drawn | palette | background |
|---|---|---|---|
| basic | filled | saturated | plain black |
| blocky | filled, at 1/4 resolution, upscaled (big pixels) | saturated | plain black |
| neon | filled, with a dark core | hue turned ~25 degrees | plain black |
| pastel | filled | mixed half with white | plain black |
| outline | outlines only | saturated | grey stripes |

The pixels that go with "red circle" change from domain to domain while the caption does
not. Like real style shifts (and unlike a new task), an earlier snapshot still retrieves
part of a new domain zero-shot, so it has knowledge worth keeping; fine-tuning on the new
style alone pulls the towers away from the earlier styles: naive fine-tuning forgets.
`outline` is the far shift: almost nothing transfers to it. Everything is a pure function
of (seed, domain), ids included.
"""

from __future__ import annotations

import colorsys
import math
import random
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
from PIL import Image, ImageDraw

from trainer.data import Pair, encode_png, split_pairs

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (235, 215, 40)}
SHAPES = ("circle", "square", "triangle", "star", "diamond")
POSITIONS = {
    "top left": (0.28, 0.28),
    "top right": (0.72, 0.28),
    "bottom left": (0.28, 0.72),
    "bottom right": (0.72, 0.72),
    "center": (0.5, 0.5),
}
SIZES = {"small": 0.14, "large": 0.24}


@dataclass(frozen=True)
class Domain:
    name: str
    outline: bool  # strokes instead of fills
    palette: str  # saturated | pastel | hue
    background: str
    core: bool = False  # a dark dot in each object's centre
    downscale: int = 1  # draw at 1/downscale resolution, then upscale (blocky pixels)


DOMAINS = (
    Domain("basic", False, "saturated", "plain"),
    Domain("blocky", False, "saturated", "plain", downscale=4),
    Domain("neon", False, "hue", "plain", core=True),
    Domain("pastel", False, "pastel", "plain"),
    Domain("outline", True, "saturated", "stripes"),
)


def colour(name: str, palette: str) -> tuple[int, int, int]:
    r, g, b = COLOURS[name]
    if palette == "pastel":
        return ((r + 255) // 2, (g + 255) // 2, (b + 255) // 2)
    if palette == "hue":  # rotate the hue a little: red -> orange-red, blue -> violet, ...
        h, s, v = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        return tuple(int(255 * c) for c in colorsys.hsv_to_rgb((h + 0.07) % 1.0, s, v))
    return (r, g, b)


def _polygon(cx, cy, r, n, rotation=-math.pi / 2, inner=None):
    pts = []
    for k in range(n * (2 if inner else 1)):
        radius = inner if inner and k % 2 else r
        a = rotation + k * math.pi / (n if inner else n / 2)
        pts.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return pts


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, rgb, outline: bool) -> None:
    style = {"outline": rgb, "width": max(1, int(0.25 * r))} if outline else {"fill": rgb}
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), **style)
    elif shape == "square":
        draw.rectangle((cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r), **style)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, r, 3), **style)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, r, 5, inner=0.45 * r), **style)
    elif shape == "diamond":
        draw.polygon(_polygon(cx, cy, r, 4), **style)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def background(style: str, size: int) -> Image.Image:
    if style == "plain":
        arr = np.zeros((size, size, 3), np.uint8)
    elif style == "stripes":
        arr = np.full((size, size, 3), 60, np.uint8)
        arr[(np.arange(size) // 4) % 2 == 0] = 85
    else:
        raise ValueError(f"unknown background {style!r}")
    return Image.fromarray(arr, "RGB")


def render(domain: Domain, objects: list[tuple[str, str, str, str]], size: int) -> Image.Image:
    image = background(domain.background, size)
    canvas = Image.new("RGBA", (size // domain.downscale,) * 2, (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    scale = size // domain.downscale
    for size_word, colour_name, shape, position in objects:
        px, py = POSITIONS[position]
        cx, cy, r = px * scale, py * scale, SIZES[size_word] * scale
        draw_shape(draw, shape, cx, cy, r, colour(colour_name, domain.palette) + (255,), domain.outline)
        if domain.core:
            draw.ellipse((cx - r / 3, cy - r / 3, cx + r / 3, cy + r / 3), fill=(20, 20, 40, 255))
    canvas = canvas.resize((size, size), Image.NEAREST)
    image.paste(canvas, (0, 0), canvas)
    return image


def caption(objects: list[tuple[str, str, str, str]]) -> str:
    return " and ".join(f"a {s} {c} {sh} at the {p}" for s, c, sh, p in objects)


class SyntheticDataset:
    """The synthetic domain stream, implementing trainer.data.Dataset."""

    name = "synthetic"
    eval_splits = ()

    def __init__(
        self,
        n_domains: int = 4,
        pairs_per_domain: int = 600,
        image_size: int = 32,
        probe_fraction: float = 0.1,
        validation_fraction: float = 0.1,
        seed: int = 0,
    ):
        if not 1 <= n_domains <= len(DOMAINS):
            raise ValueError(f"n_domains must be 1..{len(DOMAINS)}")
        self.specs = DOMAINS[:n_domains]
        self.domains = [d.name for d in self.specs]
        self.pairs_per_domain = pairs_per_domain
        self.image_size = image_size
        self.probe_fraction, self.validation_fraction = probe_fraction, validation_fraction
        self.seed = seed

    def generate(self, domain: str) -> list[Pair]:
        spec = next(d for d in self.specs if d.name == domain)
        index = self.domains.index(domain)
        rng = random.Random(self.seed * 1000 + index)
        pairs, seen = [], set()
        while len(pairs) < self.pairs_per_domain:
            positions = rng.sample(sorted(POSITIONS), rng.choice((1, 2)))
            objects = [
                (rng.choice(sorted(SIZES)), rng.choice(sorted(COLOURS)), rng.choice(SHAPES), p) for p in positions
            ]
            text = caption(objects)
            if text in seen:  # one caption per image, so recall by index is unambiguous
                continue
            seen.add(text)
            image = render(spec, objects, self.image_size)
            pid = f"{self.seed}-{domain}-{len(pairs):05d}"
            pairs.append(Pair(pid, text, encode_png(image), domain, {"domain": domain, "objects": len(objects)}))
        return pairs

    @cached_property
    def _splits(self) -> dict[str, dict[str, list[Pair]]]:
        return {d: split_pairs(self.generate(d), self.probe_fraction, self.validation_fraction) for d in self.domains}

    def train(self, domain: str) -> list[Pair]:
        return self._splits[domain]["train"]

    def validation(self, domain: str) -> list[Pair]:
        return self._splits[domain]["validation"]

    def probe(self, domain: str) -> list[Pair]:
        return self._splits[domain]["probe"]

    def info(self) -> dict:
        return {
            "name": self.name,
            "domains": {d.name: asdict(d) for d in self.specs},
            "shapes": SHAPES,
            "colours": sorted(COLOURS),
            "pairs_per_domain": self.pairs_per_domain,
            "image_size": self.image_size,
            "probe_fraction": self.probe_fraction,
            "validation_fraction": self.validation_fraction,
            "seed": self.seed,
        }
