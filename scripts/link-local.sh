#!/usr/bin/env bash
# Give this box an IPv4 link-local address (169.254.x.x) on wired networks where no DHCP server
# answers, with the distribution's own network stack, so that boxes on a bare switch still find each
# other. A DHCP lease or a static address keeps working as before: it always comes first.
#
#   sudo scripts/link-local.sh                    configure this box (safe to run again)
#   scripts/link-local.sh --destdir DIR           write into a staging root (a disk image) instead
#   sudo scripts/link-local.sh --remove           delete every file it wrote (for an uninstall)
#
# What it does, for each network stack it finds:
#   NetworkManager 1.52+    a conf.d default: wired connections fall back to link-local (ipv4.link-local=4)
#   NetworkManager 1.40-1.51  the same file with ipv4.link-local=3 (that version has no fallback mode:
#                           wired connections keep a 169.254 address beside their DHCP or static one)
#   NetworkManager < 1.40   two wired profiles of lowest priority: DHCP first, then link-local only
#   systemd-networkd        a drop-in LinkLocalAddressing= for each wired .network file that uses DHCP
#                           (yes from 248 on, where yes means "when DHCP fails"; fallback for 243-247)
#   ifupdown                nothing to write: avahi-autoipd's own dhclient hooks do it once installed
# Options: --destdir DIR (a staging root: nothing is reloaded), --nm-version V and --systemd-version V
#          (the versions in that root, when they differ from this machine's), -h/--help.
# Every file it writes has "passel-link-local" in its name. Changes apply at each cable's next
# connection or at the next boot; nothing that is up now is disturbed.
set -euo pipefail

root=""
action=configure
nm_version=""
systemd_version=""
while [ $# -gt 0 ]; do
  case "$1" in
    --destdir) root="${2:?--destdir needs a directory}"; shift 2 ;;
    --remove) action=remove; shift ;;
    --nm-version) nm_version="${2:?--nm-version needs a version}"; shift 2 ;;
    --systemd-version) systemd_version="${2:?--systemd-version needs a version}"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "link-local.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
root="${root%/}"
live=$([ -z "$root" ] && echo yes || echo no)
say() { echo "link-local: $*"; }

# version_at_least HAVE WANT: true when HAVE >= WANT (dotted numbers).
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# write_file PATH MODE: write stdin to PATH (under the root) when it differs; says which.
write_file() {
  local path="$root$1" mode="$2" content
  content="$(cat)"
  if [ -f "$path" ] && [ "$(cat "$path")" = "$content" ]; then
    say "unchanged: $1"
    return 1
  fi
  mkdir -p "$(dirname "$path")"
  printf '%s\n' "$content" > "$path.passel-new"
  chmod "$mode" "$path.passel-new"
  mv -f "$path.passel-new" "$path"
  say "wrote $1"
}

# remove_file PATH: delete what an earlier run wrote for another version of the stack.
remove_file() {
  [ -e "$root$1" ] || return 1
  rm -f "$root$1"
  say "removed $1 (written for another version)"
}

header() {
  echo "# Written by Passel (scripts/link-local.sh): a wired network with no DHCP server gives this box an"
  echo "# IPv4 link-local address (169.254.x.x), so boxes on a bare switch still find each other."
  echo "# $1"
}

# --- NetworkManager -----------------------------------------------------------------------------
nm_present() {
  if [ "$live" = yes ]; then
    command -v systemctl >/dev/null && systemctl is-active --quiet NetworkManager 2>/dev/null
  else
    [ -d "$root/etc/NetworkManager" ]
  fi
}

