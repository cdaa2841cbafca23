#!/usr/bin/env bash
# Install Passel on a Debian or Ubuntu box: the binary, its systemd units, and start them.
#
#   sudo scripts/install.sh                      install or upgrade (safe to run again)
#   sudo scripts/install.sh --uninstall          remove Passel, keep its settings and data
#   sudo scripts/install.sh --uninstall --purge  remove the settings and data too
#
# Options: --binary FILE (default dist/passel, built first by packaging/build.sh when missing),
#          --prefix DIR (default /usr/local),
#          --destdir DIR or DESTDIR=DIR (install into a staging root: nothing is enabled or started),
#          --no-start (enable only; for a disk image that will be cloned onto many boxes),
#          --key CODE (the passel key every box of this passel shares; see `passel key`).
# It writes /etc/passel/passel.toml (every setting, commented, with the state directory set), which
# the service and every `passel` command read; an existing file keeps its edits. Nothing
# box-specific is made here: the box id is made by Passel's first start, so boxes cloned from one
# image do not share an id.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

binary="$here/dist/passel"
prefix=/usr/local
destdir="${DESTDIR:-}"
action=install
purge=no
start=yes
key=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --prefix) prefix="$2"; shift 2 ;;
    --destdir) destdir="$2"; shift 2 ;;
    --uninstall) action=uninstall; shift ;;
    --purge) purge=yes; shift ;;
    --no-start) start=no; shift ;;
    --key) key="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$purge" = yes ] && [ "$action" != uninstall ]; then
  echo "install.sh: --purge goes with --uninstall" >&2; exit 2
fi
# The same rule as Passel's own (appliance/discovery/trust.py): letters A-Z and digits 2-7, at least 16,
# dashes and spaces ignored. A bad key is refused here, before anything is installed.
if [ -n "$key" ]; then
  cleaned="$(printf '%s' "$key" | tr 'a-z' 'A-Z' | tr -d -- '- ')"
  if [ "${#cleaned}" -lt 16 ] || [ -n "$(printf '%s' "$cleaned" | tr -d 'A-Z2-7')" ]; then
    echo "install.sh: '$key' is not a passel key. A key is 16 or more letters and digits 2-7, like" \
         "ABCD-EFGH-IJKL-MNOP-QRST-UVWX: copy it from \`passel key show\` on a box of the passel." >&2
    exit 2
  fi
fi

bin_path="$prefix/bin/passel"
settings="$destdir/etc/passel/passel.toml"
unit_dir="$destdir/etc/systemd/system"
units=(passel.service passel-nodeodm.service passel-sleep.service)
data_dirs=("$destdir/etc/passel" "$destdir/var/lib/passel" "$destdir/var/lib/passel-nodeodm")

# systemctl only on the real root of a box that runs systemd (not in a staging root, a container build).
manage=no
if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then manage=yes; fi
if [ -z "$destdir" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run it as root (sudo $0 $*)" >&2; exit 1
fi

say() { echo "passel: $*"; }

# Write stdin to $1 only when it differs, by rename, so a running binary is never overwritten in place.
# Returns 0 when the file changed.
put() {
  local target="$1" mode="$2" tmp
  mkdir -p "$(dirname "$target")"
  tmp="$(mktemp "$target.XXXXXX")"
  cat > "$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$target" ] && cmp -s "$tmp" "$target"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$target"
}

container_engine() {
  if command -v docker >/dev/null 2>&1; then echo docker
  elif command -v podman >/dev/null 2>&1; then echo podman
  fi
}

# The state directory the settings name (install.sh writes /var/lib/passel; a technician may move it).
state_dir() {
  local dir
  dir="$(sed -n 's/^[[:space:]]*state_dir[[:space:]]*=[[:space:]]*"\(.*\)".*/\1/p' "$settings" 2>/dev/null | tail -n 1)"
  echo "${dir:-/var/lib/passel}"
}

# /etc/passel/passel.toml, the one place for this box's settings: written when missing; an older file
# (from before the state directory was kept there) gains the state directory line; edits are kept.
write_settings() {
  if [ ! -f "$settings" ]; then
    put "$settings" 0640 < "$here/packaging/passel.toml"
    say "wrote /etc/passel/passel.toml (the state directory is /var/lib/passel; the rest are defaults)"
  elif ! grep -q '^[[:space:]]*state_dir[[:space:]]*=' "$settings"; then
    printf '\n# Set by install.sh, so that every passel command finds this box'"'"'s state.\nstate_dir = "/var/lib/passel"\n' >> "$settings"
    say "added state_dir = \"/var/lib/passel\" to /etc/passel/passel.toml"
  else
    return 1
  fi
}

