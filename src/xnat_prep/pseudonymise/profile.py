"""The de-identification profile: PS3.15 Table E.1-1 (as data), the options a site picks, and
per-tag overrides, resolved into one action per tag.

Action codes (PS3.15 E.1.1): D dummy, Z empty, X remove, K keep (sequences: items cleaned),
C clean, U new UID. The combined codes name the weakest action an IOD's attribute type allows;
without the IOD at hand we take the one that keeps the attribute present: ``X/Z``, ``Z/D`` and
``X/Z/D`` -> Z (empty: no dummy text such as "ANONYMOUS" reaches the NIfTI sidecars), ``X/D`` ->
D. ``X/Z/U*`` (reference sequences) keeps the sequence and replaces the UIDs inside it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from pydicom.datadict import tag_for_keyword

from xnat_prep.errors import UserError

TABLE_FILE = "ps3.15-table-e1-1.json"
ACTIONS = ("D", "Z", "X", "K", "C", "U")
_RESOLVE = {"X/Z": "Z", "X/D": "D", "Z/D": "Z", "X/Z/D": "Z", "X/Z/U*": "K"}
# What a site gets without choosing: dates shifted per subject (intervals kept), sex/age/size
# kept (they matter for the analysis), descriptions kept but cleaned (dcm2niix names and
# stacks series by them).
DEFAULT_OPTIONS = (
    "retain_longitudinal_modified_dates",
    "retain_patient_characteristics",
    "clean_descriptors",
)
# Options that keep something win over options that clean it.
_STRENGTH = {"K": 2, "C": 1}
_TAG = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")


@cache
def table() -> dict[str, Any]:
    """The Table E.1-1 data file, as shipped."""
    text = resources.files("xnat_prep.pseudonymise").joinpath("data", TABLE_FILE).read_text()
    return json.loads(text)


def option_names() -> list[str]:
    return list(table()["options"])


def parse_tag(text: str) -> int:
    """``(0010,0010)``, ``00100010``, ``0010,0010`` or a keyword (``PatientName``) -> tag."""
    m = _TAG.match(text.strip())
    if m:
        return int(m.group(1) + m.group(2), 16)
    tag = tag_for_keyword(text.strip())
    if tag is None:
        raise ValueError(f"not a tag or attribute keyword: {text!r}")
    return tag


def validate_overrides(mapping: Mapping[str, Any] | None, source: str) -> dict[int, str]:
    """Check per-tag overrides (``{"PatientAge": "K", "(0018,1030)": "X"}``) -> ``{tag: action}``.

    One UserError naming ``source`` and the bad key, for an unknown tag/keyword, an unknown action,
    a private tag (private data is handled by creator, not by tag) or a tag given twice.
    """
    out: dict[int, str] = {}
    for key, action in (mapping or {}).items():
        where = f"{source}: overrides: {key!r}"
        try:
            tag = parse_tag(str(key))
        except ValueError:
            raise UserError(f"{where}: not a DICOM tag or attribute keyword") from None
        if (tag >> 16) % 2:
            raise UserError(f"{where}: private tags cannot be overridden (they are kept by private creator)")
        if not isinstance(action, str) or action.upper() not in ACTIONS:
            raise UserError(f"{where}: action {action!r} is not one of {', '.join(ACTIONS)}")
        if tag in out:
            raise UserError(f"{where}: the same tag is given twice")
        out[tag] = action.upper()
    return out


def validate_options(options: Iterable[str], source: str) -> tuple[str, ...]:
    """Check option names against the table's -> the options, in the table's order."""
    known = option_names()
    chosen = list(options)
    for name in chosen:
        if name not in known:
            raise UserError(f"{source}: unknown profile option {name!r}: choose from {', '.join(known)}")
    if "retain_longitudinal_full_dates" in chosen and "retain_longitudinal_modified_dates" in chosen:
        raise UserError(f"{source}: retain_longitudinal_full_dates and _modified_dates exclude each other")
    return tuple(n for n in known if n in chosen)


@dataclass(frozen=True)
class Profile:
    options: tuple[str, ...] = DEFAULT_OPTIONS
    overrides: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", validate_options(self.options, "profile"))
        actions: dict[int, str] = {}
        repeating: dict[tuple[int, int | None], str] = {}
        for key, attr in table()["attributes"].items():
            action = self._choose(attr)
            group, element = key[1:5], key[6:10]
            if "x" in group:  # (50xx,xxxx) curves, (60xx,eeee) overlays
                repeating[(int(group[:2], 16), None if "x" in element else int(element, 16))] = action
            else:
                actions[int(group + element, 16)] = action
        actions.update(self.overrides)
        object.__setattr__(self, "_actions", actions)
        object.__setattr__(self, "_repeating", repeating)

    def _choose(self, attr: Mapping[str, Any]) -> str:
        best = attr["basic"]
        for name in self.options:
            code = attr.get("options", {}).get(name)
            if code and _STRENGTH.get(code, 0) >= _STRENGTH.get(best, 0):
                best = code
        return _RESOLVE.get(best, best)

    def action(self, tag: int) -> str | None:
        """The action for a public tag, or None when the table does not list it (kept)."""
        found = self._actions.get(tag)  # type: ignore[attr-defined]
        if found is None and (tag >> 24) in (0x50, 0x60):
            rep = self._repeating  # type: ignore[attr-defined]
            found = rep.get((tag >> 24, tag & 0xFFFF)) or rep.get((tag >> 24, None))
        return found

    @property
    def shifts_dates(self) -> bool:
        return "retain_longitudinal_full_dates" not in self.options

    @property
    def retains_uids(self) -> bool:
        return "retain_uids" in self.options

    def codes(self) -> list[tuple[str, str]]:
        """(CID 7050 code, meaning) of the Basic Profile and each option, for (0012,0064)."""
        opts = table()["options"]
        return [("113100", "Basic Application Confidentiality Profile")] + [
            (opts[n]["code"], opts[n]["meaning"]) for n in (*self.options, "retain_safe_private")
        ]

    def describe(self) -> dict[str, Any]:
        """For receipts: the table's edition, the options and the overrides (keywords)."""
        from pydicom.datadict import keyword_for_tag

        return {
            "table": TABLE_FILE,
            "edition": table()["edition"],
            "options": list(self.options),
            "overrides": {
                (keyword_for_tag(t) or f"({t >> 16:04X},{t & 0xFFFF:04X})"): a
                for t, a in self.overrides.items()
            },
        }
