"""The Iconify icon corpus, on fake @iconify-json packages the test builds (npm never runs)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.fake_npm import FakeRegistry, iconify_package, no_network, seed_cache, write_tarballs
from trainer.data import split_of
from trainer.datasets import iconify
from trainer.datasets.icon_concepts import concept_of, readable, select_icons
from trainer.datasets.icon_sets import PRETRAIN_SETS, IconSet
from trainer.datasets.icons import IconDataset

WORDS = (
    "arrow-left arrow-right home heart star user bell lock cloud camera search trash folder flag gift key "
    "moon sun book code copy eye filter link mail map phone pin play print share tag"
).split()
ALPHA = IconSet("alpha", "@iconify-json/alpha", "1.0.0")
BETA = IconSet("beta", "@iconify-json/beta", "2.0.0")


def body(i: int, shape: str, filled: bool) -> str:
    """A drawing that differs by concept (position, size) and by set (shape)."""
    x, y, r = 2 + (i % 4) * 3, 2 + (i // 4 % 4) * 3, 2 + i % 3
    paint = 'fill="currentColor"' if filled else 'fill="none" stroke="currentColor"'
    if shape == "rect":
        return f'<rect x="{x}" y="{y}" width="{r * 2}" height="{r}" {paint}/>'
    return f'<circle cx="{x + r}" cy="{y + r}" r="{r}" {paint}/>'


def alpha_package(words=WORDS) -> bytes:
    """Declared suffixes (metadata.json), categories, a hidden icon and an alias."""
    icons = {}
    for i, w in enumerate(words):
        icons[w] = {"body": body(i, "rect", False)}
        icons[f"{w}-fill"] = {"body": body(i, "rect", True)}
    icons["old-home"] = {"body": body(0, "rect", True), "hidden": True}
    aliases = {"house": {"parent": "home"}}
    metadata = {
        "suffixes": {"": "Regular", "fill": "Fill"},
        "categories": {"Arrows": ["arrow-left", "arrow-right", "arrow-left-fill"]},
    }
    info = {
        "name": "Alpha Icons",
        "author": {"name": "A. Designer"},
        "license": {"title": "MIT", "spdx": "MIT", "url": "https://example.org/alpha"},
    }
    icon_set = {"prefix": "alpha", "icons": icons, "aliases": aliases, "width": 16, "height": 16}
    return iconify_package(ALPHA.package, icon_set, metadata, info)


def beta_package(words=WORDS[:24]) -> bytes:
    """No metadata: style and size marks in the names only (-24-outline, -16, -01)."""
    icons = {}
    for i, w in enumerate(words):
        icons[f"{w}-24-outline"] = {"body": body(i, "circle", False)}
        icons[f"{w}-16"] = {"body": body(i, "circle", True)}
    icons["battery-50"] = {"body": body(3, "circle", True)}
    icons["location-01"] = {"body": body(5, "circle", True)}
    info = {"name": "Beta", "license": {"title": "CC BY 4.0", "spdx": "CC-BY-4.0"}}
    return iconify_package(BETA.package, {"prefix": "beta", "icons": icons, "width": 16, "height": 16}, None, info)


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory):
    return write_tarballs(
        tmp_path_factory.mktemp("tarballs"),
        {(ALPHA.package, ALPHA.version): alpha_package(), (BETA.package, BETA.version): beta_package()},
    )


@pytest.fixture
def cache(tmp_path, tarballs):
    return seed_cache(tmp_path / "npm", tarballs)


def dataset(cache, **kw) -> IconDataset:
    try:
        iconify.pick_renderer()
    except ImportError:
        pytest.skip("neither resvg-py nor cairosvg is installed")
    return IconDataset(**{"sets": [ALPHA, BETA], "cache_dir": cache, "npm": no_network, **kw})


def all_pairs(ds, domain):
    return [p for split in ("train", "validation", "probe", "test") for p in getattr(ds, split)(domain)]


def test_concept_rule():
    assert concept_of("arrow-left-circle-fill") == ("arrow-left-circle", 1)
    assert concept_of("arrow-left-24-regular") == ("arrow-left", 2)
    assert concept_of("arrow-left-24-regular", suffixes=["24-regular", "24-filled"]) == ("arrow-left", 1)
    assert concept_of("baseline-home", prefixes=["baseline", "outline"]) == ("home", 1)
    assert concept_of("outline-home") == ("outline-home", 0)  # a leading mark counts only where declared
    assert concept_of("home-24") == ("home", 1) and concept_of("location-favourite-01") == ("location-favourite", 1)
    assert concept_of("hourglass-2-fill") == ("hourglass-2", 1)  # variant digits are part of the name
    assert concept_of("battery-50") == ("battery-50", 0)  # 50 is not a size
    assert concept_of("fill") == ("fill", 0) and concept_of("line-bold") == ("line", 1)  # never empty
    assert concept_of("arrow-shape-right-from-line-fill") == ("arrow-shape-right-from", 2)
    assert readable("arrow-left-circle") == "arrow left circle"


def test_select_icons_keeps_one_drawing_per_concept():
    icon_set = {
        "icons": {
            "home": {"body": ""},
            "home-fill": {"body": ""},
            "home-24-outline": {"body": ""},
            "star-fill": {"body": ""},
            "star-outline": {"body": ""},
            "gone": {"body": "", "hidden": True},
        },
        "aliases": {"house": {"parent": "home"}},
    }
    chosen = select_icons(icon_set, {"categories": {"Shapes": ["star-fill"]}})
    assert {c: i.name for c, i in chosen.items()} == {"home": "home", "star": "star-fill"}  # fewest marks, then name
    assert chosen["star"].category == "Shapes" and chosen["home"].category == ""


def test_pairs_captions_and_ids(cache):
    ds = dataset(cache)
    alpha = {p.metadata["concept"]: p for p in all_pairs(ds, "alpha")}
    beta = {p.metadata["concept"]: p for p in all_pairs(ds, "beta")}
    assert set(alpha) == set(WORDS)  # `-fill` variants dropped, hidden icon and alias skipped
    assert set(beta) == set(WORDS[:24]) | {"battery-50", "location"}
    assert alpha["arrow-left"].text == "arrow left" and alpha["arrow-left"].id == "alpha:arrow-left"
    assert beta["arrow-left"].id == "beta:arrow-left-16" and beta["arrow-left"].text == "arrow left"
    assert alpha["arrow-left"].metadata == {
        "concept": "arrow-left",
        "set": "alpha",
        "icon": "arrow-left",
        "category": "Arrows",
    }
    with_category = {
        p.metadata["concept"]: p.text for p in all_pairs(dataset(cache, captions="name+category"), "alpha")
    }
    assert with_category["arrow-left"] == "arrow left (arrows)" and with_category["home"] == "home"
    with pytest.raises(ValueError, match="captions"):
        dataset(cache, captions="bogus")


def test_images_are_rendered_rgb_on_white(cache):
    ds = dataset(cache, size=32)
    for domain in ds.domains:
        for pair in all_pairs(ds, domain):
            image = Image.open(io.BytesIO(pair.image))
            assert image.size == (32, 32) and image.mode == "RGB"
            assert image.getpixel((0, 0)) == (255, 255, 255)
            assert min(lo for lo, _ in pair.pil().getextrema()) < 60  # something is drawn in black
    a, b = ds.images["alpha"]["home"], ds.images["beta"]["home-16"]
    assert a != b  # the same concept, drawn by two sets


def test_split_by_concept_across_sets(cache):
    ds = dataset(cache, test_fraction=0.25, validation_fraction=0.2, probe_fraction=0.3)
    held_out = {s: set() for s in ("validation", "test")}
    for domain in ds.domains:
        trained = {p.metadata["concept"] for p in ds.train(domain)}
        for split in held_out:
            concepts = {p.metadata["concept"] for p in getattr(ds, split)(domain)}
            assert all(ds.concept_split(c) == split for c in concepts)
            assert not concepts & trained
            held_out[split] |= concepts
        assert all(split_of(p.id, 0.3) == "probe" for p in ds.probe(domain))
    for domain in ds.domains:  # a held-out concept is trained by no set
        assert not {p.metadata["concept"] for p in ds.train(domain) + ds.probe(domain)} & (
            held_out["test"] | held_out["validation"]
        )
    shared_test = {p.metadata["concept"] for p in ds.test("alpha")} & {p.metadata["concept"] for p in ds.test("beta")}
    assert held_out["test"] and shared_test and held_out["validation"] and ds.probe("alpha") + ds.probe("beta")
    moved = {seed: {p.id for p in dataset(cache, seed=seed, test_fraction=0.5).test("alpha")} for seed in (None, 1, 2)}
    assert len({frozenset(t) for t in moved.values()}) > 1  # the seed moves the held-out concepts


def test_cap_keeps_shared_concepts(cache):
    ds = dataset(cache, max_per_set=10)
    chosen = {d: set(ds.selected[d]) for d in ds.domains}
    assert all(len(c) == 10 for c in chosen.values())
    assert len(chosen["alpha"] & chosen["beta"]) >= 5  # chosen by hash of the concept, the same in both sets
    assert {p.metadata["concept"] for p in all_pairs(ds, "alpha")} == chosen["alpha"]
    with pytest.raises(ValueError, match="max_per_set"):
        dataset(cache, max_per_set=0)


def test_fetched_once_then_offline_and_renders_cached(tmp_path, tarballs, monkeypatch):
    registry = FakeRegistry(tarballs)
    first = dataset(tmp_path / "c", npm=registry, max_per_set=8)
    pairs = {d: [(p.id, p.image) for p in all_pairs(first, d)] for d in first.domains}
    assert sorted(registry.calls) == sorted(
        [("pack", f"{s.package}@{s.version}") for s in (ALPHA, BETA)]
        + [("view", f"{s.package}@{s.version}") for s in (ALPHA, BETA)]
    )
    drawn = []
    real = iconify.rasterise
    monkeypatch.setattr(iconify, "rasterise", lambda *a: drawn.append(a) or real(*a))
    again = dataset(tmp_path / "c", max_per_set=8)  # npm=no_network: offline from the cache
    assert {d: [(p.id, p.image) for p in all_pairs(again, d)] for d in again.domains} == pairs and not drawn
    more = dataset(tmp_path / "c", max_per_set=12)
    more.images
    assert len(drawn) == 2 * 4  # only the icons the bigger cap adds are drawn
    assert len(all_pairs(dataset(tmp_path / "c", max_per_set=12), "alpha")) == 12 and len(drawn) == 8


def test_info_keeps_licences(cache):
    ds = dataset(cache)
    info = ds.info()
    alpha, beta = info["sets"]["alpha"], info["sets"]["beta"]
    assert alpha["license"] == {
        "spdx": "MIT",
        "title": "MIT",
        "url": "https://example.org/alpha",
        "author": "A. Designer",
        "set_name": "Alpha Icons",
    }
    assert beta["license"]["spdx"] == "CC-BY-4.0" and beta["integrity"].startswith("sha512-")
    assert (alpha["package"], alpha["version"], alpha["concepts"]) == (ALPHA.package, "1.0.0", len(WORDS))
    for d in ds.domains:
        assert info["counts"][d] == {s: len(getattr(ds, s)(d)) for s in ("train", "validation", "probe", "test")}
    assert info["concepts"] == len(set(WORDS) | {"battery-50", "location"})


def test_named_sets_and_laziness(tmp_path):
    ds = IconDataset(cache_dir=tmp_path, npm=no_network)  # nothing fetched until asked
    assert ds.domains == list(PRETRAIN_SETS) and len(ds.domains) == 46
    assert ds.sets[0].package == "@iconify-json/bi"
    assert IconDataset(["teenyicons"], cache_dir=tmp_path, npm=no_network).sets[0].version
    with pytest.raises(ValueError, match="unknown icon set"):
        IconDataset(["comic-sans"])
    with pytest.raises(KeyError):
        ds.train("nope")
