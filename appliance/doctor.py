"""`passel doctor`: check what a box needs (its settings and state, its port, mDNS, its NodeODM, disk
space and the clock) and say, for each problem, a command that fixes it. On an installed box it reads
the box's own settings (/etc/passel/passel.toml) and names its systemd units; elsewhere it names the
commands that start Passel and NodeODM by hand. Exits 1 when something is wrong, so scripts can use it."""

from __future__ import annotations

import argparse
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.admin_client import AdminError, Unreachable, fetch_json
from appliance.box_api import box_facts, own_addresses

DEFAULT_NODEODM = "http://127.0.0.1:3001"
HTTP_TIMEOUT = 3.0
DISK_WARN_BYTES = 5 * 1000 ** 3  # an ODM job of a few hundred images stages gigabytes
CLOCK_WARN_SECONDS = 30.0  # tasks' times and the timeline compare clocks of different boxes
SANE_YEARS = range(2024, 2100)  # a box with a flat RTC battery boots in 1970 or 2000
UNIT_DIR = Path("/etc/systemd/system")  # where scripts/install.sh puts passel.service and passel-nodeodm.service


def installed(unit: str) -> bool:
    """Whether scripts/install.sh put this unit here, so the fix is a systemctl command."""
    return (UNIT_DIR / unit).exists()


def start_passel() -> str:
    return ("`sudo systemctl start passel`, then read why it stopped: `journalctl -u passel -n 30`"
            if installed("passel.service") else "`passel run` (or install it, in the Passel folder: `sudo scripts/install.sh`)")


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    detail: str
    fix: str = ""


def add_doctor_parser(sub: Any) -> None:
    doctor = sub.add_parser("doctor", help="check this box: port, mDNS, the local NodeODM, disk space and the clock",
                            description="Check what Passel needs on this box and say how to fix what is wrong.")
    doctor.add_argument("--config", metavar="FILE",
                        help="TOML file of settings (default: /etc/passel/passel.toml, as the service reads)")
    doctor.add_argument("--port", type=int, default=None, help="the port Passel uses (default: from the settings)")
    doctor.add_argument("--state-dir", default=None, help="the state directory (default: from the settings)")
    doctor.add_argument("--nodeodm", default=DEFAULT_NODEODM, help=f"this box's NodeODM (default {DEFAULT_NODEODM})")


def _get_json(url: str) -> dict[str, Any]:
    """The JSON object at `url`; any other answer is not the service being checked."""
    reply = fetch_json("GET", url, timeout=HTTP_TIMEOUT)
    if not isinstance(reply, dict):
        raise Unreachable(url, "the answer is not a JSON object")
    return reply


def check_port(port: int) -> Finding:
    try:
        facts = _get_json(f"http://127.0.0.1:{port}/-/box.json")
        return Finding(True, f"port {port}", f"Passel answers here (box {facts.get('name')}, {facts.get('role')})")
    except AdminError:
        pass
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as exc:
            return Finding(False, f"port {port}", f"something other than Passel holds it ({exc.strerror})",
                           f"find it with `ss -ltnp 'sport = :{port}'` and stop it, or run Passel with --port")
    return Finding(False, f"port {port}", "Passel is not running on this port", f"start it: {start_passel()}")


def check_mdns() -> Finding:
    addresses = [a for a in own_addresses() if not a.startswith("127.")]
    if not addresses:
        return Finding(False, "mDNS", "no network address: other boxes cannot find this one",
                       "plug in the network cable or join the field Wi-Fi; Passel picks it up within seconds")
    try:
        from zeroconf import IPVersion, Zeroconf
        Zeroconf(interfaces=addresses, ip_version=IPVersion.V4Only).close()
    except OSError as exc:
        return Finding(False, "mDNS", f"cannot open the multicast socket on {', '.join(addresses)}: {exc}",
                       "`sudo ufw allow 5353/udp`" if shutil.which("ufw") else "allow UDP port 5353 in the firewall")
    return Finding(True, "mDNS", f"can advertise and browse on {', '.join(addresses)}")


def check_nodeodm(url: str) -> Finding:
    try:
        info = _get_json(url.rstrip("/") + "/info")
    except AdminError as exc:
        start = ("`sudo systemctl start passel-nodeodm` (its first start downloads NodeODM while there is a network)"
                 if installed("passel-nodeodm.service") else "`docker run -d -p 3001:3000 opendronemap/nodeodm`")
        return Finding(False, "NodeODM", f"{url} does not answer ({exc.detail})",
                       f"start it: {start}; a box without one can still coordinate")
    if "error" in info:
        return Finding(False, "NodeODM", f"{url} refused: {info['error']}", "pass its token: --share URL?token=T")
    return Finding(True, "NodeODM", f"{url} answers: {info.get('engine', 'odm')} {info.get('engineVersion', '')}, "
                                   f"{info.get('maxParallelTasks', 1)} slot(s), {info.get('taskQueueCount', 0)} queued")


