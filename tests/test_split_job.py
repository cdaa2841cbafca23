"""A split job spreads across the passel: the simulated node acts as ODM's split-merge executor
(appliance/simnode/split_merge.py), the passel records each submodel as a part of its job
(cluster/job_parts.py, `parent_uuid`), and the pages show the parts under their job."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from appliance.agent import create_app
from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.cluster.job_parts import parent_of, sm_cluster_url
from appliance.config import load_config
from appliance.simnode.app import ENGINE
from appliance.simnode.split_merge import ROUNDS, plan_split
from appliance.store.models import Phase
from tests.nodeodm_helpers import Api, init_task, jcall, make_images, upload, wait_for
from tests.test_browser import chromium  # noqa: F401 - the browser fixture
from tests.test_pairing import FixedPortServer
from tests.ui_support import free_port

SPLIT = [{"name": "split", "value": 4}, {"name": "split-overlap", "value": 0},
         {"name": "sm-cluster", "value": "http://placeholder:3000"}]


@pytest.fixture
def fixed_passel(tmp_path: Path) -> Iterator[Callable[..., FixedPortServer]]:
    """A passel on a port known in advance, so its public URL (sm-cluster, without discovery) is right."""
    running: list[FixedPortServer] = []

    def start(nodes: list[str], **flags: Any) -> FixedPortServer:
        port = free_port()
        config = load_config(environ={}, flags={
            "host": "127.0.0.1", "port": port, "state_dir": str(tmp_path / f"box{len(running)}"), "discovery": False,
            "poll_seconds": 0.3, "task_poll_seconds": 0.2, "min_free_disk_mb": 0,
            "public_url": f"http://127.0.0.1:{port}"} | flags | {"node": nodes})
        server = FixedPortServer(lambda: create_app(config), port).start()
        running.append(server)
        return server

    yield start
    for server in reversed(running):
        server.stop()


def start_split(api: Api, images: int = 12, name: str = "Quarry survey") -> str:
    uuid = init_task(api, name=name, options=json.dumps(SPLIT))
    for i in range(images):
        upload(api, uuid, f"IMG_{i:04d}.JPG")
    upload(api, uuid, "geo.txt", b"EPSG:4326\n" + b"".join(f"IMG_{i:04d}.JPG 1 2 3\n".encode() for i in range(images)))
    assert jcall(api, "POST", f"/task/new/commit/{uuid}") == {"uuid": uuid}
    return uuid


def completed(api: Api, uuid: str, timeout: float = 60) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        info = jcall(api, "GET", f"/task/{uuid}/info")
        return info if info["status"]["code"] in (30, 40, 50) else None
    return wait_for(ended, timeout=timeout, what=f"task {uuid[:8]} ended")


# -- the pieces ---------------------------------------------------------------------------------------
def test_a_plan_cuts_only_a_set_larger_than_one_submodel():
    images = [f"IMG_{i}.JPG" for i in range(12)]
    plan = plan_split({"split": 4, "sm-cluster": "http://10.0.0.1:3000/?token=job-x"}, images)
    assert plan is not None and [len(g) for g in plan.groups] == [4, 4, 4] and [i for g in plan.groups for i in g] == images
    assert plan_split({"split": 12, "sm-cluster": "http://10.0.0.1:3000"}, images) is None  # fits one
    assert plan_split({"split": 4}, images) is None  # nowhere to send them
    assert plan_split({"split": 4, "sm-cluster": "not a url"}, images) is None


def test_the_link_travels_in_the_token_only_without_an_api_token():
    parent = "0b9f3c1e-1111-4a2b-8c3d-123456789abc"
    linked = sm_cluster_url("http://10.0.0.7:3000", parent, api_token="")
    assert linked == f"http://10.0.0.7:3000/?token=job-{parent}"
    assert parent_of(linked.split("token=")[1]) == parent
    assert sm_cluster_url("http://10.0.0.7:3000/", parent, api_token="a b&c") == "http://10.0.0.7:3000/?token=a+b%26c"
    assert parent_of("field-token") == parent_of(None) == parent_of(f"job-{parent}x") == ""


# -- the executor on a passel ------------------------------------------------------------------------
def test_a_split_task_spreads_over_the_nodes_and_completes(simnode_factory, fixed_passel):
    nodes = [simnode_factory(seconds_per_image=0.05, name=f"node{i}") for i in range(3)]
    box = fixed_passel([n.url for n in nodes])
    api = Api(box)
    wait_for(lambda: sum(n["online"] for n in jcall(api, "GET", "/-/nodes")) == 3, what="three nodes online")
    parent = start_split(api)
    info = completed(api, parent)
    assert info["status"]["code"] == 40, info
    book = box.app[COORDINATOR_KEY].book
    parts = [t for t in book.tasks.values() if t.parent_uuid == parent]
    # 3 submodels x 2 rounds, each sent once, completed once, downloaded, then removed by the executor
    assert len(parts) == 3 * len(ROUNDS), [(t.uuid[:8], t.phase) for t in parts]
    assert all(t.phase == Phase.REMOVED and t.status == 40 and t.images_count == 4 for t in parts)
    assert all(t.name.startswith("Task of ") and t.skip_post_processing and t.outputs for t in parts)
    assert len({t.node_id for t in parts}) >= 2, "the submodels stayed on one node"
    for node in nodes:  # removed on the nodes after download
        assert set(node.app[ENGINE].tasks) <= {parent}
    runner = next(n.app[ENGINE].tasks[parent] for n in nodes if parent in n.app[ENGINE].tasks)
    fetched = sorted(p.relative_to(runner.project_dir / "submodels").parts[:2]
                     for p in (runner.project_dir / "submodels").glob("*/*/*.zip") if p.name != "seed.zip")
    assert fetched == sorted((f"submodel_{i:04d}", kind) for i in range(3) for kind, _ in ROUNDS)
    sent = {p.name for p in (runner.project_dir / "submodels" / "submodel_0001" / "reconstruction").iterdir()}
    assert {"seed.zip", "geo.txt"} <= sent
    assert (runner.project_dir / "submodels" / "submodel_0001" / "reconstruction" / "geo.txt").read_text().split() == \
        ["EPSG:4326"] + [w for i in range(4, 8) for w in (f"IMG_{i:04d}.JPG", "1", "2", "3")]
    output = jcall(api, "GET", f"/task/{parent}/output")
    assert sum("done on the passel" in line for line in output) == 3 * len(ROUNDS), output
    assert "Submodel 2 of 3 done on the passel (reconstruction)" in output
    page = requests.get(f"{api.url}/ui/jobs/{parent}", timeout=10)
    assert page.status_code == 200 and page.text.count("collected by its job") == 3 * len(ROUNDS)
    assert "Job Quarry survey (6 parts)" in page.text
    task_page = requests.get(f"{api.url}/ui/tasks/{parent}", timeout=10).text
    assert "Its parts" in task_page and "6 of 6 parts done" in task_page


def test_a_failed_submodel_fails_its_job_with_a_sentence(simnode_factory, fixed_passel):
    worker = simnode_factory(seconds_per_image=0.05, name="worker", fail_rate=1.0, seed=1)
    runner = simnode_factory(seconds_per_image=0.05, name="runner")
    box = fixed_passel([runner.url])
    api = Api(box)
    wait_for(lambda: jcall(api, "GET", "/-/nodes"), what="the node listed")
    parent = start_split(api, images=8)
    wait_for(lambda: jcall(api, "GET", f"/task/{parent}/info")["status"]["code"] == 20, what="the parent running")
    jcall(api, "POST", "/-/nodes", json={"url": worker.url})  # the parts can only run on the failing node
    info = completed(api, parent)
    assert info["status"]["code"] == 30
    assert info["status"]["errorMessage"].startswith("Submodel 1 of 2 failed on the passel"), info
    wait_for(lambda: not worker.app[ENGINE].tasks, what="the failed job's submodels removed from the node")


def test_a_canceled_job_takes_its_submodels_off_the_passel(simnode_factory, fixed_passel):
    nodes = [simnode_factory(seconds_per_image=2.0, name=f"node{i}") for i in range(2)]
    box = fixed_passel([n.url for n in nodes])
    api = Api(box)
    wait_for(lambda: sum(n["online"] for n in jcall(api, "GET", "/-/nodes")) == 2, what="both nodes online")
    parent = start_split(api, images=8)
    book = box.app[COORDINATOR_KEY].book
    wait_for(lambda: any(t.parent_uuid == parent and t.status == 20 for t in book.tasks.values()), what="a part running")
    assert jcall(api, "POST", "/task/cancel", data={"uuid": parent}) == {"success": True}
    runner = next(n.app[ENGINE].tasks[parent] for n in nodes if parent in n.app[ENGINE].tasks)
    wait_for(lambda: runner.executor is None, what="the executor done cleaning up")
    wait_for(lambda: all(t.phase == Phase.REMOVED for t in book.tasks.values() if t.parent_uuid == parent),
             what="every part removed from the passel")
    wait_for(lambda: all(set(n.app[ENGINE].tasks) <= {parent} for n in nodes), what="the parts gone from the nodes")
    assert jcall(api, "GET", f"/task/{parent}/info")["status"]["code"] == 50


def test_with_an_api_token_the_parts_carry_it_and_the_job_completes(simnode_factory, fixed_passel):
    """The submodels must carry the passel's token or be refused; there is then no room for the
    link, so they are not linked, and the token never shows in Passel's own replies."""
    nodes = [simnode_factory(seconds_per_image=0.05, name=f"node{i}") for i in range(2)]
    box = fixed_passel([n.url for n in nodes], token="field-token")
    api = Api(box, token="field-token")
    wait_for(lambda: sum(n["online"] for n in jcall(api, "GET", "/-/nodes")) == 2, what="both nodes online")
    uuid = init_task(api, name="Token survey", options=json.dumps(SPLIT))
    for i in range(8):
        upload(api, uuid, f"IMG_{i:04d}.JPG")
    assert jcall(api, "POST", f"/task/new/commit/{uuid}") == {"uuid": uuid}
    info = completed(api, uuid)
    assert info["status"]["code"] == 40, info
    on_node = next(n.app[ENGINE].tasks[uuid] for n in nodes if uuid in n.app[ENGINE].tasks)
    assert on_node.option_map["sm-cluster"] == box.url + "/?token=field-token"
    book = box.app[COORDINATOR_KEY].book
    assert len(book.tasks) > 1 and not [t for t in book.tasks.values() if t.parent_uuid]
    assert "field-token" not in json.dumps(info)
    page = requests.get(f"{api.url}/ui/tasks/{uuid}", timeout=10)
    assert page.status_code == 200 and "field-token" not in page.text


