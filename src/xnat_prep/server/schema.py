"""The data model the server serves (``schemas/xnat.xsd``), read back to check and type values.

XNAT addresses a value by an xpath into its schema: ``xnat:mrSessionData/age``,
``xnat:subjectData/investigator/lastname``, ``xnat:mrScanData/parameters/addParam[name=TE]/addField``,
``xnat:projectData/aliases/alias[0]/alias``, or a shortcut (``age``, ``pi_lastname``; XNAT's
``XMLPathShortcuts``). ``Schema.resolve`` turns one into a ``Value``: its storage key (the canonical
path below the object, e.g. ``investigator/lastname``, ``parameters/addParam[name=TE]``) and its XSD
type. A path the schema does not define raises ``UnknownPath``: the server answers 400 instead of
dropping the value, as XNAT either stores a value or refuses the request.

Numbers are stored in XNAT's form: an ``xs:float`` given as ``42`` reads back as ``42.0``, an
``xs:integer`` must be an integer. XFT matches xpath names without regard to case; so does this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from xml.etree import ElementTree

XS = "{http://www.w3.org/2001/XMLSchema}"
STEP = re.compile(r"([^/\[\]]+)(?:\[([^\]]*)\])?(?:/|$)")
FLOATS = {"float", "double", "decimal"}
# a custom field: xnat:someData/fields/field[name=NAME]/field (or .../name)
FIELD_KEY = re.compile(r"^[\w.-]+:\w+/fields/field\[name=(?P<name>[^\]]+)\]/(?P<part>[\w.-]+)$", re.I)
INTEGERS = {"integer", "int", "long", "short", "nonNegativeInteger", "positiveInteger"}


class UnknownPath(ValueError):
    """An xpath or shortcut the schema does not define, or a value its type refuses."""


@dataclass
class Member:
    """An attribute or child element of a complex type."""

    name: str
    attr: bool = False
    simple: str | None = None  # the xs type of a simple value
    type: str | None = None  # the named complex type of an element (local name)
    inner: Type | None = None  # an anonymous complex type
    many: bool = False  # maxOccurs="unbounded"


@dataclass
class Type:
    name: str | None
    base: str | None = None
    attrs: list[Member] = field(default_factory=list)
    elems: list[Member] = field(default_factory=list)
    text: str | None = None  # the xs type of simple content (an element with attributes and a value)


@dataclass
class Value:
    key: str  # storage key: the path below the object, list items with their predicate
    type: str  # xs type of the value (string, float, integer, date, ...)


# XNAT's shortcut names for query parameters and listing columns (XMLPathShortcuts), by data family.
SHORTCUTS: dict[str, dict[str, str]] = {
    "project": {
        "secondary_ID": "secondary_ID",
        "name": "name",
        "description": "description",
        "keywords": "keywords",
        "alias": "aliases/alias[0]",
        "pi_firstname": "PI/firstname",
        "pi_lastname": "PI/lastname",
    },
    "subject": {
        "group": "group",
        "src": "src",
        "pi_firstname": "investigator/firstname",
        "pi_lastname": "investigator/lastname",
        **{
            name: f"demographics/{name}"
            for name in (
                "dob",
                "yob",
                "age",
                "gender",
                "handedness",
                "ses",
                "education",
                "educationDesc",
                "race",
                "ethnicity",
                "weight",
                "height",
                "gestational_age",
                "post_menstrual_age",
                "birth_weight",
            )
        },
    },
    "experiment": {
        "visit_id": "visit_id",
        "date": "date",
        "time": "time",
        "note": "note",
        "pi_firstname": "investigator/firstname",
        "pi_lastname": "investigator/lastname",
        "validation_method": "validation/method",
        "validation_status": "validation/status",
        "validation_date": "validation/date",
        "validation_notes": "validation/notes",
        "scanner": "scanner",
        "operator": "operator",
        "dcmAccessionNumber": "dcmAccessionNumber",
        "dcmPatientId": "dcmPatientId",
        "dcmPatientName": "dcmPatientName",
        "session_type": "session_type",
        "modality": "modality",
        "UID": "UID",
        "studyInstanceUID": "UID",
        "coil": "coil",
        "fieldStrength": "fieldStrength",
        "marker": "marker",
        "stabilization": "stabilization",
    },
    "scan": {
        "type": "type",
        "UID": "UID",
        "note": "note",
        "quality": "quality",
        "condition": "condition",
        "series_description": "series_description",
        "documentation": "documentation",
        "scanner": "scanner",
        "modality": "modality",
        "frames": "frames",
        "validation_method": "validation/method",
        "validation_status": "validation/status",
        "validation_date": "validation/date",
        "validation_notes": "validation/notes",
        "scanTime": "startTime",
        "coil": "coil",
        "fieldStrength": "fieldStrength",
        "marker": "marker",
        "stabilization": "stabilization",
    },
    "reconstruction": {"type": "type", "baseScanType": "baseScanType"},
}
SHORTCUTS["assessor"] = {
    k: v for k, v in SHORTCUTS["experiment"].items() if "/" in v or k in ("visit_id", "date", "time", "note")
}
for _family, _names in (
    ("project", ("ID",)),
    ("subject", ("ID", "label", "project")),
    ("experiment", ("ID", "label", "project", "subject_ID")),
    ("assessor", ("ID", "label", "project")),
    ("scan", ("ID",)),
    ("reconstruction", ("ID",)),
):
    SHORTCUTS[_family].update({name: name for name in _names})


class Schema:
    """Named complex types of one XSD, their inheritance and root elements."""

    def __init__(self, text: str) -> None:
        root = ElementTree.fromstring(text)  # noqa: S314 - the server's own packaged schema
        self.types: dict[str, Type] = {}
        for node in root.findall(f"{XS}complexType"):
            self.types[node.get("name", "")] = self._type(node, node.get("name"))
        # global element name per type: <xnat:MRSession> for xnat:mrSessionData
        self.roots = {
            local(node.get("type", "")): node.get("name", "") for node in root.findall(f"{XS}element")
        }

    # ---- reading the XSD -----------------------------------------------------------------------

    def _type(self, node: ElementTree.Element, name: str | None) -> Type:
        t = Type(name)
        for content in node.findall(f"{XS}complexContent") + node.findall(f"{XS}simpleContent"):
            ext = content.find(f"{XS}extension")
            if ext is None:
                continue
            base = ext.get("base", "")
            if base.startswith("xnat:"):
                t.base = local(base)
            else:
                t.text = local(base)
            self._members(ext, t)
        self._members(node, t)
        return t

    def _members(self, node: ElementTree.Element, t: Type) -> None:
        for attr in node.findall(f"{XS}attribute"):
            t.attrs.append(
                Member(attr.get("name", ""), attr=True, simple=local(attr.get("type", "xs:string")))
            )
        for group in node.findall(f"{XS}sequence") + node.findall(f"{XS}choice"):
            self._members(group, t)
        for elem in node.findall(f"{XS}element"):
            m = Member(elem.get("name", ""), many=elem.get("maxOccurs") == "unbounded")
            kind = elem.get("type", "")
            inner = elem.find(f"{XS}complexType")
            if kind.startswith("xnat:"):
                m.type = local(kind)
            elif inner is not None:
                m.inner = self._type(inner, None)
            else:
                m.simple = local(kind) or "string"
            t.elems.append(m)

    # ---- queries ---------------------------------------------------------------------------------

    def chain(self, type_name: str) -> list[str]:
        """The type and its ancestors, nearest first: mrSessionData, imageSessionData, ..."""
        names = []
        current: str | None = local(type_name)
        while current in self.types:
            names.append(current)
            current = self.types[current].base
        return names

    def is_a(self, xsi: str, ancestor: str) -> bool:
        return local(ancestor).lower() in [name.lower() for name in self.chain(xsi)]

    @cache  # noqa: B019 - one Schema per process, never freed
    def flat(self, type_name: str) -> Type:
        """A type with its ancestors' attributes and elements (ancestors' first)."""
        t = self.types[type_name]
        if t.base is None:
            return t
        base = self.flat(t.base)
        return Type(t.name, t.base, base.attrs + t.attrs, base.elems + t.elems, t.text or base.text)

    def subtypes(self, type_name: str) -> list[str]:
        return [name for name, t in self.types.items() if t.base == type_name]

    def member(self, t: Type, name: str) -> tuple[Member, Type] | None:
        """A member by name (any case) of a type or, for an abstract one, of a direct subtype."""
        for candidate in [t] + [self.flat(s) for s in self.subtypes(t.name or "")]:
            for m in candidate.attrs + candidate.elems:
                if m.name.lower() == name.lower():
                    return m, candidate
        return None

    def member_type(self, m: Member) -> Type | None:
        return self.flat(m.type) if m.type else m.inner

    def resolve(self, xsi: str, path: str, family: str) -> Value:
        """The storage key and type for ``xnat:someType/path`` or a shortcut, on an object of ``xsi``."""
        prefix, _, rest = path.partition("/")
        if ":" in prefix and rest:
            if not self.is_a(xsi, prefix):
                raise UnknownPath(f"{path}: {prefix} is not {xsi} or one of its base types")
            path = rest
        elif "/" not in path and ":" not in path:
            shortcut = next(
                (v for k, v in SHORTCUTS.get(family, {}).items() if k.lower() == path.lower()), None
            )
            if shortcut is None:
                raise UnknownPath(f"{path} is not a field of {xsi}")
            path = shortcut
        else:
            raise UnknownPath(f"{path}: expected {xsi}/... or a field name")
        return self._walk(self.flat(local(xsi)), path, xsi)

    def _walk(self, t: Type, path: str, xsi: str) -> Value:
        steps = STEP.findall(path)
        if "/".join(f"{n}[{p}]" if p else n for n, p in steps) != path:
            raise UnknownPath(f"cannot read the xpath {path}")
        key: list[str] = []
        for i, (name, pred) in enumerate(steps):
            last = i == len(steps) - 1
            found = self.member(t, name)
            if found is None:
                # the value of an element with attributes is addressed by its own (or its type's) name
                if (
                    last
                    and not pred
                    and t.text
                    and name.lower() in (key[-1].split("[")[0].lower(), (t.name or "").lower())
                ):
                    return Value("/".join(key), t.text)
                raise UnknownPath(f"{path}: {name} is not defined for {xsi}")
            m = found[0]
            key.append(m.name + item(m, pred, path))
            inner = self.member_type(m)
            if m.attr or inner is None:
                if not last:
                    raise UnknownPath(f"{path}: {name} has no parts")
                return Value("/".join(key), m.simple or "string")
            if last:
                if inner.text is None:
                    raise UnknownPath(f"{path}: {name} is not a value")
                return Value("/".join(key), inner.text)
            t = inner
        raise UnknownPath(f"cannot read the xpath {path}")  # pragma: no cover - empty path


def item(m: Member, pred: str, path: str) -> str:
    """The key suffix that selects a list item: ``[name=X]`` or ``[N]`` (no predicate: the first)."""
    if pred.startswith("@xsi:type="):
        pred = ""  # demographics[@xsi:type=xnat:demographicData]: a subtype's members are found by name
    if not m.many:
        if pred:
            raise UnknownPath(f"{path}: {m.name} is not a list")
        return ""
    name = re.fullmatch(r"@?name=(.+)", pred)
    if name:
        return f"[name={name.group(1)}]"
    if pred.isdigit() or not pred:
        return f"[{int(pred or 0)}]"
    raise UnknownPath(f"{path}: select an item of {m.name} by [name=...] or an index")


def local(name: str) -> str:
    return name.rpartition(":")[2]


def typed(value: str, xs_type: str, path: str) -> str:
    """``value`` in the form XNAT stores for ``xs_type``; UnknownPath if the type refuses it."""
    try:
        if xs_type in FLOATS:
            return repr(float(value))
        if xs_type in INTEGERS:
            return str(int(value))
    except ValueError:
        raise UnknownPath(f"{path}: {value!r} is not an {xs_type}") from None
    if xs_type == "boolean":
        lowered = value.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise UnknownPath(f"{path}: {value!r} is not a boolean")
        return "true" if lowered in ("true", "1") else "false"
    return value


@cache
def schema() -> Schema:
    return Schema(schema_text("xnat"))


def schema_text(name: str) -> str:
    return resources.files("xnat_prep.server").joinpath("schemas", f"{name}.xsd").read_text()
