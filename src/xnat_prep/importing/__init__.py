"""The upload direction: DICOM sessions, resource files and pseudonymised copies into XNAT.

- ``sheet``: the import and resources CSVs (offline checks, column maps).
- ``local``: the local preflight (headers only, one study per row, md5 per file).
- ``decide``: the cheap look at XNAT and the per-row decision (by UIDs and file counts).
- ``zipbody``: the import request's zip, made while it is sent.
- ``sessions``: ``import_csv()``: plan, import, wait for the archive, verify, receipts.
- ``resources``: ``upload_resources()``: files into scan or session resources.
- ``push``: pseudonymised session folders into a target project, through ``import_csv``.
"""
