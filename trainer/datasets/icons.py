"""Iconify icon sets as an image-text corpus: one pair per (set, concept), captioned by name.

The pretraining corpus of CLIP_0 (`modx pretrain`): the UI icon sets in PRETRAIN_SETS, each
an npm package `@iconify-json/NAME`, fetched and verified by trainer.datasets.npm (cached,
offline once cached, never vendored) and rendered by trainer.datasets.iconify. The sets in
EVAL_SETS are never used for pretraining; they are kept to evaluate generalisation.

**Concepts** (trainer.datasets.icon_concepts): an icon's name with its style marks removed is its
concept, and the caption is the concept made readable (`arrow-left-circle-fill` -> "arrow left
circle"); inside one set the icon with the fewest marks is kept per concept. The sets and
their licences: trainer.datasets.icon_sets.

**Splits.** By concept, by hash (`id_fraction(concept)`, salted with the seed if given), the
same in every set: `test` concepts (test_fraction) and `validation` concepts
(validation_fraction) are never trained in any set, so the same concept drawn by several
sets is one concept, and test concepts are ones no set was trained on. The other concepts'
pairs are split by hash of pair id into `train` and `probe` (probe_fraction: held out,
for retention). Pair ids are `<set>:<icon name>` (`bi:arrow-left-circle`).

**Caps.** `max_per_set` keeps at most that many concepts per set, chosen by hash of the
concept, so capped sets still share concepts. Renders are cached per set (one zip keyed by
package version and hash, size and renderer) and only the icons missing from it are drawn.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Sequence

from trainer.data import Pair, id_fraction, split_of
from trainer.datasets import iconify
from trainer.datasets.icon_concepts import Icon, readable, select_icons
from trainer.datasets.icon_sets import EVAL_SETS, PRETRAIN_SETS, IconSet, set_license
from trainer.datasets.npm import Npm, NpmCache, read_tgz_json, run_npm

CAPTIONS = ("name", "name+category")


class IconDataset:
    """Iconify sets as domains, implementing trainer.data.Dataset (plus the `test` split).

    sets: names from PRETRAIN_SETS / EVAL_SETS, or IconSet objects. size: the image side in
    pixels. captions: "name" or "name+category". max_per_set: concepts kept per set (None:
    all). Nothing is fetched or rendered until a split or info() is asked for.
    """

    name = "icons"
    eval_splits = ("test",)

    def __init__(
        self,
        sets: Sequence[str | IconSet] = tuple(PRETRAIN_SETS),
        size: int = 32,
        captions: str = "name",
        test_fraction: float = 0.1,
        validation_fraction: float = 0.05,
        probe_fraction: float = 0.05,
        max_per_set: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        seed: int | None = None,
        renderer: str = "auto",
        npm: Npm = run_npm,
    ):
        self.sets = [s if isinstance(s, IconSet) else _icon_set(s) for s in sets]
        self.domains = [s.name for s in self.sets]
        if not self.sets or len(set(self.domains)) != len(self.domains):
            raise ValueError(f"icon sets must be distinct and non-empty, got {self.domains}")
        if captions not in CAPTIONS:
            raise ValueError(f"captions must be one of {CAPTIONS}, not {captions!r}")
        if size < 1 or not 0 <= test_fraction + validation_fraction < 1 or not 0 <= probe_fraction < 1:
            raise ValueError("size must be >= 1 and the fractions in [0, 1)")
        if max_per_set is not None and max_per_set < 1:
            raise ValueError(f"max_per_set must be >= 1 or None, not {max_per_set}")
        self.size, self.captions, self.max_per_set, self.seed = size, captions, max_per_set, seed
        self.test_fraction, self.validation_fraction, self.probe_fraction = (
            test_fraction,
            validation_fraction,
            probe_fraction,
        )
        self.renderer = renderer
        self.cache = NpmCache(cache_dir, npm)

    # -- the protocol

    def train(self, domain: str) -> list[Pair]:
        return self._pairs(domain, "train")

    def probe(self, domain: str) -> list[Pair]:
        """Pairs of trained concepts, held out of training: retention."""
        return self._pairs(domain, "probe")

    def validation(self, domain: str) -> list[Pair]:
        """Concepts never trained in any set, for choosing hyper-parameters."""
        return self._pairs(domain, "validation")

    def test(self, domain: str) -> list[Pair]:
        """Concepts never trained in any set, never looked at while tuning: generalisation."""
        return self._pairs(domain, "test")

    def concept_split(self, concept: str) -> str:
        """ "test", "validation" or "train" for a concept, the same in every set."""
        u = id_fraction(concept, "icon-concept:" if self.seed is None else f"icon-concept:{self.seed}:")
        if u < self.test_fraction:
            return "test"
        return "validation" if u < self.test_fraction + self.validation_fraction else "train"

    def info(self) -> dict:
        return {
            "name": self.name,
            "domains": list(self.domains),
            "sets": {s.name: self._set_info(s) for s in self.sets},
            "concepts": len(
                {p.metadata["concept"] for d in self.domains for ps in self._splits[d].values() for p in ps}
            ),
            "counts": {d: {k: len(v) for k, v in self._splits[d].items()} for d in self.domains},
            "size": self.size,
            "captions": self.captions,
            "max_per_set": self.max_per_set,
            "test_fraction": self.test_fraction,
            "validation_fraction": self.validation_fraction,
            "probe_fraction": self.probe_fraction,
            "seed": self.seed,
            "cache_dir": str(self.cache.root),
        }

    # -- building

    @cached_property
    def selected(self) -> dict[str, dict[str, Icon]]:
        """set -> concept -> icon, after variants are dropped and the cap applied."""
        return {s.name: self._select(s) for s in self.sets}

    @cached_property
    def images(self) -> dict[str, dict[str, bytes]]:
        """set -> icon name -> PNG bytes, rendered once and cached on disk."""
        return {s.name: self._render(s) for s in self.sets}

    def _select(self, icon_set: IconSet) -> dict[str, Icon]:
        files = self._files(icon_set)
        icons = select_icons(files["icons.json"], files.get("metadata.json", {}))
        if self.max_per_set is not None and len(icons) > self.max_per_set:
            keep = sorted(icons, key=lambda c: id_fraction(c, "icon-cap:"))[: self.max_per_set]
            icons = {c: icons[c] for c in sorted(keep)}
        return icons

    def _files(self, icon_set: IconSet) -> dict:
        tgz = self.cache.tarball(icon_set.package, icon_set.version)
        return read_tgz_json(tgz, ["icons.json", "metadata.json", "info.json"])

    def _render(self, icon_set: IconSet) -> dict[str, bytes]:
        renderer = iconify.pick_renderer(self.renderer)
        path = iconify.rendered_path(self.cache, icon_set.package, icon_set.version, "icons", self.size, renderer)
        images, _ = iconify.load_rendered(path) if path.exists() else ({}, {})
        wanted = [icon.name for icon in self.selected[icon_set.name].values()]
        missing = [n for n in wanted if n not in images]
        if missing:
            source = self._files(icon_set)["icons.json"]
            for name in missing:
                images[name] = iconify.render_icon(source, name, self.size, renderer)
            iconify.save_rendered(
                path,
                images,
                {"package": icon_set.package, "version": icon_set.version, "size": self.size, "renderer": renderer},
            )
        return {n: images[n] for n in wanted}

    @cached_property
    def _splits(self) -> dict[str, dict[str, list[Pair]]]:
        return {d: self._split(d) for d in self.domains}

    def _split(self, domain: str) -> dict[str, list[Pair]]:
        splits: dict[str, list[Pair]] = {"train": [], "validation": [], "probe": [], "test": []}
        images = self.images[domain]
        for concept, icon in self.selected[domain].items():
            pair = self._pair(domain, icon, images[icon.name])
            split = self.concept_split(concept)
            if split == "train":
                split = split_of(pair.id, self.probe_fraction)
            splits[split].append(pair)
        return splits

    def _pair(self, domain: str, icon: Icon, image: bytes) -> Pair:
        text = readable(icon.concept)
        if self.captions == "name+category" and icon.category:
            text = f"{text} ({icon.category.lower()})"
        meta = {"concept": icon.concept, "set": domain, "icon": icon.name, "category": icon.category}
        return Pair(f"{domain}:{icon.name}", text, image, domain, meta)

    def _set_info(self, icon_set: IconSet) -> dict:
        tgz = self.cache.tarball(icon_set.package, icon_set.version)
        info = read_tgz_json(tgz, ["info.json"]).get("info.json", {})
        return {
            "package": icon_set.package,
            "version": icon_set.version,
            "integrity": self.cache.integrity(icon_set.package, icon_set.version),
            "license": set_license(info, tgz),
            "concepts": len(self.selected[icon_set.name]),
        }

    def _pairs(self, domain: str, split: str) -> list[Pair]:
        if domain not in self.domains:
            raise KeyError(f"unknown icon set {domain!r}; sets: {self.domains}")
        return self._splits[domain][split]


def _icon_set(name: str) -> IconSet:
    known = {**PRETRAIN_SETS, **EVAL_SETS}
    if name not in known:
        raise ValueError(f"unknown icon set {name!r}; known: {', '.join(known)}")
    return known[name]
