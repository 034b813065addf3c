"""Emoji styles as domains: one concept ("grinning face") drawn once per designer style.

A real-data continual benchmark in the spirit of Mod-X's COCO -> Flickr shift. Each style
(Google Noto, Twemoji, Fluent, ...) is one domain; the captions are the CLDR names, the
same in every style, so the pixels that go with "grinning face" change from phase to phase
while the words do not.

Sources are npm packages (trainer.datasets.npm: `npm pack` into a cache directory, checked
against the registry's sha512 integrity and pinned in a lock file there, so later runs work
offline; the art is never copied into the repository). SVG sets are resolved and rendered
by trainer.datasets.iconify.

| style kind | packages | what is read |
|---|---|---|
| png | emoji-datasource-{google,twitter,facebook} | emoji.json + img/<set>/64/*.png |
| iconify | @iconify-json/{noto,twemoji,openmoji,fluent-emoji-flat,emojione,fxemoji} | icons.json, chars.json |
| names | emojibase-data | <lang>/data.json (label, tags), en/messages.json |

Concepts are keyed by their codepoints without FE0F (`1f600`, `2764`); pair ids are
`<style>:<key>` (`google:1f600`). Only concepts that every selected style draws are kept.
`test(domain)` holds the concepts never trained on (chosen by hash of the concept, so the
same concepts in every style); the other concepts' pairs are split by hash of pair id
(`trainer.data.split_of`) into train, validation (held out, for tuning) and probe (held
out, for retention: the concept is usually trained in the other styles).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

from PIL import Image

from trainer.data import Pair, id_fraction, split_of
from trainer.datasets import iconify
from trainer.datasets.iconify import load_rendered, pick_renderer, save_rendered
from trainer.datasets.npm import Npm, NpmCache, package_license, read_members, read_tgz_json, run_npm, tarball_name

# ---------------------------------------------------------------- sources


@dataclass(frozen=True)
class Style:
    """One domain: an npm package holding one designer's emoji art."""

    name: str
    package: str
    version: str
    kind: str  # "png" (emoji-datasource layout) | "iconify" (Iconify JSON)
    image_set: str = ""  # png only: the folder under img/
    art_license: str = ""  # the art's licence where it differs from package.json's


@dataclass(frozen=True)
class Names:
    """The package with the CLDR names and keywords."""

    package: str = "emojibase-data"
    version: str = "17.0.0"


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
CAPTIONS = ("name", "name+keywords")
RENDER_FORMAT = 1  # bump to invalidate every rendered cache


# ---------------------------------------------------------------- concepts


@dataclass(frozen=True)
class Concept:
    key: str  # codepoints without FE0F, lower-case: "1f600", "1f468-200d-1f4bb"
    label: str  # English CLDR name, used for matching icon names
    name: str  # the caption's name, lower-case, in the chosen language
    tags: tuple[str, ...]
    category: str
    subcategory: str


def canonical(hexcode: str) -> str:
    """Codepoints without the FE0F variation selector, lower-case, dash-joined."""
    return "-".join(p for p in hexcode.lower().replace("_", "-").split("-") if p and p != "fe0f")


SLUG_WORDS = ((".", ""), ("'", ""), ("&", " and "), ("#", " number sign "), ("*", " asterisk "), ("!", " exclamation "))


def slugify(text: str) -> str:
    """A CLDR name as an Iconify icon name: "flag: U.S. Virgin Islands" -> "flag-us-virgin-islands"."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    for old, new in SLUG_WORDS:
        text = text.replace(old, new)
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def load_concepts(tgz: Path, language: str = "en") -> dict[str, Concept]:
    """emojibase's emoji (no components, no regional indicators), in emojibase order."""
    files = read_tgz_json(tgz, ["en/data.json", "en/messages.json", f"{language}/data.json"])
    if f"{language}/data.json" not in files:
        raise ValueError(f"{tgz.name} has no {language}/data.json")
    messages = files["en/messages.json"]
    groups = {g["order"]: g for g in messages["groups"]}
    subgroups = {g["order"]: g["key"] for g in messages["subgroups"]}
    names = {canonical(e["hexcode"]): e["label"] for e in files[f"{language}/data.json"]}
    concepts = {}
    for e in files["en/data.json"]:
        group = groups.get(e.get("group"))
        if group is None or group["key"] == "component":
            continue
        key = canonical(e["hexcode"])
        name = names.get(key, e["label"]).lower()
        subgroup = subgroups.get(e.get("subgroup"), "")
        concepts[key] = Concept(key, e["label"], name, tuple(e.get("tags", ())), group["message"], subgroup)
    return concepts