def check_state(state_dir: Path, source: str) -> Finding:
    """The state directory the settings name: the key and the task database live there."""
    where = f"{state_dir} (from {source})"
    if not state_dir.is_dir():
        return Finding(False, "state", f"{where} does not exist: Passel has not started here with these settings",
                       f"start it: {start_passel()}")
    if not (state_dir / "passel.sqlite3").exists():
        return Finding(False, "state", f"{where} has no task database yet", f"start it: {start_passel()}")
    key = "the passel key" if (state_dir / "passel.key").exists() else "no passel key (discovery is off)"
    return Finding(True, "state", f"{where} holds the task database and {key}")


def check_disk(state_dir: Path, min_free_mb: int) -> Finding:
    free = box_facts(state_dir if state_dir.exists() else Path("/"))["disk_free"]
    detail = f"{free / 1000 ** 3:.1f} GB free for {state_dir}"
    if free < min_free_mb * 1024 * 1024:
        return Finding(False, "disk", f"{detail}: below --min-free-disk-mb, so uploads are refused",
                       "remove finished tasks in the web UI (Tasks page), or set state_dir in the settings "
                       "to a bigger disk")
    if free < DISK_WARN_BYTES:
        return Finding(False, "disk", f"{detail}: enough for a small job only",
                       "remove finished tasks in the web UI (Tasks page), or set state_dir in the settings "
                       "to a bigger disk")
    return Finding(True, "disk", detail)


def _set_time(reference: float | None) -> str:
    """A set-time command that works as printed: the other boxes' time when one answered, else the
    shape to fill in with the time now (from a phone or a watch)."""
    if reference is None:
        return "`sudo timedatectl set-time 'YYYY-MM-DD HH:MM:SS'`, with the date and time now (from a phone)"
    return f"`sudo timedatectl set-time '{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(reference))}'` (the other boxes' time)"


def _other_boxes_time(port: int, fetch: Callable[[str], Any]) -> dict[str, float]:
    """Each other live box's clock minus this one's, in seconds (half the round trip allowed for)."""
    try:
        boxes = fetch(f"http://127.0.0.1:{port}/-/passel.json")["boxes"]
    except (AdminError, KeyError, TypeError):
        return {}
    offsets = {}
    for box in boxes:
        if box.get("self") or not box.get("alive") or not box.get("address"):
            continue
        try:
            sent = time.time()
            facts = fetch(f"http://{box['address']}:{box['port']}/-/box.json")
            offsets[box.get("name") or box["id"]] = facts["time"] - (sent + time.time()) / 2
        except (AdminError, KeyError, TypeError):
            continue
    return offsets


def check_clock(port: int, fetch: Callable[[str], Any] = _get_json) -> Finding:
    now = time.time()
    offsets = _other_boxes_time(port, fetch)
    reference = now + sorted(offsets.values())[len(offsets) // 2] if offsets else None
    year = time.gmtime(now).tm_year
    if year not in SANE_YEARS:
        return Finding(False, "clock", f"this box thinks it is {year} (its RTC battery may be flat)",
                       f"set it: {_set_time(reference)}")
    off = {name: o for name, o in offsets.items() if abs(o) > CLOCK_WARN_SECONDS}
    if off:
        listing = ", ".join(f"{name} {o:+.0f} s" for name, o in off.items())
        return Finding(False, "clock", f"other boxes disagree with this one: {listing}",
                       f"set this box to the others' time: {_set_time(reference)}, or run chrony with one box "
                       "as the field's time server")
    return Finding(True, "clock", f"agrees with {len(offsets)} other box(es) within {CLOCK_WARN_SECONDS:.0f} s"
                   if offsets else f"{time.strftime('%Y-%m-%d %H:%M:%S')} (no other box to compare with)")


def doctor_command(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    try:
        config = load_config(args.config, flags={"port": args.port, "state_dir": args.state_dir})
    except ConfigError as exc:
        raise SystemExit(f"passel doctor: {exc}") from None
    source = config.sources.get("state_dir", "the defaults")
    findings = [check_state(config.state_dir, source), check_port(config.port), check_mdns(),
                check_nodeodm(args.nodeodm), check_disk(config.state_dir, config.min_free_disk_mb),
                check_clock(config.port)]
    for f in findings:
        print(f"{'ok  ' if f.ok else 'FAIL'}  {f.what:<9} {f.detail}")
        if f.fix:
            print(f"{'':6}{'':<9} fix: {f.fix}")
    bad = sum(1 for f in findings if not f.ok)
    print(f"\n{'All checks passed.' if not bad else f'{bad} problem(s) found.'}")
    return 1 if bad else 0
