"""Several hosts on one machine: network namespaces on a bridge, each box with its own processes.

Every run gets its own names, so parallel or leftover runs never collide, and everything is torn
down in `close()`. Traffic stays inside the namespaces this module creates.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.realnode import RealNode

REPO = Path(__file__).parent.parent


def netns_available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    probe = f"pzp{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _addresses(ns: str) -> list[str]:
    """The IPv4 addresses (address/prefix) on eth0 in a namespace."""
    shown = json.loads(subprocess.run(["ip", "-j", "-n", ns, "-4", "addr", "show", "dev", "eth0"], check=True,
                                      capture_output=True).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for link in shown for a in link.get("addr_info", [])]


@dataclass
class Box:
    """One simulated host: a namespace, an address, and the processes started in it."""

    index: int
    ns: str
    address: str
    veth: str
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    realnode: RealNode | None = None

    @property
    def api(self) -> str:
        return f"http://{self.address}:3000"

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a process in this box's namespace; `env` adds to the inherited environment."""
        log = open(self.workdir / f"{name}.log", "ab")
        process = subprocess.Popen(["ip", "netns", "exec", self.ns, *args], stdout=log, stderr=subprocess.STDOUT,
                                   cwd=REPO, start_new_session=True, env={**os.environ, **(env or {})})
        log.close()
        self.processes[name] = process
        return process

    def start_simnode(self, seconds_per_image: float = 0.05, slots: int = 2) -> None:
        self.start("simnode", sys.executable, "-m", "appliance", "simnode", "--host", "0.0.0.0", "--port", "3001",
                   "--seconds-per-image", str(seconds_per_image), "--slots", str(slots),
                   "--name", f"node{self.index}")

    def start_realnode(self, *flags: str) -> RealNode:
        """A real NodeODM (test mode) on port 3001 of this box's own address, as a field box runs it
        (reached from the test process over the bridge). Its agent must be told to share it
        (`--share`): the default share is 127.0.0.1:3001, where this node does not listen."""
        self.realnode = RealNode(self.workdir / "nodeodm", *flags, port=3001, host=self.address,
                                 prefix=("ip", "netns", "exec", self.ns)).start()
        self.realnode.wait_ready()
        return self.realnode

    key: str = "TEST-PASS-ELKE-YFOR-NETN-SONL"

    def start_agent(self, *extra: str, env: dict[str, str] | None = None) -> None:
        self.start("agent", sys.executable, "-m", "appliance", "run", "--host", "0.0.0.0", "--port", "3000",
                   "--key", self.key,
                   "--state-dir", str(self.workdir / "state"), "--name", f"box{self.index}",
                   "--poll-seconds", "0.5", "--task-poll-seconds", "0.5", "--min-free-disk-mb", "0", *extra, env=env)

    def signal(self, name: str, sig: int) -> None:
        process = self.processes[name]
        os.kill(process.pid, sig)
        if sig == signal.SIGKILL:
            process.wait(10)

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def link(self, up: bool) -> None:
        """Cut the box off the bridge (a partition) or plug it back in."""
        _ip("-n", self.ns, "link", "set", "eth0", "up" if up else "down")

    def get_json(self, path: str, timeout: float = 5) -> object:
        """GET from inside this box's own namespace: works even while the box is cut off."""
        code = ("import json,sys,urllib.request;"
                "print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode())")
        done = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", code,
                               f"http://127.0.0.1:3000{path}", str(timeout)], capture_output=True, timeout=timeout + 10)
        if done.returncode != 0:
            raise ConnectionError(done.stderr.decode(errors="replace")[-300:])
        return json.loads(done.stdout)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def run_python(self, code: str, *args: str, timeout: float = 60) -> str:
        """Run Python inside this box's namespace (a client on the field network); its stdout."""
        done = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", code, *args],
                              capture_output=True, timeout=timeout, cwd=REPO)
        if done.returncode != 0:
            raise ConnectionError(done.stderr.decode(errors="replace")[-2000:])
        return done.stdout.decode()

    def get_json_from(self, url: str, timeout: float = 5) -> object:
        """GET any URL from inside this box's namespace, e.g. another box's API over link-local."""
        code = ("import json,sys,urllib.request;"
                "print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode())")
        return json.loads(self.run_python(code, url, str(timeout), timeout=timeout + 10))

    def readdress(self, address: str, prefix: int, drop_old: bool = True) -> None:
        """Give eth0 a new address, as DHCP arriving late or a new link-local claim does, and by
        default drop the old one (what NetworkManager, systemd-networkd and avahi-autoipd do). Like
        them, it keeps the new address when the old one on the same network goes (promote_secondaries)."""
        subprocess.run(["ip", "netns", "exec", self.ns, "sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=1"],
                       check=True, capture_output=True)
        _ip("-n", self.ns, "addr", "add", f"{address}/{prefix}", "dev", "eth0")
        if drop_old:
            old = next(a for a in _addresses(self.ns) if a.startswith(self.address + "/"))
            _ip("-n", self.ns, "addr", "del", old, "dev", "eth0")
        self.address = address


