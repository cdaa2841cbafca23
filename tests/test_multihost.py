"""Real multicast between boxes in network namespaces: discovery, election, failover, partitions.

Each test builds its own bridge of namespaces, each with a NodeODM and a Passel agent, exactly as
boxes on a field network; the nodes are simulated, except on box1 of the first test, which runs a
real NodeODM. CI sets PASSEL_REQUIRE_NETNS=1 so these can never be skipped silently there.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.conftest import require_realnode
from tests.netns import running_passel, wait_until
from tests.nodeodm_helpers import JPEG

PASSWORD = "field-password-1"

pytestmark = pytest.mark.netns
LEASE = 5.0


@pytest.fixture
def passel3(tmp_path: Path, netns_required):
    with running_passel(tmp_path, {"seconds_per_image": 0.05}) as bridge:
        yield bridge


@pytest.fixture
def passel3_real(tmp_path: Path, netns_required):
    """Box1 runs a real NodeODM (test mode, 1 s a task) on its own address; boxes 2 and 3 simulated ones."""
    require_realnode()
    with running_passel(tmp_path, {"seconds_per_image": 0.05}, real={1: ("--test_seconds", "1")}) as bridge:
        yield bridge


@contextlib.contextmanager
def webhook_catcher(address: str) -> Iterator[tuple[str, list[dict]]]:
    """An HTTP server on the test process's own bridge address that records each webhook call's JSON."""
    calls: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            calls.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((address, 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_port}/hook", calls
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def view(box, timeout: float = 3) -> dict:
    return requests.get(box.api + "/-/passel.json", timeout=timeout).json()


def coordinators(boxes) -> set[str]:
    return {b["id"] for box in boxes for b in view(box)["boxes"] if b["role"] == "coordinator" and b["alive"]}


def settled_on_one(boxes) -> str | None:
    """The coordinator id when every box agrees on the same one, else None."""
    seen = {(view(box)["coordinator"] or {}).get("id") for box in boxes}
    return seen.pop() if len(seen) == 1 and None not in seen else None


def box_by_id(bridge, box_id: str):
    return next(box for box in bridge.boxes if view(box)["self"]["id"] == box_id)


def submit_from_namespace(box, images: int = 6) -> str:
    """A PyODM client running inside `box`'s namespace, talking to its local agent; returns the uuid."""
    code = f"""
import sys, tempfile, pathlib
from pyodm import Node
d = pathlib.Path(tempfile.mkdtemp())
files = []
for i in range({images}):
    p = d / f"IMG_{{i:03d}}.JPG"; p.write_bytes(b"\\xff\\xd8" + bytes([i]) * 4000); files.append(str(p))
task = Node("127.0.0.1", 3000).create_task(files, skip_post_processing=True, parallel_uploads=4)
print(task.uuid)
"""
    done = subprocess.run(["ip", "netns", "exec", box.ns, sys.executable, "-c", code], capture_output=True,
                          timeout=60, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stdout.decode().strip().splitlines()[-1]


def resolve_alias(box, name: str = "passel.local.") -> list[str]:
    """Ask mDNS, from inside `box`'s namespace, which address answers for the friendly name."""
    code = f"""
import asyncio
from zeroconf import AddressResolverIPv4, IPVersion
from zeroconf.asyncio import AsyncZeroconf
async def main():
    aiozc = AsyncZeroconf(ip_version=IPVersion.V4Only)
    resolver = AddressResolverIPv4({name!r})
    await resolver.async_request(aiozc.zeroconf, 3000)
    print(" ".join(resolver.parsed_addresses()))
    await aiozc.async_close()
asyncio.run(main())
"""
    done = subprocess.run(["ip", "netns", "exec", box.ns, sys.executable, "-c", code], capture_output=True,
                          timeout=30)
    return done.stdout.decode().split()


def test_discovery_election_entry_points_and_transfer(passel3_real, tmp_path):
    boxes = passel3_real.boxes
    wait_until(lambda: all(sum(b["alive"] for b in view(box)["boxes"]) == 3 for box in boxes), 30,
               "every box to see every box")
    leader = wait_until(lambda: settled_on_one(boxes), 30, "one coordinator")
    assert coordinators(boxes) == {leader}
    leader_box = next(box for box in boxes if view(box)["self"]["id"] == leader)
    wait_until(lambda: resolve_alias(boxes[0]) == [leader_box.address], 20, "passel.local to name the coordinator")
    assert view(boxes[2])["self"]["priority"] == 3

    # Any box is an entry point: PyODM against a follower, end to end.
    from pyodm import Node
    follower = next(box for box in boxes if view(box)["self"]["id"] != leader)
    files = []
    for i in range(8):
        path = tmp_path / f"IMG_{i}.JPG"
        path.write_bytes(b"\xff\xd8" + bytes([i]) * 20000)
        files.append(str(path))
    task = Node(follower.address, 3000).create_task(files, skip_post_processing=True, parallel_uploads=10,
                                                    outputs=["cameras.json"])
    task.wait_for_completion(interval=0.5)
    assert task.info().images_count == 8
    out = Path(task.download_assets(str(tmp_path / "out")))
    assert (out / "cameras.json").is_file()

    # Nodes shared over mDNS joined the coordinator's registry by themselves.
    nodes = requests.get(follower.api + "/-/nodes", timeout=5).json()
    assert sorted(n["url"] for n in nodes) == sorted(f"http://{b.address}:3001" for b in boxes)
    assert all(n["source"] == "mdns" and n["online"] for n in nodes)
    every_field_reaches_the_real_node(passel3_real, leader, tmp_path)

    # `passel status --json` gives the passel as one box sees it.
    status = subprocess.run([sys.executable, "-m", "appliance", "status", "--api", follower.api, "--json"],
                            capture_output=True, timeout=30, cwd=Path(__file__).parent.parent)
    parsed = json.loads(status.stdout)
    assert parsed["coordinator"]["id"] == leader and parsed["self"]["id"] != leader and parsed["term"] >= 1
    assert {b["name"] for b in parsed["boxes"]} == {"box1", "box2", "box3"}
    assert all({"id", "name", "role", "address", "alive"} <= set(b) for b in parsed["boxes"])

    # Hand the role over by hand, through a follower's admin API.
    target = next(box for box in boxes if view(box)["self"]["id"] not in (leader, view(follower)["self"]["id"]))
    target_id = view(target)["self"]["id"]
    reply = requests.post(follower.api + "/-/transfer", json={"to": target_id}, timeout=10).json()
    assert reply["success"] is True
    wait_until(lambda: settled_on_one(boxes) == target_id, 15, "every box to follow the new coordinator")
    # The friendly name moved with the role.
    wait_until(lambda: resolve_alias(follower) == [target.address], 20, "passel.local to name the new coordinator")
    assert requests.get(f"{follower.api}/task/{task.uuid}/info", timeout=10).json()["status"]["code"] == 40, \
        "the finished task moved with the role"


def every_field_reaches_the_real_node(bridge, leader: str, tmp_path: Path) -> None:
    """A task with every init field, sent through a follower that is not box1, runs on box1's real
    NodeODM (the simulated nodes are locked): the node itself stores exactly what the client sent,
    calls the client's webhook, and its all.zip holds only the requested outputs."""
    real_box = bridge.boxes[0]
    real_url = f"http://{real_box.address}:3001"
    entry = next(box for box in bridge.boxes if box is not real_box and view(box)["self"]["id"] != leader)
    assert view(entry)["self"]["role"] == "follower"
    for node in requests.get(entry.api + "/-/nodes", timeout=5).json():
        if node["url"] != real_url:
            assert requests.post(f"{entry.api}/-/nodes/{node['id']}/lock", timeout=10).json()["locked"] is True
    options = [{"name": "pc-quality", "value": "low"}, {"name": "orthophoto-resolution", "value": 2.5}]
    outputs = ["odm_orthophoto/odm_orthophoto.png", "odm_georeferencing"]
    # A client's own creation time, a minute ago: NodeODM deletes a task whose dateCreated is older than
    # its cleanup age (2 days) at its next sweep, which may come right after the task completes.
    created = int(time.time() * 1000) - 60_000
    with webhook_catcher(f"{bridge.subnet}.254") as (hook, calls):
        fields = {"name": "field 7, north block", "options": json.dumps(options), "outputs": json.dumps(outputs),
                  "skipPostProcessing": "true", "webhook": hook, "dateCreated": str(created)}
        uuid = requests.post(entry.api + "/task/new/init", files={k: (None, v) for k, v in fields.items()},
                             timeout=30).json()["uuid"]
        for i in range(3):
            assert requests.post(f"{entry.api}/task/new/upload/{uuid}", files={"images": (f"IMG_{i}.JPG", JPEG)},
                                 timeout=30).json() == {"success": True}
        assert requests.post(f"{entry.api}/task/new/commit/{uuid}", timeout=30).json() == {"uuid": uuid}
        info = wait_until(lambda: (i := requests.get(f"{entry.api}/task/{uuid}/info", timeout=5).json())
                          ["status"]["code"] in (30, 40, 50) and i, 60, "the task on the real node to finish")
        assert info["status"]["code"] == 40, info
        wait_until(lambda: any(c.get("uuid") == uuid for c in calls), 30, "the node to call the client's webhook")
    assert (info["name"], info["dateCreated"], info["imagesCount"]) == (fields["name"], created, 3)
    assert requests.get(f"{entry.api}/-/tasks/{uuid}", timeout=5).json()["node_url"] == real_url
    # The entry kept the images and sent them straight to the node; none went through the coordinator.
    leader_box = next(box for box in bridge.boxes if view(box)["self"]["id"] == leader)
    assert sorted(p.name for p in (entry.workdir / "state" / "staging" / uuid).iterdir()) == [
        f"IMG_{i}.JPG" for i in range(3)]
    assert not (leader_box.workdir / "state" / "staging" / uuid).exists()
    zipped = requests.get(f"{entry.api}/task/{uuid}/download/all.zip", timeout=30)
    assert zipped.headers.get("Content-Type", "").startswith("application/zip"), (zipped.status_code, zipped.text[:300])
    names = [n for n in zipfile.ZipFile(io.BytesIO(zipped.content)).namelist() if not n.endswith("/")]
    assert "odm_orthophoto/odm_orthophoto.png" in names and any(n.startswith("odm_georeferencing/") for n in names)
    assert all(n == outputs[0] or n.startswith(outputs[1] + "/") for n in names), names
    # The follower streamed all.zip from the node itself, told the coordinator, and so released its copy.
    wait_until(lambda: requests.get(f"{leader_box.api}/-/tasks/{uuid}", timeout=5).json()["status"] == 40
               and not (entry.workdir / "state" / "staging" / uuid).exists(), 20,
               "the entry to release the images once the results were downloaded")

    stored = real_box.realnode.stored_tasks()[uuid]  # a graceful restart: the node's own tasks.json
    real_box.realnode.wait_ready()
    assert {k: stored[k] for k in ("name", "options", "webhook", "skipPostProcessing", "outputs", "dateCreated")} == {
        "name": fields["name"], "options": options, "webhook": hook, "skipPostProcessing": True,
        "outputs": outputs, "dateCreated": created}


def test_images_kept_by_a_box_that_dies_are_answered_not_found_at_once(passel3, tmp_path):
    """A follower keeps the images of the uploads it takes in. When it dies before a node has them, a
    client that asks is told not-found as soon as the box is declared gone, not after the 90 s grace,
    so ODM sends the task again at once; no second copy of every upload costs the field network."""
    from pyodm import Node
    boxes = passel3.boxes
    leader = box_by_id(passel3, wait_until(lambda: settled_on_one(boxes), 40, "one coordinator"))
    entry = next(box for box in boxes if box is not leader)
    wait_until(lambda: len(requests.get(leader.api + "/-/nodes", timeout=5).json()) == 3, 30, "three nodes")
    for node in requests.get(leader.api + "/-/nodes", timeout=5).json():  # the task waits in the queue
        assert requests.post(f"{leader.api}/-/nodes/{node['id']}/lock", timeout=10).json()["locked"] is True
    files = []
    for i in range(4):
        path = tmp_path / f"IMG_{i}.JPG"
        path.write_bytes(b"\xff\xd8" + bytes([i]) * 20000)
        files.append(str(path))
    uuid = Node(entry.address, 3000).create_task(files, skip_post_processing=True).uuid
    assert len(list((entry.workdir / "state" / "staging" / uuid).iterdir())) == 4
    assert requests.get(f"{leader.api}/task/{uuid}/info", timeout=5).json()["status"]["code"] == 10

    entry.signal("agent", signal.SIGKILL)
    killed = time.monotonic()
    reply = wait_until(lambda: "error" in (r := requests.get(f"{leader.api}/task/{uuid}/info", timeout=5).json()) and r,
                       30, "not-found for the task whose images died with their box")
    assert "not found" in reply["error"].lower()
    assert time.monotonic() - killed < 30, "well before the 90 s grace"
    assert uuid not in [t["uuid"] for t in requests.get(f"{leader.api}/task/list", timeout=5).json()]


def test_a_follower_serves_results_from_the_node_itself(passel3, tmp_path):
    """all.zip goes from the node to the box the client asked, never through a third box: a follower
    serves it even while the coordinator is frozen."""
    from pyodm import Node
    boxes = passel3.boxes
    leader = box_by_id(passel3, wait_until(lambda: settled_on_one(boxes), 40, "one coordinator"))
    entry = next(box for box in boxes if box is not leader)
    wait_until(lambda: sum(n["online"] for n in requests.get(entry.api + "/-/nodes", timeout=5).json()) == 3, 30,
               "three nodes online")
    files = []
    for i in range(4):
        path = tmp_path / f"IMG_{i}.JPG"
        path.write_bytes(b"\xff\xd8" + bytes([i]) * 20000)
        files.append(str(path))
    task = Node(entry.address, 3000).create_task(files, skip_post_processing=True, outputs=["cameras.json"])
    task.wait_for_completion(interval=0.5)
    first = requests.get(f"{entry.api}/task/{task.uuid}/download/all.zip", timeout=10)  # the replica has it by now
    assert first.status_code == 200
    leader.signal("agent", signal.SIGSTOP)
    try:  # well within a lease: no other coordinator yet, so a relay would hang on the frozen one
        zipped = requests.get(f"{entry.api}/task/{task.uuid}/download/all.zip", timeout=3)
        assert zipped.content == first.content
        assert "cameras.json" in zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()
    finally:
        leader.signal("agent", signal.SIGCONT)


def test_kill9_of_coordinator_fails_over_and_old_one_rejoins_as_follower(passel3):
    boxes = passel3.boxes
    leader_id = wait_until(lambda: settled_on_one(boxes), 40, "one coordinator")
    leader = box_by_id(passel3, leader_id)
    survivors = [box for box in boxes if box is not leader]
    wait_until(lambda: len(view(leader)["table"]["replicas"]) == 2, 10, "both followers to copy the empty table")
    before = submit_from_namespace(survivors[0])
    wait_until(lambda: requests.get(f"{survivors[0].api}/task/{before}/info", timeout=5).json()
               .get("status", {}).get("code") == 40, 30, "the first task to finish")

    last = submit_from_namespace(survivors[1])  # answered only once the replicas hold it
    leader.signal("agent", signal.SIGKILL)
    killed = time.monotonic()
    new_id = wait_until(lambda: (c := settled_on_one(survivors)) not in (None, leader_id) and c, 30,
                        "a new coordinator")
    info = wait_until(lambda: requests.get(survivors[0].api + "/info", timeout=3).json(), 15, "/info again")
    assert info["maxParallelTasks"] >= 4
    assert time.monotonic() - killed < 25
    assert "status" in requests.get(f"{survivors[0].api}/task/{last}/info", timeout=5).json(), \
        "a task committed just before the crash is known to the new coordinator"

    leader.start_agent("--priority", str(leader.index))
    wait_until(lambda: view(leader)["self"]["role"] == "follower" and view(leader)["coordinator"]["id"] == new_id,
               30, "the old coordinator to come back as a follower")
    assert coordinators(boxes) == {new_id}
    # What the old coordinator held is handed to the new one: the task is known again.
    for uuid in (before, last):
        wait_until(lambda: requests.get(f"{survivors[0].api}/task/{uuid}/info", timeout=5).json()
                   .get("status", {}).get("code") == 40, 30, f"task {uuid} to be handed over and finished")
    listed = requests.get(survivors[0].api + "/task/list", timeout=5).json()
    assert listed.count({"uuid": before}) == 1 and listed.count({"uuid": last}) == 1


# Tried once more when it fails: in 1 of about 4 full runs under CI load, a task was answered not-found
# right after the heal. The box logs showed the coordinator taking the island for a follower with nothing
# to hand over: a heartbeat held up in the cut link, delivered at the heal. Such stale heartbeats are now
# ignored (membership.heard); the retry stays until CI runs show no rerun (`-rR`). Twice still fails CI.
@pytest.mark.flaky(reruns=1)
def test_partition_gives_a_coordinator_per_side_and_heal_keeps_every_task(passel3):
    boxes = passel3.boxes
    leader_id = wait_until(lambda: settled_on_one(boxes), 40, "one coordinator")
    leader = box_by_id(passel3, leader_id)
    island = next(box for box in boxes if box is not leader)
    mainland = [box for box in boxes if box is not island]
    before = submit_from_namespace(mainland[0])

    island.link(False)
    wait_until(lambda: island.get_json("/-/passel.json")["self"]["role"] == "coordinator", 30,
               "the cut-off box to coordinate its side")
    assert settled_on_one(mainland) == leader_id, "the mainland keeps its coordinator"
    on_island = submit_from_namespace(island)
    on_mainland = submit_from_namespace(mainland[1])
    # the admin password is set while the island is away
    reply = requests.post(f"{mainland[1].api}/-/password", json={"new": PASSWORD}, timeout=15).json()
    assert reply["boxes"]["this box"] == "changed" and len(reply["boxes"]) == 2, reply

    island.link(True)
    winner = wait_until(lambda: settled_on_one(boxes), 40, "one coordinator after the heal")
    assert coordinators(boxes) == {winner}
    # every task is known at once, wherever it was accepted: the winner waits for the loser's
    # hand-over rather than answer not-found (ODM would send the task again)
    for uuid in (before, on_island, on_mainland):
        assert "status" in requests.get(f"{mainland[0].api}/task/{uuid}/info", timeout=15).json(), uuid
    # whichever side's coordinator won, every box holds the password now, the island too
    for box in boxes:
        wait_until(lambda b=box: requests.get(f"{b.api}/-/password", timeout=5).json() == {"set": True}, 20,
                   f"the admin password on box{box.index}")
    same = {"priority": island.index}
    assert requests.post(f"{island.api}/-/priority", json=same, timeout=10).status_code == 401
    assert requests.post(f"{island.api}/-/priority", json=same, timeout=10,
                         headers={"Authorization": f"Bearer {PASSWORD}"}).json()["success"] is True
    for uuid in (before, on_island, on_mainland):
        wait_until(lambda: requests.get(f"{mainland[0].api}/task/{uuid}/info", timeout=5).json()
                   .get("status", {}).get("code") == 40, 40, f"task {uuid} to be known and finished")
    listed = [t["uuid"] for t in requests.get(mainland[0].api + "/task/list", timeout=5).json()]
    assert sorted(listed) == sorted({before, on_island, on_mainland}), "each task exactly once"
