"""The simulated NodeODM, driven over loopback by real clients: PyODM and raw HTTP like ODM's executor."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from pyodm import Node
from pyodm.exceptions import NodeResponseError, TaskFailedError
from pyodm.types import TaskStatus as PyodmStatus

from appliance.nodeodm.status import TaskStatus
from appliance.simnode import SimNode, SimnodeSettings, create_simnode_app, serve_simnode
from appliance.simnode.app import ENGINE
from tests.support import ServerThread

FAST = 0.01
SLOW = 30.0  # seconds per image: the task is still running when the test ends
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4
UNKNOWN = "0b7f5f26-7f59-4c8e-9b6a-2c2b7f0c1d11"

StartNode = Callable[..., Awaitable[SimNode]]


# --- helpers ----------------------------------------------------------------------------------

def write_images(directory: Path, count: int, extra: dict[str, bytes] | None = None) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = directory / f"IMG_{i:04d}.JPG"
        path.write_bytes(JPEG)
        paths.append(str(path))
    for name, content in (extra or {}).items():
        (directory / name).write_bytes(content)
        paths.append(str(directory / name))
    return paths


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buffer.getvalue()


def form(fields: dict[str, str] | None = None, files: list[tuple[str, bytes]] | None = None) -> aiohttp.FormData:
    """Always multipart, as NodeODM's init reads nothing else (aiohttp would urlencode text-only data)."""
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in (fields or {}).items():
        data.add_field(name, value)
    for filename, content in files or []:
        data.add_field("images", content, filename=filename, content_type="application/octet-stream")
    return data


class Api:
    """Raw NodeODM calls, so tests see the exact wire shapes."""

    def __init__(self, session: aiohttp.ClientSession, node: SimNode, token: str | None = None) -> None:
        self.session, self.node, self.token = session, node, token

    def url(self, path: str) -> str:
        return self.node.url + path

    @property
    def params(self) -> dict[str, str]:
        return {"token": self.token} if self.token else {}

    async def get(self, path: str, **params: Any) -> Any:
        async with self.session.get(self.url(path), params=self.params | params) as reply:
            assert reply.status == 200
            assert reply.content_type == "application/json"
            return await reply.json()

    async def post(self, path: str, **kwargs: Any) -> Any:
        async with self.session.post(self.url(path), params=self.params, **kwargs) as reply:
            assert reply.status == 200, await reply.text()
            assert reply.content_type == "application/json"
            return await reply.json()

    async def submit(self, files: list[tuple[str, bytes]], fields: dict[str, str] | None = None,
                     uuid: str | None = None) -> str:
        """init + one upload per file + commit, as ODM's split-merge executor does."""
        headers = {"set-uuid": uuid} if uuid else {}
        reply = await self.post("/task/new/init", data=form({"name": "", **(fields or {})}), headers=headers)
        task_uuid = reply["uuid"]
        replies = await asyncio.gather(*(self.post(f"/task/new/upload/{task_uuid}", data=form(files=[f])) for f in files))
        assert all(r == {"success": True} for r in replies), replies
        assert await self.post(f"/task/new/commit/{task_uuid}") == {"uuid": task_uuid}
        return task_uuid

    async def info(self, uuid: str, **params: Any) -> dict[str, Any]:
        return await self.get(f"/task/{uuid}/info", **params)

    async def wait(self, uuid: str, *codes: TaskStatus, timeout: float = 10) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            info = await self.info(uuid)
            if info["status"]["code"] in codes:
                return info
            assert asyncio.get_running_loop().time() < deadline, info
            await asyncio.sleep(0.02)

    async def download(self, uuid: str) -> zipfile.ZipFile:
        async with self.session.get(self.url(f"/task/{uuid}/download/all.zip"), params=self.params) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"] == "application/zip"
            assert reply.headers["Content-Disposition"] == "attachment; filename=all.zip"
            body = await reply.read()
            assert int(reply.headers["Content-Length"]) == len(body)
        return zipfile.ZipFile(io.BytesIO(body))