class Bridge:
    """A hub namespace with a bridge, and a box per veth pair.

    With `link_local`, the boxes get only IPv4 link-local addresses (169.254.N.i/16), as on a bare
    switch with no DHCP server, and the test process stays off the bridge: a 169.254.0.0/16 route in
    the machine's own namespace would catch its link-local traffic (a cloud's metadata service).
    Clients then run inside a box's namespace (`Box.run_python`)."""

    def __init__(self, count: int, workdir: Path, link_local: bool = False) -> None:
        tag = uuid.uuid4().hex[:5]
        self.hub = f"pz{tag}h"
        self.subnet = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
        if link_local:  # 169.254.0.x and 169.254.255.x are reserved (RFC 3927)
            self.subnet = f"169.254.{1 + int(tag[:2], 16) % 254}"
        self.boxes: list[Box] = []
        _ip("netns", "add", self.hub)
        try:
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for i in range(1, count + 1):
                ns, veth = f"pz{tag}n{i}", f"vpz{tag}{i}"
                _ip("netns", "add", ns)
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("link", "set", veth, "netns", self.hub)
                _ip("-n", self.hub, "link", "set", veth, "master", "br0")
                _ip("-n", self.hub, "link", "set", veth, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "addr", "add", f"{self.subnet}.{i}/{16 if link_local else 24}", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                box_dir = workdir / f"box{i}"
                box_dir.mkdir(parents=True, exist_ok=True)
                self.boxes.append(Box(i, ns, f"{self.subnet}.{i}", veth, box_dir))
            if link_local:
                return
            # The test process itself joins the bridge, so it can act as a client on the field network.
            self.root_veth = f"vpz{tag}r"
            _ip("link", "add", self.root_veth, "type", "veth", "peer", "name", f"vpz{tag}q", "netns", self.hub)
            _ip("-n", self.hub, "link", "set", f"vpz{tag}q", "master", "br0")
            _ip("-n", self.hub, "link", "set", f"vpz{tag}q", "up")
            _ip("addr", "add", f"{self.subnet}.254/24", "dev", self.root_veth)
            _ip("link", "set", self.root_veth, "up")
        except BaseException:
            self.close()
            raise

    def join(self, box: Box, ifname: str, address: str, prefix: int) -> None:
        """Plug a box of another bridge into this one too, through a second interface: a box with
        Wi-Fi and a cable. Deleting this bridge's hub unplugs it again."""
        veth = f"{self.hub[:-1]}j{box.index}"
        _ip("link", "add", veth, "type", "veth", "peer", "name", ifname, "netns", box.ns)
        _ip("link", "set", veth, "netns", self.hub)
        _ip("-n", self.hub, "link", "set", veth, "master", "br0")
        _ip("-n", self.hub, "link", "set", veth, "up")
        _ip("-n", box.ns, "addr", "add", f"{address}/{prefix}", "dev", ifname)
        _ip("-n", box.ns, "link", "set", ifname, "up")

    def close(self) -> None:
        for box in self.boxes:
            for name in list(box.processes):
                box.stop(name)
            if box.realnode is not None:
                box.realnode.stop(graceful=False)
        for box in self.boxes:
            subprocess.run(["ip", "netns", "del", box.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", getattr(self, "root_veth", "none")], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.hub], capture_output=True)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001 - keep polling through transient errors
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@contextlib.contextmanager
def running_passel(workdir: Path, simnode: dict[str, Any], *agent_flags: str,
                   real: dict[int, tuple[str, ...]] | None = None) -> Iterator[Bridge]:
    """Three boxes, each with a node and an agent (priority = its index): a simulated node, or for the
    box indexes in `real` a real NodeODM with those flags. Every box's logs are kept in `workdir`,
    and the bridge is always torn down."""
    real = real or {}
    bridge = Bridge(3, workdir)
    try:
        for box in bridge.boxes:
            if box.index in real:
                node = box.start_realnode(*real[box.index])
                box.start_agent("--priority", str(box.index), "--share", node.url, *agent_flags)
            else:
                box.start_simnode(**simnode)
                box.start_agent("--priority", str(box.index), *agent_flags)
        yield bridge
    finally:
        for box in bridge.boxes:
            for name in ("agent", "simnode"):
                (workdir / f"box{box.index}-{name}.log").write_text(box.log(name))
            if box.realnode is not None:
                (workdir / f"box{box.index}-nodeodm.log").write_text(box.realnode.log())
        bridge.close()
