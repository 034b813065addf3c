"""What every benchmark records beside its numbers: machine, device, date, commit, command."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch


def commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command(module: str, argv: list[str] | None = None) -> str:
    """How to rerun a benchmark: `python -m <module> <its arguments>` (argv None: sys.argv's)."""
    return " ".join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def machine(device: str = "cpu", command: str | None = None) -> dict:
    """Where and when a benchmark ran, and the command that ran it."""
    info = {
        "host": platform.node(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "command": command or " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def apply_preset(args, preset: dict) -> None:
    """Fill every argument left unset (None) from the preset."""
    for k, v in preset.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)


def finish(result: dict, module: str, argv: list[str] | None, table: str, out: str | Path | None) -> dict:
    """Record the command that ran, print the table, write the JSON where asked."""
    result["machine"]["command"] = command(module, argv)
    print(table)
    if out:
        write_result(out, result)
        print(f"wrote {out}")
    return result


def write_result(path: str | Path, result: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