# -- three boxes in namespaces, the job started from a browser ---------------------------------------
@pytest.mark.netns
def test_a_split_job_from_the_browser_spreads_over_the_boxes(chromium, tmp_path, netns_required):  # noqa: F811
    """Three boxes, each a passel agent with a simulated node, discovery and signed calls as in the
    field. Chromium (on the bridge, as a responder's laptop) opens a follower's New job page and
    chooses enough images that the page proposes a split; the node that runs the job sends its
    submodels back to its own box's agent; they run on more than one box's node; the job completes, and
    its page on the box the browser used (from that box's replica of the table) lists every part."""
    from tests.netns import running_passel, wait_until
    from tests.test_multihost import box_by_id, settled_on_one
    from tests.test_new_job import _open_new_job

    with running_passel(tmp_path, {"seconds_per_image": 0.01}) as bridge:
        boxes = bridge.boxes
        leader = box_by_id(bridge, wait_until(lambda: settled_on_one(boxes), 40, "one coordinator"))
        entry = next(box for box in boxes if box is not leader)
        wait_until(lambda: sum(n["online"] for n in requests.get(entry.api + "/-/nodes", timeout=5).json()) == 3,
                   30, "three nodes online")
        context, tab, errors = _open_new_job(chromium, entry.api)
        missing: list[str] = []
        tab.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
        try:
            tab.locator("#pick-files").set_input_files(make_images(tmp_path / "sd", 210, size=256))
            tab.wait_for_selector("#split-box:not([hidden])")
            assert "split into about 3 parts of 70 images" in tab.inner_text("#split-why")
            tab.wait_for_function("!document.getElementById('start').disabled")
            tab.click("#start")
            tab.wait_for_url("**/ui/tasks/*", timeout=60_000)
            uuid = tab.url.rsplit("/", 1)[1]

            def ended() -> dict[str, Any] | None:
                info = requests.get(f"{entry.api}/task/{uuid}/info", timeout=5).json()
                return info if info["status"]["code"] in (30, 40, 50) else None
            info = wait_until(ended, 90, "the split job ended", interval=0.5)
            assert info["status"]["code"] == 40, (info, jcall_output(entry.api, uuid))
            # it ran on the node of the follower that holds its images, so its submodels came in through
            # that follower's agent (receiving.py) and the coordinator's intake (agent_api.intake_init)
            row = requests.get(f"{leader.api}/-/tasks/{uuid}", timeout=5).json()
            assert entry.address in row["node_url"], row["node_url"]

            parts = 3 * len(ROUNDS)
            tab.goto(f"{entry.api}/ui/jobs/{uuid}")
            rows = wait_until(lambda: (tab.reload() or True) and len(r := tab.locator("#parts tbody tr").all()) == parts + 1
                              and r, 30, "the job's own task and every part on the job's page")
            assert rows[0].get_attribute("data-task-id") == uuid
            assert all("collected by its job" in row.inner_text() for row in rows[1:])
            where = {row.locator("td[data-label=Where] span").get_attribute("title") for row in rows[1:]}
            assert len(where) >= 2, f"the submodels ran on one node only: {where}"
            tab.goto(f"{entry.api}/ui/tasks/{uuid}")
            assert f"{parts} of {parts} parts done" in tab.inner_text("#job")
            assert tab.locator("#parts tbody tr").count() == parts
        finally:
            context.close()
        # the simulated node's orthophoto is no picture, so its preview is missing (as for any of its tasks)
        assert all(url.endswith(f"/ui/tasks/{uuid}/preview.png") for url in missing), missing
        assert [e for e in errors if "status of 404" not in e] == [] and len(errors) <= len(missing), errors


def jcall_output(api: str, uuid: str) -> list[str]:
    return requests.get(f"{api}/task/{uuid}/output", timeout=5).json()