def images(count: int) -> list[tuple[str, bytes]]:
    return [(f"IMG_{i:04d}.JPG", JPEG) for i in range(count)]


@pytest.fixture
async def start_node(tmp_path: Path) -> AsyncIterator[StartNode]:
    nodes: list[SimNode] = []

    async def start(**overrides: Any) -> SimNode:
        settings = {"port": 0, "seconds_per_image": FAST, "data_dir": tmp_path / f"node{len(nodes)}", "seed": 7} | overrides
        node = SimNode(SimnodeSettings(**settings))
        await node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def api(start_node: StartNode, session: aiohttp.ClientSession) -> Api:
    return Api(session, await start_node())


# --- PyODM, end to end ----------------------------------------------------------------------------

@pytest.fixture
def pyodm_node() -> Any:
    servers: list[ServerThread] = []

    def start(**overrides: Any) -> tuple[Node, ServerThread]:
        settings = SimnodeSettings(**({"seconds_per_image": FAST, "seed": 3} | overrides))
        server = ServerThread(lambda: create_simnode_app(settings)).start()
        servers.append(server)
        return Node("127.0.0.1", server.port, token=settings.token or ""), server

    yield start
    for server in servers:
        server.stop()


def test_pyodm_chunked_upload_process_and_download(pyodm_node, tmp_path):
    node, server = pyodm_node()
    assert node.info().version == "2.2.4" and node.info().max_parallel_tasks == 1
    files = write_images(tmp_path / "in", 3, {"gcp_list.txt": b"EPSG:4326\n", "geo.txt": b"EPSG:4326\n"})
    task = node.create_task(files, {"dsm": True, "orthophoto-resolution": 2}, name="field A", parallel_uploads=10)
    engine = server.app[ENGINE]
    project = engine.tasks[task.uuid].project_dir
    assert sorted(p.name for p in (project / "gcp").iterdir()) == ["gcp_list.txt", "geo.txt"]
    assert sorted(p.name for p in (project / "images").iterdir()) == [Path(f).name for f in files[:3]]

    task.wait_for_completion(interval=0.05)
    info = task.info(with_output=0)
    assert info.status == PyodmStatus.COMPLETED and info.images_count == 3 and info.name == "field A"
    assert info.processing_time >= 0 and info.progress == 100
    assert {"name": "dsm", "value": True} in info.options
    assert {"name": "orthophoto-resolution", "value": 2.0} in info.options
    assert any("Running opensfm stage" in line for line in info.output)

    out = Path(task.download_assets(str(tmp_path / "out")))
    assert (out / "odm_orthophoto" / "odm_orthophoto.tif").read_bytes().startswith(b"II*\x00")
    assert (out / "odm_dem" / "dsm.tif").read_bytes().startswith(b"II*\x00")
    assert (out / "odm_georeferencing" / "odm_georeferenced_model.laz").read_bytes().startswith(b"LASF")
    assert [row["filename"] for row in json.loads((out / "images.json").read_text())] == [Path(f).name for f in files[:3]]
    assert json.loads((out / "cameras.json").read_text())
    assert "Running dataset stage" in (out / "task_output.txt").read_text()
    assert (out / "entwine_pointcloud" / "ept.json").exists()  # skipPostProcessing was not set

    assert task.remove() is True
    assert not project.exists()
    with pytest.raises(NodeResponseError, match="not found"):
        task.info()


