"""Emoji concepts and their captions: emojibase's emoji with their CLDR names and keywords.

A concept is keyed by its codepoints without FE0F, lower-case (`1f600`, `2764`); its
caption is the CLDR name in the chosen language ("grinning face"), optionally followed by
keywords ("name+keywords"). Names are matched to icon names in English (`slugify`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from trainer.datasets.npm import read_tgz_json

CAPTIONS = ("name", "name+keywords")


@dataclass(frozen=True)
class Names:
    """The package with the CLDR names and keywords."""

    package: str = "emojibase-data"
    version: str = "17.0.0"


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
