"""Print, as JSON, the rules whose jobs a cluster executor would run on the submitting host.

A dry-run does not say which jobs are local (Snakemake hides it: "we don't know how the user
wants to execute"), so the cluster-job count needs the workflow's own answer for the config in
use: a rule outside any group that is in ``localrules`` or has nothing to run. This loads the
workflow through Snakemake's API (parse only, nothing is executed).

    python -m bench.localrules SNAKEFILE WORKDIR CONFIGFILE...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings


def main(snakefile: str, workdir: str, *configfiles: str) -> None:
    with SnakemakeApi(OutputSettings()) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(configfiles=[Path(c) for c in configfiles]),
            storage_settings=StorageSettings(),
            snakefile=Path(snakefile),
            workdir=Path(workdir),
        )
        wf = workflow_api._workflow  # no public accessor for the parsed rules
        local = sorted(r.name for r in wf.rules if r.name in wf._localrules or r.norun)
    print(json.dumps(local))


if __name__ == "__main__":
    main(*sys.argv[1:])
