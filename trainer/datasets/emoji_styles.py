"""Emoji styles: the npm packages of each designer's art, and each concept drawn in a style.

| style kind | packages | what is read |
|---|---|---|
| png | emoji-datasource-{google,twitter,facebook} | emoji.json + img/<set>/64/*.png |
| iconify | @iconify-json/{noto,twemoji,openmoji,fluent-emoji-flat,emojione,fxemoji} | icons.json, chars.json |

A PNG set names its images by codepoint; an Iconify set is matched by codepoint
(chars.json), else by the slugified CLDR name (`match_icons`), and rendered on white
(trainer.datasets.iconify).
"""

from __future__ import annotations

import io
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from trainer.datasets import iconify
from trainer.datasets.emoji_concepts import Concept, canonical, slugify
from trainer.datasets.npm import read_members, read_tgz_json


@dataclass(frozen=True)
class Style:
    """One domain: an npm package holding one designer's emoji art."""

    name: str
    package: str
    version: str
    kind: str  # "png" (emoji-datasource layout) | "iconify" (Iconify JSON)
    image_set: str = ""  # png only: the folder under img/
    art_license: str = ""  # the art's licence where it differs from package.json's


def _png(name: str, art_license: str) -> Style:
    return Style(name, f"emoji-datasource-{name}", "16.0.0", "png", name, art_license)


def _iconify(name: str, package: str, version: str) -> Style:
    return Style(name, f"@iconify-json/{package}", version, "iconify")


STYLES: dict[str, Style] = {
    "google": _png("google", "Apache-2.0 (Noto Emoji images)"),
    "twitter": _png("twitter", "CC-BY-4.0 (Twemoji images)"),
    "facebook": _png("facebook", "no clear licence (images (c) Facebook, Inc.)"),
    "noto": _iconify("noto", "noto", "1.2.9"),
    "twemoji": _iconify("twemoji", "twemoji", "1.2.5"),
    "openmoji": _iconify("openmoji", "openmoji", "1.2.29"),
    "fluent": _iconify("fluent", "fluent-emoji-flat", "1.2.6"),
    "emojione": _iconify("emojione", "emojione", "1.2.3"),
    "fxemoji": _iconify("fxemoji", "fxemoji", "1.2.2"),
}
PRESETS: dict[str, tuple[str, ...]] = {
    "google-twemoji-fluent": ("google", "twitter", "fluent"),
}


def png_images(tgz: Path, style: Style, concepts: dict[str, Concept], size: int) -> tuple[dict[str, bytes], dict]:
    """emoji-datasource: the 64 px PNGs of the concepts this set draws."""
    index = read_tgz_json(tgz, ["emoji.json"])["emoji.json"]
    files = {}
    for e in index:
        key = canonical(e["unified"])
        if key in concepts and e.get(f"has_img_{style.image_set}", True):
            files[f"img/{style.image_set}/64/{e['image']}"] = key
    raw = read_members(tgz, files)
    images = {files[path]: iconify.on_white(Image.open(io.BytesIO(data)), size) for path, data in raw.items()}
    return images, {"matched_by": {"codepoint": len(images)}, "listed": len(files)}


def match_icons(icon_set: dict, chars: dict, concepts: dict[str, Concept]) -> dict[str, tuple[str, str]]:
    """concept key -> (icon name, how): by codepoint (chars.json), else by slugified name.

    Name candidates, in order: the CLDR name, the Unicode character name, "flag-for-..."
    (older sets), each also without dashes (fxemoji). An icon is used at most once.
    """
    names = set(icon_set.get("icons", {})) | set(icon_set.get("aliases", {}))
    by_char = {canonical(code): name for code, name in chars.items() if name in names}
    matched = {k: (by_char[k], "codepoint") for k in concepts if k in by_char}
    taken = {name for name, _ in matched.values()}
    for key, concept in concepts.items():
        if key in matched:
            continue
        for candidate in _name_candidates(concept):
            if candidate in names and candidate not in taken:
                matched[key] = (candidate, "name")
                taken.add(candidate)
                break
    return matched


def _name_candidates(concept: Concept) -> list[str]:
    slugs = [slugify(concept.label)]
    codepoints = concept.key.split("-")
    if len(codepoints) == 1:
        try:
            slugs.append(slugify(unicodedata.name(chr(int(codepoints[0], 16)))))
        except ValueError:
            pass
    if slugs[0].startswith("flag-"):
        slugs.append("flag-for-" + slugs[0][5:])
    return slugs + [s.replace("-", "") for s in slugs]


def iconify_images(tgz: Path, concepts: dict[str, Concept], size: int, renderer: str) -> tuple[dict[str, bytes], dict]:
    """Iconify JSON: the matched icons rasterised on white."""
    files = read_tgz_json(tgz, ["icons.json", "chars.json"])
    icon_set = files["icons.json"]
    matched = match_icons(icon_set, files.get("chars.json", {}), concepts)
    images, how = {}, {"codepoint": 0, "name": 0}
    for key, (name, by) in matched.items():
        png = iconify.render_icon(icon_set, name, size, renderer)
        if png is not None:
            images[key] = png
            how[by] += 1
    return images, {"matched_by": how, "renderer": renderer}
