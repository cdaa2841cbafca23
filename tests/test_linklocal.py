"""Any field network: boxes on a bare switch with no DHCP server, boxes whose addresses change, a box
with Wi-Fi and a cable, and scripts/link-local.sh, which sets up link-local fallback at install time.

Each multi-host test builds its own bridge of namespaces whose boxes hold ONLY IPv4 link-local
addresses (169.254.N.i/16), as a bare switch leaves them, plus a fourth namespace with no agent: a
responder's laptop on the same switch, from which every client call is made. The test process stays
off a link-local bridge (see tests/netns.Bridge), so the nodes are simulated: a real NodeODM is
readied by polling it from the test process. CI sets PASSEL_REQUIRE_NETNS=1 so these can never be
skipped silently there.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import ifaddr
import pytest

from appliance import netaddr
from tests.netns import REPO, Box, Bridge, wait_until

SCRIPT = REPO / "scripts" / "link-local.sh"
AGREE_SECONDS = 40  # bound on three fresh boxes agreeing (measured: see docs/field-networks.md)
FOLLOW_SECONDS = 15  # bound on peers following a box to its new address
FIGURES: dict[str, float] = {}  # measured here, printed at the end of each test (pytest -s shows them)

VIEWS = """
import json, sys, urllib.request
out = []
for url in sys.argv[1:]:
    try:
        out.append(json.load(urllib.request.urlopen(url + "/-/passel.json", timeout=3)))
    except OSError as exc:
        out.append({"error": str(exc)})
print(json.dumps(out))
"""

SUBMIT = """
import pathlib, sys, tempfile
from pyodm import Node
d = pathlib.Path(tempfile.mkdtemp())
files = []
for i in range(6):
    p = d / f"IMG_{i:03d}.JPG"; p.write_bytes(b"\\xff\\xd8" + bytes([i]) * 20000); files.append(str(p))
task = Node(sys.argv[1], 3000).create_task(files, skip_post_processing=True, parallel_uploads=4)
task.wait_for_completion(interval=0.5)
info = task.info()
print(task.uuid, info.images_count, info.status.value)
"""


def adapters(*addresses: str) -> list[ifaddr.Adapter]:
    """Stand-ins for ifaddr's answer: one adapter per "address/prefix"."""
    return [ifaddr.Adapter(f"if{i}", f"if{i}", [ifaddr.IP(a.split("/")[0], int(a.split("/")[1]), f"if{i}")], index=i)
            for i, a in enumerate(addresses, 1)]


@pytest.mark.parametrize(("found", "announced", "public"), [
    (("127.0.0.1/8", "169.254.7.7/16", "10.1.2.3/24"), ["10.1.2.3", "169.254.7.7"], "http://10.1.2.3:3000"),
    (("127.0.0.1/8", "169.254.7.7/16"), ["169.254.7.7"], "http://169.254.7.7:3000"),  # a bare switch
    (("127.0.0.1/8",), [], "http://127.0.0.1:3000"),  # no network at all
])
def test_own_addresses_count_link_local_after_routable(monkeypatch, found, announced, public):
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: adapters(*found))
    assert netaddr.local_ipv4_addresses() == announced
    assert netaddr.default_public_url("0.0.0.0", 3000) == public


def test_another_boxs_addresses_best_first():
    ours = [ipaddress.IPv4Interface(a) for a in ("169.254.3.4/16", "10.0.0.5/24", "172.17.0.1/16")]
    # a shared network first, routable before link-local; behind a router next; one this box holds last
    assert netaddr.best_first(["172.17.0.1", "192.168.1.5", "169.254.9.9", "10.0.0.7"], ours) == [
        "10.0.0.7", "169.254.9.9", "192.168.1.5", "172.17.0.1"]
    # a cable-only box sees a Wi-Fi and cable box: the cable's link-local address, not the Wi-Fi one
    assert netaddr.best_first(["10.78.0.3", "169.254.9.3"], ours[:1]) == ["169.254.9.3", "10.78.0.3"]
    # this box's own announcement: every address is its own, so routable first
    assert netaddr.best_first(["169.254.3.4", "10.0.0.5"], ours) == ["10.0.0.5", "169.254.3.4"]


