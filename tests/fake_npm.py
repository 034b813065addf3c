"""npm packages the tests build themselves, and npm hooks that serve them (no network)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

from trainer.datasets.npm import NpmCache, sha512_integrity, tarball_name


def no_network(args):
    raise AssertionError(f"npm was called: {args}")


def make_tgz(files: dict[str, bytes]) -> bytes:
    """A tarball laid out as npm packs it (everything under package/)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def package_json(name, license="MIT") -> bytes:
    return json.dumps({"name": name, "version": "1.0.0", "license": license}).encode()


def iconify_package(package: str, icon_set: dict, metadata: dict | None = None, info: dict | None = None) -> bytes:
    """An @iconify-json style package: icons.json (+ metadata.json, info.json)."""
    files = {
        "package.json": package_json(package, (info or {}).get("license", {}).get("spdx", "MIT")),
        "icons.json": json.dumps(icon_set).encode(),
    }
    if metadata is not None:
        files["metadata.json"] = json.dumps(metadata).encode()
    if info is not None:
        files["info.json"] = json.dumps(info).encode()
    return make_tgz(files)


def write_tarballs(root: Path, packages: dict[tuple[str, str], bytes]) -> dict[str, Path]:
    """{(package, version): bytes} written as npm pack names them; returns spec -> path."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for (package, version), data in packages.items():
        path = root / tarball_name(package, version)
        path.write_bytes(data)
        paths[f"{package}@{version}"] = path
    return paths


def seed_cache(root: Path, tarballs: dict[str, Path]) -> Path:
    """A cache directory holding the tarballs and a lock that pins them (npm is never needed)."""
    root.mkdir(parents=True, exist_ok=True)
    lock = {}
    for spec, path in tarballs.items():
        shutil.copy(path, root / path.name)
        lock[spec] = {"file": path.name, "integrity": sha512_integrity(path)}
    (root / NpmCache.LOCK).write_text(json.dumps(lock))
    return root


class FakeRegistry:
    """An npm hook answering `npm view SPEC dist.integrity` and `npm pack SPEC` from tarballs."""

    def __init__(self, tarballs: dict[str, Path]):
        self.tarballs = tarballs
        self.calls: list[tuple[str, str]] = []

    def __call__(self, args: list[str]) -> str:
        command, spec = args[0], args[1]
        self.calls.append((command, spec))
        source = self.tarballs[spec]
        if command == "view":
            return json.dumps(sha512_integrity(source))
        shutil.copy(source, Path(args[args.index("--pack-destination") + 1]) / source.name)
        return json.dumps([{"filename": source.name}])
