"""The emoji styles dataset, on tiny fake npm tarballs (no network: npm must not be called)."""

import io
import json
import shutil

import pytest
from PIL import Image, ImageDraw

from tests.fake_npm import make_tgz, no_network
from trainer.data import split_of
from trainer.datasets import iconify
from trainer.datasets.emoji import EmojiDataset, emoji_stream
from trainer.datasets.emoji_concepts import Names, canonical, load_concepts, slugify
from trainer.datasets.emoji_styles import Style
from trainer.datasets.npm import IntegrityError, NpmCache, sha512_integrity, tarball_name

# hexcode, CLDR label, tags, group, subgroup
EMOJI = [
    ("1F600", "grinning face", ["face", "grin", "grinning", "happy"], 0, 0),
    ("1F603", "grinning face with big eyes", ["face", "mouth", "open", "smile"], 0, 0),
    ("1F609", "winking face", ["face", "wink"], 0, 0),
    ("2764-FE0F", "red heart", ["heart", "love"], 0, 1),
    ("1F431", "cat face", ["cat", "face", "pet"], 1, 2),
    ("1F436", "dog face", ["dog", "face", "pet"], 1, 2),
    ("1F34E", "red apple", ["apple", "fruit", "red"], 1, 2),
    ("1F680", "rocket", ["space"], 1, 2),
    ("2B50", "star", ["star"], 1, 2),
    ("1F449", "backhand index pointing right", ["finger", "hand", "point"], 0, 1),
    ("1F44D", "thumbs up", ["+1", "hand", "up"], 0, 1),
    ("1F308", "rainbow", ["rain"], 1, 2),
    ("1F525", "fire", ["flame"], 1, 2),
]
NOT_IN_PNG = "1f525"  # drawn only by the SVG set
NOT_IN_SVG = "1f308"  # drawn only by the PNG set
COMPONENTS = [
    {"label": "regional indicator A", "hexcode": "1F1E6", "type": 1, "version": 0},
    {"label": "light skin tone", "hexcode": "1F3FB", "group": 2, "subgroup": 3, "type": 1, "version": 1},
]
MESSAGES = {
    "groups": [
        {"key": "smileys-emotion", "message": "smileys & emotion", "order": 0},
        {"key": "animals-nature", "message": "animals & nature", "order": 1},
        {"key": "component", "message": "components", "order": 2},
    ],
    "subgroups": [
        {"key": "face-smiling", "message": "smiling", "order": 0},
        {"key": "hand-fingers", "message": "fingers", "order": 1},
        {"key": "animal-mammal", "message": "mammal", "order": 2},
        {"key": "skin-tone", "message": "skin tone", "order": 3},
    ],
}
NAMES = Names("emojibase-data", "0.0.1-test")
PNG = Style("pngs", "emoji-datasource-fake", "1.0.0", "png", image_set="fake", art_license="CC0 (fake)")
SVG = Style("svgs", "@fake/iconify-emoji", "1.0.0", "iconify")


def disc_png(colour) -> bytes:
    """A 64 px disc on a transparent background."""
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=colour + (255,))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def package_json(name, license="MIT") -> bytes:
    return json.dumps({"name": name, "version": "1.0.0", "license": license}).encode()


def fake_emojibase() -> bytes:
    data = [
        {"label": label, "hexcode": hexcode, "tags": tags, "group": g, "subgroup": s, "type": 1, "version": 1}
        for hexcode, label, tags, g, s in EMOJI
    ] + COMPONENTS
    french = [{"label": "Visage Rieur", "hexcode": "1F600"}, {"label": "cœur rouge", "hexcode": "2764-FE0F"}]
    return make_tgz(
        {
            "package.json": package_json("emojibase-data"),
            "en/data.json": json.dumps(data).encode(),
            "en/messages.json": json.dumps(MESSAGES).encode(),
            "fr/data.json": json.dumps(french).encode(),
        }
    )


