"""Emoji styles as domains: one concept ("grinning face") drawn once per designer style.

A real-data continual benchmark in the spirit of Mod-X's COCO -> Flickr shift. Each style
(Google Noto, Twemoji, Fluent, ...) is one domain; the captions are the CLDR names, the
same in every style, so the pixels that go with "grinning face" change from phase to phase
while the words do not.

Sources are npm packages (trainer.datasets.npm: `npm pack` into a cache directory, checked
against the registry's sha512 integrity and pinned in a lock file there, so later runs work
offline; the art is never copied into the repository). SVG sets are resolved and rendered
by trainer.datasets.iconify. The styles and how each draws a concept: trainer.datasets.emoji_styles;
the concepts and captions (emojibase-data's <lang>/data.json, en/messages.json):
trainer.datasets.emoji_concepts.

Concepts are keyed by their codepoints without FE0F (`1f600`, `2764`); pair ids are
`<style>:<key>` (`google:1f600`). Only concepts that every selected style draws are kept.
`test(domain)` holds the concepts never trained on (chosen by hash of the concept, so the
same concepts in every style); the other concepts' pairs are split by hash of pair id
(`trainer.data.split_of`) into train, validation (held out, for tuning) and probe (held
out, for retention: the concept is usually trained in the other styles).
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Sequence

from trainer.data import Pair, id_fraction, split_of
from trainer.datasets.emoji_concepts import CAPTIONS, Concept, Names, caption, load_concepts
from trainer.datasets.emoji_styles import PRESETS, STYLES, Style, iconify_images, png_images
from trainer.datasets.iconify import load_rendered, pick_renderer, rendered_path, save_rendered
from trainer.datasets.npm import Npm, NpmCache, package_license, run_npm


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
        extra = (self.names.package, self.names.version)  # one zip per (package, size, renderer, names)
        tag = style.image_set or "svg"
        path = rendered_path(self.cache, style.package, style.version, tag, self.size, renderer, extra)
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