@contextlib.contextmanager
def link_local_passel(workdir: Path) -> Iterator[Bridge]:
    """Three boxes (node + agent, priority = index) and a laptop (the fourth), all with only
    link-local addresses."""
    bridge = Bridge(4, workdir, link_local=True)
    try:
        for box in bridge.boxes[:3]:
            box.start_simnode(seconds_per_image=0.05)
            box.start_agent("--priority", str(box.index))
        yield bridge
    finally:
        for box in bridge.boxes[:3]:
            for name in ("agent", "simnode"):
                (workdir / f"box{box.index}-{name}.log").write_text(box.log(name))
        bridge.close()


@pytest.fixture
def passel_ll(tmp_path: Path, netns_required) -> Iterator[Bridge]:
    with link_local_passel(tmp_path) as bridge:
        yield bridge


def views(laptop: Box, boxes: list[Box]) -> list[dict]:
    """Every box's view of the passel, asked from the laptop over the field network."""
    return json.loads(laptop.run_python(VIEWS, *(box.api for box in boxes), timeout=30))


def agreed(seen: list[dict], count: int = 3) -> str | None:
    """The coordinator id when every box sees `count` live boxes and names the same coordinator."""
    if any("error" in v or sum(b["alive"] for b in v["boxes"]) != count for v in seen):
        return None
    ids = {(v["coordinator"] or {}).get("id") for v in seen}
    return ids.pop() if len(ids) == 1 and None not in ids else None


def addresses_seen(seen: list[dict], box_id: str) -> set[str]:
    """Where the other boxes, alive, say that box is."""
    return {b["address"] for v in seen for b in v["boxes"] if b["id"] == box_id and b["alive"] and not b.get("self")}


def submit_through(laptop: Box, address: str) -> tuple[str, int, int]:
    """A PyODM job from the laptop through the box at `address`; (uuid, images, status code) once done."""
    uuid, images, status = laptop.run_python(SUBMIT, address, timeout=90).split()
    return uuid, int(images), int(status)


def report(test: str) -> None:
    print(f"\n{test}: " + ", ".join(f"{k} {v:.1f} s" for k, v in FIGURES.items()))
    FIGURES.clear()


@pytest.mark.netns
def test_three_link_local_boxes_agree_and_a_job_runs_through_a_follower(passel_ll):
    boxes, laptop = passel_ll.boxes[:3], passel_ll.boxes[3]
    started = time.monotonic()
    seen = wait_until(lambda: (s := views(laptop, boxes)) and agreed(s) and s, AGREE_SECONDS,
                      "three link-local boxes to agree on one coordinator", interval=0.5)
    FIGURES["three boxes agree"] = time.monotonic() - started
    leader = agreed(seen)
    by_id = {v["self"]["id"]: box for v, box in zip(seen, boxes)}
    for box_id, box in by_id.items():  # each box is reached at its link-local address
        assert addresses_seen(seen, box_id) == {box.address}
    assert sum(v["self"]["role"] == "coordinator" for v in seen) == 1

    follower = next(box for box_id, box in by_id.items() if box_id != leader)
    nodes = wait_until(lambda: (n := laptop.get_json_from(follower.api + "/-/nodes"))
                       and sum(x["online"] for x in n) == 3 and n, 30, "the three nodes, shared over mDNS")
    assert sorted(n["url"] for n in nodes) == sorted(f"http://{b.address}:3001" for b in boxes)
    status = laptop.get_json_from(follower.api + "/-/status.json")
    assert status["public_url"].startswith("http://169.254."), status["public_url"]

    before = time.monotonic()
    uuid, images, code = submit_through(laptop, follower.address)
    FIGURES["PyODM job of 6 images through a follower"] = time.monotonic() - before
    assert (images, code) == (6, 40), uuid
    report("bare switch")