def fake_datasource() -> bytes:
    index, files = [], {"package.json": package_json("emoji-datasource-fake")}
    for i, (hexcode, label, _, _, _) in enumerate(EMOJI):
        if canonical(hexcode) == NOT_IN_PNG:
            continue
        image = f"{hexcode.lower()}.png"
        index.append(
            {
                "name": label.upper(),
                "unified": hexcode,
                "image": image,
                "short_name": label.split()[0],
                "category": "Whatever",
                "subcategory": "whatever",
                "has_img_fake": True,
            }
        )
        files[f"img/fake/64/{image}"] = disc_png((20 * i, 100, 200))
    files["emoji.json"] = json.dumps(index).encode()
    return make_tgz(files)


def fake_iconify() -> bytes:
    """Icons named by slug; some found by codepoint (chars.json), one an hFlip alias."""
    icons, chars = {}, {}
    for i, (hexcode, label, _, _, _) in enumerate(EMOJI):
        key = canonical(hexcode)
        if key in (NOT_IN_SVG, "1f449"):
            continue
        icons[f"icon-{i}"] = {"body": f'<circle cx="8" cy="8" r="6" fill="#{10 * i:02x}2050"/>'}
        chars[hexcode.lower()] = f"icon-{i}"
        if i % 2:  # found by name instead
            icons[slugify(label)] = icons.pop(f"icon-{i}")
            del chars[hexcode.lower()]
    icons["backhand-index-pointing-left"] = {"body": '<rect x="0" y="0" width="8" height="16" fill="#000"/>'}
    aliases = {"backhand-index-pointing-right": {"parent": "backhand-index-pointing-left", "hFlip": True}}
    icon_set = {"prefix": "fake", "icons": icons, "aliases": aliases, "width": 16, "height": 16}
    return make_tgz(
        {
            "package.json": package_json("@fake/iconify-emoji", "CC-BY-4.0"),
            "icons.json": json.dumps(icon_set).encode(),
            "chars.json": json.dumps(chars).encode(),
        }
    )


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory):
    """The fake packages, as files named the way npm pack names them."""
    root = tmp_path_factory.mktemp("tarballs")
    built = {
        NAMES.package: (NAMES.version, fake_emojibase()),
        PNG.package: (PNG.version, fake_datasource()),
        SVG.package: (SVG.version, fake_iconify()),
    }
    paths = {}
    for package, (version, data) in built.items():
        path = root / tarball_name(package, version)
        path.write_bytes(data)
        paths[f"{package}@{version}"] = path
    return paths


@pytest.fixture
def cache(tmp_path, tarballs):
    """A cache directory pre-seeded with the fake tarballs and their lock."""
    root = tmp_path / "npm"
    root.mkdir()
    lock = {}
    for spec, path in tarballs.items():
        shutil.copy(path, root / path.name)
        lock[spec] = {"file": path.name, "integrity": sha512_integrity(path)}
    (root / NpmCache.LOCK).write_text(json.dumps(lock))
    return root


def needs_svg_renderer():
    try:
        iconify.pick_renderer()
    except ImportError:
        pytest.skip("neither resvg-py nor cairosvg is installed")


def dataset(cache, **kw) -> EmojiDataset:
    needs_svg_renderer()
    kw = {"styles": [PNG, SVG], "names": NAMES, "cache_dir": cache, "npm": no_network, **kw}
    return EmojiDataset(**kw)


def all_pairs(ds, domain):
    return ds.train(domain) + ds.probe(domain) + ds.test(domain)


def test_canonical_and_slugify():
    assert canonical("2764-FE0F") == "2764"
    assert canonical("1F468-200D-1F4BB") == "1f468-200d-1f4bb"
    assert slugify("flag: U.S. Virgin Islands") == "flag-us-virgin-islands"
    assert slugify("keycap: #") == "keycap-number-sign"
    assert slugify("piñata") == "pinata"


