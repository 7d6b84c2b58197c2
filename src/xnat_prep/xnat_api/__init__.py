"""The XNAT access layer: every request the product sends to XNAT goes through this package.

- ``http``: the policy (retries with jittered backoff and ``Retry-After`` within a time budget;
  Basic → JSESSION reuse and transparent re-login; TLS verification with a CA bundle and a loud
  warning when off; a request counter; a redacted debug log) and its errors.
- ``client``: the calls the steps make (listings, files, resources, custom variables, tokens).
- ``objects``: xnatpy's object model on the same policy (the import service).

No other module of the product imports ``requests`` or ``xnat`` (``tests/unit/test_architecture.py``).
"""

from xnat_prep.xnat_api.client import Client
from xnat_prep.xnat_api.http import (
    CHUNK,
    AccessDenied,
    Connection,
    Corrupt,
    CredentialsRefused,
    NotFound,
    Response,
    RetryPolicy,
    Session,
    Unreachable,
    XnatError,
    check_length,
    copy_hashing,
    public_url,
    refuse_html,
    stream_to,
)

__all__ = [
    "CHUNK",
    "AccessDenied",
    "Client",
    "Connection",
    "Corrupt",
    "CredentialsRefused",
    "NotFound",
    "Response",
    "RetryPolicy",
    "Session",
    "Unreachable",
    "XnatError",
    "check_length",
    "copy_hashing",
    "public_url",
    "refuse_html",
    "stream_to",
]
