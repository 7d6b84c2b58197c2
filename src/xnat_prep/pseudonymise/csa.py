"""Siemens CSA headers (private (0029,xx10) image and (0029,xx20) series headers): read, write,
and the rebuild that keeps only what dcm2niix reads.

The format ("CSA2", starting ``SV10``) is the one nibabel's ``nicom.csareader`` documents: a
header (``SV10`` ``\\4\\3\\2\\1`` n_tags, 77), then per tag a 64-byte name, vm, a 4-byte VR,
syngodt, n_items, 77/205; per item four int32 (the second is the value's length) and the value
padded to a multiple of 4. ``write`` zeroes what follows the NUL of each fixed-size name and VR
field and drops bytes after the last tag; otherwise ``write(read(b))`` reproduces ``b``.

The series header of real Siemens files carries the original reference-image UIDs, the
software baseline, patient weight and a patient registration pattern; the image header carries
acquisition parameters only. dcm2niix reads the series header's ``MrPhoenixProtocol`` ASCCONV
block (between ``### ASCCONV BEGIN`` and ``### ASCCONV END ###``) and the image header's tags.
So the series header is rebuilt with that one tag, its text cut to the ASCCONV block with
lines that hold UIDs removed; the image header is kept, its string values cleaned.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

_HEAD = b"SV10\x04\x03\x02\x01"
_TAG = struct.Struct("<64si4siii")
_ASCCONV = re.compile(rb"### ASCCONV BEGIN[^\n]*\n.*?### ASCCONV END ###", re.DOTALL)
# ASCCONV lines whose value is an original UID (reference images) or that name a person/site.
_ASCCONV_DROP = re.compile(
    rb"^\s*(tReferenceImage\d*|\S*(UID|Uid|Patient|Operator|Institution|Serial)\S*)\s*=.*$\n?", re.MULTILINE
)
_QUOTED = re.compile(rb'""([^"\n]*)""')
_UID_IN_TEXT = re.compile(rb"\b[0-9]+(\.[0-9]+){4,}\b")


class CSAError(ValueError):
    pass


@dataclass
class CSATag:
    name: bytes
    vm: int
    vr: bytes
    syngodt: int
    last: int  # 77 or 205, kept as read
    items: list[tuple[tuple[int, int, int, int], bytes]] = field(default_factory=list)


@dataclass
class CSAHeader:
    unused: int
    tags: list[CSATag]


def is_csa2(data: bytes) -> bool:
    return data[:8] == _HEAD


def read(data: bytes) -> CSAHeader:
    """Parse a CSA2 header; CSAError if it is not one (CSA1, truncated, ...)."""
    if not is_csa2(data):
        raise CSAError("not a CSA2 header")
    try:
        n_tags, unused = struct.unpack_from("<II", data, 8)
        pos, tags = 16, []
        for _ in range(n_tags):
            name, vm, vr, syngodt, n_items, last = _TAG.unpack_from(data, pos)
            pos += _TAG.size
            tag = CSATag(name, vm, vr, syngodt, last)
            for _ in range(n_items):
                xx = struct.unpack_from("<4i", data, pos)
                pos += 16
                length = xx[1]
                if length < 0 or pos + length > len(data):
                    raise CSAError("item runs past the end")
                tag.items.append((xx, data[pos : pos + length]))
                pos += (length + 3) // 4 * 4
            tags.append(tag)
    except struct.error as exc:
        raise CSAError(f"truncated: {exc}") from None
    return CSAHeader(unused, tags)


def write(header: CSAHeader) -> bytes:
    out = [_HEAD, struct.pack("<II", len(header.tags), header.unused)]
    for t in header.tags:
        # Names and VRs are NUL-terminated in fixed fields: the bytes after the NUL are whatever
        # was in the scanner's memory (in real files: the station name). They are zeroed.
        name, vr = t.name.split(b"\0", 1)[0], t.vr.split(b"\0", 1)[0]
        out.append(_TAG.pack(name, t.vm, vr, t.syngodt, len(t.items), t.last))
        for xx, value in t.items:
            out.append(struct.pack("<4i", xx[0], len(value), xx[2], xx[3]))
            out.append(value + b"\0" * (-len(value) % 4))
    return b"".join(out)


def _name(tag: CSATag) -> str:
    return tag.name.split(b"\0", 1)[0].decode("latin-1")


def _with_value(xx: tuple[int, int, int, int], value: bytes) -> tuple[tuple[int, int, int, int], bytes]:
    # In CSA2 the 1st, 2nd and 4th int of an item all hold the value's length.
    return (len(value), len(value), xx[2], len(value)), value


def clean_image_header(data: bytes, clean_text: Callable[[str], str | None]) -> bytes:
    """The image header with each string value passed through ``clean_text`` (None: emptied)."""
    header = read(data)
    for tag in header.tags:
        if tag.vr.split(b"\0", 1)[0] not in (b"LO", b"SH", b"LT", b"ST", b"UT", b"UN", b"CS", b"UI", b"PN"):
            continue
        items = []
        for xx, value in tag.items:
            text = value.split(b"\0", 1)[0].decode("latin-1")
            cleaned = clean_text(text)
            if cleaned != text:
                value = (cleaned or "").encode("latin-1") + b"\0"
                xx, value = _with_value(xx, value)
            items.append((xx, value))
        tag.items = items
    return write(header)


def rebuild_series_header(data: bytes, clean_text: Callable[[str], str | None]) -> bytes:
    """The series header reduced to ``MrPhoenixProtocol``'s ASCCONV block: UID lines removed,
    quoted string values passed through ``clean_text``.

    A header without an ASCCONV block becomes an empty CSA2 header (no tags).
    """
    header = read(data)
    kept = []
    for tag in header.tags:
        if _name(tag) not in ("MrPhoenixProtocol", "MrProtocol") or not tag.items:
            continue
        xx, value = tag.items[0]
        m = _ASCCONV.search(value)
        if not m:
            continue
        text = _ASCCONV_DROP.sub(b"", m.group(0))
        text = _UID_IN_TEXT.sub(b"0", text)
        text = _QUOTED.sub(
            lambda q: b'""' + (clean_text(q.group(1).decode("latin-1")) or "").encode("latin-1") + b'""', text
        )
        kept.append(
            CSATag(tag.name, tag.vm, tag.vr, tag.syngodt, tag.last, [_with_value(xx, text + b"\n\0")])
        )
    return write(CSAHeader(header.unused, kept))
