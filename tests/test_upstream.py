"""An upstream node beyond the site, for real: a real NodeODM (test mode) in its own network namespace
behind a shaped "uplink" (tbf, 10 Mbit/s each way), added to a one-box passel as an upstream node,
driven by PyODM through the site box.

In order, on one site (each step builds on what the passel has learned by then):
- placement: a task of few small images goes upstream and one of big images stays local, as the rule
  says (`/-/nodes/best` answers the same before the tasks are sent);
- the link dropped mid-upload: the send is taken back at once and the task completes locally;
- the link dropped mid-processing: after the grace, the task completes locally; once the link is back,
  the upstream's copy is removed, so nothing runs or stays twice;
- results home: an upstream's COMPLETED is shown only once all.zip is in the passel, and a link that
  drops mid-download (breaking its connections, as a modem that reconnects does) resumes where it
  broke off (Range): the bytes are the upstream's own.

This kernel has no netem, so the uplink adds bandwidth limits but no latency.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pyodm import Node

from tests.conftest import require_netns, require_realnode
from tests.netns import Bridge, wait_until
from tests.nodeodm_helpers import make_images

pytestmark = pytest.mark.netns
UPLINK = "10mbit"
TEST_SECONDS = 4  # how long the upstream's NodeODM "processes" a task
GRACE = 10.0
KB, MB = 1024, 1024 * 1024


def shape(ns: str, device: str, rate: str, change: bool = False) -> None:
    """A token bucket on the sending side of one direction of the uplink."""
    subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "change" if change else "add", "dev", device, "root",
                    "tbf", "rate", rate, "burst", "32kb", "latency", "400ms"], check=True, capture_output=True)


class Site:
    """Box 1: the site, a Passel agent and a slow simulated node; box 2: the cloud, a real NodeODM."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bridge = Bridge(2, tmp)
        self.box, self.cloud = self.bridge.boxes
        self.upstream_url = f"http://{self.cloud.address}:3001"
        self.local_url = "http://127.0.0.1:3001"

    def start(self) -> None:
        self.cloud.start_realnode("--test_seconds", str(TEST_SECONDS))
        shape(self.bridge.hub, self.cloud.veth, UPLINK)  # towards the cloud: the images going up
        shape(self.cloud.ns, "eth0", UPLINK)  # from the cloud: the results coming home
        # 1 core and 4 GB: a slow field laptop by its prior; it really takes 1 s an image
        self.box.start("simnode", sys.executable, "-m", "appliance", "simnode", "--host", "0.0.0.0", "--port", "3001",
                       "--seconds-per-image", "1", "--slots", "1", "--cores", "1", "--memory-mb", "4096")
        self.box.start_agent("--no-discovery", "--node", f"{self.local_url}#laptop",
                             "--upstream", f"{self.upstream_url}#cloud", "--grace-seconds", str(GRACE))
        wait_until(lambda: len([n for n in self.nodes() if n["online"]]) == 2, 60, "both nodes online")

    @property
    def api(self) -> str:
        return self.box.api

    def nodes(self) -> list[dict[str, Any]]:
        return requests.get(self.api + "/-/nodes", timeout=5).json()

    def node_id(self, url: str) -> int:
        return next(n["id"] for n in self.nodes() if n["url"] == url)

    def task(self, uuid: str) -> dict[str, Any]:
        return requests.get(f"{self.api}/-/tasks/{uuid}", timeout=5).json()

    def lock_local(self, locked: bool) -> None:
        action = "lock" if locked else "unlock"
        assert requests.post(f"{self.api}/-/nodes/{self.node_id(self.local_url)}/{action}", timeout=5).ok

    def submit(self, name: str, images: int, size: int) -> str:
        """A task sent as any ODM user sends one: PyODM, to the site box."""
        files = make_images(self.tmp / name, images, size)
        return Node(self.box.address, 3000).create_task(files, name=name).uuid

    def completed(self, uuid: str, timeout: float = 60) -> dict[str, Any]:
        return wait_until(lambda: (t := self.task(uuid))["status"] == 40 and t, timeout, f"{uuid} to complete")

    def upstream_lists(self) -> set[str]:
        return {t["uuid"] for t in requests.get(self.upstream_url + "/task/list", timeout=5).json()}

    def cut(self, down: bool) -> None:
        self.cloud.link(not down)

    def break_connections(self) -> None:
        """What a modem that reconnects does to the connections through it: the site box's sockets to
        the cloud are gone (a short cut alone only stalls them, and TCP carries on)."""
        subprocess.run(["ip", "netns", "exec", self.box.ns, "ss", "-K", "dst", self.cloud.address], check=True,
                       capture_output=True)

    def close(self) -> None:
        self.bridge.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_netns()
    require_realnode()
    made = Site(tmp_path_factory.mktemp("upstream"))
    try:
        made.start()
        yield made
    finally:
        made.close()
        assert "Traceback" not in made.box.log("agent"), made.box.log("agent")[-3000:]