def test_load_concepts(cache):
    concepts = load_concepts(cache / tarball_name(NAMES.package, NAMES.version))
    assert list(concepts) == [canonical(e[0]) for e in EMOJI]  # no components, no regional indicators
    heart = concepts["2764"]
    assert (heart.name, heart.category, heart.subcategory) == ("red heart", "smileys & emotion", "hand-fingers")
    french = load_concepts(cache / tarball_name(NAMES.package, NAMES.version), "fr")
    assert french["1f600"].name == "visage rieur" and french["1f600"].label == "grinning face"
    assert french["1f431"].name == "cat face"  # falls back to English


def test_concepts_matched_across_styles(cache):
    ds = dataset(cache)
    expected = [canonical(e[0]) for e in EMOJI if canonical(e[0]) not in (NOT_IN_PNG, NOT_IN_SVG)]
    assert list(ds.concepts) == expected
    for domain in ds.domains:
        assert sorted(p.metadata["concept"] for p in all_pairs(ds, domain)) == sorted(expected)
    matched = ds.info()["styles"]["svgs"]["matched_by"]
    assert matched["codepoint"] > 0 and matched["name"] > 0
    assert sum(matched.values()) == len(EMOJI) - 1


def test_iconify_alias_is_flipped(cache):
    ds = dataset(cache, size=16)
    image = Image.open(io.BytesIO(ds.images["svgs"]["1f449"]))
    assert image.getpixel((2, 8)) == (255, 255, 255)  # the parent's left half, flipped away
    assert max(image.getpixel((13, 8))) < 30  # ... to the right half


def test_split_by_concept(cache):
    ds = dataset(cache, test_fraction=0.3, probe_fraction=0.3, validation_fraction=0.2)
    test_concepts = {p.metadata["concept"] for p in ds.test("pngs")}
    assert test_concepts == {p.metadata["concept"] for p in ds.test("svgs")}
    assert 0 < len(test_concepts) < len(ds.concepts)
    for domain in ds.domains:
        held_in = {p.metadata["concept"] for p in ds.train(domain) + ds.validation(domain) + ds.probe(domain)}
        assert not held_in & test_concepts
        assert held_in | test_concepts == set(ds.concepts)
        for split in ("train", "validation", "probe"):
            assert all(split_of(p.id, 0.3, 0.2) == split for p in getattr(ds, split)(domain))
    assert any(ds.probe(d) for d in ds.domains) and any(ds.validation(d) for d in ds.domains)


def test_ids_and_splits_are_deterministic(cache):
    a, b = dataset(cache), dataset(cache)
    for domain in a.domains:
        for split in ("train", "validation", "probe", "test"):
            assert [p.id for p in getattr(a, split)(domain)] == [p.id for p in getattr(b, split)(domain)]
    ids = {p.id for p in all_pairs(a, "pngs")}
    assert {"pngs:1f600", "pngs:2764"} <= ids
    assert all(p.domain == "svgs" and p.metadata["style"] == "svgs" for p in all_pairs(a, "svgs"))
    tests = {seed: {p.id for p in dataset(cache, seed=seed, test_fraction=0.5).test("pngs")} for seed in (None, 1, 2)}
    assert len({frozenset(t) for t in tests.values()}) > 1  # the seed moves the held-out concepts


def test_images_rgb_on_white(cache):
    ds = dataset(cache, size=32)
    for domain in ds.domains:
        for pair in all_pairs(ds, domain):
            image = pair.pil()
            assert image.size == (32, 32) and Image.open(io.BytesIO(pair.image)).mode == "RGB"
            assert image.getpixel((0, 0)) == (255, 255, 255)
            assert image.getpixel((16, 16)) != (255, 255, 255)


def test_captions(cache):
    plain = {p.metadata["concept"]: p.text for p in all_pairs(dataset(cache), "pngs")}
    assert plain["1f600"] == "grinning face" and plain["2764"] == "red heart"
    rich_ds = dataset(cache, captions="name+keywords", n_keywords=2)
    rich = {p.metadata["concept"]: p.text for p in all_pairs(rich_ds, "pngs")}
    assert rich["1f600"] == "grinning face: grin, happy"  # tags already in the name are skipped
    assert rich["2b50"] == "star"  # no keyword left
    with pytest.raises(ValueError, match="captions"):
        dataset(cache, captions="bogus")


