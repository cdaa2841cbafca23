"""Finishing jobs sooner: the makespan simulation's models, and, live on loopback, learned speeds in
the API, ETAs, and a straggler copy that wins (or gives its slot back) while the client sees one task."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import requests

from tests.nodeodm_helpers import Api, init_task, jcall, upload, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import makespan  # noqa: E402

RECONSTRUCTION = json.dumps(makespan.RECONSTRUCTION_OUTPUTS)


# -- the simulation ----------------------------------------------------------------------------------
def _box(id: int, slots: int, ms: float, cores: int = 8) -> makespan.Box:
    return makespan.Box(id, slots, cores, 16384, ms, ms)


def test_clusterodm_model_piles_onto_full_nodes_and_ignores_speed():
    boxes = [_box(1, 1, 1000.0), _box(2, 1, 8000.0)]
    tasks = [makespan.SimTask(f"t{i}", 10, 10.0) for i in range(3)]
    # t0 -> 1 (both free, round robin), t1 -> 2 (the only free one), t2 -> both full, equal queues: round
    # robin's turn is on 2, so it waits in the slow node's queue behind t1 although node 1 is 8x faster
    assert makespan.clusterodm_ms(boxes, tasks) == 160_000.0
    assert makespan.lower_bound_ms(boxes, tasks) == 30 / (1 / 1000 + 1 / 8000)  # all work over all speed


def test_on_the_field_network_a_task_stays_beside_its_images_unless_moving_them_pays():
    """The images are on box 1 (where ODM's split ran); moving 50 of them over 100 Mbit/s costs 32 s."""
    boxes = (_box(1, 1, 1000.0), _box(2, 1, 900.0))
    learned = {1: {"odm/reconstruction": makespan.Sample(1000.0, 3)}, 2: {"odm/reconstruction": makespan.Sample(900.0, 3)}}
    task = [makespan.SimTask("t", 50, 50.0)]
    aware = makespan.PasselSim(boxes, samples=learned, home=1).run(task)
    blind = makespan.PasselSim(boxes, samples=learned, home=1, counts_moves=False).run(task)
    assert aware == 50_000.0  # stays: 50 s beside the images
    assert blind == 50 * makespan.MOVE_MS_PER_IMAGE + 45_000.0  # the faster box, after a 32 s move


def test_passel_simulation_uses_speed_and_learns():
    boxes = (_box(1, 1, 1000.0), _box(2, 1, 8000.0))
    tasks = [makespan.SimTask(f"t{i}", n, float(n)) for i, n in enumerate((40, 30, 20, 10))]
    sim = makespan.PasselSim(boxes, samples={1: {"odm/reconstruction": makespan.Sample(1000.0, 3)},
                                             2: {"odm/reconstruction": makespan.Sample(8000.0, 3)}})
    assert sim.run(tasks) == 90_000.0  # the optimum: 40, 30, 20 on the fast box, only 10 on the slow one
    assert makespan.PasselSim(boxes, speed_aware=False).run(tasks) == 240_000.0  # 30 lands on the slow box
    assert sim.samples[1]["odm/reconstruction"].n == 6 and sim.samples[2]["odm/reconstruction"].n == 4


def test_small_scenarios_meet_the_targets():
    results = [makespan.simulate(makespan.make_scenario(i, *makespan.SHAPES[i])) for i in (0, 2, 4, 6)]
    for r in results:
        assert r["lower_bound_s"] <= r["passel_s"] < r["clusterodm_s"], r
        assert r["lower_bound_s"] <= r["passel_cold_s"], r


# -- live ----------------------------------------------------------------------------------------------
def submit(api: Api, images: int) -> str:
    uuid = init_task(api, name="", outputs=RECONSTRUCTION, skipPostProcessing="true")
    for i in range(images):
        upload(api, uuid, f"IMG_{i:03d}.JPG")
    assert jcall(api, "POST", f"/task/new/commit/{uuid}") == {"uuid": uuid}
    return uuid


def status_of(api: Api, uuid: str) -> int:
    return jcall(api, "GET", f"/task/{uuid}/info")["status"]["code"]


def node_ids(api: Api) -> dict[str, int]:
    return {n["url"]: n["id"] for n in jcall(api, "GET", "/-/nodes")}


def on_node(node, uuid: str) -> bool:
    return {"uuid": uuid} in requests.get(f"{node.url}/task/list", timeout=5).json()


def test_speed_is_learned_per_kind_and_shown_with_etas(simnode_factory, passel_factory):
    node = simnode_factory(seconds_per_image=0.05, cores=8)
    api = Api(passel_factory([node.url]))
    wait_for(lambda: jcall(api, "GET", "/info")["maxParallelTasks"] == 1, what="node online")
    [before] = jcall(api, "GET", "/-/nodes")
    assert {k: v["source"] for k, v in before["speeds"].items()} == {
        "reconstruction": "prior", "toolchain": "prior", "full": "prior", "split": "prior"}
    uuid = submit(api, 20)
    running = wait_for(lambda: [t for t in jcall(api, "GET", "/-/tasks") if t["status"] == 20 and t["uuid"] == uuid],
                       what="task running")
    assert running[0]["eta_seconds"] is not None and running[0]["eta_seconds"] > 0
    status = jcall(api, "GET", "/-/status.json")
    assert [j["unfinished"] for j in status["jobs"]] == [1]
    wait_for(lambda: status_of(api, uuid) == 40, what="completion")
    [after] = wait_for(lambda: (n := jcall(api, "GET", "/-/nodes"))[0]["speeds"]["reconstruction"]["samples"] and n,
                       what="speed learned")
    learned = after["speeds"]["reconstruction"]
    assert learned["source"] == "learned" and 40 <= learned["ms_per_image"] <= 80, learned
    assert after["speeds"]["full"]["source"] == "other kinds"
    assert after["ms_per_image"] == after["speeds"]["full"]["ms_per_image"]
    done = jcall(api, "GET", f"/-/tasks/{uuid}")
    assert done["eta_seconds"] is None
    assert jcall(api, "GET", "/-/status.json")["jobs"][0]["eta_seconds"] == 0.0


def slow_and_locked_fast(simnode_factory, passel_factory, slow_seconds: float, fast_seconds: float) -> tuple:
    """A slow node and a fast one behind one passel; the fast one locked, so work starts on the slow one."""
    slow = simnode_factory(seconds_per_image=slow_seconds, cores=1)
    fast = simnode_factory(seconds_per_image=fast_seconds, cores=64)
    api = Api(passel_factory([slow.url, fast.url]))
    wait_for(lambda: jcall(api, "GET", "/info")["maxParallelTasks"] == 2, what="both nodes online")
    ids = node_ids(api)
    jcall(api, "POST", f"/-/nodes/{ids[fast.url]}/lock")
    return slow, fast, api, ids


def test_straggler_copy_on_an_idle_fast_node_wins_and_the_client_sees_one_task(simnode_factory, passel_factory):
    slow, fast, api, ids = slow_and_locked_fast(simnode_factory, passel_factory, 0.5, 0.02)
    uuid = submit(api, 30)  # 15 s on the slow node
    wait_for(lambda: status_of(api, uuid) == 20 and on_node(slow, uuid), what="running on the slow node")
    seen = set()
    jcall(api, "POST", f"/-/nodes/{ids[fast.url]}/unlock")

    def completed() -> bool:
        seen.add(status_of(api, uuid))
        return 40 in seen
    wait_for(completed, timeout=12, what="the copy to finish first")
    assert seen <= {20, 40}, f"the client must never see the copy: {seen}"
    def with_copy_events() -> dict | None:
        task = jcall(api, "GET", f"/-/tasks/{uuid}")
        return task if {"copy-started", "copy-won"} <= {e["kind"] for e in task["events"]} else None
    task = wait_for(with_copy_events, timeout=5, what="the events of the copy")
    assert task["node_id"] == ids[fast.url]
    wait_for(lambda: not on_node(slow, uuid), what="the original canceled and removed")
    info = jcall(api, "GET", f"/task/{uuid}/info")
    assert info["imagesCount"] == 30 and info["processingTime"] < 5000
    reply = requests.get(f"{api.url}/task/{uuid}/download/all.zip", timeout=10)
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/zip"
    assert jcall(api, "POST", "/task/remove", data={"uuid": uuid}) == {"success": True}
    wait_for(lambda: not on_node(fast, uuid), what="removed from the winner")


def test_a_copy_gives_its_slot_to_real_work(simnode_factory, passel_factory):
    slow, fast, api, ids = slow_and_locked_fast(simnode_factory, passel_factory, 1.0, 0.25)
    first = submit(api, 30)
    wait_for(lambda: on_node(slow, first), what="first task on the slow node")
    jcall(api, "POST", f"/-/nodes/{ids[fast.url]}/unlock")
    wait_for(lambda: on_node(fast, first), what="a copy on the fast node")
    second = submit(api, 4)
    assert status_of(api, second) == 20, "the copy's slot is free for real work"
    wait_for(lambda: on_node(fast, second) and not on_node(fast, first), what="the copy to give way")
    wait_for(lambda: status_of(api, second) == 40, what="the second task to complete")
    tasks = {t["uuid"]: t for t in jcall(api, "GET", "/-/tasks")}
    assert tasks[second]["node_id"] == ids[fast.url]
    assert tasks[first]["node_id"] == ids[slow.url] and tasks[first]["status"] == 20
    wait_for(lambda: "copy-dropped" in {e["kind"] for e in jcall(api, "GET", f"/-/tasks/{first}")["events"]},
             timeout=5, what="the copy's event")


def test_an_odm_submodel_held_for_a_faster_node_is_shown_running_and_never_sent_back(
        simnode_factory, passel_factory, tmp_path):
    """ODM takes QUEUED right after commit as "task limit reached": it takes the task back and caps its
    remote tasks at those running. A submodel that waits for the busy fast node, while the slow one is
    free, must therefore show RUNNING, and then run on the fast node."""
    from tests.odm_executor import SplitMergeClient, make_submodels
    slow = simnode_factory(seconds_per_image=0.5, cores=1)
    fast = simnode_factory(seconds_per_image=0.05, cores=64)
    api = Api(passel_factory([slow.url, fast.url]))
    wait_for(lambda: jcall(api, "GET", "/info")["maxParallelTasks"] == 2, what="both nodes online")
    ids = node_ids(api)
    busy = init_task(api, name="photos from PyODM")
    for i in range(100):
        upload(api, busy, f"IMG_{i:03d}.JPG")
    jcall(api, "POST", f"/task/new/commit/{busy}")
    wait_for(lambda: on_node(fast, busy), what="the first task on the fast node")
    [sub] = make_submodels(tmp_path / "job", 1, 10)
    statuses: list[str] = []
    client = SplitMergeClient(api.url, poll=0.2, on_stage=lambda s, stage: statuses.append(stage))
    client.run_one(sub, tmp_path / "out")
    assert sub.status == "completed" and sub.attempts == 1, sub.history
    assert not on_node(slow, sub.uuid), "the slow free node was not given it"
    assert jcall(api, "GET", f"/-/tasks/{sub.uuid}")["node_id"] == ids[fast.url]
    assert status_of(api, busy) == 40
