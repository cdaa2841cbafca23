"""Results outlive the node that made them: a completed task's all.zip is copied to a second box (or,
alone, to the box itself), and downloads come from that copy once the node is gone, whole and in
ranges, with the same uuid; the copy is released with the task; an interrupted copy resumes."""

from __future__ import annotations

import asyncio
import html
import io
import re
import signal
import time
import zipfile
from pathlib import Path

import aiohttp
import pytest
import requests
from aiohttp import web

from appliance.cluster import lifecycle
from appliance.cluster.lifecycle import StagingLifecycle
from appliance.cluster.results import local_results
from appliance.cluster.results_copies import (
    FetchFailed,
    NoRoom,
    ResultsStore,
    choose_holder,
)
from appliance.simnode import SimnodeSettings, create_simnode_app
from appliance.store.models import Phase, Task
from tests.nodeodm_helpers import Api, call, committed, jcall, wait_for
from tests.support import ServerThread, StubElection, coordinator_in
from tests.test_coordinator import status_of
from tests.ui_support import free_port

UUID = "00000000-0000-4000-8000-00000000c0de"


# -- which box keeps the copy ---------------------------------------------------------------------
def test_the_holder_is_never_the_box_whose_node_made_the_results():
    alive = {"entry", "boss", "other"}.__contains__
    assert choose_holder("worker", "entry", "boss", ["entry", "other"], alive) == "entry"  # the client's box
    assert choose_holder("entry", "entry", "boss", ["entry", "other"], alive) == "boss"  # else the coordinator
    assert choose_holder("boss", "boss", "boss", ["entry", "other"], alive) == "entry"  # else a live follower
    assert choose_holder("boss", "", "boss", ["gone", "other"], alive) == "other"  # a gone box is passed over
    assert choose_holder("", "", "alone", [], lambda b: b == "alone") == "alone"  # a passel of one keeps it
    assert choose_holder("boss", "boss", "boss", ["entry"], alive, refused={"entry"}) == "boss"  # none other left
    assert choose_holder("x", "", "boss", [], alive, refused={"boss"}) == ""


async def test_the_coordinator_names_a_holder_at_the_finish_and_another_when_one_refuses(tmp_path):
    """A box whose disk is full says so once; the coordinator names another (never the node's box). A
    task whose copy is confirmed stays COMPLETED when its node is lost, instead of being sent again."""
    async with coordinator_in(tmp_path, "boss", StubElection(followers=["entry", "other"])) as c:
        node = await c.registry.add(f"http://127.0.0.1:{free_port()}")
        node.row.box = "entry"  # the node runs on the box that took the upload in
        task = Task(uuid=UUID, phase=Phase.ON_NODE, status=20, node_id=node.id, staged_on="entry")
        await c.book.save(task)
        c.staging.create(UUID)
        (c.staging.path(UUID) / "IMG_0.JPG").write_bytes(b"x")  # it could be sent again

        await c.observe(task, node, {"status": {"code": 40}, "progress": 100})
        assert (task.phase, task.results_on, task.results_copied_at) == (Phase.FINISHED, "boss", None)
        await c.results_not_held(task, "boss", "disk full")
        assert task.results_on == "other", "not the node's box, and not the box that refused"
        await c.results_copied(task, "other")
        assert task.results_copied_at is not None and c.results_kept(task)

        await c.move_away(task, "its node is gone")
        assert (task.phase, task.status, task.node_id) == (Phase.FINISHED, 40, node.id), "kept, not sent again"


