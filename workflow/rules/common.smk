# Parse-time setup (offline: no XNAT request, no file written) and the helpers the rules use.
# Every cluster job parses this again, so it stays cheap: the config, the subject CSV, and after
# discovery the manifest's scans.tsv (stdlib csv, cached).
import functools
import json
import os
import sys

from xnat_prep import config as xnat_config
from xnat_prep import manifest, paths, snakemake_fixes
from xnat_prep.errors import UserError
from xnat_prep.validate_cli import offline_check


def stop(error):
    """Print a user error as one line and stop: a traceback would bury the message."""
    print(f"xnat-prep: error: {error}", file=sys.stderr)
    sys.exit(2)


def config_source():
    """The config file name(s) for messages."""
    return ", ".join(map(str, workflow.overwrite_configfiles)) or "--config"


# The config is checked against workflow/schemas/config.schema.yaml (defaults filled in) by
# offline_check, the same code as `xnat-prep validate`, whose errors name file, row and field;
# snakemake.utils.validate would repeat that work in every job's parse.
try:
    offline_check(config, config_source())
except UserError as error:
    stop(error)

snakemake_fixes.idempotent_group_components()  # reruns with --group-components (see there)

ROOT = os.path.normpath(config["output_root"])  # "results/" and "./results" name one place
UPLOAD = config["upload"]["enabled"]
VARIABLES = config["custom_variables"]["enabled"]
NETWORK_LOCAL = config["cluster"]["network_on_submit_host"]


# The `shell:` steps (download_session, convert_scan) run `xnat-prep` of this Python with the
# config's server and TLS settings from the environment they inherit (see export_for_jobs). A
# `shell:` job starts in ~0.1 s; a `script:` job first imports snakemake (~0.3 s more per job).
try:
    xnat_config.export_for_jobs(config)
except UserError as error:
    stop(error)


pathvars:
    results=ROOT,


wildcard_constraints:
    project=r"[A-Za-z0-9_-]+",
    subject=r"[A-Za-z0-9_-]+",
    session=r"[A-Za-z0-9._-]+",
    scan=r"[A-Za-z0-9._-]+",


# `xnat.max_connections` is the global cap on concurrent XNAT connections (every rule that talks
# to XNAT takes `xnat_api=1`), unless the user set it with `--resources xnat_api=N`. Custom
# resources are global: the cap holds across all jobs, also cluster jobs.
if "xnat_api" not in workflow.global_resources:
    workflow.global_resources["xnat_api"] = config["xnat"]["max_connections"]


