"""A split-merge job survives the field: coordinator crashes, a sleeping worker, a partition.

Three boxes in network namespaces, each with a simulated NodeODM (seconds per image) and an agent.
A client with ODM's split-merge executor behaviour sends 8 submodels through a follower box while
one fault is injected. Every time: every submodel completes, every all.zip holds the requested
outputs, the task table lists each final task exactly once, and no staged upload is left behind.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.netns import running_passel, wait_until
from tests.odm_executor import SplitMergeClient, make_submodels

pytestmark = pytest.mark.netns
GRACE = 6
SUBMODELS = 8


@pytest.fixture
def field(tmp_path: Path, netns_required):
    with running_passel(tmp_path, {"seconds_per_image": 1.5, "slots": 2}, "--grace-seconds", str(GRACE)) as bridge:
        yield bridge


def view(box) -> dict:
    return requests.get(box.api + "/-/passel.json", timeout=3).json()


def roles(bridge):
    """(coordinator box, entry box: a follower, worker box: the other follower)."""
    leader_id = wait_until(lambda: len({(view(b)["coordinator"] or {}).get("id") for b in bridge.boxes} - {None}) == 1
                           and all(view(b)["coordinator"] for b in bridge.boxes)
                           and view(bridge.boxes[0])["coordinator"]["id"], 40, "one coordinator")
    leader = next(b for b in bridge.boxes if view(b)["self"]["id"] == leader_id)
    entry, worker = [b for b in bridge.boxes if b is not leader]
    wait_until(lambda: sum(n["online"] for n in requests.get(entry.api + "/-/nodes", timeout=3).json()) == 3, 30,
               "all three nodes online")
    return leader, entry, worker


def run_job(tmp_path: Path, entry, on_stage) -> tuple[list, threading.Thread]:
    subs = make_submodels(tmp_path / "job", SUBMODELS, images=3)
    client = SplitMergeClient(entry.api, poll=0.5, retry_wait=2.0, keep=True, on_stage=on_stage)
    thread = threading.Thread(target=client.run, args=(subs, tmp_path / "out"), daemon=True)
    thread.start()
    return subs, thread


def check_outcome(bridge, entry, subs, thread, restart=None) -> None:
    thread.join(300)
    assert not thread.is_alive(), "the job did not finish in time"
    assert [s.status for s in subs] == ["completed"] * SUBMODELS, [(s.name, s.status, s.history) for s in subs]
    for sub in subs:
        for wanted in ("opensfm/reconstruction.json", "opensfm/tracks.csv", "cameras.json"):
            assert wanted in sub.zip_names, (sub.name, sub.zip_names)
        assert any(n.startswith("opensfm/features/") for n in sub.zip_names)
    listed = [t["uuid"] for t in requests.get(entry.api + "/task/list", timeout=10).json()]
    assert sorted(listed) == sorted(s.uuid for s in subs), "each final task exactly once, and nothing else"
    if restart is not None:
        restart.start_agent("--priority", str(restart.index), "--grace-seconds", str(GRACE))
    for uuid in listed:  # what ODM does after downloading
        assert requests.post(entry.api + "/task/remove", data={"uuid": uuid}, timeout=10).json() == {"success": True}

    def staging_empty() -> bool:
        leftovers = [p for b in bridge.boxes for p in (b.workdir / "state" / "staging").glob("*")
                     if not p.name.startswith(".new-")]
        return not leftovers or print("staged leftovers:", leftovers)
    wait_until(staging_empty, 60, "no staged upload left on any box")


def test_a_kill9_of_coordinator_mid_upload(field, tmp_path):
    leader, entry, _ = roles(field)
    fired = threading.Event()
    committed = []

    def on_stage(sub, stage):  # noqa: ANN001
        if stage == "committed":
            committed.append(sub.name)
        if stage == "uploading" and len(committed) >= 2 and not fired.is_set():
            fired.set()
            time.sleep(0.2)  # some files of this submodel are already in
            leader.signal("agent", signal.SIGKILL)
    subs, thread = run_job(tmp_path, entry, on_stage)
    check_outcome(field, entry, subs, thread, restart=leader)
    assert fired.is_set()


def test_b_kill9_of_coordinator_mid_processing(field, tmp_path):
    leader, entry, _ = roles(field)
    committed = []
    fired = threading.Event()

    def on_stage(sub, stage):  # noqa: ANN001
        if stage == "committed":
            committed.append(sub.name)
            if len(committed) == 6 and not fired.is_set():
                fired.set()
                leader.signal("agent", signal.SIGKILL)
    subs, thread = run_job(tmp_path, entry, on_stage)
    check_outcome(field, entry, subs, thread, restart=leader)
    assert fired.is_set()


def _wait_for_work_on(entry, worker) -> None:
    wait_until(lambda: any(t["node_url"] == f"http://{worker.address}:3001" and t["status"] == 20
                           for t in requests.get(entry.api + "/-/tasks", timeout=5).json()), 90,
               "a running task on the worker's node")


def test_c_sigstop_of_a_worker_box_longer_than_the_grace(field, tmp_path):
    _, entry, worker = roles(field)
    subs, thread = run_job(tmp_path, entry, lambda s, stage: None)
    _wait_for_work_on(entry, worker)
    for name in ("agent", "simnode"):
        worker.signal(name, signal.SIGSTOP)  # the lid closes
    time.sleep(GRACE + 6)
    for name in ("agent", "simnode"):
        worker.signal(name, signal.SIGCONT)  # and opens again
    check_outcome(field, entry, subs, thread)


def test_d_partition_then_heal(field, tmp_path):
    _, entry, worker = roles(field)
    subs, thread = run_job(tmp_path, entry, lambda s, stage: None)
    _wait_for_work_on(entry, worker)
    worker.link(False)
    time.sleep(GRACE + 6)
    worker.link(True)
    check_outcome(field, entry, subs, thread)
