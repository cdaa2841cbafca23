"""Link shaping and byte counting for a `tests.netns.Bridge`, and threads that live in a box's namespace.

Two shapes of field network, both with `tc` token-bucket filters (tbf: one rate, one queue):

* `switch`: every port of the hub (each box's, and the client's) is a full-duplex link of `rate`.
  Both directions are shaped, each on the sending side of the veth pair: the hub-side end's egress
  (hub -> host) and the host-side end's egress (host -> hub: `eth0` in a box, the root namespace's
  veth for the client). Ports do not slow each other down, as with a switch.
* `shared`: one channel of `rate` that every frame crosses, as on one Wi-Fi channel (half duplex,
  one medium): in the hub namespace, each port's ingress is redirected (`u32` match-all +
  `mirred egress redirect`) into one `ifb` device, whose egress is the one tbf; the ifb hands each
  frame back to the bridge, which forwards it unshaped. So any frame sent by anyone, in either
  direction, uses up the same airtime; a byte relayed from box to box costs airtime once per hop.
  (Wi-Fi in infrastructure mode would send a station-to-station frame twice, via the access point;
  this is the kinder ad-hoc/mesh case. No latency or loss is added: this kernel has no netem.)

The qdiscs and the ifb live on devices the Bridge owns, so deleting its namespaces removes them;
`Shaper.clear()` removes them explicitly first (the root namespace's one above all).

Bytes on the wire: the sum of `tx_bytes` of every hub-side port, i.e. every frame the hub delivered
onto a link, counted once per delivery. A byte sent from one host to another counts once, so a
direct upload is ~1.0 per uploaded byte (plus TCP/IP headers and ACKs), and a byte relayed through a
third box counts twice.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from typing import Any

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(ns: str) -> None:
    """Move the *calling thread* (only it) into network namespace `ns`: sockets it opens from now on
    live there, so polling a box's node from inside the box puts no byte on the shaped links."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _run(*args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")


def tbf_args(rate: str) -> list[str]:
    """A tbf for `rate`: a burst of 2 ms of traffic (at least 64 KiB, one GSO packet, so big segments
    are not split up) and at most 20 ms of queue."""
    bits = parse_rate(rate)
    burst = max(64 * 1024, int(bits / 8 * 0.002))
    return ["tbf", "rate", rate, "burst", str(burst), "latency", "20ms"]


def parse_rate(rate: str) -> float:
    """`100mbit`, `1gbit`, `500kbit` -> bits per second."""
    units = {"gbit": 1e9, "mbit": 1e6, "kbit": 1e3, "bit": 1.0}
    for suffix, factor in units.items():
        if rate.lower().endswith(suffix):
            return float(rate[: -len(suffix)]) * factor
    raise ValueError(f"rate must end in gbit, mbit, kbit or bit: {rate!r}")


class Shaper:
    """Applies one shape (`switch` or `shared`) at `rate` to a Bridge's ports, and counts their bytes.

    `ports` are (host-side namespace or None for the root namespace, host-side device, hub-side device).
    """

    def __init__(self, hub: str, ports: list[tuple[str | None, str, str]], mode: str, rate: str) -> None:
        if mode not in ("switch", "shared"):
            raise ValueError(f"mode must be switch or shared, not {mode!r}")
        self.hub, self.ports, self.mode, self.rate = hub, ports, mode, rate
        self.ifb = "ifbpz0"
        self.applied: list[tuple[str | None, str, str]] = []  # (namespace, device, what) to remove

    def _tc(self, ns: str | None, *args: str) -> None:
        _run("tc", *(("-n", ns) if ns else ()), *args)

    def apply(self) -> None:
        tbf = tbf_args(self.rate)
        if self.mode == "switch":
            for host_ns, host_dev, hub_dev in self.ports:
                self._tc(self.hub, "qdisc", "add", "dev", hub_dev, "root", *tbf)
                self.applied.append((self.hub, hub_dev, "root"))
                self._tc(host_ns, "qdisc", "add", "dev", host_dev, "root", *tbf)
                self.applied.append((host_ns, host_dev, "root"))
            return
        _run("ip", "-n", self.hub, "link", "add", self.ifb, "type", "ifb")
        _run("ip", "-n", self.hub, "link", "set", self.ifb, "up")
        self._tc(self.hub, "qdisc", "add", "dev", self.ifb, "root", *tbf)
        for _, _, hub_dev in self.ports:
            self._tc(self.hub, "qdisc", "add", "dev", hub_dev, "handle", "ffff:", "ingress")
            self.applied.append((self.hub, hub_dev, "ingress"))
            self._tc(self.hub, "filter", "add", "dev", hub_dev, "parent", "ffff:", "protocol", "all", "u32",
                     "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", self.ifb)

    def describe(self) -> dict[str, Any]:
        """What `tc` reports now: the qdiscs with their sent/dropped/overlimit counters."""
        out: dict[str, Any] = {}
        for ns in {self.hub, *(p[0] for p in self.ports)}:
            done = subprocess.run(["tc", *(("-n", ns) if ns else ()), "-s", "-j", "qdisc", "show"],
                                  capture_output=True, text=True, timeout=30)
            try:
                rows = json.loads(done.stdout or "[]")
            except ValueError:
                rows = []
            devices = {p[1] for p in self.ports if p[0] == ns} | ({p[2] for p in self.ports} | {self.ifb}
                                                                  if ns == self.hub else set())
            out[ns or "root"] = [
                {k: r.get(k) for k in ("dev", "kind", "bytes", "packets", "drops", "overlimits")}
                for r in rows if r.get("dev") in devices and r.get("kind") in ("tbf", "ingress")]
        return out

    def clear(self) -> None:
        """Remove every qdisc and the ifb (best effort: the namespaces may already be gone)."""
        for ns, dev, what in reversed(self.applied):
            subprocess.run(["tc", *(("-n", ns) if ns else ()), "qdisc", "del", "dev", dev,
                            *(("root",) if what == "root" else ("handle", "ffff:", "ingress"))],
                           capture_output=True, timeout=30)
        self.applied.clear()
        if self.mode == "shared":
            subprocess.run(["ip", "-n", self.hub, "link", "del", self.ifb], capture_output=True, timeout=30)

    def counters(self) -> dict[str, dict[str, int]]:
        """tx/rx bytes of every hub-side port, as the hub sees them (tx = delivered onto the link)."""
        done = subprocess.run(["ip", "-n", self.hub, "-s", "-j", "link", "show"], capture_output=True,
                              text=True, timeout=30, check=True)
        wanted = {p[2] for p in self.ports}
        return {row["ifname"]: {"tx": row["stats64"]["tx"]["bytes"], "rx": row["stats64"]["rx"]["bytes"]}
                for row in json.loads(done.stdout) if row["ifname"] in wanted}


def delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {dev: {k: after[dev][k] - before[dev][k] for k in ("tx", "rx")} for dev in after if dev in before}
