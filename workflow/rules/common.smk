# Parse-time setup (offline: no XNAT request, no file written) and the helpers the rules use.
# Every cluster job parses this again, so it stays cheap: the config, the subject CSV, and after
# discovery the manifest's scans.tsv (stdlib csv, cached). Anything that touches Snakemake beyond
# its documented API is in xnat_prep.snakemake_compat; the run's start and end in xnat_prep.run.
import functools
import json
import os
import shlex
import sys
import time

from xnat_prep import config as xnat_config
from xnat_prep import manifest, paths, process, run, slots, snakemake_compat
from xnat_prep.errors import UserError
from xnat_prep.importing import sheet as import_sheet


def stop(error):
    """Print a user error as one line and stop: a traceback would bury the message."""
    print(f"xnat-prep: error: {error}", file=sys.stderr)
    sys.exit(2)


# The config is checked against the schema shipped in the package (defaults filled in), the
# same code as `xnat-prep validate`, whose errors name file, row and field. The jobs get the
# server, TLS and connection settings through the environment they inherit (export_for_jobs),
# not params: no rerun trigger, no secret.
try:
    xnat_config.offline_check(config, snakemake_compat.config_source(workflow))
    xnat_config.export_for_jobs(config)
except UserError as error:
    stop(error)

# Snakemake's process (and each cluster job's) exits ~0.3 s sooner (xnat_prep.process)
process.exit_without_final_collection()
snakemake_compat.idempotent_group_components()  # acts only with --group-components N > 1
# The steps that talk to XNAT each take `xnat_api=1`. Custom resources are global, so this caps
# the connections across all jobs, also cluster jobs (`--resources xnat_api=N` overrides it).
# A download job holds k units and opens k connections (get_download_slots).
snakemake_compat.shared_resource(workflow, "xnat_api", config["xnat"]["max_connections"])
NETWORK_CAP = snakemake_compat.resource_limit(workflow, "xnat_api")

ROOT = os.path.normpath(config["output_root"])  # "results/" and "./results" name one place
try:
    PSEUDO = xnat_config.pseudonymisation(config)  # None when off; the key stays in its file
except UserError as error:
    stop(error)
UPLOAD = config["upload"]["enabled"]
VARIABLES = config["custom_variables"]["enabled"]
NETWORK_LOCAL = config["cluster"]["network_on_submit_host"]
# dicom.store: "zip" keeps one verified zip per scan (x.zip beside the receipt x.json) instead of
# the folder x/; conversion unpacks it in node-local temp space (dicom.local_tmp, exported to jobs)
DICOM_STORE = config["dicom"]["store"]
ZIP = DICOM_STORE == "zip"


pathvars:
    results=ROOT,


wildcard_constraints:
    project=r"[A-Za-z0-9_-]+",
    subject=r"[A-Za-z0-9_-]+",
    session=r"[A-Za-z0-9._-]+",
    scan=r"[A-Za-z0-9._-]+",


def output_root(key, template):
    """A param: ``output_root`` as seen from the output ``key`` (which is ``template`` under it)."""
    return lambda wildcards, output: str(paths.root_of(output[key], template))


def folder_of(key):
    """A param: the folder beside the output receipt ``key`` (paths.outputs_of), where the step writes."""
    return lambda wildcards, output: str(paths.outputs_of(output[key]))


def dicom_of(key):
    """A param: where a DICOM step writes beside the output receipt ``key``: its folder, or in zip
    mode the zip of that name (paths.zip_of)."""
    if ZIP:
        return lambda wildcards, output: str(paths.zip_of(paths.outputs_of(output[key])))
    return folder_of(key)


