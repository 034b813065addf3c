"""npm packages as data sources: fetched with `npm pack`, verified, cached, offline once cached.

A tarball is fetched once into a cache directory (`~/.cache/modx/npm` by default), checked
against the registry's sha512 `dist.integrity`, and pinned in `modx-npm-lock.json` there.
Later runs verify the file against the lock and never call npm, so they work offline. The
art is read straight from the tarball and never copied into the repository.

`npm` is a hook (`Callable[[list[str]], str]`, npm's argv without "npm" -> its stdout), so
tests serve tarballs they build themselves and can assert that npm is not called at all.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from trainer.atomic import make_dirs, write_bytes_atomic

DEFAULT_CACHE = Path("~/.cache/modx/npm")

Npm = Callable[[list[str]], str]


class IntegrityError(RuntimeError):
    """A tarball's sha512 differs from the registry's or the lock's."""


class FetchError(RuntimeError):
    """A package is not cached and npm could not fetch it."""


def sha512_integrity(path: Path) -> str:
    """The npm-style integrity string ("sha512-<base64>") of a file."""
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def run_npm(args: list[str]) -> str:
    """Run npm and return its stdout; FetchError with npm's stderr on failure."""
    try:
        done = subprocess.run(["npm", *args], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"npm {' '.join(args)} failed: {exc}") from exc
    if done.returncode != 0:
        raise FetchError(f"npm {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return done.stdout


class NpmCache:
    """npm tarballs in a directory, pinned by sha512 in `modx-npm-lock.json`.

    A tarball in the lock is verified and used as is, never fetched again; one missing is
    fetched with `npm pack`, checked against the registry's `dist.integrity`, and locked.
    """

    LOCK = "modx-npm-lock.json"

    def __init__(self, root: str | os.PathLike | None = None, npm: Npm = run_npm):
        self.root = Path(root if root is not None else DEFAULT_CACHE).expanduser()
        self.npm = npm

    @property
    def lock_path(self) -> Path:
        return self.root / self.LOCK

    def lock(self) -> dict:
        return json.loads(self.lock_path.read_text()) if self.lock_path.exists() else {}

    def integrity(self, package: str, version: str) -> str:
        """The locked sha512 of package@version (KeyError if it was never fetched)."""
        return self.lock()[f"{package}@{version}"]["integrity"]

    def tarball(self, package: str, version: str) -> Path:
        """The verified local .tgz of package@version, fetched only if not cached."""
        spec = f"{package}@{version}"
        entry = self.lock().get(spec)
        if entry and (self.root / entry["file"]).exists():
            return self._verified(self.root / entry["file"], entry["integrity"], f"the lock {self.lock_path}")
        expected = self.registry_integrity(spec)
        path = self.root / tarball_name(package, version)
        if not path.exists():
            path = self._pack(spec)
        self._verified(path, expected, "the npm registry", remove=True)
        self._record(spec, path.name, expected)
        return path

    def registry_integrity(self, spec: str) -> str:
        out = self.npm(["view", spec, "dist.integrity", "--json"]).strip()
        integrity = json.loads(out) if out.startswith('"') else out
        if not str(integrity).startswith("sha512-"):
            raise FetchError(f"{spec}: the registry gave no sha512 integrity ({out[:200]!r})")
        return integrity

    def _pack(self, spec: str) -> Path:
        make_dirs(self.root)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".pack-") as tmp:
            out = self.npm(["pack", spec, "--pack-destination", tmp, "--json"])
            filename = json.loads(out[out.index("[") :])[0]["filename"]
            target = self.root / Path(filename).name
            write_bytes_atomic(target, (Path(tmp) / Path(filename).name).read_bytes())
        return target

    def _verified(self, path: Path, expected: str, source: str, remove: bool = False) -> Path:
        actual = sha512_integrity(path)
        if actual != expected:
            if remove:
                path.unlink(missing_ok=True)
            hint = "it was removed; try again" if remove else "delete it to fetch it again"
            raise IntegrityError(
                f"{path}: sha512 integrity mismatch: {source} says {expected}, the file has {actual} ({hint})"
            )
        return path

    def _record(self, spec: str, filename: str, integrity: str) -> None:
        lock = self.lock()
        lock[spec] = {"file": filename, "integrity": integrity}
        make_dirs(self.root)
        write_bytes_atomic(self.lock_path, json.dumps(lock, indent=1, sort_keys=True).encode())


def tarball_name(package: str, version: str) -> str:
    """npm pack's file name: "@scope/name" -> "scope-name-<version>.tgz"."""
    return f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"


def read_members(tgz: Path, wanted: Iterable[str]) -> dict[str, bytes]:
    """The named files (paths without "package/"), read in one pass that stops once all are found."""
    wanted, found = set(wanted), {}
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar:
            name = member.name.split("/", 1)[-1]
            if member.isfile() and name in wanted:
                found[name] = tar.extractfile(member).read()
                if len(found) == len(wanted):
                    break
    return found


def read_tgz_json(tgz: Path, names: Iterable[str]) -> dict[str, object]:
    """The named JSON files of a package (missing ones absent)."""
    return {name: json.loads(data) for name, data in read_members(tgz, names).items()}


def package_license(tgz: Path) -> str:
    """The `license` of the package's package.json ("UNKNOWN" if it names none)."""
    package = read_tgz_json(tgz, ["package.json"]).get("package.json", {})
    return str(package.get("license", "UNKNOWN"))
