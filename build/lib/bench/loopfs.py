"""A small loop-mounted ext4 filesystem to fault: fill it, free it, remount it read-only.

with loop_fs(Path("/tmp/x"), size_mb=256) as fs:   # needs root and loop devices
    fs.fill(); fs.free(); fs.read_only(); fs.read_write()
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

FILLER = ".filler"


def available() -> str | None:
    """Why a loop filesystem cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (mount -o loop)"
    if not all(shutil.which(t) for t in ("mount", "umount", "mkfs.ext4")):
        return "needs mount, umount and mkfs.ext4"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control)"
    return None


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True)


@dataclass
class LoopFS:
    image: Path
    mount: Path

    def fill(self, leave_bytes: int = 0) -> int:
        """Take the free space but about `leave_bytes` (a big filler file, then one-block ones
        until no more fit); returns the bytes that were free."""
        free = shutil.disk_usage(self.mount).free
        _run("fallocate", "-l", str(max(free - leave_bytes - (256 << 10), 4096)), str(self.mount / FILLER))
        n = 0
        try:
            while n < 100_000 and shutil.disk_usage(self.mount).free > leave_bytes:
                with open(self.mount / f"{FILLER}.{n}", "wb") as f:
                    f.write(b"\0" * 4096)
                    f.flush()
                    os.fsync(f.fileno())
                n += 1
        except OSError:
            pass
        return free

    def free(self) -> None:
        for p in self.mount.glob(f"{FILLER}*"):
            p.unlink(missing_ok=True)

    def read_only(self, timeout_s: float = 30.0) -> float:
        """Remount read-only; retried while a process holds a file open for writing
        (the kernel refuses then). Returns the seconds it took."""
        return self._remount("ro", timeout_s)

    def read_write(self, timeout_s: float = 30.0) -> float:
        return self._remount("rw", timeout_s)

    def _remount(self, mode: str, timeout_s: float) -> float:
        t0 = time.monotonic()
        while True:
            done = _run("mount", "-o", f"remount,{mode}", str(self.mount))
            if done.returncode == 0:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"remount,{mode} of {self.mount} failed: {done.stderr.strip()}")
            time.sleep(0.05)


@contextmanager
def loop_fs(directory: Path, size_mb: int = 256) -> Iterator[LoopFS]:
    """An ext4 image of `size_mb` under `directory`, mounted at directory/mnt; removed after."""
    directory.mkdir(parents=True, exist_ok=True)
    image, mount = directory / "fs.img", directory / "mnt"
    mount.mkdir(exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    for argv in (("mkfs.ext4", "-q", "-F", "-m", "0", str(image)), ("mount", "-o", "loop", str(image), str(mount))):
        done = _run(*argv)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    fs = LoopFS(image, mount)
    try:
        yield fs
    finally:
        _run("mount", "-o", "remount,rw", str(mount))
        for _ in range(50):
            if _run("umount", str(mount)).returncode == 0:
                break
            time.sleep(0.1)
        else:
            _run("umount", "-l", str(mount))
        image.unlink(missing_ok=True)