configure_nm() {
  local version="$nm_version"
  if [ -z "$version" ] && command -v NetworkManager >/dev/null; then
    version="$(NetworkManager --version 2>/dev/null | grep -Eo '^[0-9]+(\.[0-9]+)+' || true)"
  fi
  if [ -z "$version" ]; then
    say "NetworkManager: cannot tell its version in $root; pass --nm-version (e.g. 1.42)" >&2
    return 2
  fi
  local changed=no conf=/etc/NetworkManager/conf.d/50-passel-link-local.conf
  local dir=/etc/NetworkManager/system-connections
  if version_at_least "$version" 1.40; then
    remove_file "$dir/passel-link-local-dhcp.nmconnection" && changed=yes
    remove_file "$dir/passel-link-local.nmconnection" && changed=yes
    local mode=4 what="falls back to link-local when no DHCP server answers"
    if ! version_at_least "$version" 1.52; then
      mode=3 what="keeps a link-local address beside its DHCP or static one (no fallback mode before 1.52)"
    fi
    # NetworkManager.conf takes the number: 3 = enabled, 4 = fallback.
    { header "A connection that sets ipv4.link-local itself keeps its setting."
      echo "[connection-passel-link-local]"
      echo "match-device=type:ethernet"
      echo "ipv4.link-local=$mode"
    } | write_file "$conf" 644 && changed=yes
    say "NetworkManager $version: each wired connection $what"
    if [ "$live" = yes ] && [ "$changed" = yes ]; then
      nmcli general reload conf && say "NetworkManager re-read its settings; they apply at each cable's next connection"
    fi
    return 0
  fi
  # Before 1.40 a profile has one IPv4 method. A wired profile for any device would also stop
  # NetworkManager making its automatic "Wired connection" (DHCP), so the DHCP one is given too,
  # tried first; profiles the box already has come before both (higher priority).
  remove_file "$conf" && changed=yes
  { header "Tried after the box's own wired profiles."
    printf '%s\n' "[connection]" "id=Passel wired (DHCP)" "uuid=7c0e4f4e-5a86-4d0c-9a51-1d7c2a8f0b01" \
      "type=ethernet" "autoconnect-priority=-998" "autoconnect-retries=1" "" "[ethernet]" "" \
      "[ipv4]" "method=auto" "dhcp-timeout=30" "" "[ipv6]" "method=auto"
  } | write_file "$dir/passel-link-local-dhcp.nmconnection" 600 && changed=yes
  { header "Used when DHCP on every other wired profile failed."
    printf '%s\n' "[connection]" "id=Passel wired (link-local)" "uuid=7c0e4f4e-5a86-4d0c-9a51-1d7c2a8f0b02" \
      "type=ethernet" "autoconnect-priority=-999" "" "[ethernet]" "" \
      "[ipv4]" "method=link-local" "" "[ipv6]" "method=link-local"
  } | write_file "$dir/passel-link-local.nmconnection" 600 && changed=yes
  say "NetworkManager $version: a wired connection with no DHCP server falls back to link-local after about"
  say "  30 s; it goes back to DHCP at the cable's next connection"
  if [ "$live" = yes ] && [ "$changed" = yes ]; then
    nmcli connection reload && say "NetworkManager loaded the new profiles"
  fi
}

# --- systemd-networkd ---------------------------------------------------------------------------
network_dirs=(/etc/systemd/network /run/systemd/network /usr/lib/systemd/network /lib/systemd/network)
dropin=50-passel-link-local.conf

# ini_values FILE SECTION KEY: every value of KEY in SECTION, space-separated values split.
ini_values() {
  awk -v want="[$2]" -v key="$3" '
    /^[[:space:]]*\[/ { gsub(/[[:space:]]/, ""); section = $0; next }
    section == want && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      sub(/^[^=]*=[[:space:]]*/, ""); n = split($0, parts, /[[:space:]]+/)
      for (i = 1; i <= n; i++) if (parts[i] != "") print parts[i]
    }' "$1"
}

