#!/usr/bin/env bash
# Set up, then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/python -m tests.realnode || true  # prepare the real NodeODM test kit once, or say why it cannot run
exec .venv/bin/python -m pytest "$@"
