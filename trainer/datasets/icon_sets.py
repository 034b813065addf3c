"""The Iconify icon sets of the icon corpus, by npm package and pinned version, and a set's licence.

PRETRAIN_SETS are what CLIP_0 is pretrained on (`modx pretrain`); EVAL_SETS are never used
for pretraining, only to evaluate generalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.datasets.npm import package_license


@dataclass(frozen=True)
class IconSet:
    """One domain: an Iconify JSON package."""

    name: str
    package: str
    version: str


def _sets(versions: dict[str, str]) -> dict[str, IconSet]:
    return {name: IconSet(name, f"@iconify-json/{name}", v) for name, v in versions.items()}


PRETRAIN_SETS: dict[str, IconSet] = _sets(
    {
        "bi": "1.2.7",
        "ri": "1.2.10",
        "ion": "1.2.7",
        "octicon": "1.2.36",
        "uil": "1.2.3",
        "iconoir": "1.2.11",
        "heroicons": "1.2.3",
        "mingcute": "1.2.8",
        "solar": "1.2.13",
        "fluent": "1.2.60",
        "ic": "1.2.4",
        "majesticons": "1.2.5",
        "akar-icons": "1.2.7",
        "bx": "1.2.3",
        "cil": "1.2.3",
        "codicon": "1.2.74",
        "eva": "1.2.3",
        "gg": "1.2.2",
        "humbleicons": "1.2.20",
        "jam": "1.2.3",
        "la": "1.2.1",
        "ant-design": "1.2.9",
        "clarity": "1.2.4",
        "system-uicons": "1.2.4",
        "pixelarticons": "1.2.9",
        "mi": "1.2.2",
        "basil": "1.2.4",
        "gravity-ui": "1.2.15",
        "hugeicons": "1.2.35",
        "prime": "1.2.5",
        "quill": "1.2.4",
        "radix-icons": "1.2.6",
        "tdesign": "1.2.19",
        "typcn": "1.2.2",
        "ep": "1.2.4",
        "fa6-solid": "1.2.4",
        "fa6-regular": "1.2.4",
        "material-symbols": "1.2.98",
        "icon-park-outline": "1.2.4",
        "mynaui": "1.2.19",
        "lets-icons": "1.2.2",
        "iconamoon": "1.2.2",
        "mage": "1.2.4",
        "stash": "1.2.4",
        "proicons": "1.2.20",
        "famicons": "1.2.2",
    }
)
EVAL_SETS: dict[str, IconSet] = _sets(
    {
        "teenyicons": "1.2.2",
        "fontisto": "1.2.1",
        "gridicons": "1.2.5",
        "pepicons-pop": "1.2.4",
        "f7": "1.2.2",
    }
)


def set_license(info: dict, tgz: Path) -> dict:
    """The set's licence as its info.json names it (spdx, title, url), and its author."""
    lic = info.get("license") or {}
    return {
        "spdx": lic.get("spdx") or package_license(tgz),
        "title": lic.get("title", ""),
        "url": lic.get("url", ""),
        "author": (info.get("author") or {}).get("name", ""),
        "set_name": info.get("name", ""),
    }