@pytest.mark.netns
def test_a_box_whose_address_changes_stays_in_the_passel(passel_ll):
    boxes, laptop = passel_ll.boxes[:3], passel_ll.boxes[3]
    seen = wait_until(lambda: (s := views(laptop, boxes)) and agreed(s) and s, AGREE_SECONDS,
                      "three link-local boxes to agree on one coordinator", interval=0.5)
    leader = agreed(seen)
    terms = {v["term"] for v in seen}
    ids = [v["self"]["id"] for v in seen]

    # A new link-local claim (a conflict, or a replugged cable): the coordinator itself moves.
    moved = boxes[ids.index(leader)]
    moved.readdress(f"{passel_ll.subnet}.{100 + moved.index}", 16)
    started = time.monotonic()
    seen = wait_until(lambda: (s := views(laptop, boxes)) and agreed(s) == leader
                      and addresses_seen(s, leader) == {moved.address} and s, FOLLOW_SECONDS,
                      "the other boxes to reach the coordinator at its new link-local address", interval=0.3)
    FIGURES["peers follow a new link-local address"] = time.monotonic() - started
    assert {v["term"] for v in seen} == terms, "no new election: the coordinator never looked gone"

    # DHCP arrives late, at every box within a second: routable addresses, link-local ones dropped,
    # except on box 3, which keeps both (NetworkManager's ipv4.link-local=enabled does that).
    subnet = "10.77." + passel_ll.subnet.rsplit(".", 1)[1]  # namespaces of its own: no clash with other runs
    for box in [*boxes, laptop]:
        box.readdress(f"{subnet}.{box.index}", 24, drop_old=box is not boxes[2])
    started = time.monotonic()
    seen = wait_until(lambda: (s := views(laptop, boxes)) and agreed(s) == leader
                      and all(addresses_seen(s, i) == {b.address} for i, b in zip(ids, boxes)) and s,
                      FOLLOW_SECONDS, "every box to reach every other at its new routable address", interval=0.3)
    FIGURES["every box follows DHCP arriving late"] = time.monotonic() - started
    assert {v["term"] for v in seen} == terms, "the passel kept its coordinator and term"

    follower = next(box for box, box_id in zip(boxes, ids) if box_id != leader)
    wait_until(lambda: {n["url"] for n in laptop.get_json_from(follower.api + "/-/nodes") if n["online"]}
               >= {f"http://{b.address}:3001" for b in boxes}, 30, "the nodes at their new addresses")
    uuid, images, code = submit_through(laptop, follower.address)
    assert (images, code) == (6, 40), uuid
    report("address change")


