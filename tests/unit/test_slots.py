"""slots: the XNAT connection cap held by the jobs' connections, across processes, through flock."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from xnat_prep import slots
from xnat_prep.errors import UserError

# A process that takes `units` slots of the pool in argv, prints when it holds them and when it
# lets them go, and holds them for `hold` seconds (or until killed).
HOLDER = """
import sys, time
from pathlib import Path
from xnat_prep import slots
folder, size, units, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
pool = slots.Pool(Path(folder), size)
pool.take(units)
print("held", time.time(), pool.held, flush=True)
time.sleep(hold)
print("free", time.time(), flush=True)
"""


def holder(folder: Path, size: int, units: int, hold: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(size), str(units), str(hold)],
        stdout=subprocess.PIPE,
        text=True,
    )


def spans(procs: list[subprocess.Popen[str]]) -> list[tuple[float, float, int]]:
    """(held at, freed at, slots held) per process."""
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        held, freed = stdout.split("\n")[:2]
        out.append((float(held.split()[1]), float(freed.split()[1]), int(held.split()[2])))
    return out


def most_at_once(intervals: list[tuple[float, float, int]]) -> int:
    points = sorted([(a, n) for a, _, n in intervals] + [(b, -n) for _, b, n in intervals])
    now = peak = 0
    for _, step in points:
        now += step
        peak = max(peak, now)
    return peak


@pytest.fixture
def pool(tmp_path: Path) -> slots.Pool:
    made = slots.Pool(tmp_path / "pool", 2)
    made.create()
    return made


def test_never_more_slots_held_than_the_pool_has(pool: slots.Pool) -> None:
    procs = [holder(pool.folder, 2, 1, 0.4) for _ in range(5)]
    got = spans(procs)
    assert most_at_once(got) == 2  # used, and never exceeded
    assert max(b for _, b, _ in got) - min(a for a, _, _ in got) >= 3 * 0.4  # 5 holds, 2 at a time


def test_a_killed_holder_gives_its_slot_back(tmp_path: Path) -> None:
    pool = slots.Pool(tmp_path / "pool", 1)
    pool.create()
    proc = holder(pool.folder, 1, 1, 60)
    assert proc.stdout is not None and proc.stdout.readline().startswith("held")
    waited: list[float] = []
    taker = threading.Thread(target=lambda: waited.append(pool.take(1)))
    taker.start()
    time.sleep(0.5)
    assert not waited  # blocked while the other process holds the only slot
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    taker.join(timeout=10)
    assert waited and waited[0] >= 0.5 and pool.held == 1
    pool.release()


def test_a_process_takes_all_its_slots_at_once(pool: slots.Pool) -> None:
    """One slot held elsewhere: a process that needs both waits until the holder ends and then
    holds both (taken together under the pool's lock: two such processes never hold one each and
    wait for each other)."""
    first = holder(pool.folder, 2, 1, 1.0)
    assert first.stdout is not None and first.stdout.readline().startswith("held")
    both = holder(pool.folder, 2, 2, 0.1)
    second = holder(pool.folder, 2, 2, 0.1)
    (held1, _, n1), (held2, _, n2) = spans([both, second])
    stdout, _ = first.communicate(timeout=60)
    freed = float(stdout.split()[1])
    assert n1 == n2 == 2
    assert min(held1, held2) >= freed  # neither got both before the holder ended


def test_more_units_than_slots_takes_them_all(pool: slots.Pool) -> None:
    assert pool.take(5) >= 0 and pool.held == 2
    pool.release()
    assert pool.held == 0


def test_slot_files_are_not_inherited_by_children(pool: slots.Pool) -> None:
    pool.take(2)
    try:
        # a child (dcm2niix) that outlives its job must not keep the job's slots, even started
        # without closing the parent's files
        child = subprocess.run(
            ["sh", "-c", f"ls -l /proc/self/fd/ | grep -c {pool.folder} || true"],
            capture_output=True,
            text=True,
            check=True,
            close_fds=False,
        )
        assert child.stdout.strip() == "0"
        assert len([p for p in Path("/proc/self/fd").iterdir() if str(pool.folder) in str(p.resolve())]) == 2
    finally:
        pool.release()


def test_a_folder_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match=r"file/pool: cannot keep the XNAT connection slots there"):
        slots.Pool(tmp_path / "file" / "pool", 2).create()


def test_the_pool_folder_is_private(pool: slots.Pool) -> None:
    assert pool.folder.stat().st_mode & 0o777 == 0o700


def test_open_pool_makes_it_and_names_it_for_the_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    environ: dict[str, str] = {}
    made = slots.open_pool(tmp_path / "run", "https://x.org", 3, environ=environ)
    assert environ[slots.ENV] == f"3:{made.folder}"
    assert made.folder.is_relative_to(tmp_path / "tmp")  # $TMPDIR: node-local, not the shared workdir
    assert sorted(p.name for p in made.folder.iterdir()) == ["lock", "slot-0", "slot-1", "slot-2"]
    other = slots.folder_for(tmp_path / "elsewhere", "https://x.org")
    assert other != made.folder  # one pool per working directory and server
    assert slots.connection_pool_wanted(cluster_executor=False, network_on_submit_host=False)
    assert slots.connection_pool_wanted(cluster_executor=True, network_on_submit_host=True)
    assert not slots.connection_pool_wanted(cluster_executor=True, network_on_submit_host=False)


def test_a_joined_process_takes_its_slots_at_its_first_request_to_the_run_server(
    pool: slots.Pool,
) -> None:
    environ = {slots.ENV: f"2:{pool.folder}", "XNAT_HOST": "https://xnat.example.org/"}
    slots.join(environ)
    try:
        slots.need(2)
        slots.before_request("https://other.example.org")  # the push target: not this pool
        assert not probe_held(pool)
        slots.before_request("https://xnat.example.org")
        assert probe_held(pool) == 2
        slots.before_request("https://xnat.example.org")  # held: no second take
        assert probe_held(pool) == 2
        slots.release()  # the requests are over
        assert not probe_held(pool)
        slots.before_request("https://xnat.example.org")  # one more after all: taken again
        assert probe_held(pool) == 2
    finally:
        slots.leave()
    assert not probe_held(pool)


@pytest.mark.parametrize("value", ["", "0:{folder}", "x:{folder}", "2:"])
def test_a_process_that_did_not_join_takes_nothing(pool: slots.Pool, value: str) -> None:
    # no pool named (not a workflow job), or not one that can be used
    slots.join({"XNAT_HOST": "https://xnat.example.org", slots.ENV: value.format(folder=pool.folder)})
    slots.before_request("https://xnat.example.org")
    assert not probe_held(pool)


def probe_held(pool: slots.Pool) -> int:
    """How many of the pool's slots someone holds (each tried, and given back at once)."""
    busy = 0
    for i in range(pool.size):
        fd = os.open(pool.folder / f"slot-{i}", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy += 1
        finally:
            os.close(fd)
    return busy
