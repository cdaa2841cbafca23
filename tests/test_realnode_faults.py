"""Passel in front of a REAL NodeODM (2.2.4, test mode) when the node misbehaves the ways real ones do.

Each test drives Passel as a user would (PyODM, or plain HTTP where PyODM hides the wire), with the
node's own fault switches: uploads dropped half the time, tasks that fail, a restart mid-task, a node
token, an image limit. What the node itself holds is read from the node, never from Passel.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from pyodm import Node
from pyodm.exceptions import NodeResponseError, TaskFailedError
from pyodm.types import TaskStatus

from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.cluster.lifecycle import StagingLifecycle
from appliance.cluster.reconciler import RECONCILER_KEY
from tests.nodeodm_helpers import Api, committed, init_task, jcall, make_images, upload, wait_for
from tests.realnode import RealNode
from tests.support import ServerThread

QUEUED, RUNNING, FAILED, COMPLETED, CANCELED = 10, 20, 30, 40, 50  # status codes on the wire
FINISHED = (FAILED, COMPLETED, CANCELED)


def pyodm(server: ServerThread) -> Node:
    return Node("127.0.0.1", server.port, timeout=30)


def node_info(node: RealNode, uuid: str) -> dict[str, Any]:
    """The task as the node itself answers it (an error reply while the node does not show it)."""
    return requests.get(f"{node.url}/task/{uuid}/info", params={"token": node.token}, timeout=10).json()


def node_status(node: RealNode, uuid: str) -> int | None:
    return (node_info(node, uuid).get("status") or {}).get("code")


def node_uuids(node: RealNode) -> list[str]:
    """The tasks the node itself lists (its own API, its own token)."""
    return [t["uuid"] for t in requests.get(node.url + "/task/list", params={"token": node.token}, timeout=10).json()]


def runs_on(node: RealNode, uuid: str) -> int:
    """How often the node started processing the task, by its own log."""
    return sum(1 for line in node.log().splitlines() if "About to run" in line and uuid in line)


def passel_task(server: ServerThread, uuid: str) -> dict[str, Any]:
    """Passel's own record of a task (admin API): attempts, node and events."""
    return requests.get(f"{server.url}/-/tasks/{uuid}", timeout=10).json()


def finish(task: Any, timeout: float = 90) -> Any:
    """Poll through Passel until the task is finished; its last info."""
    return wait_for(lambda: (info := task.info()).status.value in FINISHED and info, timeout,
                    f"task {task.uuid} to finish")


class StatusRecorder:
    """A client polling `/task/{uuid}/info` through Passel as fast as a nervous user, recording every
    status code it is served, until the task is finished or the `with` block ends."""

    def __init__(self, url: str, uuid: str) -> None:
        self.url, self.uuid = url, uuid
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = requests.get(f"{self.url}/task/{self.uuid}/info", timeout=10).json()
            except requests.RequestException:
                reply = {}
            code = (reply.get("status") or {}).get("code")
            if code is not None:
                self.seen.append(code)
                if code in FINISHED:
                    return
            self._stop.wait(0.05)

    def wait_finished(self, timeout: float = 90) -> int:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"task not finished after {timeout} s; seen {self.changes()}"
        return self.seen[-1]

    def changes(self) -> list[int]:
        """The statuses in the order served, repeats folded."""
        return [code for i, code in enumerate(self.seen) if i == 0 or self.seen[i - 1] != code]


def test_uploads_dropped_half_the_time_are_retried_and_the_task_completes(realnode_factory, passel_factory, tmp_path):
    """`--test_drop_uploads` answers HTTP 500 to half the uploads: with 40 images some surely drop
    (the chance that none does is 2^-40), and Passel must still deliver every image exactly once."""
    node = realnode_factory("--test_drop_uploads", "--test_seconds", "1")
    server = passel_factory([node.url])
    images = make_images(tmp_path / "images", 40)
    task = pyodm(server).create_task(images, skip_post_processing=True)
    info = finish(task)
    assert info.status == TaskStatus.COMPLETED, task.output()
    assert info.images_count == 40
    assert node_uuids(node) == [task.uuid] and runs_on(node, task.uuid) == 1
    received = sorted(p.name for p in (node.task_dir(task.uuid) / "images").iterdir())
    assert received == sorted(Path(i).name for i in images), "each image once (a file sent twice is IMG_0001_.JPG)"