@pytest.mark.netns
def test_a_box_that_joins_wifi_keeps_its_cable_peers_and_serves_wifi_clients(passel_ll, tmp_path):
    """A follower joins a Wi-Fi network (its own subnet, routable) while running; the other boxes are
    on the cable only. They must keep reaching it, and its node, on the cable's link-local address,
    not on its new routable one, which they cannot reach; a laptop on the Wi-Fi alone runs a job
    through it."""
    boxes, laptop = passel_ll.boxes[:3], passel_ll.boxes[3]
    seen = wait_until(lambda: (s := views(laptop, boxes)) and agreed(s) and s, AGREE_SECONDS,
                      "three link-local boxes to agree on one coordinator", interval=0.5)
    leader, terms = agreed(seen), {v["term"] for v in seen}
    dual, dual_id = next((box, v["self"]["id"]) for box, v in zip(boxes, seen) if v["self"]["id"] != leader)
    cable_node = f"http://{dual.address}:3001"
    wait_until(lambda: any(n["url"] == cable_node and n["online"] for n in laptop.get_json_from(dual.api + "/-/nodes")),
               30, "its node, shared over mDNS")

    wifi = Bridge(0, tmp_path / "wifi", link_local=True)  # a hub alone: the Wi-Fi access point
    try:
        subnet = "10.78." + passel_ll.subnet.rsplit(".", 1)[1]
        wifi.join(dual, "wlan0", f"{subnet}.{dual.index}", 24)
        wifi.join(laptop, "wlan0", f"{subnet}.{laptop.index}", 24)
        laptop.link(False)  # the laptop is on the Wi-Fi only
        wait_until(lambda: f"to {subnet}.{dual.index}, {dual.address}; telling" in dual.log("agent"), 10,
                   "the follower to announce its Wi-Fi address beside its cable one")
        time.sleep(2)  # the announcement has reached the others, and their nodes poll has run
        seen = views(dual, boxes)
        assert agreed(seen) == leader and {v["term"] for v in seen} == terms, "nobody dropped out"
        assert addresses_seen(seen, dual_id) == {dual.address}, "the others keep the address they can reach"
        nodes = dual.get_json_from(dual.api + "/-/nodes")  # the coordinator's list
        assert {n["url"] for n in nodes} == {f"http://{b.address}:3001" for b in boxes} and all(
            n["online"] for n in nodes), nodes

        uuid, images, code = submit_through(laptop, f"{subnet}.{dual.index}")
        assert (images, code) == (6, 40), uuid
    finally:
        wifi.close()


# --- scripts/link-local.sh, into staging roots -------------------------------------------------

WIRED = "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n"
NETWORKD_LAYOUT = {
    "etc/systemd/network/20-wired.network": WIRED,
    "etc/systemd/network/25-wireless.network": "[Match]\nName=wl*\n\n[Network]\nDHCP=yes\n",
    "etc/systemd/network/30-static.network": "[Match]\nName=eth1\n\n[Network]\nAddress=192.168.5.2/24\n",
    "usr/lib/systemd/network/80-admin.network": "[Match]\nType=ether\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\n",
    "usr/lib/systemd/network/90-masked.network": WIRED,
}
NM_CONF = "etc/NetworkManager/conf.d/50-passel-link-local.conf"
NM_PROFILES = ["etc/NetworkManager/system-connections/passel-link-local-dhcp.nmconnection",
               "etc/NetworkManager/system-connections/passel-link-local.nmconnection"]
