"""Live progress of a workflow run, one line per stage: done/total, bytes, rate, ETA, problems.

The model is fed Snakemake's log events (``snakemake_logger_plugin_xnat_prep_progress`` is its
thin adapter) and reads only local files: the manifest for totals and sizes, and a finished job's
receipt for its outcome. No XNAT request, no Snakemake import here.

- Totals: Snakemake's job stats at the start (exact when the DAG is complete, i.e. on a rerun),
  and, once the manifest is there (discovery done), one job per session or scan whose receipt is
  missing; never fewer than the jobs already seen.
- Bytes: a download counts its session receipt's ``bytes`` (the manifest's sizes of the verified
  files), pseudonymisation and conversion the scan's DICOM bytes from the manifest. The other
  stages count jobs only.
- Problems: jobs that failed, plus finished jobs whose receipt reports one (a conversion that
  failed, a write XNAT denied), the same states the run report counts (``report.PROBLEM_STATES``).
- Rate and ETA: units (bytes where the stage has them, else jobs) done since the stage's first job
  started, over the wall time since then; parallel jobs are in the rate already.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xnat_prep import manifest, paths

# Display order; other rules follow in the order first seen. Aggregate targets are not shown.
STAGE_ORDER = (
    "discover",
    "plan",
    "download_session",
    "pseudonymise_scan",
    "convert_session",
    "upload_session",
    "set_variables",
    "import_plan",
    "import_session",
    "upload_resources",
    "push",
    "report",
)
HIDDEN = frozenset({"all", "import_all", "default", "total"})
# The steps with one job per session / per scan, and their receipt (the rule's output).
PER_SESSION = {
    "download_session": paths.SESSION_DOWNLOAD_RECEIPT,
    "convert_session": paths.SESSION_CONVERT_RECEIPT,
    "upload_session": paths.UPLOAD_RECEIPT,
    "set_variables": paths.VARIABLES_RECEIPT,
}
PER_SCAN = {"pseudonymise_scan": paths.PSEUDO_RECEIPT}
BYTE_STAGES = frozenset({"download_session", "pseudonymise_scan", "convert_session"})

SessionKey = tuple[str, str, str]  # project, subject, session (as path components)
ScanKey = tuple[str, str, str, str]  # ... and the {scan} wildcard


@dataclass
class Stage:
    """What one rule has done so far in this run."""

    name: str
    total: int = 0  # jobs expected in this run (never below done + running + failed)
    done: int = 0  # jobs finished (whatever their receipt says)
    running: int = 0
    failed: int = 0  # jobs that ended in an error
    problems: int = 0  # finished jobs whose receipt reports a problem
    skipped: int = 0  # finished jobs whose receipt says skipped (a conversion dcm2niix declined)
    bytes_done: int = 0
    bytes_total: int | None = None  # None: the stage counts jobs only
    started: float | None = None  # when its first job started
    ended: float | None = None  # when its last job ended

    @property
    def finished(self) -> bool:
        return self.total > 0 and self.done + self.failed >= self.total and self.running == 0

    def rate(self, now: float) -> float | None:
        """Bytes (or jobs) per second since the stage started; None before anything finished."""
        if self.started is None or self.done == 0:
            return None
        end = self.ended if self.finished and self.ended is not None else now
        elapsed = max(end - self.started, 1e-6)
        return (self.bytes_done if self.bytes_total is not None else self.done) / elapsed

    def eta(self, now: float) -> float | None:
        """Seconds left at the current rate; 0 when finished; None when unknown."""
        if self.finished:
            return 0.0
        rate = self.rate(now)
        if not rate:
            return None
        if self.bytes_total is not None:
            left = max(self.bytes_total - self.bytes_done, 0)
        else:
            left = max(self.total - self.done - self.failed, 0)
        return left / rate


@dataclass
class _Job:
    rule: str
    wildcards: dict[str, str]
    output: list[str]
    state: str = "running"  # running | done | failed


@dataclass
class _Manifest:
    session_bytes: dict[SessionKey, int] = field(default_factory=dict)
    scan_bytes: dict[ScanKey, int] = field(default_factory=dict)


class Progress:
    """The run's progress, from Snakemake log events; ``clock`` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.stages: dict[str, Stage] = {}
        self.jobs: dict[int, _Job] = {}
        self.root: Path | None = None
        self.done_steps = 0  # Snakemake's own "N of M steps done"
        self.total_steps = 0
        self.errors = 0  # workflow-level errors (not a job's)
        self._stats: dict[str, int] = {}
        self._manifest: _Manifest | None = None
        self._manifest_version: tuple[int, int] | None = None
        self._todo: dict[str, dict[tuple[str, ...], int]] = {}

    # ----- events -----

    def on_stats(self, stats: Mapping[str, int]) -> None:
        """Snakemake's job stats (rule -> jobs) when the run starts."""
        for rule, count in stats.items():
            if rule in HIDDEN:
                continue
            self._stats[rule] = int(count)
            self._stage(rule)
        self._retotal()

    def on_job_info(self, jobid: int, rule: str, wildcards: Mapping[str, Any], output: Iterable[str]) -> None:
        """A job starts (again, when Snakemake retries a failed one: ``retries``)."""
        known = self.jobs.get(jobid)
        if known is not None:
            if known.state == "failed" and known.rule not in HIDDEN:  # a retry: no longer a problem
                stage = self._stage(known.rule)
                stage.failed = max(stage.failed - 1, 0)
                stage.running += 1
                known.state = "running"
                self._retotal()
            return
        outputs = [_plain_path(o) for o in output]
        self.jobs[jobid] = _Job(rule, {k: str(v) for k, v in dict(wildcards or {}).items()}, outputs)
        if rule in HIDDEN:
            return
        stage = self._stage(rule)
        stage.running += 1
        if stage.started is None:
            stage.started = self.clock()
        if self.root is None:
            self.root = _root_of(rule, self.jobs[jobid].wildcards, outputs)
        self._retotal()

    def on_job_finished(self, jobid: int) -> None:
        """A job ended well (its outputs are there)."""
        job = self.jobs.get(jobid)
        if job is None or job.rule in HIDDEN or job.state != "running":
            return
        job.state = "done"
        stage = self._stage(job.rule)
        stage.running = max(stage.running - 1, 0)
        stage.done += 1
        stage.ended = self.clock()
        self._account(stage, job)
        self._todo.get(job.rule, {}).pop(_key(job), None)
        self._retotal()

    def on_job_error(self, jobid: int, rule: str | None = None) -> None:
        """A job failed."""
        job = self.jobs.get(jobid)
        name = job.rule if job else rule
        if not name or name in HIDDEN or (job is not None and job.state != "running"):
            return
        stage = self._stage(name)
        if job is not None:
            job.state = "failed"
            stage.running = max(stage.running - 1, 0)
        stage.failed += 1
        stage.ended = self.clock()
        if job is not None:
            self._todo.get(job.rule, {}).pop(_key(job), None)
        self._retotal()

    def on_progress(self, done: int, total: int) -> None:
        """Snakemake's "N of M steps done"."""
        self.done_steps, self.total_steps = int(done), int(total)

    def on_error(self) -> None:
        """A workflow-level error (not a job's)."""
        self.errors += 1

    # ----- views -----

    def ordered(self) -> list[Stage]:
        """The stages in display order."""
        known = [self.stages[n] for n in STAGE_ORDER if n in self.stages]
        return known + [s for n, s in self.stages.items() if n not in STAGE_ORDER]

    @property
    def complete(self) -> bool:
        """Snakemake said every job of the run is done."""
        return self.total_steps > 0 and self.done_steps >= self.total_steps

    @property
    def problems(self) -> int:
        return sum(s.failed + s.problems for s in self.stages.values()) + self.errors

    def lines(self, *, final: bool = False) -> list[str]:
        """The view: a header and one line per stage (the same text in the terminal and in plain mode)."""
        now = self.clock()
        elapsed = _duration(now - self.started)
        steps = f"{self.done_steps}/{self.total_steps} jobs" if self.total_steps else "starting"
        head = "done" if final else "progress"
        # not "xnat-prep…" at the line start: that is how the run's error and problem lines begin
        out = [f"[xnat-prep {head}] {steps}, {elapsed} elapsed, {self.problems} problem(s)"]
        width = max([len(s.name) for s in self.stages.values()] + [5])
        for stage in self.ordered():
            out.append(_stage_line(stage, now, width))
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        """Per stage: total, done, failed, problems, skipped, bytes (for tests and the final line)."""
        return {
            s.name: {
                "total": s.total,
                "done": s.done,
                "failed": s.failed,
                "problems": s.problems,
                "skipped": s.skipped,
                "bytes": s.bytes_done,
            }
            for s in self.ordered()
        }

    # ----- internals -----

    def _stage(self, rule: str) -> Stage:
        if rule not in self.stages:
            self.stages[rule] = Stage(rule, bytes_total=0 if rule in BYTE_STAGES else None)
        return self.stages[rule]

    def _account(self, stage: Stage, job: _Job) -> None:
        """A finished job's bytes and outcome, from its receipt and the manifest."""
        receipt = _read_json(_receipt_path(job)) if job.rule in PER_SESSION or job.rule in PER_SCAN else {}
        # a session's conversion reports each scan's outcome (skipped, failed) in its receipt
        scans = receipt.get("scans") if job.rule == "convert_session" else None
        statuses = [s.get("status", "") for s in scans.values()] if isinstance(scans, dict) else []
        for status in statuses or [receipt.get("status", "")]:
            if status == "skipped":
                stage.skipped += 1
            elif status in ("failed", "denied"):
                stage.problems += 1
        if job.rule not in BYTE_STAGES:
            return
        if job.rule == "download_session" and isinstance(receipt.get("bytes"), int):
            stage.bytes_done += receipt["bytes"]
            return
        sizes = self._sizes()
        key = _key(job)
        if job.rule in PER_SESSION:
            stage.bytes_done += sizes.session_bytes.get(key[:3], 0)  # type: ignore[arg-type]
        elif len(key) == 4:
            stage.bytes_done += sizes.scan_bytes.get(key, 0)  # type: ignore[arg-type]

    def _sizes(self) -> _Manifest:
        """The manifest's sizes, reread when scans.tsv changes (a discovery in this run)."""
        if self.root is None:
            return _Manifest()
        scans = self.root / paths.SCANS_TSV
        try:
            st = scans.stat()
            version = (st.st_mtime_ns, st.st_size)
        except OSError:
            return self._manifest or _Manifest()
        if self._manifest is None or self._manifest_version != version:
            loaded = _Manifest()
            for row in manifest.read_scans(scans):
                session = (row.project, paths.safe_component(row.subject), paths.safe_component(row.session))
                loaded.scan_bytes[(*session, row.scan)] = row.bytes
                loaded.session_bytes[session] = loaded.session_bytes.get(session, 0) + row.bytes
            self._manifest, self._manifest_version = loaded, version
            self._todo = {}  # the items still to do: recomputed against the new manifest
        return self._manifest

    def _todo_of(self, name: str, sizes: _Manifest) -> dict[tuple[str, ...], int]:
        """The stage's manifest items (key -> bytes) without a receipt when first asked, minus those
        finished since: one existence check per item and manifest version, not per event."""
        if name not in self._todo:
            template = _template(name)
            if self.root is None or template is None or not (sizes.session_bytes or sizes.scan_bytes):
                return {}
            items = sizes.session_bytes if name in PER_SESSION else sizes.scan_bytes
            self._todo[name] = {k: b for k, b in items.items() if not _receipt_exists(self.root, template, k)}
        return self._todo[name]

    def _retotal(self) -> None:
        """Each stage's total (and bytes total): stats, manifest items still to do, jobs seen."""
        sizes = self._sizes()
        for name, stage in self.stages.items():
            todo = self._todo_of(name, sizes)
            seen = stage.done + stage.running + stage.failed
            from_manifest = len(todo) + stage.done + stage.failed
            stage.total = max(self._stats.get(name, 0), from_manifest, seen)
            if stage.bytes_total is None:
                continue
            jobs_left = max(stage.total - stage.done - stage.failed, 0)
            left = sum(todo.values())
            if len(todo) != jobs_left:  # the run redoes outputs that exist: estimate from the mean
                items = sizes.session_bytes if name in PER_SESSION else sizes.scan_bytes
                left = int(sum(items.values()) / len(items) * jobs_left) if items else 0
            stage.bytes_total = stage.bytes_done + left


