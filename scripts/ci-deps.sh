#!/usr/bin/env bash
# System packages the tests need besides Python: systemd-analyze (package systemd) for the unit
# checks, binutils (objdump, strip) for PyInstaller's build of dist/passel, iproute2 for namespaces,
# and node and npm for the real NodeODM test kit.
# Installs only what is missing, so running it again costs nothing.
set -euo pipefail
missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v objdump >/dev/null 2>&1 || missing+=(binutils)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)  # network namespaces for the multi-host tests
command -v node >/dev/null 2>&1 || missing+=(nodejs)  # real NodeODM (../shared/nodeodm) for the contract tests
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)  # browser tests: Playwright drives Debian's chromium
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "ci-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
