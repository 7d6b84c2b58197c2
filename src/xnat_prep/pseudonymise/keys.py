"""The secret key and every value derived from it: UIDs, date offsets, pseudonyms, fingerprint.

Everything here is a pure function of (key, input): any job on any node computes the same
mapping with no shared state. Sub-keys are separated by HKDF-SHA256 labels that carry an
algorithm version ("uid-v1"), so a change of algorithm is explicit and never silent.

The key is read from a file that only its owner can read; its path comes from an argument or
``XNAT_PREP_PSEUDO_KEY_FILE``. The key itself never appears in arguments, logs or receipts:
they carry ``fingerprint`` (16 hex digits of an HMAC of a fixed label), never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from xnat_prep.errors import UserError

KEY_FILE_ENV = "XNAT_PREP_PSEUDO_KEY_FILE"
MIN_KEY_BYTES = 16
# Offsets are whole days in [-MAX_OFFSET_DAYS, -MIN_OFFSET_DAYS]: always into the past, never by
# less than a year (a shift of a few days hides little).
MIN_OFFSET_DAYS = 365
MAX_OFFSET_DAYS = 3652
WELL_KNOWN_UID_ROOT = "1.2.840.10008."


def _hkdf(master: bytes, label: str, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) with an empty salt and ``label`` as the info string."""
    prk = hmac.new(b"\0" * 32, master, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + label.encode() + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


@dataclass(frozen=True)
class Key:
    """A master key and the sub-keys derived from it. ``repr`` never shows the key."""

    master: bytes = field(repr=False)
    namespace: str = ""  # keeps two projects pseudonymised with one key from linking to each other

    def __post_init__(self) -> None:
        if len(self.master) < MIN_KEY_BYTES:
            raise UserError(f"pseudonymisation key too short: need at least {MIN_KEY_BYTES} bytes")
        ns = self.namespace.encode() + b"\0"
        object.__setattr__(self, "_uid", hmac.new(_hkdf(self.master, "xnat-prep uid-v1"), ns, "sha256"))
        object.__setattr__(self, "_date", hmac.new(_hkdf(self.master, "xnat-prep date-v1"), ns, "sha256"))
        object.__setattr__(self, "_id", hmac.new(_hkdf(self.master, "xnat-prep id-v1"), ns, "sha256"))

    @property
    def fingerprint(self) -> str:
        """Which key (and namespace) made a dataset, without revealing the key."""
        label = b"xnat-prep key-id v1\0" + self.namespace.encode()
        return hmac.new(self.master, label, hashlib.sha256).hexdigest()[:16]

    def uid(self, original: str) -> str:
        """``2.25.<int>`` of a UUID version 8 made from HMAC-SHA256 of the UID (≤ 44 characters)."""
        mac = self._uid.copy()  # type: ignore[attr-defined]
        mac.update(original.encode("ascii", "replace"))
        b = bytearray(mac.digest()[:16])
        b[6] = (b[6] & 0x0F) | 0x80  # version 8
        b[8] = (b[8] & 0x3F) | 0x80  # RFC 9562 variant
        return "2.25." + str(int.from_bytes(b, "big"))

    def date_offset_days(self, subject_id: str) -> int:
        """The subject's whole-day shift (negative): the same for every session of the subject."""
        mac = self._date.copy()  # type: ignore[attr-defined]
        mac.update(subject_id.encode())
        n = int.from_bytes(mac.digest()[:8], "big")
        return -(MIN_OFFSET_DAYS + n % (MAX_OFFSET_DAYS - MIN_OFFSET_DAYS + 1))

    def pseudonym(self, subject_id: str) -> str:
        """A PatientID/PatientName for the subject when no mapping CSV gives one."""
        mac = self._id.copy()  # type: ignore[attr-defined]
        mac.update(subject_id.encode())
        return "PSN" + mac.hexdigest()[:13].upper()


def key_file_path(explicit: str | Path | None) -> Path:
    """The key file: ``explicit`` if given, else ``$XNAT_PREP_PSEUDO_KEY_FILE``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(KEY_FILE_ENV)
    if not env:
        raise UserError(
            f"no pseudonymisation key: pass --key-file or set {KEY_FILE_ENV} to the key file's path"
        )
    return Path(env)


def load_key(path: str | Path | None = None, namespace: str = "") -> Key:
    """Read the key file (``path`` or the environment's); refused unless only its owner can read it."""
    path = key_file_path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise UserError(f"{path}: key file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the key file ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path}: key file is not a regular file")
        if st.st_mode & 0o077:
            raise UserError(
                f"{path}: key file is readable or writable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                f"chmod 600 {path}"
            )
        if st.st_uid != os.geteuid():
            raise UserError(f"{path}: key file is not owned by the user running xnat-prep")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            master = fh.read().strip()
    finally:
        os.close(fd)
    if len(master) < MIN_KEY_BYTES:
        raise UserError(f"{path}: key file holds {len(master)} bytes, need at least {MIN_KEY_BYTES}")
    return Key(master, namespace)


def new_key_file(path: str | Path) -> Path:
    """Create a new random 256-bit key file (hex text), mode 600; refuses to overwrite one."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UserError(f"{path}: already exists (a key is never overwritten)") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(os.urandom(32).hex() + "\n")
    return path


def is_well_known(uid: str) -> bool:
    """A UID the standard defines (SOP classes, transfer syntaxes, ...): never remapped."""
    return uid.startswith(WELL_KNOWN_UID_ROOT)