NM_VERSION = "1.52.0"  # what the stand-in NetworkManager on PATH reports


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    """A PATH whose nmcli, networkctl, systemctl and NetworkManager only record their calls: a staging
    root must never reload, restart or ask the stack of the machine running the script."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for tool in ("nmcli", "networkctl", "systemctl", "NetworkManager"):
        answer = f"echo {NM_VERSION}" if tool == "NetworkManager" else "exit 1"
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n{answer}\n')
        (bin_dir / tool).chmod(0o755)
    return bin_dir


def run_script(stand_ins: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{stand_ins}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=30)


def layout(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def written(root: Path, before: set[Path]) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file() and p not in before}


def real_files() -> list[Path]:
    """Where the script writes on a real box: none of them may appear while it writes a staging root."""
    return [Path("/", NM_CONF), *(Path("/", p) for p in NM_PROFILES),
            *Path("/etc/systemd/network").glob("*.d/50-passel-link-local.conf")]


def test_script_help():
    done = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "--destdir DIR" in done.stdout and "set -e" not in done.stdout


def test_script_networkd_layout_gets_a_drop_in_for_wired_dhcp_only(tmp_path, stand_ins):
    root = tmp_path / "root"
    layout(root, NETWORKD_LAYOUT)
    (root / "etc/systemd/network/90-masked.network").symlink_to("/dev/null")  # the admin masked it
    before, real_before = set(root.rglob("*")), real_files()

    done = run_script(stand_ins, "--destdir", str(root), "--systemd-version", "252")
    assert done.returncode == 0, done.stderr
    dropin = "etc/systemd/network/20-wired.network.d/50-passel-link-local.conf"
    assert list(written(root, before)) == [dropin], "only the wired DHCP link; static, Wi-Fi, masked untouched"
    assert written(root, before)[dropin].splitlines()[-2:] == ["[Network]", "LinkLocalAddressing=yes"]
    assert "80-admin.network sets LinkLocalAddressing= itself" in done.stdout
    assert all((root / name).read_text() == text for name, text in NETWORKD_LAYOUT.items()
               if name != "usr/lib/systemd/network/90-masked.network")

    again = run_script(stand_ins, "--destdir", str(root), "--systemd-version", "252")
    assert again.returncode == 0 and f"unchanged: /{dropin}" in again.stdout
    older = run_script(stand_ins, "--destdir", str(root), "--systemd-version", "245")  # 243-247: "fallback"
    assert older.returncode == 0 and (root / dropin).read_text().endswith("LinkLocalAddressing=fallback\n")
    removed = run_script(stand_ins, "--destdir", str(root), "--remove")  # for an uninstall
    assert removed.returncode == 0 and written(root, before) == {} and set(root.rglob("*")) == before
    assert not (tmp_path / "calls").exists(), "a staging root never reloads the machine's stack"
    assert real_files() == real_before


def test_script_networkmanager_layout_by_version(tmp_path, stand_ins):
    root = tmp_path / "root"
    layout(root, {"etc/NetworkManager/NetworkManager.conf": "[main]\nplugins=keyfile\n"})
    real_before = real_files()

    done = run_script(stand_ins, "--destdir", str(root))  # the version from NetworkManager --version
    assert done.returncode == 0, done.stderr
    conf = (root / NM_CONF).read_text()
    assert "[connection-passel-link-local]\nmatch-device=type:ethernet\nipv4.link-local=4\n" in conf
    assert "unchanged" in run_script(stand_ins, "--destdir", str(root)).stdout

    assert run_script(stand_ins, "--destdir", str(root), "--nm-version", "1.42.4").returncode == 0
    assert (root / NM_CONF).read_text().endswith("ipv4.link-local=3\n"), "1.40-1.51: enabled, no fallback"

    assert run_script(stand_ins, "--destdir", str(root), "--nm-version", "1.36.6").returncode == 0
    assert not (root / NM_CONF).exists()
    dhcp, link_local = ((root / p).read_text() for p in NM_PROFILES)
    assert "method=auto" in dhcp and "autoconnect-priority=-998" in dhcp
    assert "method=link-local" in link_local and "autoconnect-priority=-999" in link_local
    assert all((root / p).stat().st_mode & 0o777 == 0o600 for p in NM_PROFILES), "NetworkManager skips others"

    assert run_script(stand_ins, "--destdir", str(root)).returncode == 0  # upgraded to 1.52: profiles go
    assert (root / NM_CONF).exists() and not any((root / p).exists() for p in NM_PROFILES)
    assert [c.split()[0] for c in (tmp_path / "calls").read_text().splitlines()] == ["NetworkManager"] * 3
    assert real_files() == real_before


def test_script_ifupdown_asks_for_avahi_autoipd(tmp_path, stand_ins):
    root = tmp_path / "root"
    layout(root, {"etc/network/interfaces": "auto lo\niface lo inet loopback\n\nallow-hotplug eth0\n"
                                            "iface eth0 inet dhcp\n"})
    before = set(root.rglob("*"))
    done = run_script(stand_ins, "--destdir", str(root))
    assert done.returncode == 0 and "apt install avahi-autoipd" in done.stderr
    assert written(root, before) == {}
    layout(root, {"usr/sbin/avahi-autoipd": "#!/bin/sh\n"})
    (root / "usr/sbin/avahi-autoipd").chmod(0o755)
    assert "avahi-autoipd is installed" in run_script(stand_ins, "--destdir", str(root)).stdout
