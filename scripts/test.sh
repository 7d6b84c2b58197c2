#!/usr/bin/env bash
# The test command: set up, start the local Slurm cluster when we can (root + apt), lint, run pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slurm"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

if [ "${XNAT_PREP_SLURM:-auto}" != 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  bash scripts/slurm-local.sh start
  trap 'bash scripts/slurm-local.sh stop' EXIT
fi

ruff check .
ruff format --check .
snakefmt --check workflow Snakefile
rc=0
python -m pytest "$@" || rc=$?
# pytest exits 5 when it collected no test: treat that as a failure of the suite, not a pass.
if [ "$rc" = 5 ]; then echo "test: pytest collected no tests" >&2; fi
exit "$rc"