# The .network files networkd would read, /etc masking /run masking /usr/lib, masked ones left out.
network_files() {
  local dir file name
  declare -A seen=()
  for dir in "${network_dirs[@]}"; do
    for file in "$root$dir"/*.network; do
      [ -e "$file" ] || continue
      name="$(basename "$file")"
      [ -n "${seen[$name]:-}" ] && continue
      seen[$name]=1
      [ -s "$file" ] && [ "$(readlink -f "$file")" != /dev/null ] && echo "$file"
    done
  done
}

networkd_present() {
  if [ "$live" = yes ]; then
    command -v systemctl >/dev/null && systemctl is-active --quiet systemd-networkd 2>/dev/null
  else
    [ -n "$(network_files)" ]
  fi
}

# Whether a .network file is for wired links and takes an address from DHCPv4.
wired_dhcp() {
  local file="$1" value wired=no dhcp=no
  for value in $(ini_values "$file" Match Type); do
    case "$value" in ether) wired=yes ;; *) return 1 ;; esac
  done
  for value in $(ini_values "$file" Match Name); do
    case "$value" in en*|eth*) wired=yes ;; *) return 1 ;; esac
  done
  [ -z "$(ini_values "$file" Network Bridge)$(ini_values "$file" Network Bond)" ] || return 1
  for value in $(ini_values "$file" Network DHCP); do
    case "${value,,}" in yes|true|on|1|ipv4) dhcp=yes ;; esac
  done
  [ "$wired" = yes ] && [ "$dhcp" = yes ]
}

# Whether the file or another drop-in of it sets LinkLocalAddressing= already (its admin's choice).
sets_link_local() {
  local file="$1" name dir conf
  name="$(basename "$file")"
  [ -n "$(ini_values "$file" Network LinkLocalAddressing)" ] && return 0
  for dir in "${network_dirs[@]}"; do
    for conf in "$root$dir/$name.d"/*.conf; do
      [ -e "$conf" ] && [ "$(basename "$conf")" != "$dropin" ] || continue
      [ -n "$(ini_values "$conf" Network LinkLocalAddressing)" ] && return 0
    done
  done
  return 1
}

configure_networkd() {
  local version="$systemd_version" value=yes file name found=no
  if [ -z "$version" ] && command -v networkctl >/dev/null; then
    version="$(networkctl --version 2>/dev/null | grep -Eo '^systemd [0-9]+' | grep -Eo '[0-9]+' || true)"
  fi
  # 243-247: "fallback" is IPv4 link-local only when DHCP fails; 248 folded it into "yes". Before 243,
  # "yes" keeps a link-local address beside the lease. Every value keeps IPv6 link-local on.
  if [ -n "$version" ] && version_at_least "$version" 243 && ! version_at_least "$version" 248; then
    value=fallback
  fi
  while IFS= read -r file; do
    name="$(basename "$file")"
    wired_dhcp "$file" || continue
    found=yes
    if sets_link_local "$file"; then
      say "systemd-networkd: $name sets LinkLocalAddressing= itself; left as it is"
      continue
    fi
    { header "Remove this file to undo."
      echo "[Network]"
      echo "LinkLocalAddressing=$value"
    } | write_file "/etc/systemd/network/$name.d/$dropin" 644 || true
  done < <(network_files)
  if [ "$found" = no ]; then
    say "systemd-networkd: no wired .network file uses DHCP; nothing changed"
    return 0
  fi
  say "systemd-networkd ${version:-(version unknown)}: wired DHCP links fall back to link-local (LinkLocalAddressing=$value)"
  [ "$live" = yes ] && say "  it applies at the next boot, or now with: networkctl reload (wired links reconnect)"
  return 0
}

# --- ifupdown -----------------------------------------------------------------------------------
ifupdown_present() {
  local f
  for f in "$root/etc/network/interfaces" "$root/etc/network/interfaces.d"/*; do
    [ -f "$f" ] && grep -Eq '^[[:space:]]*iface[[:space:]]+[^[:space:]]+[[:space:]]+inet[[:space:]]+dhcp' "$f" && return 0
  done
  return 1
}

configure_ifupdown() {
  if [ -x "$root/usr/sbin/avahi-autoipd" ]; then
    say "ifupdown: avahi-autoipd is installed; when dhclient gets no lease it takes a link-local address"
    return 0
  fi
  say "ifupdown: for link-local fallback install avahi-autoipd: apt install avahi-autoipd" >&2
  return 0
}

# Delete every file this script may have written, for any version of any stack.
remove_all() {
  local path removed=no
  for path in "$root/etc/NetworkManager/conf.d/50-passel-link-local.conf" \
              "$root/etc/NetworkManager/system-connections/passel-link-local-dhcp.nmconnection" \
              "$root/etc/NetworkManager/system-connections/passel-link-local.nmconnection" \
              "$root/etc/systemd/network/"*.network.d/"$dropin"; do
    [ -e "$path" ] || continue
    rm -f "$path"
    case "$path" in *.network.d/*) rmdir --ignore-fail-on-non-empty "$(dirname "$path")" ;; esac
    say "removed ${path#"$root"}"
    removed=yes
  done
  [ "$removed" = yes ] || say "nothing to remove${root:+ in $root}"
  if [ "$removed" = yes ] && [ "$live" = yes ]; then
    say "the network software applies this at each cable's next connection or at the next boot"
  fi
}

if [ "$action" = remove ]; then
  remove_all
  exit 0
fi

status=0
stacks=0
if nm_present; then stacks=$((stacks + 1)); configure_nm || status=$?; fi
if networkd_present; then stacks=$((stacks + 1)); configure_networkd || status=$?; fi
if ifupdown_present; then stacks=$((stacks + 1)); configure_ifupdown; fi
if [ "$stacks" = 0 ]; then
  say "found no NetworkManager, systemd-networkd or ifupdown DHCP setup${root:+ in $root}; nothing changed"
fi
exit "$status"