def canonical(value):
    """``value`` with every mapping's keys sorted: params compare by text, key order must not count."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


@functools.cache
def read_manifest(path, mtime):
    """scans.tsv as {(project, subject, session): {scan: row}}; cached per file version."""
    sessions = {}
    for row in manifest.read_scans(path):
        sessions.setdefault((row.project, row.subject, paths.safe_component(row.session)), {})[row.scan] = row
    return sessions


def get_sessions():
    """The selected scans by session; raises until the discover checkpoint has run (Snakemake's cue)."""
    if workflow.is_main_process:
        path = checkpoints.discover.get().output.scans
    else:
        # A cluster job: the main process ran discover before it submitted this job, and the
        # checkpoint is not in this job's DAG (checkpoints.discover.get() would fail here).
        path = f"{ROOT}/{paths.SCANS_TSV}"
    return read_manifest(path, os.stat(path).st_mtime_ns)


def get_scan_identity(wildcards):
    """What identifies the scan on XNAT (a param: a change means another scan)."""
    row = get_sessions()[(wildcards.project, wildcards.subject, wildcards.session)][wildcards.scan]
    return {"session_id": row.session_id, "scan_id": row.scan_id, "scan_type": row.scan_type, "resource": row.resource}


def get_session_scan_tasks(wildcards):
    """The session's selected scans as the download step's --scans JSON (a change reruns the session's download)."""
    rows = get_sessions()[(wildcards.project, wildcards.subject, wildcards.session)]
    tasks = [{"scan_id": r.scan_id, "resource": r.resource, "scan": scan} for scan, r in rows.items()]
    return json.dumps(tasks, separators=(",", ":"))


def folder_of(output_key):
    """A param: the folder next to an output receipt (``x/y.json`` -> ``x/y``), where the step puts its files."""
    return lambda wildcards, output: output[output_key][: -len(".json")]


def get_scan_dicom_dir(wildcards, input):
    """A param: the scan's DICOM folder, in the session's folder beside the session download receipt."""
    return f"{input.download[: -len('.json')]}/{wildcards.scan}"


def get_session_id(wildcards):
    """The session's XNAT accession ID."""
    rows = get_sessions()[(wildcards.project, wildcards.subject, wildcards.session)]
    return next(iter(rows.values())).session_id


def get_session_converts(wildcards):
    """The convert receipts of the session's scans (the upload and variables inputs)."""
    key = (wildcards.project, wildcards.subject, wildcards.session)
    return [str(paths.convert_receipt(ROOT, *key, scan)) for scan in get_sessions()[key]]


def get_values_csv(wildcards):
    """The user's values CSV, when configured (a change reruns the variables jobs)."""
    path = config["custom_variables"]["values_csv"]
    return [path] if path else []


def get_report_inputs(wildcards):
    """Everything the report summarises: the manifest and every receipt."""
    sessions = get_sessions()
    return {
        "scans": f"{ROOT}/{paths.SCANS_TSV}",
        "errors": f"{ROOT}/{paths.ERRORS_TSV}",
        "converts": [str(paths.convert_receipt(ROOT, *key, scan)) for key, scans in sessions.items() for scan in scans],
        "uploads": [str(paths.upload_receipt(ROOT, *key)) for key in sessions] if UPLOAD else [],
        "variables": [str(paths.variables_receipt(ROOT, *key)) for key in sessions] if VARIABLES else [],
    }


RUN = {}  # this run's alias token


def report_requested(summary):
    """Whether this run was asked for the run report (the default), not only for some of the work."""
    settings = workflow.dag_settings
    if settings.until or settings.omit_from:
        return False
    targets = set(settings.targets)
    return not targets or bool(targets & {"default", "all", "report", summary})


def start_run():
    """Before the first job: check that credentials are there; mint the run's alias token if asked."""
    from xnat_prep import credentials

    try:
        host = xnat_config.xnat_host(config)
        creds = credentials.resolve(host)
        if config["xnat"]["alias_token"]:
            verify = config["xnat"]["ca_bundle"] or config["xnat"]["verify_tls"]
            RUN.update(host=host, token=credentials.mint_token(host, creds, verify), verify=verify)
            # The jobs find the token where they look for credentials first; never printed.
            os.environ.update(XNAT_USER=RUN["token"].user, XNAT_PASS=RUN["token"].password)
    except UserError as error:
        stop(error)


def finish_run(succeeded):
    """After the last job: revoke the alias token; list the problems in the run report, exit 1 if any."""
    from xnat_prep import credentials, report

    if "token" in RUN:
        try:
            credentials.invalidate_token(RUN["host"], RUN["token"], RUN["verify"])
        except UserError as error:
            print(f"xnat-prep: warning: {error}", file=sys.stderr)
    summary = f"{ROOT}/{paths.SUMMARY_TSV}"
    if not succeeded or not report_requested(summary):
        return
    if not report.covers_manifest(summary, ROOT):
        # Snakemake 9.27 does not add to the run all the jobs that a checkpoint run again finds
        print(
            "xnat-prep: discovery ran again and found work this run did not include; "
            "run the same command again to process it",
            file=sys.stderr,
        )
        sys.exit(1)
    problems = report.problems(summary)
    for line in problems:
        print(f"xnat-prep: problem: {line}", file=sys.stderr)
    if problems:
        print(f"xnat-prep: {len(problems)} problem(s); details in {summary}", file=sys.stderr)
        if manifest.read_errors(f"{ROOT}/{paths.ERRORS_TSV}"):
            print("xnat-prep: to list the subjects on XNAT again once fixed, add: -R discover", file=sys.stderr)
        sys.exit(1)