def test_a_failed_task_reaches_the_client_with_its_output_and_is_never_sent_again(realnode_factory, passel_factory,
                                                                                   tmp_path):
    node = realnode_factory("--test_fail_tasks", "--test_seconds", "1")
    server = passel_factory([node.url])
    task = pyodm(server).create_task(make_images(tmp_path / "images", 5), skip_post_processing=True)
    with pytest.raises(TaskFailedError):
        task.wait_for_completion(interval=0.2)
    info = task.info(with_output=0)
    assert info.status == TaskStatus.FAILED
    node_output = requests.get(f"{node.url}/task/{task.uuid}/output", timeout=10).json()
    assert len(node_output) >= 3, node_output
    assert info.output == node_output
    assert task.output() == node_output
    assert task.output(line=-2) == node_output[-2:]
    # Passel's own passes over the nodes have had their chance to act on the failure
    for _ in range(2):
        server.call(server.app[RECONCILER_KEY].reconcile())
    time.sleep(1.0)  # five task polls
    assert task.info().status == TaskStatus.FAILED
    assert node_uuids(node) == [task.uuid] and runs_on(node, task.uuid) == 1, "the node saw the task once"
    record = passel_task(server, task.uuid)
    assert record["attempts"] == 1
    kinds = [e["kind"] for e in record["events"]]
    assert kinds.count("dispatched") == 1 and "redispatched" not in kinds, kinds


def test_a_node_restarted_mid_task_keeps_it_and_the_client_never_sees_it_go_back(realnode_factory,
                                                                                  passel_factory, tmp_path):
    """NodeODM brings a RUNNING task back as QUEUED after a graceful restart and starts it over.
    Alone on the node, it runs again within milliseconds; behind another user's queued task, which
    the node may pick first, it waits QUEUED there for that task's whole run. A client that was shown
    RUNNING must never be served QUEUED meanwhile (ODM takes that as "task limit reached", takes the
    task back and sends it again), and the task must complete, sent once."""
    node = realnode_factory("--test_seconds", "3", "--parallel_queue_processing", "1")
    server = passel_factory([node.url])
    other = committed(node, images=1, name="another user's task", skipPostProcessing="true")
    wait_for(lambda: node_status(node, other) == RUNNING, 30, "the other user's task to run")
    assert jcall(node, "POST", "/task/cancel", data={"uuid": other}) == {"success": True}
    task = pyodm(server).create_task(make_images(tmp_path / "images", 5), skip_post_processing=True)
    with StatusRecorder(server.url, task.uuid) as recorder:
        wait_for(lambda: node_info(node, task.uuid).get("processingTime", -1) > 0, 30, "the node to run our task")
        # the other task waits now, ahead of ours in the node's list: after a restart, the node
        # starts the first task it restores, most often that one (which one is up to its disk)
        assert jcall(node, "POST", "/task/restart", data={"uuid": other}) == {"success": True}
        for _ in range(6):  # bounded: each restart is another draw
            node.restart()
            if node_status(node, task.uuid) == QUEUED:
                break
            assert node_status(node, task.uuid) == RUNNING, "the node kept the task across its restart"
        else:
            pytest.fail("the node never held our task QUEUED after a restart, so nothing was tested")
        final = recorder.wait_finished()
    assert final == COMPLETED, task.output()
    ranks = [{QUEUED: 0, RUNNING: 1}.get(code, 2) for code in recorder.seen]
    assert ranks == sorted(ranks), f"the status went backwards: {recorder.changes()}"
    assert sorted(node_uuids(node)) == sorted([task.uuid, other])
    assert passel_task(server, task.uuid)["attempts"] == 1, "the task was not lost, so it was not sent again"
    assert task.info().images_count == 5


TOKEN = "n0de-t0ken-9f3c1e"


def every_get(server: ServerThread, uuid: str, node_id: int) -> dict[str, requests.Response]:
    """Every GET route Passel serves (NodeODM's, the admin API, the web UI), with this task and node."""
    fill = {"uuid": uuid, "ref": str(node_id), "asset": "all.zip", "key": uuid, "product": "orthophoto",
            "layer": "orthophoto", "z": "16", "x": "16020", "y": "22092"}
    replies = {}
    for resource in server.app.router.resources():
        info = resource.get_info()
        if "GET" not in {route.method for route in resource} or "prefix" in info:  # static files
            continue
        template = info.get("path") or info["formatter"]
        path = template.format(**fill)
        for query in ("", "?with_output=0", "?line=-5") if "{uuid}" in template else ("",):
            replies[path + query] = requests.get(server.url + path + query, timeout=30)
    return replies


def assert_no_token(replies: dict[str, requests.Response]) -> None:
    for path, reply in replies.items():
        assert TOKEN.encode() not in reply.content, f"{path} leaks the node token"
        assert TOKEN not in str(reply.headers), f"{path} leaks the node token in a header"


def test_a_node_with_its_own_token_works_end_to_end_and_the_token_never_leaves_passel(realnode_factory,
                                                                                     passel_factory, tmp_path):
    node = realnode_factory("--token", TOKEN, "--test_seconds", "1")
    assert "error" in requests.get(node.url + "/info", timeout=10).json(), "the node really wants its token"
    server = passel_factory([node.url_with_token])
    task = pyodm(server).create_task(make_images(tmp_path / "images", 4), name="with a token",
                                     skip_post_processing=True, outputs=["odm_report"])
    assert finish(task).status == TaskStatus.COMPLETED, task.output()
    zipped = Path(task.download_zip(str(tmp_path / "out")))
    assert zipped.stat().st_size > 0
    assert node_uuids(node) == [task.uuid]
    node_id = requests.get(server.url + "/-/nodes", timeout=10).json()[0]["id"]
    assert_no_token(every_get(server, task.uuid, node_id))

    # Nor in what Passel says about a node that stopped answering.
    node.stop(graceful=False)
    wait_for(lambda: not requests.get(server.url + "/-/nodes", timeout=10).json()[0]["online"], 30,
             "Passel to see the node offline")
    down = every_get(server, task.uuid, node_id)
    assert_no_token(down)
    assert down["/-/nodes"].json()[0]["last_error"], "the reason the node is offline is shown"


