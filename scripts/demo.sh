#!/usr/bin/env bash
# The main job, end to end: set up, start the bundled XNAT-compatible server with a demo study,
# run the whole workflow against it, and print where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec xnat-prep demo "$@"
