#!/usr/bin/env bash
# Run a command as N cooperating JAX processes on this machine (localhost coordinator).
#
#   launch/local.sh --num_processes=2 [--devices_per_process=2] [--dry_run] -- \
#       python -m fgjax.main --config=configs/... --workdir=runs/x
#
# Each process gets FGJAX_COORDINATOR, FGJAX_NUM_PROCESSES and FGJAX_PROCESS_ID, which
# fgjax.distributed passes to jax.distributed.initialize. --dry_run prints the commands.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
exec "$PYTHON" -m fgjax.launch.local "$@"