def caption(concept: Concept, mode: str = "name", n_keywords: int = 3) -> str:
    """The CLDR name, or "name: kw, kw, kw" with keywords not already in the name."""
    if mode == "name":
        return concept.name
    if mode != "name+keywords":
        raise ValueError(f"captions must be one of {CAPTIONS}, not {mode!r}")
    words = set(concept.name.replace(":", " ").split())
    keywords = [t.lower() for t in concept.tags if t.lower() not in words][:n_keywords]
    return f"{concept.name}: {', '.join(keywords)}" if keywords else concept.name


# ---------------------------------------------------------------- images


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


# ---------------------------------------------------------------- rendered cache


def render_cache_path(root: Path, style: Style, integrity: str, names: Names, size: int, renderer: str) -> Path:
    """One zip per (package version and hash, size, renderer, emojibase version)."""
    digest = hashlib.sha256(integrity.encode()).hexdigest()[:12]
    stem = f"{tarball_name(style.package, style.version)[:-4]}-{style.image_set or 'svg'}-{size}px-{renderer}"
    return root / "rendered" / f"{stem}-{names.package}-{names.version}-{digest}-v{RENDER_FORMAT}.zip"


# ---------------------------------------------------------------- dataset


class EmojiDataset:
    """Emoji styles as domains, implementing trainer.data.Dataset (plus the `test` split).

    styles: names from STYLES, or Style objects. size: the image side in pixels (the PNG
    sets are 64 px and are resized). captions: "name" or "name+keywords" (n_keywords of
    emojibase's tags). language: emojibase's caption language (names are matched in English).
    test_fraction: concepts held out of training in every style (chosen by hash of the
    concept key, salted with the seed if one is given). probe_fraction, validation_fraction:
    the `trainer.data.split_of` slices of the other concepts' pairs.
    Nothing is fetched or rendered until a split or info() is asked for.
    """

    name = "emoji"
    eval_splits = ("test",)

    def __init__(
        self,
        styles: Sequence[str | Style] = PRESETS["google-twemoji-fluent"],
        size: int = 32,
        captions: str = "name",
        n_keywords: int = 3,
        test_fraction: float = 0.2,
        probe_fraction: float = 0.1,
        validation_fraction: float = 0.1,
        cache_dir: str | os.PathLike | None = None,
        seed: int | None = None,
        language: str = "en",
        names: Names = Names(),
        renderer: str = "auto",
        npm: Npm = run_npm,
    ):
        self.styles = [s if isinstance(s, Style) else _style(s) for s in styles]
        self.domains = [s.name for s in self.styles]
        if not self.styles or len(set(self.domains)) != len(self.domains):
            raise ValueError(f"styles must be distinct and non-empty, got {self.domains}")
        if captions not in CAPTIONS:
            raise ValueError(f"captions must be one of {CAPTIONS}, not {captions!r}")
        if size < 1 or not 0 <= test_fraction < 1 or not 0 <= probe_fraction + validation_fraction < 1:
            raise ValueError("size must be >= 1 and the fractions in [0, 1)")
        self.size, self.captions, self.n_keywords = size, captions, n_keywords
        self.test_fraction, self.probe_fraction, self.seed = test_fraction, probe_fraction, seed
        self.validation_fraction = validation_fraction
        self.language, self.names, self.renderer = language, names, renderer
        self.cache = NpmCache(cache_dir, npm)

    # -- the protocol

    def train(self, domain: str) -> list[Pair]:
        return self._pairs(domain, "train")

    def probe(self, domain: str) -> list[Pair]:
        return self._pairs(domain, "probe")

    def test(self, domain: str) -> list[Pair]:
        """The held-out concepts in this style: never trained on in any style."""
        return self._pairs(domain, "test")

    def validation(self, domain: str) -> list[Pair]:
        """Held out of training, never probe or test: what hyper-parameters are chosen on."""
        return self._pairs(domain, "validation")

    def is_test_concept(self, key: str) -> bool:
        salt = "emoji-test:" if self.seed is None else f"emoji-test:{self.seed}:"
        return id_fraction(key, salt) < self.test_fraction

    def info(self) -> dict:
        names_tgz = self.cache.tarball(self.names.package, self.names.version)
        names_integrity = self._integrity(self.names.package, self.names.version)
        return {
            "name": self.name,
            "domains": list(self.domains),
            "styles": {s.name: self._style_info(s) for s in self.styles},
            "names": {
                "package": self.names.package,
                "version": self.names.version,
                "license": package_license(names_tgz),
                "integrity": names_integrity,
                "language": self.language,
            },
            "concepts": len(self.concepts),
            "test_concepts": sum(map(self.is_test_concept, self.concepts)),
            "counts": {d: {k: len(v) for k, v in self._splits[d].items()} for d in self.domains},
            "size": self.size,
            "captions": self.captions,
            "n_keywords": self.n_keywords,
            "test_fraction": self.test_fraction,
            "probe_fraction": self.probe_fraction,
            "validation_fraction": self.validation_fraction,
            "seed": self.seed,
            "cache_dir": str(self.cache.root),
        }

    # -- building

    @cached_property
    def all_concepts(self) -> dict[str, Concept]:
        """Every emojibase emoji, whether or not the styles draw it."""
        return load_concepts(self.cache.tarball(self.names.package, self.names.version), self.language)

    @cached_property
    def rendered(self) -> dict[str, tuple[dict[str, bytes], dict]]:
        """style -> (concept key -> PNG bytes, metadata), rendered once and cached on disk."""
        return {s.name: self._render(s) for s in self.styles}

    @property
    def images(self) -> dict[str, dict[str, bytes]]:
        return {d: images for d, (images, _) in self.rendered.items()}

    @cached_property
    def concepts(self) -> dict[str, Concept]:
        """The concepts every selected style draws, in emojibase order."""
        images = self.images
        return {k: c for k, c in self.all_concepts.items() if all(k in images[d] for d in self.domains)}

    @cached_property
    def _splits(self) -> dict[str, dict[str, list[Pair]]]:
        return {d: self._split(d) for d in self.domains}

    def _split(self, domain: str) -> dict[str, list[Pair]]:
        splits: dict[str, list[Pair]] = {"train": [], "validation": [], "probe": [], "test": []}
        for key, concept in self.concepts.items():
            pair = self._pair(domain, concept)
            if self.is_test_concept(key):
                splits["test"].append(pair)
            else:
                splits[split_of(pair.id, self.probe_fraction, self.validation_fraction)].append(pair)
        return splits

    def _pair(self, domain: str, concept: Concept) -> Pair:
        meta = {
            "concept": concept.key,
            "name": concept.name,
            "category": concept.category,
            "subcategory": concept.subcategory,
            "style": domain,
        }
        text = caption(concept, self.captions, self.n_keywords)
        return Pair(f"{domain}:{concept.key}", text, self.rendered[domain][0][concept.key], domain, meta)

    def _render(self, style: Style) -> tuple[dict[str, bytes], dict]:
        tgz = self.cache.tarball(style.package, style.version)
        renderer = "pil" if style.kind == "png" else pick_renderer(self.renderer)
        integrity = self._integrity(style.package, style.version)
        path = render_cache_path(self.cache.root, style, integrity, self.names, self.size, renderer)
        if path.exists():
            return load_rendered(path)
        if style.kind == "png":
            images, meta = png_images(tgz, style, self.all_concepts, self.size)
        elif style.kind == "iconify":
            images, meta = iconify_images(tgz, self.all_concepts, self.size, renderer)
        else:
            raise ValueError(f"style {style.name}: unknown kind {style.kind!r}")
        meta.update(license=package_license(tgz), available=len(images))
        save_rendered(path, images, meta)
        return images, meta

    def _style_info(self, style: Style) -> dict:
        meta = self.rendered[style.name][1]
        return {
            "package": style.package,
            "version": style.version,
            "kind": style.kind,
            "license": meta["license"],
            "art_license": style.art_license or meta["license"],
            "integrity": self._integrity(style.package, style.version),
            "available": meta["available"],
            "matched_by": meta["matched_by"],
        }

    def _integrity(self, package: str, version: str) -> str:
        return self.cache.integrity(package, version)

    def _pairs(self, domain: str, split: str) -> list[Pair]:
        if domain not in self.domains:
            raise KeyError(f"unknown domain {domain!r}; domains: {self.domains}")
        return self._splits[domain][split]


def _style(name: str) -> Style:
    if name not in STYLES:
        raise ValueError(f"unknown emoji style {name!r}; known: {', '.join(STYLES)}")
    return STYLES[name]


def emoji_stream(preset: str = "google-twemoji-fluent", **kw) -> EmojiDataset:
    """The emoji styles stream: google -> twitter (Twemoji) -> fluent by default."""
    if preset not in PRESETS:
        raise ValueError(f"unknown emoji preset {preset!r}; known: {', '.join(PRESETS)}")
    if "styles" in kw:
        raise ValueError("give either a preset or styles (use EmojiDataset(styles=...))")
    return EmojiDataset(styles=PRESETS[preset], **kw)
