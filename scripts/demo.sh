#!/usr/bin/env bash
# Set up, then run the demo passel: 3 simulated nodes, a coordinator on :3000 and a sample job.
# Extra arguments go to `passel demo` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/passel demo "$@"