# -- an interrupted copy resumes with Range ---------------------------------------------------------
async def test_an_interrupted_copy_resumes_where_it_stopped(tmp_path):
    content = bytes(range(256)) * 4096  # 1 MiB
    ranges: list[str | None] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        ranges.append(request.headers.get("Range"))
        if len(ranges) == 1:  # the first try breaks off half-way: the link dropped
            reply = web.StreamResponse(headers={"Content-Type": "application/zip"})
            reply.content_length = len(content)
            await reply.prepare(request)
            await reply.write(content[:len(content) // 2])
            request.transport.close()  # type: ignore[union-attr]
            return reply
        if "Range" not in request.headers:
            return web.Response(body=content, content_type="application/zip")
        start = int(request.headers["Range"].removeprefix("bytes=").rstrip("-"))
        return web.Response(status=206, body=content[start:], content_type="application/zip",
                            headers={"Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}"})

    app = web.Application()
    app.router.add_get("/all.zip", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    store = ResultsStore(tmp_path / "results", 0)
    async with aiohttp.ClientSession() as session:
        def source(headers: dict[str, str]):
            return session.get(f"http://127.0.0.1:{port}/all.zip", headers=headers)

        with pytest.raises(FetchFailed):
            await store.fetch(UUID, source)
        assert not store.has(UUID), "a partial copy must never look whole"
        part = store.path(UUID).with_name("all.zip.part")
        assert 0 < part.stat().st_size < len(content)
        kept = part.stat().st_size
        path = await store.fetch(UUID, source)
        full_disk = ResultsStore(tmp_path / "elsewhere", min_free_bytes=2 ** 62)
        with pytest.raises(NoRoom):
            await full_disk.fetch(UUID, source)
        assert not full_disk.has(UUID)
    await runner.cleanup()
    assert ranges[:2] == [None, f"bytes={kept}-"]
    assert path.read_bytes() == content and not part.exists()
    assert store.held() == [UUID]
    assert store.release(UUID) and store.held() == []


# -- the products pages' way in: a local path, fetched on demand; kept and released like staging ----
def _completed_on(node: ServerThread) -> tuple[str, bytes]:
    """A task completed on the node itself, and its all.zip."""
    uuid = committed(Api(node), images=2)
    wait_for(lambda: status_of(Api(node), uuid) == 40, what="COMPLETED on the node")
    return uuid, requests.get(f"{node.url}/task/{uuid}/download/all.zip", timeout=10).content


def _simnode() -> ServerThread:
    """A simulated node this test stops itself (the fixture's would be stopped a second time)."""
    return ServerThread(lambda: create_simnode_app(SimnodeSettings(seconds_per_image=0.2))).start()


async def test_local_results_fetches_on_demand_and_the_sweep_releases_copies(tmp_path):
    node = _simnode()
    uuid, from_node = await asyncio.to_thread(_completed_on, node)
    async with coordinator_in(tmp_path) as c:
        state = await c.registry.add(node.url)
        now = time.time()
        task = Task(uuid=uuid, phase=Phase.FINISHED, status=40, node_id=state.id, finished_at=now)
        await c.book.save(task)
        running = Task(uuid=UUID, phase=Phase.ON_NODE, status=20, node_id=state.id)
        await c.book.save(running)

        path = await local_results(c, task)
        assert path is not None and path.read_bytes() == from_node
        assert path == tmp_path / "results" / uuid / "all.zip"
        assert await local_results(c, running) is None, "a task that is not completed has no results"
        node.stop()
        assert await local_results(c, task) == path, "kept here: no node needed"

        sweep = StagingLifecycle(c, keep_hours=1)
        assert await sweep.sweep(now) == 0 and c.results.has(uuid), "a download does not release the copy"
        assert await sweep.sweep(now + 2 * 3600) == 1 and not c.results.has(uuid), "expired like staging"
        assert await local_results(c, task) is None, "no copy, and its node is gone"
        c.results.path(uuid).parent.mkdir(parents=True, exist_ok=True)
        c.results.path(uuid).write_bytes(b"zip")
        await c.intake.remove(task)
        assert await sweep.sweep(now) >= 1 and not c.results.has(uuid), "released with its task"


# -- one box: the copy is on the box itself and serves once the node is gone ------------------------
@pytest.fixture(params=["simnode", "nodeodm"])
def node_maker(request):
    """A way to start a node of either kind, and to kill it."""
    if request.param == "simnode":
        started: list[ServerThread] = []

        def start() -> ServerThread:
            started.append(_simnode())
            return started[-1]

        def kill(node: ServerThread) -> None:
            started.remove(node)
            node.stop()

        yield start, kill
        for node in started:
            node.stop()
        return
    realnode_factory = request.getfixturevalue("realnode_factory")
    yield lambda: realnode_factory("--test_seconds", "2"), lambda node: node.stop(graceful=False)


def _copy_path(state: Path, uuid: str) -> Path:
    return state / "results" / uuid / "all.zip"


def test_downloads_come_from_the_copy_after_the_node_is_killed(node_maker, passel_factory, tmp_path, monkeypatch):
    monkeypatch.setattr(lifecycle, "SWEEP_SECONDS", 0.3)
    start_node, kill_node = node_maker
    node = start_node()
    api = Api(passel_factory([node.url], grace_seconds=1.0))
    wait_for(lambda: jcall(api, "GET", "/info")["maxParallelTasks"] >= 1, what="the node online")
    uuid = committed(api, images=3)
    wait_for(lambda: status_of(api, uuid) == 40, timeout=60, what="COMPLETED")
    from_node = requests.get(f"{node.url}/task/{uuid}/download/all.zip", timeout=10).content
    copy = wait_for(lambda: _copy_path(tmp_path / "passel0", uuid).is_file() and _copy_path(tmp_path / "passel0", uuid),
                    what="the copy of the results on the box")
    assert copy.read_bytes() == from_node

    kill_node(node)
    time.sleep(3)  # past the grace: a completed task with a copy is neither re-run nor lost
    assert status_of(api, uuid) == 40
    assert uuid in [t["uuid"] for t in jcall(api, "GET", "/task/list")]
    whole = call(api, "GET", f"/task/{uuid}/download/all.zip")
    assert whole.status_code == 200 and whole.content == from_node
    assert whole.headers["Content-Type"] == "application/zip" and "attachment" in whole.headers["Content-Disposition"]
    part = call(api, "GET", f"/task/{uuid}/download/all.zip", headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == from_node[10:100]

    # Downloaded whole, the copy stays (the product pages read it); removed, it goes.
    time.sleep(1)
    assert copy.is_file()
    assert jcall(api, "POST", "/task/remove", data={"uuid": uuid}) == {"success": True}
    wait_for(lambda: not copy.parent.exists(), what="the copy released with its task")


def test_a_node_that_forgets_a_completed_task_with_a_copy_does_not_lose_it(simnode_factory, passel_factory,
                                                                            tmp_path):
    """Without a copy, a task its node no longer lists is sent again or lost (ODM resubmits it);
    with one, it stays COMPLETED and is served from the copy."""
    node = simnode_factory(seconds_per_image=0.2)
    api = Api(passel_factory([node.url], grace_seconds=1.0))
    wait_for(lambda: jcall(api, "GET", "/info")["maxParallelTasks"] >= 1, what="the node online")
    uuid = committed(api, images=2)
    wait_for(lambda: status_of(api, uuid) == 40, timeout=60, what="COMPLETED")
    copy = _copy_path(tmp_path / "passel0", uuid)
    wait_for(copy.is_file, what="the copy")
    # the node forgets the task (removed there behind Passel's back), past the grace
    assert jcall(Api(node), "POST", "/task/remove", data={"uuid": uuid}) == {"success": True}
    with pytest.raises(AssertionError):  # kept COMPLETED while its copy exists
        wait_for(lambda: jcall(api, "GET", f"/task/{uuid}/info").get("error"), timeout=4, what="not-found")
    assert status_of(api, uuid) == 40
    assert call(api, "GET", f"/task/{uuid}/download/all.zip").content == copy.read_bytes()


# -- three boxes: the node's box dies, and another box still serves the results ----------------------
@pytest.mark.netns
def test_the_results_outlive_the_box_whose_node_made_them(tmp_path, netns_required):
    """Three boxes in namespaces, discovery and signed box-to-box calls as in the field. A task
    uploaded through a follower completes; its results are copied to a box that is not its node's; that
    node's box is killed; a box that holds no copy still serves all.zip (whole and in ranges), from the
    holder, with the same uuid, and the task stays COMPLETED past the grace."""
    from pyodm import Node

    from tests.netns import running_passel, wait_until
    from tests.test_multihost import box_by_id, settled_on_one

    with running_passel(tmp_path, {"seconds_per_image": 0.05}, "--grace-seconds", "4") as bridge:
        boxes = bridge.boxes
        leader = box_by_id(bridge, wait_until(lambda: settled_on_one(boxes), 40, "one coordinator"))
        entry = next(box for box in boxes if box is not leader)
        wait_until(lambda: sum(n["online"] for n in requests.get(entry.api + "/-/nodes", timeout=5).json()) == 3,
                   30, "three nodes online")
        files = []
        for i in range(4):
            path = tmp_path / f"IMG_{i}.JPG"
            path.write_bytes(b"\xff\xd8" + bytes([i]) * 20000)
            files.append(str(path))
        task = Node(entry.address, 3000).create_task(files)  # the whole outputs: the page lists the orthophoto
        task.wait_for_completion(interval=0.5)
        uuid = task.uuid

        row = wait_until(lambda: (r := requests.get(f"{leader.api}/-/tasks/{uuid}", timeout=5).json())
                         .get("results_copied_at") and r, 30, "the results copy confirmed")
        node_box = next(b for b in boxes if b.address in row["node_url"])
        holder = box_by_id(bridge, row["results_on"])
        assert holder is not node_box, "the copy must not be on the box whose node made it"
        assert holder is (leader if node_box is entry else entry), "the client's box first, else the coordinator"
        copy = _copy_path(holder.workdir / "state", uuid)
        assert copy.is_file()
        expected = copy.read_bytes()

        node_box.signal("agent", signal.SIGKILL)
        node_box.stop("simnode")
        asker = next((b for b in boxes if b not in (node_box, holder)), holder)
        assert not _copy_path(asker.workdir / "state", uuid).exists() or asker is holder

        def download(headers: dict[str, str] | None = None) -> requests.Response | None:
            reply = requests.get(f"{asker.api}/task/{uuid}/download/all.zip", headers=headers or {}, timeout=15)
            return reply if reply.headers.get("Content-Type") == "application/zip" else None

        whole = wait_until(download, 60, "all.zip from a box that survived")
        assert whole.content == expected
        part = wait_until(lambda: download({"Range": "bytes=10-99"}), 30, "a range of all.zip")
        assert part.status_code == 206 and part.content == expected[10:100]
        time.sleep(6)  # past the grace: not re-run, not lost
        info = wait_until(lambda: requests.get(f"{asker.api}/task/{uuid}/info", timeout=10).json(), 30, "info")
        assert info["status"]["code"] == 40, info
        assert download().content == expected
        page = requests.get(f"{asker.api}/ui/tasks/{uuid}", timeout=15).text  # the task page, for a responder
        link = re.search(r'href="([^"]+)" download aria-label="Download Orthophoto"', page)
        assert link, "the task page lists the orthophoto"
        ortho = requests.get(asker.api + html.unescape(link.group(1)), timeout=15)
        with zipfile.ZipFile(io.BytesIO(expected)) as archive:
            assert ortho.status_code == 200 and ortho.content == archive.read("odm_orthophoto/odm_orthophoto.tif")