def as_json(value):
    """A param holding ``value`` as compact JSON with sorted keys: params compare by text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@functools.cache
def read_manifest(path, mtime):
    """scans.tsv as {(project, subject, session): {scan: row}}; cached per file version."""
    sessions = {}
    for row in manifest.read_scans(path):
        sessions.setdefault((row.project, row.subject, paths.safe_component(row.session)), {})[row.scan] = row
    return sessions


def get_subjects_csv(wildcards):
    """The subject CSV; without one (an import-only config) the download direction stops here."""
    try:
        return xnat_config.require_subjects(config)
    except UserError as error:
        stop(error)


# scans.tsv once the discover checkpoint has been seen done in this process. Snakemake only ever
# adds to the checkpoint outputs it knows to exist, so once checkpoints.discover.get() has returned
# it returns for the rest of the process; asking it again for each of the ~10 calls per session
# was about 5% of a 10,000-scan DAG build (it expands the checkpoint's output each time).
DISCOVERED = []


def get_sessions():
    """The selected scans by session; raises until the discover checkpoint has run (Snakemake's cue).
    O(1) per call once discovered: one stat (a rerun discovery mid-run gives a new mtime, so a new read)."""
    if not DISCOVERED:
        if snakemake_compat.is_main_process(workflow):
            DISCOVERED.append(checkpoints.discover.get().output.scans)
        else:
            # A cluster job: the main process ran discover before it submitted this job, and the
            # checkpoint is not in this job's DAG (checkpoints.discover.get() would fail here).
            DISCOVERED.append(f"{ROOT}/{paths.SCANS_TSV}")
    return read_manifest(*manifest_version())


def manifest_version():
    """(path, mtime) of scans.tsv: what the caches here are keyed on (call get_sessions() first)."""
    path = DISCOVERED[0]
    return path, os.stat(path).st_mtime_ns


@functools.cache
def cached_session_receipts(version, receipt):
    """``receipt`` (a paths builder) of every selected session, built once per manifest version."""
    return tuple(str(receipt(ROOT, *key)) for key in read_manifest(*version))


def session_receipts(receipt):
    """``receipt`` (a paths builder, e.g. paths.upload_receipt) of every selected session."""
    get_sessions()  # raises until discovered
    return list(cached_session_receipts(manifest_version(), receipt))


def session_rows(wildcards):
    return get_sessions()[(wildcards.project, wildcards.subject, wildcards.session)]


def get_download_slots(wildcards):
    """The download job's units of the xnat_api cap: one per scan in flight, at most
    xnat.scans_in_parallel (auto: the cap shared out over the sessions), the session's scans and
    the cap (Snakemake's limit is twice the cap with the slot pool)."""
    k = xnat_config.scans_in_parallel(config["xnat"]["scans_in_parallel"], NETWORK_CAP, len(get_sessions()))
    return max(1, min(k, len(session_rows(wildcards)), NETWORK_CAP))


def get_session_scan_tasks(wildcards):
    """The session's selected scans as the download step's --scans JSON (a change reruns the session's download)."""
    tasks = [
        {"scan_id": r.scan_id, "resource": r.resource, "scan": scan}
        for scan, r in session_rows(wildcards).items()
    ]
    return as_json(tasks)


def get_scan_dicom_dir(wildcards):
    """The scan's DICOM folder, in the session's folder beside the session download receipt
    (zip mode: the scan's zip there)."""
    key = (wildcards.project, wildcards.subject, wildcards.session, wildcards.scan)
    return str(paths.dicom_zip(ROOT, *key) if ZIP else paths.dicom_dir(ROOT, *key))


def get_subject_id(wildcards):
    """The subject's XNAT accession ID (stable: the pseudonymised dates and names derive from it)."""
    return next(iter(session_rows(wildcards).values())).subject_id


def get_pseudo_receipts(wildcards):
    """What a session's conversion reads when pseudonymisation is on: its scans' pseudonymised DICOM
    (without it, convert_session reads the session's download receipt, a plain path, no function per job)."""
    key = (wildcards.project, wildcards.subject, wildcards.session)
    return [str(paths.pseudo_receipt(ROOT, *key, scan)) for scan in session_rows(wildcards)]


def get_convert_source(wildcards):
    """The session folder the conversion reads: each scan's DICOM in <scan>/ beside <scan>.json."""
    key = (wildcards.project, wildcards.subject, wildcards.session)
    if PSEUDO:
        return str(paths.pseudo_session_dir(ROOT, *key))
    return str(paths.outputs_of(paths.session_download_receipt(ROOT, *key)))


def get_session_convert_scans(wildcards):
    """The session's selected scans as the convert step's --scans JSON (a change reruns the session's
    conversion, which converts only the scans not done with these settings)."""
    return as_json(
        [
            {"scan": scan, "scan_id": r.scan_id, "scan_type": r.scan_type}
            for scan, r in session_rows(wildcards).items()
        ]
    )


def get_pseudo_options(wildcards):
    """The pseudonymise command's profile options (a param: a change pseudonymises again)."""
    words = [f"--profile-option={o}" for o in PSEUDO["options"]]
    words += [f"--override={o}" for o in PSEUDO["overrides"]]
    words += [f"--namespace={PSEUDO['namespace']}"] if PSEUDO["namespace"] else []
    words += [f"--mapping={PSEUDO['mapping_csv']}"] if PSEUDO["mapping_csv"] else []
    return " ".join(shlex.quote(w) for w in words)


def get_pseudo_labels(wildcards):
    """The session's XNAT labels, cleaned out of the text the pseudonymised files keep (a param)."""
    row = next(iter(session_rows(wildcards).values()))
    return " ".join(shlex.quote(f"--label={label}") for label in (row.project, row.subject, row.session))


def get_session_id(wildcards):
    """The session's XNAT accession ID."""
    return next(iter(session_rows(wildcards).values())).session_id


def get_values_csv(wildcards=None):
    """The user's values CSV, when configured (a change reruns the variables jobs)."""
    path = config["custom_variables"]["values_csv"]
    return [path] if path else []


# Inputs that do not depend on the job: values, not functions (a function costs Snakemake a call
# and a signature inspection per job, and there are 10,000 sessions at ADNI scale).
VALUES_CSV = get_values_csv()


def get_report_inputs(wildcards):
    """Everything the report summarises: the manifest and every receipt."""
    return {
        "scans": f"{ROOT}/{paths.SCANS_TSV}",
        "errors": f"{ROOT}/{paths.ERRORS_TSV}",
        "converts": session_receipts(paths.session_convert_receipt),
        "uploads": session_receipts(paths.upload_receipt) if UPLOAD else [],
        "variables": session_receipts(paths.variables_receipt) if VARIABLES else [],
    }


# Snakemake runs no onsuccess (so no problem list, exit 0) when there is "Nothing to be done",
# and --forcerun cannot be set from a Snakefile (the DAG settings arrive after the parse). So while
# the last report lists problems, the report rule gets a param that is new for every run (a rerun
# trigger): the report is rebuilt (a second or two), and the run's end lists what still stands and
# exits 1. Once nothing stands the param is "" and a finished study is "Nothing to be done" again.
STANDING = (
    str(time.time_ns())
    if snakemake_compat.is_main_process(workflow) and run.problems_standing(config)
    else ""
)


RUN = run.RunState()


def start_run():
    """Before the first job: credentials are there; the connection-slot pool; the run's alias
    token, if asked; a warning if Ctrl-C cannot stop this head."""
    global RUN
    # When the jobs that talk to XNAT run on this host, their connections hold the cap
    # themselves: N slots shared through flock (xnat_prep.slots), taken at a job's first request.
    # Snakemake may then start jobs for 2N units, so the next jobs have started and wait, ready,
    # while the running ones transfer: no connection idles while a job starts. Jobs on cluster
    # nodes keep Snakemake's cap alone. Decided here: only now does Snakemake know the executor.
    cluster = snakemake_compat.cluster_executor(workflow)
    local = slots.connection_pool_wanted(cluster, NETWORK_LOCAL)
    try:
        RUN = run.start(config, pool_size=NETWORK_CAP if local else None)
    except UserError as error:
        stop(error)
    if RUN.pool:
        snakemake_compat.raise_scheduler_limit(workflow, "xnat_api", 2 * NETWORK_CAP)
    warning = run.interrupt_warning(cluster)
    if warning:
        print(warning, file=sys.stderr)


def finish_run(succeeded):
    """After the last job: revoke the token; list the problems still standing, exit 1 if any."""
    full_run = snakemake_compat.report_requested(
        workflow, {"default", "all", "report", f"{ROOT}/{paths.SUMMARY_TSV}"}
    )
    outcome = run.finish(config, RUN, succeeded=succeeded, full_run=full_run)
    for line in outcome.lines:
        print(line, file=sys.stderr)
    if outcome.exit_code:
        sys.exit(outcome.exit_code)


# -- the upload direction (rules/import.smk) -------------------------------------------------------
# The import CSV is read at parse time (offline: its cells only, no DICOM).
IMPORT = config["import"]
IMPORT_ROWS = (
    {r.key: r for r in import_sheet.read_imports(IMPORT["csv"], IMPORT["columns"])} if IMPORT["csv"] else {}
)
RESOURCES = config["upload_resources"]
PUSH = config["push"]
# Imports in flight over the whole run: each import job holds one slot until its session is in
# the archive (`--resources xnat_imports=N` overrides it).
snakemake_compat.default_resource(workflow, "xnat_imports", IMPORT["max_in_flight"])


def get_import_row(wildcards):
    """The row's cells (a param: editing a row reruns only that row's import)."""
    row = IMPORT_ROWS[f"{wildcards.project}/{wildcards.subject}/{wildcards.session}"]
    return as_json(
        {
            "source": str(row.source),
            "dest": row.dest,
            "on_conflict": row.on_conflict,
            "ignore_unparsable": row.ignore_unparsable,
        }
    )


def import_options():
    """The import settings as the command's options (params: changing one reruns the imports)."""
    flags = ["--wait-seconds", str(IMPORT["wait_seconds"])]
    flags += ["--archive-pending"] if IMPORT["archive_pending"] else []
    flags += [] if IMPORT["trigger_pipelines"] else ["--no-trigger-pipelines"]
    flags += ["--direct-archive"] if IMPORT["direct_archive"] else []
    flags += ["--server-rewrites-dicom"] if IMPORT["server_rewrites_dicom"] else []
    return " ".join(flags)


def column_options(columns):
    """A CSV's column map as --column options (quoted for the shell)."""
    return " ".join(
        shlex.quote(f"--column={key}={header}") for key, header in sorted(columns.items()) if header
    )


def get_import_receipts(wildcards):
    """Every row's import receipt."""
    return [str(paths.import_receipt(ROOT, *key.split("/"))) for key in IMPORT_ROWS]


def get_resources_receipts(wildcards=None):
    """One receipt per session of the resources CSV."""
    rows = import_sheet.read_resources(RESOURCES["csv"], RESOURCES["columns"]) if RESOURCES["csv"] else []
    keys = dict.fromkeys((r.project, r.subject, r.session) for r in rows)
    return [str(paths.resources_receipt(ROOT, *key)) for key in keys]


def import_root(wildcards, output):
    """``output_root`` as seen from an import receipt."""
    return str(paths.root_of(output.receipt, paths.IMPORT_RECEIPT.format(**dict(wildcards.items()))))


def get_push_input(wildcards):
    """What the push reads: every selected scan's pseudonymise receipt (the step's output), or the
    configured ``push.source_dir``."""
    if not PUSH["enabled"]:
        stop("push: push.enabled is false: set push.enabled and push.project (config/README.md)")
    if PUSH["source_dir"]:
        return {"source": PUSH["source_dir"]}
    keys = [(key, scan) for key, scans in get_sessions().items() for scan in scans]
    found = {"pseudo": [str(paths.pseudo_receipt(ROOT, *key, scan)) for key, scan in keys]}
    if PUSH["nifti"] or PUSH["variables"]:  # onto the copies too: the conversions first
        found["converts"] = session_receipts(paths.session_convert_receipt)
        found["values"] = get_values_csv(wildcards) if PUSH["variables"] else []
    return found


def push_source():
    """The push command's source options: the pseudonymise output under the output root (and what
    goes onto the copies after the DICOM), or a folder."""
    if PUSH["source_dir"]:
        return f"--source-dir {shlex.quote(PUSH['source_dir'])}"
    words = ["--pseudonymised"]
    if PUSH["nifti"]:
        words.append(f"--nifti-resource={config['upload']['resource']}")
    if PUSH["variables"]:
        cv = config["custom_variables"]
        words += ["--variables", f"--prefix={cv['prefix']}", f"--derived={as_json(cv['derived'])}"]
        words += [f"--values-csv={cv['values_csv']}"] if cv["values_csv"] else []
    return " ".join(shlex.quote(w) for w in words)


# -- BIDS output (rules/bids.smk), on when bids.mapping is set ---------------------------------------
BIDS = config["bids"]


def bids_options():
    """The BIDS commands' options: strictness and, pseudonymised, where the pseudonyms come from
    (params: a change re-lints and rebuilds; the key's fingerprint, never the key)."""
    words = ["--strict"] if BIDS["strict"] else []
    if PSEUDO:
        words += ["--pseudonymised", f"--namespace={PSEUDO['namespace']}"]
        words += [f"--mapping-csv={PSEUDO['mapping_csv']}"] if PSEUDO["mapping_csv"] else []
    return " ".join(shlex.quote(w) for w in words)


# With BIDS on, a download waits for the plan, whose lint of the mapping stops the run on errors
# (ancient: a re-plan does not download again). A value, not a function: the same for every job.
BIDS_GATE = [ancient(f"{ROOT}/{paths.PLAN_TSV}")] if BIDS["mapping"] else []


def get_bids_inputs(wildcards):
    """What the dataset is built from: the mapping, the manifest and every convert receipt."""
    return {
        "mapping": BIDS["mapping"],
        "scans": f"{ROOT}/{paths.SCANS_TSV}",
        "converts": session_receipts(paths.session_convert_receipt),
    }


def get_bids_targets(wildcards=None):
    """The BIDS receipts the `all` rule asks for (none while BIDS is off)."""
    if not BIDS["mapping"]:
        return []
    targets = [f"{ROOT}/{paths.BIDS_RECEIPT}"]
    return targets + ([f"{ROOT}/{paths.BIDS_VALIDATE_RECEIPT}"] if BIDS["validate"] else [])