install_passel() {
  if [ ! -f "$binary" ] && [ "$binary" = "$here/dist/passel" ] && [ -x "$here/packaging/build.sh" ]; then
    say "no binary in dist/ yet: building it first with packaging/build.sh (a minute or two)"
    "$here/packaging/build.sh"
  fi
  [ -f "$binary" ] || { echo "install.sh: no binary at $binary (build it with packaging/build.sh, or pass --binary)" >&2; exit 1; }
  local changed=no engine dropin
  if write_settings; then changed=yes; fi
  # A bare switch has no DHCP server: link-local addresses (169.254.x.x) let the boxes find each other.
  "$here/scripts/link-local.sh" ${destdir:+--destdir "$destdir"} \
    || echo "install.sh: link-local fallback was not set up (see above); Passel still works where DHCP answers" >&2
  if put "$destdir$bin_path" 0755 < "$binary"; then changed=yes; say "installed $bin_path"; fi
  for unit in "${units[@]}"; do
    if sed "s#/usr/local/bin/passel#$bin_path#g" "$here/systemd/$unit" | put "$unit_dir/$unit" 0644; then
      changed=yes; say "installed /etc/systemd/system/$unit"
    fi
  done
  engine="$(container_engine)"
  dropin="$unit_dir/passel-nodeodm.service.d/engine.conf"
  if [ "$engine" = podman ]; then
    if printf '[Service]\nEnvironment=CONTAINER_ENGINE=podman\n' | put "$dropin" 0644; then changed=yes; fi
  else
    rm -rf "$(dirname "$dropin")"
  fi
  if [ -n "${key:-}" ]; then
    if printf '%s\n' "$key" | put "$destdir$(state_dir)/passel.key" 0600; then
      changed=yes; say "set the passel key (the same on every box of this passel)"
    fi
  fi
  [ "$changed" = yes ] || say "already installed and up to date"

  if [ "$manage" = yes ]; then
    systemctl daemon-reload
    systemctl enable passel.service passel-sleep.service >/dev/null
    if [ -n "$engine" ]; then systemctl enable passel-nodeodm.service >/dev/null; fi
    if [ "$start" = yes ]; then
      # An upgrade takes effect now; tasks are kept in the database and resume after the restart.
      if [ "$changed" = yes ]; then systemctl restart passel.service; else systemctl start passel.service; fi
      if [ -n "$engine" ]; then systemctl start passel-nodeodm.service; fi
    fi
  elif [ -n "$destdir" ]; then
    say "installed into $destdir: nothing enabled or started"
  else
    say "systemd is not running here: start Passel with '$bin_path run'"
  fi
  if [ -z "$engine" ]; then
    say "no docker or podman here, so this box runs no NodeODM of its own (it still joins the passel)."
    say "to add one: sudo apt-get install docker.io, then run this script again"
  elif [ "$manage" = yes ] && [ "$start" = yes ]; then
    say "NodeODM starts as a $engine container; its first start downloads opendronemap/nodeodm while there is a network"
  fi
  if [ -z "$destdir" ]; then print_address; fi
}

print_address() {
  local port=3000 address
  if [ -f "$destdir/etc/passel/passel.toml" ]; then
    port="$(sed -n 's/^[[:space:]]*port[[:space:]]*=[[:space:]]*\([0-9]\{1,5\}\).*/\1/p' "$destdir/etc/passel/passel.toml" | tail -n 1)"
    port="${port:-3000}"
  fi
  address="$(hostname -I 2>/dev/null | awk '{print $1}')"
  address="${address:-THIS-BOX}"
  echo
  echo "Passel is installed. Open http://$address:$port/ in a browser"
  echo "(or http://passel.local:$port/ from any device on the same network)."
  echo "Logs: journalctl -u passel -f    Settings: /etc/passel/passel.toml"
}

uninstall_passel() {
  if [ "$manage" = yes ]; then
    systemctl disable --now "${units[@]}" >/dev/null 2>&1 || true
  fi
  local path
  for path in "$destdir$bin_path" "${units[@]/#/$unit_dir/}" "$unit_dir/passel-nodeodm.service.d"; do
    if [ -e "$path" ]; then rm -rf "$path"; say "removed ${path#"$destdir"}"; fi
  done
  if [ "$manage" = yes ]; then systemctl daemon-reload; fi
  if [ "$purge" = yes ]; then
    "$here/scripts/link-local.sh" ${destdir:+--destdir "$destdir"} --remove || true
  fi
  for path in "${data_dirs[@]}"; do
    [ -e "$path" ] || continue
    if [ "$purge" = yes ]; then rm -rf "$path"; say "removed ${path#"$destdir"}"
    else say "kept ${path#"$destdir"} (remove it with --uninstall --purge)"; fi
  done
}

if [ "$action" = install ]; then install_passel; else uninstall_passel; fi
