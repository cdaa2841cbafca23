#!/usr/bin/env bash
# Create .venv with Python 3.11 and install Passel into it (with extras when asked: test, build).
# Safe to run again: when neither pyproject.toml nor the extras changed since the last run, it does
# nothing (the install is editable, so code changes need no reinstall).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
extras="${1:-}"
stamp=".venv/.passel-setup${extras:+-$extras}"
wanted="$(cat pyproject.toml .venv/pyvenv.cfg | sha256sum | cut -d' ' -f1)"
# The test extras include the build extras, and both include Passel itself.
case "$extras" in
  "") enough=(.venv/.passel-setup .venv/.passel-setup-build .venv/.passel-setup-test) ;;
  build) enough=(.venv/.passel-setup-build .venv/.passel-setup-test) ;;
  *) enough=("$stamp") ;;
esac
for done in "${enough[@]}"; do
  if [ -f "$done" ] && [ "$(cat "$done")" = "$wanted" ]; then exit 0; fi
done
echo "Setting up .venv${extras:+ with the $extras extras} (once; about a minute)..." >&2
# pip's own warnings go to a log, shown only when the install fails.
if ! { .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip &&
       .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"; } \
     > .venv/setup.log 2>&1; then
  cat .venv/setup.log >&2
  echo "Setting up .venv failed (the lines above say why; the log is .venv/setup.log)." >&2
  exit 1
fi
echo "$wanted" > "$stamp"