def test_pyodm_parallel_range_download(pyodm_node, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    node, server = pyodm_node(asset_kb=200)
    task = node.create_task(write_images(tmp_path / "in", 2), {"dtm": True, "dem-euclidean-map": True})
    task.wait_for_completion(interval=0.05)
    served = server.app[ENGINE].tasks[task.uuid].all_zip.read_bytes()
    assert len(served) > 1_000_000
    # 0.1 MB chunks: PyODM fetches the >1 MB archive in parallel 206 ranges and stitches them
    zip_path = Path(task.download_zip(str(tmp_path / "out"), parallel_chunks_size=0.1))
    assert zip_path.read_bytes() == served
    partials = [r for r in caplog.records if '"GET /task/' in r.getMessage() and '" 206 ' in r.getMessage()]
    assert len(partials) == -(-len(served) // int(0.1 * 1024 * 1024))  # one 206 reply per chunk
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.testzip() is None
        assert {"odm_dem/dsm.tif", "odm_dem/dtm.tif"} <= set(zf.namelist())


def test_pyodm_retries_dropped_uploads(pyodm_node, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="passel.simnode")
    node, server = pyodm_node(drop_upload_rate=0.5, seed=11)
    task = node.create_task(write_images(tmp_path / "in", 8), parallel_uploads=4, max_retries=20, retry_timeout=0)
    task.wait_for_completion(interval=0.05)
    assert task.info().images_count == 8
    assert sum("dropping an upload" in r.getMessage() for r in caplog.records) >= 2


def test_pyodm_sees_failed_tasks_and_token(pyodm_node, tmp_path):
    node, server = pyodm_node(fail_rate=1.0, token="secret")
    task = node.create_task(write_images(tmp_path / "in", 2))
    with pytest.raises(TaskFailedError):
        task.wait_for_completion(interval=0.05)
    assert task.info().last_error == "Cannot process dataset"
    assert "Child returned 1" in task.output()
    # not through a second pyodm Node: PyODM's url() keeps the token in a shared default dict
    assert requests.get(server.url + "/info", timeout=5).json() == {"error": "Invalid authentication token: token does not match."}


# --- the upload protocol ----------------------------------------------------------------------------

async def test_odm_style_submodel_with_outputs_seed_and_gcp(start_node, session, tmp_path):
    node = await start_node(data_dir=tmp_path / "data")
    api = Api(session, node)
    stop_file = b"The split-merge process will stop at reconstruction"
    seed = zip_bytes({"opensfm/split_merge_stop_at_reconstruction.txt": stop_file, "opensfm/config.yaml": b"a: 1\n",
                      "../evil.txt": b"x", "/abs.txt": b"x", "opensfm/../../evil2.txt": b"x"})
    outputs = ["opensfm/matches", "opensfm/features", "opensfm/reconstruction.json", "opensfm/tracks.csv",
               "cameras.json", "opensfm/split_merge_stop_at_reconstruction.txt", "../../etc/passwd", "nothing/here"]
    options = [{"name": "orthophoto-resolution", "value": "5.0"}, {"name": "pc-quality", "value": "lowest"},
               {"name": "orthophoto-cutline", "value": True}, {"name": "skip-3dmodel", "value": True}]
    uuid = await api.submit(images(3) + [("seed.zip", seed), ("gcp_list.txt", b"EPSG:4326\n"), ("geo.txt", b"g\n")],
                            {"options": json.dumps(options), "skipPostProcessing": "true", "outputs": json.dumps(outputs)})

    first = await api.info(uuid, with_output=0)  # ODM looks once, right after commit
    assert first["status"]["code"] in (TaskStatus.RUNNING, TaskStatus.COMPLETED)
    assert first["processingTime"] >= 0 and len(first["output"]) >= 3 and first["imagesCount"] == 3
    assert first["options"] == [  # typed, in ODM's order like a real NodeODM (see the traces)
        {"name": "skip-3dmodel", "value": True}, {"name": "pc-quality", "value": "lowest"},
        {"name": "orthophoto-resolution", "value": 5.0}, {"name": "orthophoto-cutline", "value": True}]

    await api.wait(uuid, TaskStatus.COMPLETED)
    shots = [f"IMG_{i:04d}.JPG" for i in range(3)]
    archive = await api.download(uuid)
    assert set(archive.namelist()) == (
        {f"opensfm/features/{s}.features.npz" for s in shots} | {f"opensfm/matches/{s}_matches.pkl.gz" for s in shots}
        | {"opensfm/reconstruction.json", "opensfm/tracks.csv", "cameras.json",
           "opensfm/split_merge_stop_at_reconstruction.txt"})
    assert archive.read("opensfm/split_merge_stop_at_reconstruction.txt") == stop_file
    reconstruction = json.loads(archive.read("opensfm/reconstruction.json"))
    assert sorted(reconstruction[0]["shots"]) == shots
    assert archive.read("opensfm/tracks.csv").startswith(b"OPENSFM_TRACKS_VERSION")

    project = tmp_path / "data" / "data" / uuid
    assert (project / "opensfm" / "config.yaml").read_bytes() == b"a: 1\n"
    assert not (project / "seed.zip").exists() and not (project / "images" / "seed.zip").exists()
    assert sorted(p.name for p in (project / "gcp").iterdir()) == ["gcp_list.txt", "geo.txt"]
    assert not list(tmp_path.rglob("evil*.txt")) and not list(tmp_path.rglob("abs.txt"))


async def test_default_zip_follows_options_and_missing_outputs_give_an_empty_zip(api):
    plain = await api.submit(images(2), {"options": json.dumps([{"name": "skip-report", "value": True}])})
    empty = await api.submit(images(1), {"outputs": json.dumps(["no/such/dir", "../../no/such/dir"])})
    await api.wait(plain, TaskStatus.COMPLETED)
    await api.wait(empty, TaskStatus.COMPLETED)
    names = (await api.download(plain)).namelist()
    assert "odm_orthophoto/odm_orthophoto.tif" in names and "odm_texturing/odm_textured_model_geo.obj" in names
    assert not any(n.startswith("odm_report/") for n in names)
    assert (await api.download(empty)).namelist() == []


async def test_one_shot_task_new(api):
    reply = await api.post("/task/new", data=form({"name": "one shot", "skipPostProcessing": "true"}, images(2)))
    info = await api.wait(reply["uuid"], TaskStatus.COMPLETED)
    assert info["name"] == "one shot" and info["imagesCount"] == 2 and info["options"] == []
    assert await api.post("/task/new", data=form({"name": "x"})) == {"error": "Need at least 1 file or a zip file url."}


async def test_set_uuid_rules(api):
    wanted = "5e7c2452-2aa3-4ca9-b48a-4f6b67b1228d"
    assert await api.post("/task/new/init", data=form({"name": "a"}), headers={"set-uuid": wanted}) == {"uuid": wanted}
    await api.post(f"/task/new/upload/{wanted}", data=form(files=images(1)))
    # still pending: NodeODM starts the init again, with the new fields and the files already sent
    assert await api.post("/task/new/init", data=form({"name": "b"}), headers={"set-uuid": wanted}) == {"uuid": wanted}
    await api.post(f"/task/new/commit/{wanted}")
    assert (await api.info(wanted))["name"] == "b" and (await api.info(wanted))["imagesCount"] == 1
    assert await api.post("/task/new/init", data=form(), headers={"set-uuid": wanted}) == {"error": f"Invalid set-uuid: {wanted}"}
    assert await api.post("/task/new/init", data=form(), headers={"set-uuid": "not-a-uuid"}) == {"error": "Invalid set-uuid: not-a-uuid"}
    assert await api.post("/task/new", data=form(files=images(1)), headers={"set-uuid": wanted}) == {"error": f"Invalid set-uuid: {wanted}"}


async def test_upload_rules(api, tmp_path):
    uuid = (await api.post("/task/new/init", data=form({"name": "dupes"})))["uuid"]
    for _ in range(3):
        assert await api.post(f"/task/new/upload/{uuid}", data=form(files=[("IMG.JPG", JPEG)])) == {"success": True}
    assert await api.post(f"/task/new/upload/{uuid}", data=form({"name": "no file"})) == {"error": "Need at least 1 file.", "noRetry": True}
    assert await api.get("/task/list") == []  # invisible until committed
    assert await api.info(uuid) == {"error": f"{uuid} not found"}
    bad = await api.post(f"/task/new/upload/{uuid}", data=b"--x\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert set(bad) >= {"error"}
    assert await api.post(f"/task/new/commit/{uuid}") == {"uuid": uuid}
    engine = api.node.app[ENGINE]
    assert sorted(engine.tasks[uuid].images) == ["IMG.JPG", "IMG_.JPG", "IMG__.JPG"]
    assert await api.post(f"/task/new/commit/{uuid}") == {"error": "Invalid uuid (not found)"}
    assert await api.post(f"/task/new/upload/{uuid}", data=form(files=images(1))) == {"error": "Invalid uuid (not found)"}
    assert await api.get("/task/list") == [{"uuid": uuid}]

    empty = (await api.post("/task/new/init", data=form()))["uuid"]
    assert await api.post(f"/task/new/commit/{empty}") == {"error": "Need at least 1 file."}


async def test_options_are_validated_like_nodeodm(api):
    options = await api.get("/options")
    by_name = {o["name"]: o for o in options}
    needed = {"split", "split-overlap", "sm-cluster", "orthophoto-resolution", "pc-quality", "orthophoto-cutline",
              "dem-euclidean-map", "skip-3dmodel", "skip-report", "feature-quality", "min-num-features", "fast-orthophoto",
              "dsm", "dtm", "dem-resolution", "auto-boundary", "max-concurrency", "end-with", "matcher-neighbors",
              "use-3dmesh", "rerun-from", "crop", "gps-accuracy"}
    assert needed <= set(by_name) and len(options) >= 40
    for option in options:
        assert option["type"] in ("int", "float", "string", "bool", "enum") and isinstance(option["value"], str)
        if option["type"] == "enum":
            assert option["value"] in option["domain"]
    assert by_name["max-concurrency"]["value"] == "4" and by_name["pc-quality"]["domain"][-1] == "lowest"

    bad = [{"name": "pc-quality", "value": "bogus"}, {"name": "split", "value": -3}, {"name": "unknown", "value": 1}]
    reply = await api.post("/task/new/init", data=form({"options": json.dumps(bad)}))
    assert reply == {"error": '[{"name":"pc-quality","error":"Invalid value bogus (not in enum)"},'
                              '{"name":"split","error":"Invalid value -3 (out of range)"}]'}
    assert api.node.app[ENGINE].pending == {}


async def test_max_images(start_node, session):
    api = Api(session, await start_node(max_images=2))
    assert (await api.get("/info"))["maxImages"] == 2
    uuid = (await api.post("/task/new/init", data=form()))["uuid"]
    for name, content in images(3) + [("gcp_list.txt", b"g")]:
        await api.post(f"/task/new/upload/{uuid}", data=form(files=[(name, content)]))
    error = {"error": "3 images uploaded, but this node can only process up to 2."}
    assert await api.post(f"/task/new/commit/{uuid}") == error
    assert await api.post("/task/new", data=form(files=images(3))) == error
    assert await api.get("/task/list") == []
    ok = await api.submit(images(2) + [("gcp_list.txt", b"g")])  # text files are not images
    assert (await api.info(ok))["imagesCount"] == 2


# --- lifecycle and output --------------------------------------------------------------------------

async def test_slots_queue_and_node_info(start_node, session):
    api = Api(session, await start_node(slots=1, seconds_per_image=0.1, cores=6, memory_mb=2048))
    first = await api.submit(images(3))
    second = await api.submit(images(1))
    info = await api.get("/info")
    assert info["taskQueueCount"] == 2 and info["maxParallelTasks"] == 1 and info["cpuCores"] == 6
    assert info["totalMemory"] == 2048 * 1024 * 1024 and 0 < info["availableMemory"] < info["totalMemory"]
    assert info["engine"] == "odm" and info["engineVersion"] == "3.5.6-sim"
    queued = await api.info(second)
    assert queued["status"] == {"code": TaskStatus.QUEUED} and queued["processingTime"] == -1
    assert (await api.info(first))["status"]["code"] == TaskStatus.RUNNING
    done = await api.wait(second, TaskStatus.COMPLETED)
    assert (await api.info(first))["status"]["code"] == TaskStatus.COMPLETED
    assert done["processingTime"] >= 100 and re.match(r"^Task of \d{4}-\d\d-\d\dT[\d:.]+Z$", done["name"])
    assert (await api.get("/info"))["taskQueueCount"] == 0


async def test_init_window_shows_running_then_queued_like_nodeodm(start_node, session):
    """odm-split-merge-queued.json: a task committed to a busy node reads RUNNING (-1 ms), then QUEUED."""
    api = Api(session, await start_node(slots=1, seconds_per_image=SLOW, init_seconds=0.5))
    busy = await api.submit(images(1))
    waiting = await api.submit(images(1))
    for uuid in (busy, waiting):
        info = await api.info(uuid, with_output=0)
        assert info["status"] == {"code": TaskStatus.RUNNING} and info["processingTime"] == -1 and info["output"] == []
    assert (await api.get("/info"))["taskQueueCount"] == 2
    await api.wait(waiting, TaskStatus.QUEUED)
    started = await api.info(busy, with_output=0)
    assert started["status"]["code"] == TaskStatus.RUNNING and started["processingTime"] >= 0 and len(started["output"]) >= 3
    assert (await api.info(waiting))["processingTime"] == -1


async def test_output_lines_and_negative_offsets(api):
    uuid = await api.submit(images(4))
    await api.wait(uuid, TaskStatus.COMPLETED)
    full = await api.get(f"/task/{uuid}/output")
    assert len(full) > 30 and full[0].startswith("[INFO]    Initializing ODM 3.5.6-sim")
    assert full[-1] == "Compressing all.zip"
    assert (await api.info(uuid, with_output=-3))["output"] == full[-3:]
    assert (await api.info(uuid, with_output=5))["output"] == full[5:]
    assert "output" not in await api.info(uuid)
    assert await api.get(f"/task/{uuid}/output", line=-2) == full[-2:]
    assert await api.get(f"/task/{uuid}/output", line=10) == full[10:]
    assert await api.get(f"/task/{uuid}/output", line="junk") == full


async def test_cancel_remove_restart_with_every_body_kind(start_node, session, tmp_path):
    api = Api(session, await start_node(seconds_per_image=SLOW, data_dir=tmp_path / "d"))
    uuid = await api.submit(images(2))
    assert (await api.info(uuid))["status"]["code"] == TaskStatus.RUNNING
    assert await api.post("/task/restart", json={"uuid": uuid}) == {"success": False, "error": "Task cannot be restarted"}
    assert await api.post("/task/cancel", json={"uuid": uuid}) == {"success": True}
    canceled = await api.info(uuid)
    assert canceled["status"] == {"code": TaskStatus.CANCELED} and canceled["processingTime"] == -1
    assert await api.post("/task/cancel", data={"uuid": uuid}) == {"success": True}  # urlencoded, again

    new_options = json.dumps([{"name": "dsm", "value": "true"}])
    multipart = aiohttp.FormData({"uuid": uuid, "options": new_options}, default_to_multipart=True)
    assert await api.post("/task/restart", data=multipart) == {"error": "uuid param missing."}  # as NodeODM reads it
    assert await api.post("/task/restart", data={"uuid": uuid, "options": new_options}) == {"success": True}
    restarted = await api.info(uuid, with_output=0)
    assert restarted["status"]["code"] == TaskStatus.RUNNING
    assert {"name": "dsm", "value": True} in restarted["options"] and len(restarted["output"]) >= 3
    bad = await api.post("/task/restart", json={"uuid": uuid, "options": [{"name": "crop", "value": "x"}]})
    assert bad == {"error": '[{"name":"crop","error":"Invalid value x (not a number)"}]'}

    assert await api.post("/task/remove", json={"uuid": uuid}) == {"success": True}
    assert await api.get("/task/list") == []
    assert not (tmp_path / "d" / "data" / uuid).exists()
    assert await api.post("/task/remove", data={"uuid": uuid}) == {"success": False, "error": f"{uuid} not found"}


async def test_restart_of_completed_task_runs_again(api):
    uuid = await api.submit(images(2))
    await api.wait(uuid, TaskStatus.COMPLETED)
    assert await api.post("/task/restart", data={"uuid": uuid}) == {"success": True}
    await api.wait(uuid, TaskStatus.COMPLETED)
    assert len((await api.download(uuid)).namelist()) > 5


async def test_unknown_uuid_and_bad_requests_everywhere(api):
    gone = {"error": f"{UNKNOWN} not found"}
    assert await api.info(UNKNOWN) == gone
    assert await api.get(f"/task/{UNKNOWN}/output") == gone
    assert await api.get(f"/task/{UNKNOWN}/download/all.zip") == gone
    assert await api.post(f"/task/new/upload/{UNKNOWN}", data=form(files=images(1))) == {"error": "Invalid uuid (not found)"}
    assert await api.post(f"/task/new/commit/{UNKNOWN}") == {"error": "Invalid uuid (not found)"}
    for action in ("cancel", "remove", "restart"):
        assert await api.post(f"/task/{action}", json={"uuid": UNKNOWN}) == {"success": False, "error": f"{UNKNOWN} not found"}
        assert await api.post(f"/task/{action}", data={}) == {"error": "uuid param missing."}
        malformed = await api.post(f"/task/{action}", data=b"{nope", headers={"Content-Type": "application/json"})
        assert malformed["error"].startswith("Malformed request body")
    async with api.session.get(api.url("/no/such/route")) as reply:
        assert reply.status == 404


async def test_assets_before_ready_and_invalid_names(start_node, session):
    api = Api(session, await start_node(seconds_per_image=SLOW))
    uuid = await api.submit(images(1))
    assert await api.get(f"/task/{uuid}/download/all.zip") == {"error": "Asset not ready"}
    assert await api.get(f"/task/{uuid}/download/orthophoto.tif") == {"error": "Invalid asset"}


async def test_range_requests_get_206(api):
    uuid = await api.submit(images(2))
    await api.wait(uuid, TaskStatus.COMPLETED)
    async with api.session.get(api.url(f"/task/{uuid}/download/all.zip")) as reply:
        assert reply.headers["Accept-Ranges"] == "bytes"
        body = await reply.read()
    async with api.session.get(api.url(f"/task/{uuid}/download/all.zip"), headers={"Range": "bytes=10-99"}) as reply:
        assert reply.status == 206
        assert reply.headers["Content-Range"] == f"bytes 10-99/{len(body)}"
        assert await reply.read() == body[10:100]


async def test_token_on_every_request(start_node, session):
    api = Api(session, await start_node(token="s3cret"), token="s3cret")
    bad = {"error": "Invalid authentication token: token does not match."}
    assert (await api.get("/info"))["version"] == "2.2.4"
    for path in ("/info", "/options", "/task/list", "/-/sim/faults"):
        async with session.get(api.url(path)) as reply:
            assert await reply.json() == bad
    async with session.post(api.url("/task/new/init"), params={"token": "wrong"}, data=form()) as reply:
        assert await reply.json() == bad
    async with session.get(api.url("/auth/info")) as reply:
        assert (await reply.json())["loginUrl"] is None
    uuid = await api.submit(images(1))
    await api.wait(uuid, TaskStatus.COMPLETED)


# --- faults -------------------------------------------------------------------------------------------

async def test_fail_fault_from_settings_and_live(start_node, session):
    api = Api(session, await start_node(fail_rate=1.0))
    failed = await api.wait(await api.submit(images(3)), TaskStatus.FAILED)
    assert failed["status"] == {"code": TaskStatus.FAILED, "errorMessage": "Cannot process dataset"}
    output = await api.get(f"/task/{failed['uuid']}/output", line=0)
    assert "Child returned 1" in output and output[-1].startswith("[ERROR]")
    assert await api.get(f"/task/{failed['uuid']}/download/all.zip") == {"error": "Asset not ready"}

    assert await api.post("/-/sim/faults", json={"fail_rate": 0}) == {"fail_rate": 0.0, "drop_upload_rate": 0.0, "stall_at": None}
    await api.wait(await api.submit(images(1)), TaskStatus.COMPLETED)
    assert await api.post("/-/sim/faults", json={"fail_rate": 1}) == {"fail_rate": 1.0, "drop_upload_rate": 0.0, "stall_at": None}
    await api.wait(await api.submit(images(1)), TaskStatus.FAILED)
    assert (await api.post("/-/sim/faults", json={"fail_rate": 2}))["error"].startswith("fail_rate must be")
    assert (await api.post("/-/sim/faults", json={"explode": 1}))["error"] == "Unknown fault(s): explode"
    assert (await api.post("/-/sim/faults", json=[1]))["error"] == "Expected a JSON object"
    assert await api.get("/-/sim/faults") == {"fail_rate": 1.0, "drop_upload_rate": 0.0, "stall_at": None}


async def test_drop_fault_answers_500_and_keeps_nothing(start_node, session):
    api = Api(session, await start_node(drop_upload_rate=1.0))
    uuid = (await api.post("/task/new/init", data=form()))["uuid"]
    async with session.post(api.url(f"/task/new/upload/{uuid}"), data=form(files=images(1))) as reply:
        assert reply.status == 500
    pending = api.node.app[ENGINE].pending[uuid]
    assert list(pending.directory.iterdir()) == []
    await api.post("/-/sim/faults", json={"drop_upload_rate": 0})
    assert await api.post(f"/task/new/upload/{uuid}", data=form(files=images(1))) == {"success": True}


async def test_stall_fault_freezes_progress_until_cleared(start_node, session):
    api = Api(session, await start_node(seconds_per_image=0.1, stall_at=30))
    uuid = await api.submit(images(4))
    await asyncio.sleep(0.4)
    stalled = await api.info(uuid, with_output=0)
    await asyncio.sleep(0.2)
    later = await api.info(uuid, with_output=0)
    assert stalled["status"]["code"] == later["status"]["code"] == TaskStatus.RUNNING
    assert stalled["progress"] == later["progress"] == 30
    assert stalled["output"] == later["output"] and len(later["output"]) >= 3
    assert later["processingTime"] > stalled["processingTime"]
    assert (await api.post("/-/sim/faults", json={"stall_at": None}))["stall_at"] is None
    await api.wait(uuid, TaskStatus.COMPLETED)


async def test_faults_are_reproducible_with_a_seed(start_node, session):
    outcomes = []
    for _ in range(2):
        api = Api(session, await start_node(fail_rate=0.5, seed=42, slots=4))
        uuids = [await api.submit(images(1)) for _ in range(6)]
        outcomes.append([(await api.wait(u, TaskStatus.COMPLETED, TaskStatus.FAILED))["status"]["code"] for u in uuids])
    assert outcomes[0] == outcomes[1] and set(outcomes[0]) == {TaskStatus.COMPLETED, TaskStatus.FAILED}


# --- running it ---------------------------------------------------------------------------------------

async def test_serve_simnode_logs_and_stops_on_cancel(caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="passel.simnode")
    server = asyncio.create_task(serve_simnode(SimnodeSettings(port=0, name="demo-a", slots=2, data_dir=tmp_path)))
    while not any("listening" in r.getMessage() for r in caplog.records):
        await asyncio.sleep(0.01)
    line = next(r.getMessage() for r in caplog.records if "listening" in r.getMessage())
    url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
    assert line == f"Simulated NodeODM 'demo-a' listening on {url} (2 slots, 0.5 s/image)"
    async with aiohttp.ClientSession() as client, client.get(url + "/info") as reply:
        assert (await reply.json())["maxParallelTasks"] == 2
    server.cancel()
    with pytest.raises(asyncio.CancelledError):
        await server
    assert any("stopped" in r.getMessage() for r in caplog.records)


async def test_temporary_data_dir_is_removed_at_shutdown(session):
    node = SimNode(SimnodeSettings(port=0, seconds_per_image=FAST))
    await node.start()
    api = Api(session, node)
    uuid = await api.submit(images(1))
    await api.wait(uuid, TaskStatus.COMPLETED)
    project = node.app[ENGINE].tasks[uuid].project_dir
    assert project.exists()
    await node.stop()
    assert not project.parent.parent.exists()
