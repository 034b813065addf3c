"""Icon concepts: an icon's name without its style marks, and the one icon kept per concept.

**Concepts.** An icon's name with its style marks removed is its concept, and the caption is
the concept made readable: `arrow-left-circle-fill` -> concept `arrow-left-circle`, caption
"arrow left circle" (optionally "arrow left circle (arrows)" with the set's category). The
rule, in order (`concept_of`):

1. a style prefix or suffix the set declares in its metadata.json (`prefixes`, `suffixes`:
   material-symbols' `-outline-rounded`, fluent's `-24-regular`, ic's `baseline-`) is cut;
2. then, repeatedly, a trailing token that marks a style (STYLE_WORDS: fill, outline, line,
   solid, regular, bold, duotone, twotone, sharp, light, thin, ...), a size (SIZE_TOKENS:
   10, 12, 16, 20, 24, 28, 32, 48, 96) or a zero-padded variant number (`01`..`09`) is cut;
3. a name that would be left empty keeps its last token.

Inside one set, icons of the same concept are style variants of one drawing: the one with
the fewest marks cut is kept (ties: the first name in sorted order), the others dropped.
Hidden (deprecated) icons and aliases are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

STYLE_WORDS = frozenset(
    "fill filled f outline outlined line linear solid regular bold duotone twotone sharp rounded light thin broken "
    "alerted badged".split()
)
SIZE_TOKENS = frozenset("10 12 16 20 24 28 32 48 96".split())


def concept_of(name: str, prefixes: Sequence[str] = (), suffixes: Sequence[str] = ()) -> tuple[str, int]:
    """(concept, marks cut) of an icon name under the module's rule (see the docstring)."""
    marks = 0
    for prefix in sorted((p for p in prefixes if p), key=len, reverse=True):
        if name.startswith(prefix + "-") and len(name) > len(prefix) + 1:
            name, marks = name[len(prefix) + 1 :], marks + 1
            break
    for suffix in sorted((s for s in suffixes if s), key=len, reverse=True):
        if name.endswith("-" + suffix) and len(name) > len(suffix) + 1:
            name, marks = name[: -len(suffix) - 1], marks + 1
            break
    tokens = name.split("-")
    while len(tokens) > 1 and _is_mark(tokens[-1]):
        tokens.pop()
        marks += 1
    return "-".join(tokens), marks


def _is_mark(token: str) -> bool:
    return token in STYLE_WORDS or token in SIZE_TOKENS or re.fullmatch(r"0[1-9]", token) is not None


def readable(concept: str) -> str:
    """`arrow-left-circle` -> "arrow left circle"."""
    return concept.replace("-", " ").strip()


@dataclass(frozen=True)
class Icon:
    name: str  # the icon's name in its set: "arrow-left-circle-fill"
    concept: str  # "arrow-left-circle"
    category: str  # the set's category ("" if the set has none)


def select_icons(icon_set: dict, metadata: dict) -> dict[str, Icon]:
    """concept -> the one icon kept for it in this set (visible icons only, no aliases)."""
    categories = {n: c for c, names in (metadata.get("categories") or {}).items() for n in names}
    prefixes, suffixes = list(metadata.get("prefixes") or {}), list(metadata.get("suffixes") or {})
    best: dict[str, tuple[int, str]] = {}
    for name, icon in icon_set.get("icons", {}).items():
        if icon.get("hidden"):
            continue
        concept, marks = concept_of(name, prefixes, suffixes)
        if concept not in best or (marks, name) < best[concept]:
            best[concept] = (marks, name)
    return {c: Icon(name, c, categories.get(name, "")) for c, (_, name) in sorted(best.items())}