def test_tampered_tarball_is_a_clear_error(cache):
    path = cache / tarball_name(SVG.package, SVG.version)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"sha512 integrity mismatch.*lock"):
        dataset(cache).train("svgs")


def test_fetch_verifies_and_locks_then_stays_offline(tmp_path, tarballs):
    source = tarballs[f"{SVG.package}@{SVG.version}"]
    calls = []

    def fake_npm(args):
        calls.append(args[0])
        if args[0] == "view":
            return json.dumps(sha512_integrity(source))
        dest = args[args.index("--pack-destination") + 1]
        shutil.copy(source, f"{dest}/{source.name}")
        return "npm notice\n" + json.dumps([{"filename": source.name, "integrity": "ignored"}])

    cache = NpmCache(tmp_path / "c", npm=fake_npm)
    path = cache.tarball(SVG.package, SVG.version)
    assert calls == ["view", "pack"] and path.read_bytes() == source.read_bytes()
    assert cache.lock()[f"{SVG.package}@{SVG.version}"]["integrity"] == sha512_integrity(source)
    assert NpmCache(tmp_path / "c", npm=no_network).tarball(SVG.package, SVG.version) == path


def test_fetch_rejects_a_tarball_the_registry_disowns(tmp_path, tarballs):
    source = tarballs[f"{SVG.package}@{SVG.version}"]

    def lying_npm(args):
        if args[0] == "view":
            return json.dumps("sha512-" + "A" * 86 + "==")
        shutil.copy(source, f"{args[args.index('--pack-destination') + 1]}/{source.name}")
        return json.dumps([{"filename": source.name}])

    cache = NpmCache(tmp_path / "c", npm=lying_npm)
    with pytest.raises(IntegrityError, match="npm registry"):
        cache.tarball(SVG.package, SVG.version)
    assert not (tmp_path / "c" / source.name).exists() and cache.lock() == {}


def test_second_construction_uses_the_rendered_cache(cache, monkeypatch):
    first = dataset(cache)
    images = {d: [p.image for p in all_pairs(first, d)] for d in first.domains}

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(iconify, "rasterise", no_render)
    monkeypatch.setattr(iconify, "on_white", no_render)
    second = dataset(cache)
    assert {d: [p.image for p in all_pairs(second, d)] for d in second.domains} == images
    other_size = dataset(cache, size=16)
    with pytest.raises(AssertionError, match="rendered again"):
        other_size.train("pngs")


def test_info(cache):
    ds = dataset(cache, test_fraction=0.3)
    info = ds.info()
    assert info["name"] == "emoji" and info["domains"] == ["pngs", "svgs"]
    svgs, pngs = info["styles"]["svgs"], info["styles"]["pngs"]
    assert (svgs["package"], svgs["version"]) == (SVG.package, "1.0.0")
    assert (svgs["license"], svgs["art_license"]) == ("CC-BY-4.0", "CC-BY-4.0")
    assert (pngs["license"], pngs["art_license"]) == ("MIT", "CC0 (fake)")
    assert svgs["integrity"].startswith("sha512-")
    assert info["names"]["version"] == NAMES.version and info["concepts"] == len(ds.concepts)
    for d in ds.domains:
        assert info["counts"][d] == {s: len(getattr(ds, s)(d)) for s in ("train", "validation", "probe", "test")}
        assert info["counts"][d]["test"] == info["test_concepts"]


def test_emoji_stream_preset_is_lazy(tmp_path):
    ds = emoji_stream(cache_dir=tmp_path, npm=no_network)  # nothing fetched until asked
    assert ds.name == "emoji" and ds.domains == ["google", "twitter", "fluent"]
    assert ds.styles[2].package == "@iconify-json/fluent-emoji-flat"
    with pytest.raises(ValueError, match="preset"):
        emoji_stream("nope")
    with pytest.raises(ValueError, match="unknown emoji style"):
        EmojiDataset(styles=["google", "comic-sans"])
    with pytest.raises(KeyError):
        ds.train("apple")