def _plain_path(text: str) -> str:
    """An output as Snakemake logs it, without its flags ("x.json (temp)" -> "x.json")."""
    return str(text).split(" (", 1)[0]


def _template(rule: str) -> str | None:
    return PER_SESSION.get(rule) or PER_SCAN.get(rule)


def _root_of(rule: str, wildcards: Mapping[str, str], outputs: Sequence[str]) -> Path | None:
    """The output root, from a job of a known rule (its receipt is ``template`` under the root)."""
    if rule == "discover":
        candidates = [(o, paths.SCANS_TSV) for o in outputs]
    else:
        template = _template(rule)
        if template is None:
            return None
        try:
            relative = template.format(**wildcards)
        except (KeyError, IndexError):
            return None
        candidates = [(o, relative) for o in outputs]
    for path, relative in candidates:
        try:
            return paths.root_of(path, relative)
        except ValueError:
            continue
    return None


def _key(job: _Job) -> tuple[str, ...]:
    w = job.wildcards
    key = (w.get("project", ""), w.get("subject", ""), w.get("session", ""))
    return (*key, w["scan"]) if "scan" in w else key


def _receipt_path(job: _Job) -> Path | None:
    template = _template(job.rule)
    if template is None:
        return None
    try:
        relative = template.format(**job.wildcards)
    except (KeyError, IndexError):
        return None
    return next((Path(o) for o in job.output if o.endswith(relative)), None)