def pending_images(node: RealNode, uuid: str) -> int:
    """Images in the node's pending (uncommitted) upload of the task."""
    folder = node.workdir / "tmp" / uuid  # NodeODM keeps pending uploads in tmp/ of its working directory
    return sum(1 for f in folder.iterdir() if f.suffix == ".JPG") if folder.is_dir() else 0


def test_a_task_over_the_only_nodes_image_limit_is_refused_like_nodeodm(realnode_factory, passel_factory,
                                                                          tmp_path):
    node = realnode_factory("--max_images", "5", "--test_seconds", "1")
    server = passel_factory([node.url])
    wait_for(lambda: requests.get(server.url + "/info", timeout=10).json()["maxImages"] == 5, 10,
             "Passel to know the node's limit")
    with pytest.raises(NodeResponseError) as refused:
        pyodm(server).create_task(make_images(tmp_path / "images", 8), skip_post_processing=True)
    # NodeODM's own words for the passel, at the commit, where NodeODM itself refuses
    assert str(refused.value) == "8 images uploaded, but the largest node in this passel can only process up to 5."
    assert requests.get(server.url + "/task/list", timeout=10).json() == []
    assert node_uuids(node) == [], "nothing was committed on the node"

    # Files go on to the node while the client still uploads, but never more than it takes.
    api = Api(server)
    uuid = init_task(api, skipPostProcessing="true")
    for i in range(5):
        upload(api, uuid, f"IMG_{i}.JPG")
    wait_for(lambda: pending_images(node, uuid) == 5, 30, "the first images to reach the node")
    upload(api, uuid, "IMG_5.JPG")
    time.sleep(1.0)  # a sixth would reach the node in milliseconds (this can only miss a regression)
    assert pending_images(node, uuid) == 5
    assert "can only process up to 5" in jcall(api, "POST", f"/task/new/commit/{uuid}")["error"]

    small = pyodm(server).create_task(make_images(tmp_path / "few", 5), skip_post_processing=True)
    assert finish(small).status == TaskStatus.COMPLETED


def test_a_task_too_big_for_a_small_node_goes_to_the_big_one(realnode_factory, passel_factory, tmp_path):
    small = realnode_factory("--max_images", "5", "--test_seconds", "1")
    big = realnode_factory("--max_images", "50", "--test_seconds", "1")
    server = passel_factory([small.url, big.url])
    wait_for(lambda: requests.get(server.url + "/info", timeout=10).json()["maxImages"] == 50, 10,
             "Passel to know both nodes")
    tasks = [pyodm(server).create_task(make_images(tmp_path / f"images{i}", 12), skip_post_processing=True)
             for i in range(3)]
    for task in tasks:
        info = finish(task)
        assert info.status == TaskStatus.COMPLETED, task.output()
        assert info.images_count == 12
    assert sorted(node_uuids(big)) == sorted(t.uuid for t in tasks)
    assert node_uuids(small) == []
    # with both nodes free, an upload of unknown size starts on the node that takes more images;
    # while the big node is busy, one may start on the small one, but never gets more than it takes
    assert not (small.workdir / "tmp" / tasks[0].uuid).exists()
    for task in tasks:
        assert pending_images(small, task.uuid) <= 5


def test_an_upload_with_an_old_date_created_is_not_taken_for_abandoned(realnode_factory, passel_factory):
    """dateCreated is kept as the client sent it, and reaches the node; an old one (a task made days
    ago, sent again) must not make Passel's clean-up drop the upload in progress as abandoned."""
    node = realnode_factory("--test_seconds", "1")
    server = passel_factory([node.url])
    api = Api(server)
    created = int((time.time() - 3 * 86400) * 1000)
    uuid = init_task(api, name="made three days ago", dateCreated=str(created), skipPostProcessing="true")
    assert upload(api, uuid, "IMG_0.JPG") == {"success": True}
    server.call(StagingLifecycle(server.app[COORDINATOR_KEY], keep_hours=72).sweep())
    assert upload(api, uuid, "IMG_1.JPG") == {"success": True}, "the upload in progress was dropped"
    assert jcall(api, "POST", f"/task/new/commit/{uuid}") == {"uuid": uuid}
    info = wait_for(lambda: (i := jcall(api, "GET", f"/task/{uuid}/info"))["status"]["code"] in FINISHED and i,
                    60, "the task to finish")
    assert (info["status"]["code"], info["dateCreated"], info["imagesCount"]) == (COMPLETED, created, 2)
    assert node_info(node, uuid)["dateCreated"] == created
