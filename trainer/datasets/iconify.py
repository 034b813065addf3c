"""Iconify JSON icon sets: resolve an icon (aliases, flips, rotation), render it, cache renders.

An Iconify set (`@iconify-json/NAME`'s icons.json) holds SVG bodies by name, aliases that
point at a parent with extra flips or rotation, and the set's default geometry. An icon is
rasterised with resvg-py (or cairosvg) and composited on white as an RGB PNG. Rendering is
the slow part of every icon loader, so renders are kept in one zip per source
(`save_rendered` / `load_rendered`).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Sequence

from PIL import Image

from trainer.atomic import atomic_file, make_dirs
from trainer.data import encode_png
from trainer.datasets.npm import NpmCache, tarball_name

RENDER_FORMAT = 1  # bump to invalidate every rendered cache (emoji styles and icon sets)


def resolve_icon(icon_set: dict, name: str) -> dict | None:
    """An Iconify icon with its aliases followed: body, viewBox and merged flips/rotation."""
    icons, aliases = icon_set.get("icons", {}), icon_set.get("aliases", {})
    props: dict = {"hFlip": False, "vFlip": False, "rotate": 0}
    seen = set()
    while name in aliases and name not in icons and name not in seen:
        seen.add(name)
        alias = aliases[name]
        _merge(props, alias)
        name = alias.get("parent", "")
    icon = icons.get(name)
    if icon is None:
        return None
    _merge(props, icon)
    for k, default in (("left", 0), ("top", 0), ("width", 16), ("height", 16)):
        props.setdefault(k, icon.get(k, icon_set.get(k, default)))
    props["body"] = icon["body"]
    return props


def _merge(props: dict, item: dict) -> None:
    props["hFlip"] ^= bool(item.get("hFlip"))
    props["vFlip"] ^= bool(item.get("vFlip"))
    props["rotate"] += int(item.get("rotate", 0))
    for k in ("left", "top", "width", "height"):  # the child's geometry wins
        if k in item:
            props.setdefault(k, item[k])


def icon_svg(icon: dict, size: int) -> str:
    """A standalone SVG document of a resolved icon, size x size, aspect kept."""
    x, y, w, h = icon["left"], icon["top"], icon["width"], icon["height"]
    transforms = []
    if icon["rotate"] % 4:
        transforms.append(f"rotate({90 * (icon['rotate'] % 4)} {x + w / 2} {y + h / 2})")
    if icon["hFlip"]:
        transforms.append(f"translate({2 * x + w} 0) scale(-1 1)")
    if icon["vFlip"]:
        transforms.append(f"translate(0 {2 * y + h}) scale(1 -1)")
    body = f'<g transform="{" ".join(transforms)}">{icon["body"]}</g>' if transforms else icon["body"]
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{size}" height="{size}" viewBox="{x} {y} {w} {h}">{body}</svg>'
    )


def pick_renderer(renderer: str = "auto") -> str:
    """ "resvg" (resvg-py) if importable, else "cairosvg"; ImportError if neither is."""
    for name, module in (("resvg", "resvg_py"), ("cairosvg", "cairosvg")):
        if renderer in ("auto", name):
            try:
                __import__(module)
                return name
            except ImportError:
                if renderer == name:
                    raise
    raise ImportError("rasterising SVG icons needs resvg-py or cairosvg (pip install resvg-py)")


def rasterise(svg: str, size: int, renderer: str) -> Image.Image:
    """An SVG document as an RGBA image of size x size."""
    if renderer == "resvg":
        import resvg_py

        png = bytes(resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size))
    else:
        import cairosvg

        png = cairosvg.svg2png(bytestring=svg.encode(), output_width=size, output_height=size)
    return Image.open(io.BytesIO(png))


def on_white(image: Image.Image, size: int) -> bytes:
    """PNG bytes of the image composited on white, RGB, size x size."""
    image = image.convert("RGBA")
    canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
    canvas.alpha_composite(image)
    rgb = canvas.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.LANCZOS)
    return encode_png(rgb)


def render_icon(icon_set: dict, name: str, size: int, renderer: str) -> bytes | None:
    """The named icon (aliases followed) as RGB PNG bytes on white; None if the set lacks it."""
    icon = resolve_icon(icon_set, name)
    if icon is None:
        return None
    return on_white(rasterise(icon_svg(icon, size), size, renderer), size)


# ---------------------------------------------------------------- rendered cache


def rendered_path(
    cache: NpmCache, package: str, version: str, tag: str, size: int, renderer: str, extra: Sequence[str] = ()
) -> Path:
    """`<cache>/rendered/<package>-<version>-<tag>-<size>px-<renderer>[-<extra>...]-<hash>-v<format>.zip`:
    one zip per package version (and its integrity hash), size, renderer and whatever else
    the renders depend on (`extra`); the package is fetched (and locked) first."""
    cache.tarball(package, version)
    digest = hashlib.sha256(cache.integrity(package, version).encode()).hexdigest()[:12]
    stem = tarball_name(package, version)[:-4]
    return (
        cache.root
        / "rendered"
        / ("-".join([stem, tag, f"{size}px", renderer, *extra, digest]) + f"-v{RENDER_FORMAT}.zip")
    )


def save_rendered(path: Path, images: dict[str, bytes], meta: dict) -> None:
    """One zip: meta.json and `<key>.png` per image, published whole (trainer.atomic)."""
    make_dirs(path.parent)
    with atomic_file(path) as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("meta.json", json.dumps(meta, sort_keys=True))
            for key, png in images.items():
                zf.writestr(f"{key}.png", png)


def load_rendered(path: Path) -> tuple[dict[str, bytes], dict]:
    """(key -> PNG bytes, meta) of a zip written by save_rendered."""
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("meta.json"))
        images = {n[:-4]: zf.read(n) for n in zf.namelist() if n.endswith(".png")}
    return images, meta
