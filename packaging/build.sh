#!/usr/bin/env bash
# Build dist/passel, the one-file binary (no Python needed on the box that runs it).
#   packaging/build.sh             uses .venv (made by scripts/setup.sh build: Passel and PyInstaller only)
#   PYTHON=/path/python build.sh   uses that interpreter, which needs Passel's deps and PyInstaller
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
if [ -z "${PYTHON:-}" ]; then
  scripts/setup.sh build
  PYTHON=.venv/bin/python
fi
if ! "$PYTHON" -c "import PyInstaller" 2>/dev/null; then
  echo "PyInstaller is missing for $PYTHON: install it with '$PYTHON -m pip install pyinstaller'" >&2
  exit 1
fi
PASSEL_ROOT="$root" "$PYTHON" -m PyInstaller --noconfirm --log-level WARN \
  --workpath "$root/build/pyinstaller" --distpath "$root/dist" packaging/passel.spec
size=$(du -h dist/passel | cut -f1)
echo "Built dist/passel ($size): $(dist/passel --version)"
