"""``xnat-prep server``: run the bundled XNAT-compatible server in the foreground.

Prints the server URL (``http://127.0.0.1:PORT``, or https with --tls-cert) as the first line of
stdout, logs one JSON line per request to DATA_DIR/requests.jsonl, and stops cleanly on SIGINT or
SIGTERM. Without --users there is one account, admin/admin, fit for a local demo only.
"""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
import threading
from pathlib import Path
from types import FrameType

from xnat_prep.errors import UserError
from xnat_prep.server import faults as faults_module
from xnat_prep.server import model as model_module
from xnat_prep.server import options as options_module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "fault SPEC (comma-separated key=value):\n" + faults_module.__doc__.split("::", 1)[1]
    parser.add_argument("--data-dir", required=True, type=Path, help="where the database and files live")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one (default 8080)")
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=900.0,
        metavar="S",
        help="log a session out after S seconds without requests (default 900, as XNAT)",
    )
    parser.add_argument("--faults", metavar="SPEC", help="inject faults, e.g. seed=7,error=0.2,path=/files")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate (chain) to serve https")
    parser.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    parser.add_argument(
        "--users",
        type=Path,
        metavar="FILE",
        help="users file (see `xnat-prep users`); replaces the default admin/admin account",
    )
    add_answer_options(parser)
    add_model_options(parser)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """A real XNAT's costs on this server (server.model; docs/server.md): latency and rate caps."""
    group = parser.add_argument_group(
        "server model",
        "make this loopback server cost what a real XNAT on a real network costs; a preset's values "
        "can be replaced one by one (0 switches one off); rates in MB/s (10**6 bytes)",
    )
    group.add_argument(
        "--model",
        choices=sorted(model_module.PRESETS),
        help="a named preset: campus = 50 ms per request, 40 MB/s per connection, 125 MB/s for the "
        "whole server, zips built at 30 MB/s (default: none, loopback as it is)",
    )
    group.add_argument("--latency-ms", type=float, metavar="MS", help="wait MS before answering each request")
    group.add_argument("--conn-mb-s", type=float, metavar="R", help="at most R MB/s per connection")
    group.add_argument(
        "--server-mb-s", type=float, metavar="R", help="at most R MB/s for all connections together"
    )
    group.add_argument(
        "--zip-mb-s", type=float, metavar="R", help="zips (?format=zip) are built at most R MB/s each"
    )


def run(args: argparse.Namespace) -> int:
    from xnat_prep.server.app import XNATServer
    from xnat_prep.server.auth import Auth, User, hash_password, load_users_file
    from xnat_prep.server.faults import Faults, parse_spec
    from xnat_prep.server.store import Store

    if bool(args.tls_cert) != bool(args.tls_key):
        raise UserError("--tls-cert and --tls-key go together")
    plan = parse_spec(args.faults) if args.faults else None
    if args.users:
        users = load_users_file(args.users)
    else:
        users = {"admin": User("admin", hash_password("admin"), admin=True)}
        print(
            "xnat-prep server: no --users file: the only account is admin/admin. "
            "This is for a local demo only; never expose this server.",
            file=sys.stderr,
            flush=True,
        )
    context = None
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"{args.tls_cert}: cannot load certificate/key: {exc}") from exc
    model = model_module.build(args.model, args.latency_ms, args.conn_mb_s, args.server_mb_s, args.zip_mb_s)
    options = options_module.from_settings(
        args.dicom_file_name_template, args.anonymize, args.anonymize_script, model
    )
    args.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(args.data_dir)
    auth = Auth(store, users, args.session_timeout)
    try:
        server = XNATServer((args.host, args.port), store, auth, Faults(plan), context, options)
    except OSError as exc:
        store.close()
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(server.url, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        store.close()
    return 0


def add_answer_options(parser: argparse.ArgumentParser) -> None:
    """The options that change what the server answers (``server.options.Options``)."""
    parser.add_argument(
        "--dicom-file-name-template",
        default=options_module.DEFAULT_NAME_TEMPLATE,
        metavar="T",
        help="name archived DICOM files with this template, as XNAT's dicomFileNameTemplate "
        "(default: XNAT's, ${StudyInstanceUID}-${SeriesNumber}-${InstanceNumber}-"
        "${HashSOPClassUIDWithSOPInstanceUID}; .dcm is added without an extension)",
    )
    parser.add_argument(
        "--anonymize",
        action="store_true",
        help="rewrite imported DICOM with XNAT's default anonymization script, as a site with its "
        "site-wide script enabled: (0008,1030) := project, (0010,0010) := subject, (0010,0020) := session",
    )
    parser.add_argument(
        "--anonymize-script",
        type=Path,
        metavar="FILE",
        help="rewrite imported DICOM with this DicomEdit script instead (a subset: :=, - removal, "
        "conditions with = != ~; see docs/server.md)",
    )
