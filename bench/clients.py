"""The comparison points: the tutorial script, xnatutils' ``xnat-get``, the raw-GET limit and
plain dcm2niix. Each runs as its own process, as a user would run it, so interpreter start-up
and imports count for them exactly as they count for the workflow's jobs."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import measure
from bench.study import PROJECT
from xnat_prep import convert

BENCH_DIR = Path(__file__).resolve().parent
XNATUTILS_SPEC = "xnatutils"


def tutorial(host: str, subjects: Sequence[str], dest: Path, env: dict[str, str], log: Path) -> measure.Run:
    """The tutorials' sequential xnatpy loop (bench/tutorial_download.py)."""
    dest.mkdir(parents=True, exist_ok=True)
    subject_list = dest.parent / f"{dest.name}.subjects.txt"
    subject_list.write_text("".join(f"{s}\n" for s in subjects))
    cmd = [
        sys.executable,
        str(BENCH_DIR / "tutorial_download.py"),
        host,
        PROJECT,
        str(subject_list),
        str(dest),
    ]
    return measure.run(cmd, env=env, log=log)


def install_xnatutils(venv: Path) -> tuple[Path | None, str]:
    """``xnat-get`` from PyPI in a throwaway venv (kept between runs); (path, "") or (None, why)."""
    exe = venv / "bin" / "xnat-get"
    if exe.exists():
        return exe, ""
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        pip = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", XNATUTILS_SPEC],
            capture_output=True,
            text=True,
            check=False,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"could not create a venv: {exc}"
    if pip.returncode != 0 or not exe.exists():
        lines = [
            ln for ln in (pip.stderr or pip.stdout).splitlines() if ln.strip() and "is ignored" not in ln
        ]
        return None, f"pip install {XNATUTILS_SPEC} failed: {lines[-1] if lines else pip.returncode}"
    return exe, ""


def xnat_get(
    exe: Path, host: str, sessions: Sequence[str], dest: Path, env: dict[str, str], log: Path
) -> measure.Run:
    """xnatutils' downloader: sequential, one xnatpy resource zip per scan (DICOM only)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(exe),
        *sessions,
        "--project",
        PROJECT,
        "--resource_name",
        "DICOM",
        "--target",
        str(dest),
        "--server",
        host,
        "--no_netrc",
    ]
    return measure.run(cmd, env=env, log=log)


def raw_get(
    host: str,
    paths: Sequence[str],
    workers: int,
    dest: Path,
    env: dict[str, str],
    log: Path,
    unzip: bool = False,
    md5: bool = False,
) -> measure.Run:
    """Plain parallel GETs of ``paths`` over ``workers`` connections (bench/raw_get.py); ``md5``:
    each body hashed as it streams."""
    dest.mkdir(parents=True, exist_ok=True)
    url_list = dest.parent / f"{dest.name}.urls.txt"
    url_list.write_text("".join(f"{p}\n" for p in paths))
    cmd = [sys.executable, "-m", "bench.raw_get", host, str(url_list), str(dest), str(workers)]
    cmd += (["--unzip"] if unzip else []) + (["--md5"] if md5 else [])
    return measure.run(cmd, env=dict(env, PYTHONPATH=str(BENCH_DIR.parent)), log=log)


def floor_archives(blobs: Path, cache: Path, parts: int) -> list[Path]:
    """The study's DICOM files as ``parts`` tar archives, made once (cached next to the study).

    The bundled server keeps each file as one blob (same count, same sizes), so the archives
    hold exactly what a download has to create on disk.
    """
    folders = sorted(p.name for p in blobs.iterdir() if p.is_dir())
    archives = [cache / f"floor-{i}-of-{parts}.tar" for i in range(parts)]
    for i, archive in enumerate(archives):
        if not archive.exists():
            part = archive.with_suffix(".tar.part")
            subprocess.run(["tar", "cf", str(part), "-C", str(blobs), *folders[i::parts]], check=True)
            part.rename(archive)
    return archives


def unpack_floor(archives: Sequence[Path], dest: Path, log: Path) -> measure.Run:
    """The floor of any download here: ``tar -x`` of the archives, all at once (no network, no
    Python): what creating the study's files costs on this machine's file system."""
    starts, waits = [], []
    for i, archive in enumerate(archives):
        folder = shlex.quote(str(dest / str(i)))
        starts.append(f"mkdir -p {folder} && tar xf {shlex.quote(str(archive))} -C {folder} & p{i}=$!")
        waits.append(f"wait $p{i}")
    return measure.run(["bash", "-c", "; ".join(starts) + "; " + " && ".join(waits)], log=log)


def dcm2niix_args(compress: bool = True, gz_level: int = convert.GZ_LEVEL) -> list[str]:
    """The options the workflow's convert step gives dcm2niix (BIDS sidecar, anonymised, gzip at
    its level), or with ``gz_level=6`` what a plain ``dcm2niix -z y`` does."""
    return convert.dcm2niix_options(compress, gz_level)


def plain_dcm2niix(
    scans: Sequence[tuple[Path, str]], out_root: Path, workers: int, gz_level: int = convert.GZ_LEVEL
) -> measure.Run:
    """dcm2niix on each (DICOM folder, name), ``workers`` at a time: the wall time and the CPU time
    of the dcm2niix processes.

    Threads only wait for the dcm2niix processes, so nothing but dcm2niix itself is measured. The
    clock starts after :func:`measure.settle`, as for every command: the folders were usually just
    written, and their writeback must not be billed to dcm2niix (that made it look slower, and the
    workflow's conversion beside it faster than it is).
    """
    exe = convert.dcm2niix_binary()
    jobs = []
    for i, (folder, name) in enumerate(scans):
        out = out_root / str(i)
        out.mkdir(parents=True)
        jobs.append([exe, *dcm2niix_args(gz_level=gz_level), "-f", name, "-o", str(out), str(folder)])
    measure.settle()
    cpu = measure.children_cpu()  # the bench process starts nothing else meanwhile
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        codes = list(
            pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, check=False).returncode, jobs)
        )
    wall = time.perf_counter() - start
    if any(codes):
        raise measure.CommandFailed(f"dcm2niix failed on {sum(1 for c in codes if c)} of {len(jobs)} scans")
    return measure.Run(wall, 0.0, 0, None, measure.children_cpu() - cpu)


def remove(*paths: Path) -> None:
    """Delete outputs between repetitions (gigabytes each)."""
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
