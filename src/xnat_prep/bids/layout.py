"""Scans -> BIDS names, before any download: labels, rule matching, run numbers, fieldmaps, lint.

A pure function of the frozen manifest's scans (plus the DICOM dump cache and, pseudonymised,
the pseudonyms) and the mapping: the same inputs give the same names whatever is on disk or in
whatever order discovery listed the scans (runs follow ``manifest.natural_key`` of the scan IDs).
Every problem is one line naming session, scan, type, description and rule.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from xnat_prep import manifest
from xnat_prep.bids.mapping import ENTITY_ORDER, Mapping_, Output, Rule, fill_template

# MRI datatypes -> suffixes (BIDS 1.10, the ones a DICOM series can give).
SUFFIXES = {
    "anat": {
        "T1w", "T2w", "PDw", "T2starw", "FLAIR", "inplaneT1", "inplaneT2", "PDT2", "angio", "T1map",
        "T2map", "T2starmap", "R1map", "R2map", "R2starmap", "PDmap", "MTRmap", "MTsat", "UNIT1",
        "T1rho", "MWFmap", "MTVmap", "Chimap", "S0map", "M0map", "MEGRE", "MESE", "VFA", "IRT1",
        "MP2RAGE", "MPM", "MTS", "MTR",
    },
    "func": {"bold", "cbv", "phase", "sbref"},
    "dwi": {"dwi", "sbref"},
    "fmap": {
        "phasediff", "phase1", "phase2", "magnitude1", "magnitude2", "magnitude", "fieldmap", "epi",
        "m0scan", "TB1DAM", "TB1EPI", "TB1AFI", "TB1TFL", "TB1RFM", "RB1COR", "TB1SRGE", "TB1map", "RB1map",
    },
    "perf": {"asl", "m0scan"},
}  # fmt: skip
REQUIRED = {("func", s): "task" for s in SUFFIXES["func"]} | {("fmap", "epi"): "dir"}
_LABEL = re.compile(r"^[A-Za-z0-9]+$")
_NUMERIC = {"run", "echo", "flip", "inv", "chunk"}


@dataclass(frozen=True)
class Problem:
    level: str  # error | warning
    # unmapped ambiguous shadowed undecided unused_rule expect invalid_name label no_task fmap_targets
    code: str
    message: str
    session: str = ""
    scan: str = ""
    scan_type: str = ""
    description: str = ""
    rule: str = ""

    def line(self) -> str:
        where = []
        if self.session:
            where.append(f"session {self.session}")
        if self.scan:
            where.append(f"scan {self.scan} (type {self.scan_type!r}, description {self.description!r})")
        if self.rule:
            where.append(self.rule)
        return f"{self.level}: {self.code}: {', '.join(where)}{': ' if where else ''}{self.message}"


@dataclass
class Planned:
    """One scan going into BIDS."""

    scan: manifest.ScanRow
    rule: Rule
    subject: str  # BIDS label, no "sub-"
    session: str  # "" without a ses- level
    entities: dict[str, str]  # task/acq/... of the rule (templates on XNAT fields filled), run added
    position: int  # rank in the session's scan order
    b0_identifier: str = ""  # set on a fieldmap scan
    b0_sources: list[str] = field(default_factory=list)  # set on a target scan
    intended_for: list[tuple[str, str]] = field(default_factory=list)  # (session key, scan_id) targets

    @property
    def key(self) -> tuple[str, str]:
        return (self.scan.session_id, self.scan.scan_id)

    def prefix(self) -> str:
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    def folder(self, datatype: str) -> str:
        return f"sub-{self.subject}/" + (f"ses-{self.session}/" if self.session else "") + datatype

    def name(self, output: Output | None, sidecar: Mapping | None = None) -> tuple[str, str]:
        """(datatype, file stem without extension) for the scan or one routed output."""
        datatype = (output.datatype if output else "") or self.rule.datatype
        suffix = (output.suffix if output else "") or self.rule.suffix
        entities = dict(self.entities)
        for key, value in output.entities if output else ():
            entities[key] = fill_template(value, self.scan.scan_type, self.scan.series_description, sidecar)
        parts = [self.prefix()] + [f"{k}-{entities[k]}" for k in ENTITY_ORDER if entities.get(k, "") != ""]
        return datatype, "_".join([*parts, suffix])

    def predicted(self) -> list[tuple[str, str]]:
        """Every (datatype, stem) this scan should give (placeholders for sidecar values)."""
        if not self.rule.outputs:
            return [self.name(None)]
        return [self.name(o) for o in self.rule.outputs]

    def relpaths(self) -> list[str]:
        return [f"{self.folder(d)}/{stem}" for d, stem in self.predicted()]


@dataclass
class Layout:
    planned: list[Planned]
    problems: list[Problem]
    skipped: list[tuple[manifest.ScanRow, str]]  # (scan, why) left out on purpose

    def errors(self, strict: bool = False) -> list[Problem]:
        return [p for p in self.problems if p.level == "error" or (strict and p.level == "warning")]


def sanitise(label: str) -> str:
    """A BIDS label: letters and digits only (``SUB-001_a`` -> ``SUB001a``)."""
    return re.sub(r"[^A-Za-z0-9]", "", label)


def _label(spec: str, value: str) -> str:
    if spec.startswith("re:"):
        m = re.search(spec[3:], value)
        return sanitise(m.group(1) or "") if m else ""
    return sanitise(value)


def session_label(spec: str, subject: str, session: str) -> str:
    """The ses- label of an XNAT session label ("" = no ses- level)."""
    if spec == "none":
        return ""
    if spec == "auto":
        rest = (
            session[len(subject) :]
            if session.startswith(subject) and len(session) > len(subject)
            else session
        )
        return sanitise(rest)
    return _label(spec, session)


def _labels(
    scans: list[manifest.ScanRow], mapping: Mapping_, pseudonyms: Mapping[str, str] | None
) -> tuple[dict[str, str], dict[str, str], list[Problem]]:
    """subject ID -> sub label, session ID -> ses label, and the label problems."""
    problems: list[Problem] = []
    subjects: dict[str, str] = {}
    subject_names: dict[str, str] = {}
    sessions_of: dict[str, dict[str, str]] = {}
    for s in sorted(scans, key=lambda s: (s.subject_id, manifest.natural_key(s.session))):
        if s.subject_id not in subjects:
            source = pseudonyms.get(s.subject_id, "") if pseudonyms is not None else s.subject
            subjects[s.subject_id] = (
                sanitise(source) if pseudonyms is not None else _label(mapping.subject, source)
            )
            subject_names[s.subject_id] = "(pseudonym)" if pseudonyms is not None else s.subject
        sessions_of.setdefault(s.subject_id, {}).setdefault(s.session_id, s.session)
    sessions: dict[str, str] = {}
    for subject_id, found in sessions_of.items():
        ordered = sorted(found.items(), key=lambda kv: manifest.natural_key(kv[1]))
        for rank, (session_id, session) in enumerate(ordered, start=1):
            if mapping.session == "none":
                sessions[session_id] = ""
            elif pseudonyms is not None:  # the XNAT label would name the subject
                sessions[session_id] = str(rank)
            else:
                subject = next(x.subject for x in scans if x.subject_id == subject_id)
                sessions[session_id] = session_label(mapping.session, subject, session)
        name = subject_names[subject_id]
        if mapping.session == "none" and len(ordered) > 1:
            problems.append(
                Problem("error", "label", f"subject {name} has {len(ordered)} sessions but session: none")
            )
        by_label: dict[str, str] = {}
        for session_id, session in ordered:
            label = sessions[session_id]
            if mapping.session != "none" and not label:
                problems.append(
                    Problem("error", "label", "no ses- label left after sanitising", session=session)
                )
            elif label in by_label and mapping.session != "none":
                problems.append(
                    Problem(
                        "error",
                        "label",
                        f"ses-{label} is also the label of session {by_label[label]} of subject {name}",
                        session=session,
                    )
                )
            by_label.setdefault(label, session)
    owner: dict[str, str] = {}
    for subject_id, label in subjects.items():
        name = subject_names[subject_id]
        if not label:
            problems.append(Problem("error", "label", f"subject {name}: no sub- label left after sanitising"))
        elif label in owner:
            problems.append(
                Problem("error", "label", f"subjects {owner[label]} and {name} both become sub-{label}")
            )
        owner.setdefault(label, name)
    return subjects, sessions, problems


def _where(scan: manifest.ScanRow, rule: Rule | None = None) -> dict[str, str]:
    return {
        "session": scan.session,
        "scan": scan.scan_id,
        "scan_type": scan.scan_type,
        "description": scan.series_description,
        "rule": rule.describe() if rule else "",
    }


def dicom_values(
    scans: Iterable[manifest.ScanRow], rows: Iterable[manifest.DicomRow]
) -> dict[tuple[str, str], dict[str, str]]:
    """(session ID, scan ID) -> DICOM keyword -> value, from the dump cache; a scan not read
    itself takes the values of a read scan of the same project, type and description (the
    ``dicom_sampling: series`` convention)."""
    read: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        read.setdefault((r.session_id, r.scan_id), {})[r.keyword] = r.value
    scans = list(scans)
    by_series: dict[tuple[str, str, str], dict[str, str]] = {}
    for s in sorted(scans, key=lambda s: (s.session_id, manifest.natural_key(s.scan_id))):
        if (s.session_id, s.scan_id) in read:
            by_series.setdefault(
                (s.project, s.scan_type, s.series_description), read[(s.session_id, s.scan_id)]
            )
    return {
        (s.session_id, s.scan_id): read.get(
            (s.session_id, s.scan_id), by_series.get((s.project, s.scan_type, s.series_description), {})
        )
        for s in scans
    }


def check_name(datatype: str, stem: str, entities: Mapping[str, str], suffix: str) -> str:
    """Why a predicted name is not valid BIDS ("" if it is)."""
    if datatype not in SUFFIXES:
        return f"datatype {datatype!r} is not one of {', '.join(sorted(SUFFIXES))}"
    if suffix not in SUFFIXES[datatype]:
        return f"suffix {suffix!r} is not a {datatype} suffix ({', '.join(sorted(SUFFIXES[datatype]))})"
    for key, value in entities.items():
        if value == "":
            return f"entity {key} is empty (its template found nothing)"
        if not _LABEL.match(value):
            return f"entity {key}-{value}: labels are letters and digits only"
        if key in _NUMERIC and not value.isdigit():
            return f"entity {key}-{value}: an index is digits only"
    if not re.match(r"^sub-[A-Za-z0-9]+(_ses-[A-Za-z0-9]+)?(_[a-z]+-[A-Za-z0-9]+)*_[A-Za-z0-9]+$", stem):
        return f"{stem} is not sub-<label>[_ses-<label>][_<entity>-<label>...]_<suffix>"
    return ""


def build(
    scans: Iterable[manifest.ScanRow],
    mapping: Mapping_,
    *,
    dicom: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
    pseudonyms: Mapping[str, str] | None = None,
) -> Layout:
    """Where each scan goes in BIDS, and every problem the lint finds."""
    scans = sorted(scans, key=lambda s: (s.session_id, manifest.natural_key(s.scan_id), s.resource))
    # one row per scan (a scan listed with two resources is still one scan)
    unique: dict[tuple[str, str], manifest.ScanRow] = {}
    for s in scans:
        unique.setdefault((s.session_id, s.scan_id), s)
    scans = list(unique.values())
    dicom = dicom or {}
    subjects, sessions, problems = _labels(scans, mapping, pseudonyms)
    used: dict[str, int] = {r.name: 0 for r in mapping.rules}
    planned: list[Planned] = []
    skipped: list[tuple[manifest.ScanRow, str]] = []
    position: dict[tuple[str, str], int] = {}
    per_session: dict[str, int] = {}
    for s in scans:
        position[(s.session_id, s.scan_id)] = per_session[s.session_id] = (
            per_session.get(s.session_id, -1) + 1
        )
        if any(fnmatch.fnmatchcase(f"{s.session}/{s.scan_id}", x) for x in mapping.exclude_scans):
            skipped.append((s, "exclude_scans"))
            continue
        hits: list[Rule] = []
        undecided: list[Rule] = []
        for rule in mapping.rules:
            verdict = rule.matches(
                s.scan_type, s.series_description, s.n_files, dicom.get((s.session_id, s.scan_id), {})
            )
            if verdict is None:
                undecided.append(rule)
            elif verdict:
                hits.append(rule)
        for rule in hits:
            used[rule.name] += 1
        for rule in undecided:
            missing = [k for k in rule.dicom_keywords if k not in dicom.get((s.session_id, s.scan_id), {})]
            problems.append(
                Problem(
                    "error",
                    "undecided",
                    f'DICOM {", ".join(missing)} not read: add {missing[0]}: "*" under scans.dicom so '
                    "discovery reads it",
                    **_where(s, rule),
                )
            )
        if not hits:
            if not undecided:
                problems.append(Problem("error", "unmapped", "no rule matches", **_where(s)))
            continue
        first = hits[0]
        doing = [r for r in hits if not r.skip]
        if len(doing) > 1:
            names = " and ".join(r.describe() for r in doing)
            problems.append(
                Problem("error", "ambiguous", f"matches {names}: make one of them narrower", **_where(s))
            )
            continue
        if len(hits) > 1 and doing:
            problems.append(
                Problem(
                    "warning",
                    "shadowed",
                    f"also matches {', '.join(r.describe() for r in hits[1:])}; {first.describe()} wins",
                    **_where(s),
                )
            )
        if first.skip:
            skipped.append((s, first.describe()))
            continue
        entities = {k: fill_template(v, s.scan_type, s.series_description, None) for k, v in first.entities}
        planned.append(
            Planned(
                scan=s,
                rule=first,
                subject=subjects[s.subject_id],
                session=sessions[s.session_id],
                entities=entities,
                position=position[(s.session_id, s.scan_id)],
            )
        )
    for rule in mapping.rules:
        if used[rule.name] == 0:
            problems.append(
                Problem("warning", "unused_rule", "matches no scan of the study", rule=rule.describe())
            )
    _number_runs(planned)
    _check_names(planned, problems)
    _check_expect(planned, scans, mapping, problems)
    _fieldmaps(planned, mapping, problems)
    return Layout(planned, problems, skipped)


def _stem_key(p: Planned) -> tuple:
    outputs = tuple((o.datatype, o.suffix, o.entities) for o in p.rule.outputs)
    return (p.rule.datatype, p.rule.suffix, tuple(sorted(p.entities.items())), outputs)


def _number_runs(planned: list[Planned]) -> None:
    """run-N in scan order among the session's scans of one name (the manifest's order)."""
    groups: dict[tuple, list[Planned]] = {}
    for p in planned:
        groups.setdefault((p.scan.session_id, _stem_key(p)), []).append(p)
    for group in groups.values():
        group.sort(key=lambda p: p.position)
        if len(group) > 1 or any(p.rule.run == "always" for p in group):
            for n, p in enumerate(group, start=1):
                p.entities["run"] = str(n)


def _check_names(planned: list[Planned], problems: list[Problem]) -> None:
    seen: dict[str, Planned] = {}
    for p in planned:
        outputs: list[Output | None] = list(p.rule.outputs) or [None]
        for output in outputs:
            datatype, stem = p.name(output)
            suffix = (output.suffix if output else "") or p.rule.suffix
            entities = dict(p.entities)
            for key, value in output.entities if output else ():
                entities[key] = fill_template(value, p.scan.scan_type, p.scan.series_description, None)
            entities = {k: ("1" if v == "X" and k in _NUMERIC else v) for k, v in entities.items()}
            required = REQUIRED.get((datatype, suffix))
            if required and required not in entities:
                code = "no_task" if required == "task" else "invalid_name"
                problems.append(
                    Problem(
                        "error",
                        code,
                        f"{datatype}/{suffix} needs the {required} entity",
                        **_where(p.scan, p.rule),
                    )
                )
                continue
            why = check_name(datatype, stem.replace("-X_", "-1_"), entities, suffix)
            if why:
                problems.append(Problem("error", "invalid_name", why, **_where(p.scan, p.rule)))
                continue
            path = f"{p.folder(datatype)}/{stem}"
            other = seen.get(path)
            if other is not None and other is not p:
                problems.append(
                    Problem(
                        "error",
                        "invalid_name",
                        f"{path} is also the name of scan {other.scan.scan_id}",
                        **_where(p.scan, p.rule),
                    )
                )
            seen[path] = p


def _check_expect(
    planned: list[Planned], scans: list[manifest.ScanRow], mapping: Mapping_, problems: list[Problem]
) -> None:
    sessions = {s.session_id: s.session for s in scans}
    counts: dict[tuple[str, str], int] = {}
    for p in planned:
        counts[(p.scan.session_id, p.rule.name)] = counts.get((p.scan.session_id, p.rule.name), 0) + 1
    for rule in mapping.rules:
        if rule.expect is None or rule.skip:
            continue
        low, high = rule.expect
        for session_id, session in sorted(sessions.items(), key=lambda kv: kv[1]):
            n = counts.get((session_id, rule.name), 0)
            if not low <= n <= high:
                want = str(low) if low == high else f"{low}-{high}"
                problems.append(
                    Problem(
                        "warning",
                        "expect",
                        f"{n} scan(s), expected {want}",
                        session=session,
                        rule=rule.describe(),
                    )
                )


def _fieldmaps(planned: list[Planned], mapping: Mapping_, problems: list[Problem]) -> None:
    """B0FieldIdentifier per fieldmap instance, the nearest (or every) instance per target."""
    for rule in mapping.rules:
        used = any(p.rule is rule for p in planned)
        if rule.datatype == "fmap" and not rule.intended_for and not rule.skip and used:
            problems.append(
                Problem("warning", "fmap_targets", "fieldmap rule without intended_for", rule=rule.describe())
            )
    by_session: dict[str, list[Planned]] = {}
    for p in planned:
        by_session.setdefault(p.scan.session_id, []).append(p)
    for items in by_session.values():
        items.sort(key=lambda p: p.position)
        groups: dict[str, list[Planned]] = {}
        for p in items:
            if p.rule.intended_for:
                groups.setdefault(p.rule.b0_group, []).append(p)
        for group, fmaps in groups.items():
            # instance k = the k-th scan of each rule and name of the group (AP #1 with PA #1)
            rank: dict[tuple, int] = {}
            instances: dict[int, list[Planned]] = {}
            for p in fmaps:
                kind = (p.rule.name, tuple(sorted((k, v) for k, v in p.entities.items() if k != "run")))
                rank[kind] = rank.get(kind, 0) + 1
                instances.setdefault(rank[kind], []).append(p)
            for k, members in instances.items():
                for p in members:
                    p.b0_identifier = f"{group}{k}" if len(instances) > 1 else group
            wanted = {t for p in fmaps for t in p.rule.intended_for}
            targets = [p for p in items if p.rule.name in wanted]
            if not targets:
                for p in fmaps:
                    problems.append(
                        Problem(
                            "warning",
                            "fmap_targets",
                            f"none of {', '.join(sorted(wanted))} in this session: no target",
                            **_where(p.scan, p.rule),
                        )
                    )
                continue
            for t in targets:
                if fmaps[0].rule.pick == "all":
                    chosen = sorted(instances)
                else:
                    chosen = [
                        min(
                            instances,
                            key=lambda k: (min(abs(m.position - t.position) for m in instances[k]), k),
                        )
                    ]
                for k in chosen:
                    for m in instances[k]:
                        if t.rule.name in m.rule.intended_for:
                            m.intended_for.append(t.key)
                    ident = instances[k][0].b0_identifier
                    if ident not in t.b0_sources:
                        t.b0_sources.append(ident)