def test_small_slow_locally_tasks_go_upstream_and_large_ones_stay_local(site: Site) -> None:
    upstream, local = site.node_id(site.upstream_url), site.node_id(site.local_url)
    best = requests.get(site.api + "/-/nodes/best", params={"images": 5, "mb": 0.2}, timeout=5).json()
    assert best["best"] == upstream, best
    best = requests.get(site.api + "/-/nodes/best", params={"images": 5, "mb": 40}, timeout=5).json()
    assert best["best"] == local, best

    small = site.submit("small", 5, 40 * KB)
    large = site.submit("large", 5, 8 * MB)
    small_row, large_row = site.completed(small), site.completed(large)
    assert small_row["node_id"] == upstream and large_row["node_id"] == local
    # The upstream's results are in the passel, and its own copy is gone once they were.
    assert small_row["results_copied_at"] is not None
    assert (site.box.workdir / "state" / "results" / small / "all.zip").is_file()
    # removed just after the task is saved COMPLETED (a crash in between must not cost the results)
    wait_until(lambda: small not in site.upstream_lists(), 30, "the upstream's copy to be removed once home")
    zipped = requests.get(f"{site.api}/task/{small}/download/all.zip", timeout=30)
    assert zipped.ok and zipped.content[:2] == b"PK"
    shown = next(n for n in site.nodes() if n["id"] == upstream)
    assert shown["upstream"] is True and shown["link"].startswith("up: ")


def test_the_uplink_is_measured_from_a_real_upload(site: Site) -> None:
    """A whole send of 3 MB up the 10 Mbit/s link replaces the guess with what it took."""
    site.lock_local(True)
    try:
        site.completed(site.submit("measure", 3, 1 * MB))
    finally:
        site.lock_local(False)
    link = next(n for n in site.nodes() if n["url"] == site.upstream_url)["link"]
    measured = re.match(r"up: up ([0-9.]+) Mbit/s, down", link)  # a guess would say "Mbit/s (guess), down"
    assert measured and 2.0 < float(measured.group(1)) <= 12.0, link  # tbf lets a burst through above its rate


def test_a_link_dropped_mid_upload_sends_the_task_to_a_local_node(site: Site) -> None:
    site.lock_local(True)
    uuid = site.submit("mid-upload", 5, 4 * MB)  # 20 MB: 16 s up a 10 Mbit/s link
    upstream = site.node_id(site.upstream_url)
    wait_until(lambda: (t := site.task(uuid))["phase"] == "forwarding" and t["node_id"] == upstream, 30,
               "the send to the upstream")
    time.sleep(3)
    site.cut(True)
    site.lock_local(False)
    began = time.monotonic()
    try:
        row = site.completed(uuid, timeout=60)
        taken_back = time.monotonic() - began
    finally:
        site.cut(False)
    assert row["node_id"] == site.node_id(site.local_url), row
    assert taken_back < 30, f"the send was taken back only after {taken_back:.0f} s"
    wait_until(lambda: next(n for n in site.nodes() if n["id"] == upstream)["online"], 30, "the link back")
    assert uuid not in site.upstream_lists()  # an upload never committed there is not a task there


def test_a_link_dropped_mid_processing_completes_locally_and_nothing_stays_twice(site: Site) -> None:
    site.lock_local(True)
    uuid = site.submit("mid-processing", 3, 40 * KB)
    upstream = site.node_id(site.upstream_url)
    wait_until(lambda: (t := site.task(uuid))["phase"] == "on_node" and t["node_id"] == upstream, 30,
               "the task to run upstream")
    site.cut(True)
    site.lock_local(False)
    try:
        row = site.completed(uuid, timeout=GRACE + 60)
    finally:
        site.cut(False)
    assert row["node_id"] == site.node_id(site.local_url), row
    zipped = requests.get(f"{site.api}/task/{uuid}/download/all.zip", timeout=30)
    assert zipped.ok and zipped.content[:2] == b"PK"
    # The upstream still held its copy when the link came back: the passel removes it.
    wait_until(lambda: uuid not in site.upstream_lists(), 30, "the upstream's stale copy to be removed")
    assert site.task(uuid)["status"] == 40


def test_results_come_home_through_a_link_that_drops_mid_download(site: Site) -> None:
    shape(site.cloud.ns, "eth0", "1mbit", change=True)  # all.zip (850 KB) takes about 7 s to come home
    site.lock_local(True)
    try:
        uuid = site.submit("homecoming", 3, 40 * KB)
        part = site.box.workdir / "state" / "results" / uuid / "all.zip.part"
        wait_until(lambda: part.exists() and part.stat().st_size > 100 * KB, 60, "all.zip to begin coming home")
        upstream_copy = site.cloud.realnode.task_dir(uuid) / "all.zip"
        expected = hashlib.sha256(upstream_copy.read_bytes()).hexdigest()
        shown = requests.get(f"{site.api}/task/{uuid}/info", timeout=5).json()
        assert shown["status"]["code"] == 20, shown  # done upstream, but not COMPLETED until it is home
        site.cut(True)
        site.break_connections()
        time.sleep(4)
        site.cut(False)
        row = site.completed(uuid, timeout=90)
    finally:
        shape(site.cloud.ns, "eth0", UPLINK, change=True)
        site.lock_local(False)
    assert row["node_id"] == site.node_id(site.upstream_url)
    zipped = requests.get(f"{site.api}/task/{uuid}/download/all.zip", timeout=30)
    assert hashlib.sha256(zipped.content).hexdigest() == expected
    assert "bringing its results home broke off" in site.box.log("agent")
    wait_until(lambda: uuid not in site.upstream_lists(), 30, "the upstream's copy to be removed once home")
