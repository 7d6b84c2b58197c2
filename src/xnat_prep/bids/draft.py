"""``xnat-prep bids-init``: a starter ``bids.yaml`` from the plan's ``inventory.tsv``.

One commented rule per distinct (scan type, series description) of the selected scans. A series
named the ReproIn way (``func-bold_task-rest_dir-AP``, ``anat-T1w``, ``fmap-epi_dir-PA``) is
mapped as its name says, so a ReproIn site's draft needs no edit; a name commonly given to
localizers and screenshots becomes a skip rule; anything else gets a guess (marked) or
``bids: TODO/TODO``, which the mapping's schema refuses until someone decides.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from xnat_prep.errors import UserError

DATATYPES = ("anat", "func", "dwi", "fmap", "perf")
_REPROIN = re.compile(
    r"^(anat|func|dwi|fmap|perf)(?:-([A-Za-z0-9]+))?((?:_[a-z]+-[A-Za-z0-9+=]+)*)(?:__.*)?$"
)
_DEFAULT_SUFFIX = {"func": "bold", "dwi": "dwi", "anat": "T1w", "perf": "asl", "fmap": "fieldmap"}
_ENTITIES = ("task", "acq", "ce", "rec", "dir", "echo", "part")
_SKIP = re.compile(r"scout|localizer|localiser|survey|screen ?save|report|phoenix|aahead|calibration", re.I)
_GUESSES = (
    (re.compile(r"sbref", re.I), "func/sbref"),
    (re.compile(r"mprage|mpr|t1w?[_ ]|^t1", re.I), "anat/T1w"),
    (re.compile(r"flair", re.I), "anat/FLAIR"),
    (re.compile(r"t2w?[_ ]|^t2|tse", re.I), "anat/T2w"),
    (re.compile(r"spinecho.*field|se.*fmap|fmap.*se|topup", re.I), "fmap/epi"),
    (re.compile(r"field_?map|gre_field|b0", re.I), "fmap/fieldmap"),
    (re.compile(r"dwi|dti|dmri|diff", re.I), "dwi/dwi"),
    (re.compile(r"bold|fmri|rest|task", re.I), "func/bold"),
)


@dataclass(frozen=True)
class Series:
    scan_type: str
    description: str
    sessions: int
    scans: int


def read_inventory(path: str | Path) -> list[Series]:
    """The selected series of ``inventory.tsv`` (the plan's table)."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except FileNotFoundError:
        raise UserError(f"{path}: inventory not found: run `xnat-prep plan` first") from None
    need = {"scan_type", "series_description", "sessions", "scans", "selected"}
    if rows and not need <= set(rows[0]):
        raise UserError(f"{path}: not an inventory.tsv (columns {sorted(need)} needed)")
    return [
        Series(r["scan_type"], r["series_description"], int(r["sessions"]), int(r["scans"]))
        for r in rows
        if r["selected"] != "no"
    ]


def reproin(description: str) -> tuple[str, str, dict[str, str]] | None:
    """(datatype, suffix, entities) of a ReproIn series name, None if it is not one."""
    name = description.split(":", 1)[-1].strip()  # a "PREFIX:" the scanner adds
    name = name.removeprefix("WIP ").strip()
    m = _REPROIN.match(name)
    if not m:
        return None
    datatype, suffix, rest = m.group(1), m.group(2) or _DEFAULT_SUFFIX[m.group(1)], m.group(3)
    entities = {}
    for part in rest.split("_")[1:]:
        key, _, value = part.partition("-")
        if key in _ENTITIES and re.fullmatch(r"[A-Za-z0-9]+", value):
            entities[key] = value
    return datatype, suffix, entities


def _pattern(text: str) -> str:
    """A match pattern for exactly ``text`` (a regex when it holds glob characters)."""
    if re.search(r"[*?\[\]|]", text) or text.startswith("re:"):
        return "re:^" + re.escape(text) + "$"
    return text


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _name(description: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9]+", "_", description).strip("_").lower() or "series"
    if not base[0].isalpha():
        base = "s_" + base
    name, n = base, 2
    while name in used:
        name, n = f"{base}_{n}", n + 1
    used.add(name)
    return name


def draft(series: list[Series], source: str = "inventory.tsv") -> str:
    """The text of a starter ``bids.yaml``."""
    lines = [
        f"# BIDS mapping drafted by `xnat-prep bids-init` from {source}: one rule per distinct",
        "# (scan type, series description). Rules are tried in order; the first match wins and the",
        "# plan's lint reports a scan two rules match. Language: config/README.md, 'The BIDS mapping'.",
        "version: 1",
        "dataset:",
        "  name: TODO study name",
        "  license: TODO",
        "subject: auto",
        "session: auto",
        "run: auto",
        "rules:",
    ]
    used: set[str] = set()
    ordered = sorted(
        series, key=lambda s: (reproin(s.description) is None, s.description.lower(), s.scan_type)
    )
    fieldmaps: list[tuple[int, str]] = []  # (line index, name) of fmap rules, for intended_for
    targets: list[str] = []
    for s in ordered:
        name = _name(s.description or s.scan_type, used)
        lines.append(
            f"  # {s.scans} scan(s) in {s.sessions} session(s): "
            f"type {s.scan_type!r}, description {s.description!r}"
        )
        lines.append(f"  - name: {name}")
        match = f"series_description: {_quote(_pattern(s.description))}"
        if s.scan_type != s.description:
            match = f"scan_type: {_quote(_pattern(s.scan_type))}, " + match
        lines.append(f"    match: {{{match}}}")
        parsed = reproin(s.description)
        if parsed is not None and parsed[1] == "scout":
            lines.append("    skip: true  # ReproIn scout")
            continue
        if parsed is None and _SKIP.search(s.description or s.scan_type):
            lines.append("    skip: true  # a localizer, screenshot or report, by its name")
            continue
        if parsed is not None:
            datatype, suffix, entities = parsed
            comment = "  # ReproIn name"
        else:
            guess = next((b for regex, b in _GUESSES if regex.search(s.description or s.scan_type)), None)
            if guess is None:
                lines.append(
                    "    bids: TODO/TODO  # datatype/suffix, e.g. anat/T1w, func/bold (or skip: true)"
                )
                continue
            datatype, _, suffix = guess.partition("/")
            entities = {"task": "TODO"} if datatype == "func" else {}
            comment = "  # a guess from the name: check it"
        if datatype == "fmap" and suffix == "fieldmap":  # magnitude(s) and phase in dcm2niix's outputs
            lines.append(f"    entities: {_flow(entities)}" if entities else "    # entities: {acq: gre}")
            lines.append(f"    outputs:{comment}")
            lines.append('      - {sidecar: {ImageType: "*PHASE*"}, bids: fmap/phasediff}')
            lines.append("      - {sidecar: {EchoNumber: 1}, bids: fmap/magnitude1}")
            lines.append("      - {sidecar: {EchoNumber: 2}, bids: fmap/magnitude2}")
        else:
            lines.append(f"    bids: {datatype}/{suffix}{comment}")
            if entities:
                lines.append(f"    entities: {_flow(entities)}")
        if datatype == "fmap":
            if suffix == "epi":  # the pair (AP, PA) is one fieldmap: one b0_group
                lines.append(f"    b0_group: {entities.get('acq', 'epi')}")
                lines.append(
                    "    # metadata: {PhaseEncodingDirection: j-, TotalReadoutTime: 0.05}"
                    "  # if the DICOM lacks them"
                )
            fieldmaps.append((len(lines), name))
        elif datatype in ("func", "dwi"):
            targets.append(name)
    for offset, (index, _) in enumerate(fieldmaps):
        wanted = (
            f"    intended_for: [{', '.join(targets)}]  # the rules it corrects"
            if targets
            else "    # intended_for: [rule names]"
        )
        lines.insert(index + offset, wanted)
    return "\n".join(lines) + "\n"


def _flow(entities: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in entities.items()) + "}"
