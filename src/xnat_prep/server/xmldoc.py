"""``GET <object>?format=xml``: an object's XML document, as XNAT writes it from its schema.

The root element is the type's global element (``<xnat:MRSession>``, ``<xnat:Subject>``; a type without
one, such as ``xnat:mrAssessorData``, is written under its type name: *unverified*). Attributes and
child elements follow the order of ``schemas/xnat.xsd``; empty values are left out. Children XNAT
includes are included: a subject's experiments, a session's scans, assessors and reconstructions,
every level's resources (``<xnat:file>`` in a scan, ``<xnat:out>``/``<xnat:in>`` in an assessor or
reconstruction), custom fields and the projects an object is shared into. A resource's ``URI`` is its
REST URI here, where XNAT gives the path of its catalog file on the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree

from xnat_prep.server.schema import Member, Type, local, schema
from xnat_prep.server.store import Obj, Resource, Store

XNAT = "http://nrg.wustl.edu/xnat"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ElementTree.register_namespace("xnat", XNAT)
ElementTree.register_namespace("xsi", XSI)

Write = Callable[[ElementTree.Element, Member], None]  # writes the children of a member


def object_xml(store: Store, obj: Obj) -> str:
    name = schema().roots.get(local(obj.xsi_type), local(obj.xsi_type))
    root = ElementTree.Element(f"{{{XNAT}}}{name}")
    fill(root, store, obj)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"


def fill(el: ElementTree.Element, store: Store, obj: Obj) -> None:
    """Write ``obj`` (its values, then its children) into ``el``."""
    from xnat_prep.server.listings import values  # listings answers format=xml through here

    def nested(objs: list[Obj]) -> Write:
        def write(box: ElementTree.Element, m: Member) -> None:
            for child in objs:
                sub = ElementTree.SubElement(box, f"{{{XNAT}}}{m.name}", {f"{{{XSI}}}type": child.xsi_type})
                fill(sub, store, child)

        return write

    resources = store.resources(obj.key)
    fields = [{"name": k, "": v} for k, v in store.fields(obj.key).items()]
    shares = [{"project": p, "label": label} for p, label in store.shares(obj.kind, obj.id).items()]
    children: dict[str, Write] = {
        "fields": in_container(lambda box, m: list_items(box, m, fields)),
        "resources": in_container(lambda box, m: resource_elements(box, m.name, resources)),
        "file": lambda parent, m: resource_elements(parent, m.name, resources),
        "sharing": in_container(lambda box, m: list_items(box, m, shares)),
    }
    if obj.kind == "subject":
        children["experiments"] = in_container(nested(store.experiments(subject_id=obj.id)))
    if obj.kind == "experiment" and schema().is_a(obj.xsi_type, "imageSessionData"):
        children["scans"] = in_container(nested(store.scans(obj.id)))
        children["reconstructions"] = in_container(nested(store.scans(obj.id, "reconstruction")))
        children["assessors"] = in_container(nested(store.assessors(obj.id)))
    if schema().is_a(obj.xsi_type, "imageAssessorData") or obj.kind == "reconstruction":
        # .../resources and .../out/resources are one collection: the outputs
        inputs = store.resources(f"{obj.key}/in")
        children["resources"] = lambda parent, m: None
        children["out"] = in_container(lambda box, m: resource_elements(box, m.name, resources))
        children["in"] = in_container(lambda box, m: resource_elements(box, m.name, inputs))
    present = {k: v for k, v in values(store, obj).items() if v not in (None, "")}
    write_type(el, schema().flat(local(obj.xsi_type)), present, children)


def in_container(write: Write) -> Write:
    """Items that ``write`` adds inside a container element (``<xnat:scans>``); none: no container."""

    def container(parent: ElementTree.Element, m: Member) -> None:
        box = ElementTree.Element(f"{{{XNAT}}}{m.name}")
        assert m.inner is not None and m.inner.elems
        write(box, m.inner.elems[0])
        if len(box):
            parent.append(box)

    return container


def write_type(el: ElementTree.Element, t: Type, values: dict[str, Any], children: dict[str, Write]) -> None:
    for m in t.attrs:
        if m.name in values:
            el.set(m.name, str(values[m.name]))
    if t.text and "" in values:
        el.text = str(values[""])
    for m in t.elems:
        if m.name in children:
            children[m.name](el, m)
        elif m.many:
            list_items(el, m, items(values, m.name))
        else:
            below = {k[len(m.name) + 1 :]: v for k, v in values.items() if k.startswith(m.name + "/")}
            if m.name in values:
                below[""] = values[m.name]
            if below:
                write_member(el, m, below)


def write_member(el: ElementTree.Element, m: Member, below: dict[str, Any]) -> None:
    sub = ElementTree.SubElement(el, f"{{{XNAT}}}{m.name}")
    inner = schema().member_type(m)
    if inner is None:
        sub.text = str(below[""])
        return
    first = next(iter(below)).split("/")[0].split("[")[0]
    found = schema().member(inner, first) if first else None
    if found is not None and found[1] is not inner:  # an abstract type (demographics): name the subtype
        sub.set(f"{{{XSI}}}type", f"xnat:{found[1].name}")
        inner = found[1]
    write_type(sub, inner, below, {})


def items(values: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The items of list ``name`` from keys ``name[name=X]...`` / ``name[N]...``, in order."""
    found: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if not key.startswith(name + "["):
            continue
        pred, _, rest = key[len(name) + 1 :].partition("]")
        entry = found.setdefault(pred, {"name": pred[5:]} if pred.startswith("name=") else {})
        entry[rest.lstrip("/")] = value
    return [found[p] for p in sorted(found, key=lambda p: (not p.isdigit(), int(p) if p.isdigit() else 0, p))]


def list_items(parent: ElementTree.Element, m: Member, entries: list[dict[str, Any]]) -> None:
    """Write repeated elements ``m``; each entry maps attribute names (and "" for the value)."""
    t = schema().member_type(m)
    for entry in entries:
        sub = ElementTree.SubElement(parent, f"{{{XNAT}}}{m.name}")
        if t is None:
            sub.text = str(entry.get("", ""))
        else:
            write_type(sub, t, entry, {})


def resource_elements(parent: ElementTree.Element, tag: str, resources: list[Resource]) -> None:
    for res in resources:
        attrs = {
            "label": res.label,
            "URI": res_uri(res),
            "format": res.format,
            "content": res.content,
            "file_count": str(res.file_count),
            "file_size": str(res.file_size),
            f"{{{XSI}}}type": "xnat:resourceCatalog",
        }
        ElementTree.SubElement(parent, f"{{{XNAT}}}{tag}", {k: v for k, v in attrs.items() if v})


def res_uri(res: Resource) -> str:
    kind, _, ref = res.parent.partition(":")
    if kind == "scan":
        experiment, _, scan = ref.partition("/")
        return f"/data/experiments/{experiment}/scans/{scan}/resources/{res.id}"
    return f"/data/{kind}s/{ref}/resources/{res.id}"