def _receipt_exists(root: Path, template: str, key: tuple[str, ...]) -> bool:
    names = dict(zip(("project", "subject", "session", "scan"), key, strict=False))
    try:
        return (root / template.format(**names)).exists()
    except (KeyError, OSError):
        return False


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def human_bytes(n: float) -> str:
    """1234567 -> "1.2 MB" (decimal units, as the plan and the report)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _stage_line(stage: Stage, now: float, width: int) -> str:
    """``download_session   3/10  1.2/4.0 MB  0.5 MB/s  ETA 6s  running 2  problems 0``."""
    parts = [f"{stage.name:<{width}}", f"{stage.done:>4}/{stage.total:<4}"]
    rate = stage.rate(now)
    if stage.bytes_total is not None:
        parts.append(f"{human_bytes(stage.bytes_done):>8} of {human_bytes(stage.bytes_total):<8}")
        parts.append(f"{human_bytes(rate) + '/s' if rate is not None else '-':>13}")
    else:
        parts += [" " * 20, f"{f'{rate * 60:.1f} jobs/min' if rate is not None else '-':>13}"]
    if stage.finished:
        parts.append("finished")
    else:
        eta = stage.eta(now)
        parts.append(f"ETA {_duration(eta)}" if eta is not None else "ETA -")
        if stage.running:
            parts.append(f"running {stage.running}")
    extra = [f"{stage.skipped} skipped"] if stage.skipped else []
    problems = stage.failed + stage.problems
    extra.append(f"{problems} problem(s)")
    return "  ".join(parts + extra)
