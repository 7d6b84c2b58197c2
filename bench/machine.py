"""What the benchmark ran on: CPU, cores, RAM, OS, Python and the versions of the tools measured."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _ram_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def _dist(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _dcm2niix() -> str:
    exe = shutil.which("dcm2niix")
    if not exe:
        return "not found"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    return out.strip().splitlines()[-1] if out.strip() else "unknown"


def describe() -> dict[str, str]:
    """Key → value, in the order printed in the results file."""
    return {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "RAM": f"{_ram_gb():.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "snakemake": _dist("snakemake"),
        "xnat (xnatpy)": _dist("xnat"),
        "dcm2niix": _dcm2niix(),
        "requests": _dist("requests"),
        "xnat-prep": _dist("xnat-prep"),
    }
