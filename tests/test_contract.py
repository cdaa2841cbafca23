"""One NodeODM contract suite, run against the simulated node and against Passel in front of one.

Whatever a real NodeODM answers, both must answer the same way: the clients (PyODM, ODM's
split-merge executor, WebODM) cannot be told which one they talk to.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from pyodm import Node
from pyodm.exceptions import NodeResponseError

from appliance.nodeodm.options import OPTIONS_NOT_A_LIST
from tests.nodeodm_helpers import JPEG, call, init_task, jcall, make_images, raw_multipart, seed_zip, upload

RECONSTRUCTION_OUTPUTS = ["opensfm/matches", "opensfm/features", "opensfm/reconstruction.json",
                          "opensfm/tracks.csv", "cameras.json"]
ODM_OPTIONS = json.dumps([{"name": "orthophoto-resolution", "value": "5.0"}, {"name": "pc-quality", "value": "lowest"},
                          {"name": "orthophoto-cutline", "value": True}, {"name": "skip-3dmodel", "value": True}])
UNKNOWN = "0b0e0f5c-8d5f-4c4e-9f55-0a9b1c2d3e4f"
WEBHOOK = "http://127.0.0.1:9/webhook"  # a closed port: the node's call fails quietly, but the node must hold it
TYPED_ODM_OPTIONS = [{"name": "orthophoto-resolution", "value": 5.0}, {"name": "pc-quality", "value": "lowest"},
                     {"name": "orthophoto-cutline", "value": True}, {"name": "skip-3dmodel", "value": True}]


def wait_status(target, uuid: str, codes: set[int], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = jcall(target, "GET", f"/task/{uuid}/info")
        if info.get("status", {}).get("code") in codes:
            return info
        time.sleep(0.1)
    raise AssertionError(f"task {uuid} never reached {codes}: {info}")


def test_info_shape(target):
    info = jcall(target, "GET", "/info")
    assert set(info) >= {"version", "taskQueueCount", "totalMemory", "availableMemory", "cpuCores", "maxImages",
                         "maxParallelTasks", "engineVersion", "engine"}
    assert tuple(int(p) for p in info["version"].split(".")) >= (1, 4, 0)
    assert info["engine"] == "odm" and info["maxParallelTasks"] >= 1 and info["taskQueueCount"] == 0


def test_options_list_is_typed_and_has_split_merge_options(target):
    options = {o["name"]: o for o in jcall(target, "GET", "/options")}
    for name in ("split", "split-overlap", "sm-cluster", "orthophoto-resolution", "pc-quality", "skip-3dmodel"):
        assert name in options, name
    for option in options.values():
        assert option["type"] in ("int", "float", "string", "bool", "enum") and isinstance(option["value"], str)
        if option["type"] == "enum":
            assert isinstance(option["domain"], list)


def test_token_is_checked_on_every_route(target_factory):
    target = target_factory(token="s3cret")
    bad = "Invalid authentication token: token does not match."
    for method, path in [("GET", "/info"), ("GET", "/options"), ("GET", "/task/list"), ("POST", "/task/new/init"),
                         ("GET", f"/task/{UNKNOWN}/info"), ("POST", "/task/remove")]:
        reply = requests.request(method, target.url + path, params={"token": "wrong"}, timeout=10)
        assert reply.json() == {"error": bad}, (path, reply.text)
    assert jcall(target, "GET", "/info")["version"]
    assert requests.get(target.url + "/auth/info", timeout=10).json()["loginUrl"] is None
    assert requests.post(target.url + "/auth/login", timeout=10).json() == {"error": "Not available"}


def assert_zip_holds_only(names: list[str], outputs: list[str]) -> None:
    """`all.zip` holds what was asked for, and nothing else (NodeODM zips only the requested paths)."""
    assert names, "all.zip is empty"
    stray = [n for n in names if not any(n == o or n.startswith(o.rstrip("/") + "/") for o in outputs)]
    assert not stray, f"all.zip holds more than the requested outputs: {stray}"
    assert "cameras.json" in names and any(n.startswith("opensfm/features/") for n in names), names


def by_name(options: list[dict]) -> list[dict]:
    return sorted(options, key=lambda option: option["name"])


def assert_node_holds(target, uuid: str, *, name: str, options: list[dict], outputs: list[str],
                      skip_post_processing: bool, webhook: str | None = None, date_created: int | None = None) -> None:
    """The node behind (itself, not Passel's record) holds exactly what the client sent."""
    stored = target.stored(uuid)
    assert stored["name"] == name
    assert by_name(stored["options"]) == by_name(options)  # NodeODM keeps them in its catalogue's order
    assert stored["outputs"] == outputs
    assert stored["skipPostProcessing"] is skip_post_processing
    assert stored.get("webhook") == webhook
    if date_created is not None:
        assert stored["dateCreated"] == date_created


def test_pyodm_chunked_end_to_end(target, tmp_path: Path):
    node = Node("127.0.0.1", target.port)
    files = make_images(tmp_path / "images", 24) + [seed_zip(tmp_path)]
    (tmp_path / "geo.txt").write_text("EPSG:4326\n")
    files.append(str(tmp_path / "geo.txt"))
    task = node.create_task(files, options={"pc-quality": "lowest", "orthophoto-resolution": 5.0}, name="e2e",
                            skip_post_processing=True, outputs=RECONSTRUCTION_OUTPUTS, parallel_uploads=10,
                            webhook=WEBHOOK)
    task.wait_for_completion(interval=0.2)
    info = task.info()
    assert info.status.value == 40 and info.images_count == 24 and info.name == "e2e"
    assert info.processing_time > 0
    out = Path(task.download_assets(str(tmp_path / "out")))
    names = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    assert_zip_holds_only(names, RECONSTRUCTION_OUTPUTS)
    if not target.real:  # NodeODM's test mode serves canned results, with no reconstruction
        json.loads((out / "opensfm" / "reconstruction.json").read_text())
    assert_node_holds(target, task.uuid, name="e2e", outputs=RECONSTRUCTION_OUTPUTS, skip_post_processing=True,
                      options=[{"name": "pc-quality", "value": "lowest"},
                               {"name": "orthophoto-resolution", "value": 5.0}], webhook=WEBHOOK)
    task.remove()
    with pytest.raises(NodeResponseError):
        task.info()


def test_one_shot_task_new(target, tmp_path: Path):
    files = [("images", (f"IMG_{i}.JPG", JPEG)) for i in range(3)]
    fields = {"name": "oneshot", "options": ODM_OPTIONS, "skipPostProcessing": "true", "webhook": WEBHOOK,
              "outputs": json.dumps(["cameras.json", "opensfm/features"]), "dateCreated": "1700000000123"}
    reply = jcall(target, "POST", "/task/new", files=files + [(k, (None, v)) for k, v in fields.items()])
    info = wait_status(target, reply["uuid"], {40})
    assert info["imagesCount"] == 3 and info["name"] == "oneshot" and info["dateCreated"] == 1700000000123
    assert_node_holds(target, reply["uuid"], name="oneshot", options=TYPED_ODM_OPTIONS, skip_post_processing=True,
                      outputs=["cameras.json", "opensfm/features"], webhook=WEBHOOK, date_created=1700000000123)
    assert jcall(target, "POST", "/task/new", files={"name": (None, "x")}) == \
        {"error": "Need at least 1 file or a zip file url."}


def test_chunked_init_fields_reach_the_node_exactly(target):
    """WebODM's init: every text field, dateCreated included (NodeODM purges by it), as multipart."""
    uuid = init_task(target, name="webodm", options=ODM_OPTIONS, skipPostProcessing="false", webhook=WEBHOOK,
                     outputs=json.dumps(["cameras.json", "opensfm/features"]), dateCreated="1700000000456")
    upload(target, uuid, "IMG_1.JPG")
    jcall(target, "POST", f"/task/new/commit/{uuid}")
    info = wait_status(target, uuid, {40})
    assert info["dateCreated"] == 1700000000456 and info["name"] == "webodm"
    seen = jcall(target, "GET", f"/task/{uuid}/info")["options"]
    own = [o for o in seen if o["name"] in ("pc-ept", "cog", "gltf")]  # the node's own post-processing
    assert len(own) == 3 and by_name([o for o in seen if o not in own]) == by_name(TYPED_ODM_OPTIONS)
    assert_node_holds(target, uuid, name="webodm", options=seen, skip_post_processing=False,
                      outputs=["cameras.json", "opensfm/features"], webhook=WEBHOOK, date_created=1700000000456)


def test_odm_split_merge_executor_sequence(target):
    """The request pattern of ODM's opendm/remote.py, as recorded in shared/traces."""
    jcall(target, "GET", "/info")
    uuid = init_task(target, name="", options=ODM_OPTIONS, skipPostProcessing="true",
                     outputs=json.dumps(RECONSTRUCTION_OUTPUTS))
    names = [f"IMG_{i:04d}.JPG" for i in range(15)] + ["gcp_list.txt", "seed.zip"]
    seed = io.BytesIO()
    with zipfile.ZipFile(seed, "w") as archive:
        archive.writestr("opensfm/split_merge_stop_at_reconstruction.txt", "")
    bodies = {n: (seed.getvalue() if n == "seed.zip" else b"EPSG:4326\n" if n.endswith(".txt") else JPEG) for n in names}
    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda n: upload(target, uuid, n, bodies[n]), names))
    assert replies == [{"success": True}] * len(names)
    assert jcall(target, "POST", f"/task/new/commit/{uuid}") == {"uuid": uuid}
    first = jcall(target, "GET", f"/task/{uuid}/info")
    assert first["status"]["code"] in (20, 40), first  # QUEUED would make ODM drop the task
    assert first["name"].startswith("Task of ") and first["uuid"] == uuid  # NodeODM names unnamed tasks
    info = wait_status(target, uuid, {40})
    assert info["imagesCount"] == 15
    archive = zipfile.ZipFile(io.BytesIO(call(target, "GET", f"/task/{uuid}/download/all.zip").content))
    assert_zip_holds_only([n for n in archive.namelist() if not n.endswith("/")], RECONSTRUCTION_OUTPUTS)
    assert_node_holds(target, uuid, name=first["name"], options=TYPED_ODM_OPTIONS, skip_post_processing=True,
                      outputs=RECONSTRUCTION_OUTPUTS)
    assert jcall(target, "POST", "/task/remove", data={"uuid": uuid}) == {"success": True}
    assert jcall(target, "GET", f"/task/{uuid}/info") == {"error": f"{uuid} not found"}


def test_task_is_invisible_until_committed_and_listed_after(target):
    uuid = init_task(target)
    upload(target, uuid, "a.jpg")
    assert jcall(target, "GET", f"/task/{uuid}/info") == {"error": f"{uuid} not found"}
    assert {"uuid": uuid} not in jcall(target, "GET", "/task/list")
    jcall(target, "POST", f"/task/new/commit/{uuid}")
    assert {"uuid": uuid} in jcall(target, "GET", "/task/list")


def test_set_uuid(target):
    wanted = "6c1f0a52-7f4e-4a3b-8c2d-1e2f3a4b5c6d"
    reply = jcall(target, "POST", "/task/new/init", files={"name": (None, "x")}, headers={"set-uuid": wanted})
    assert reply == {"uuid": wanted}
    # Until its commit, NodeODM lets a client initialise the same upload again (a retried init).
    again = jcall(target, "POST", "/task/new/init", files={"name": (None, "y")}, headers={"set-uuid": wanted})
    assert again == {"uuid": wanted}
    upload(target, wanted, "a.jpg")
    jcall(target, "POST", f"/task/new/commit/{wanted}")
    assert wait_status(target, wanted, {40})["name"] == "y"
    taken = jcall(target, "POST", "/task/new/init", files={"name": (None, "x")}, headers={"set-uuid": wanted})
    assert taken == {"error": f"Invalid set-uuid: {wanted}"}
    assert jcall(target, "POST", "/task/new/init", files={"name": (None, "x")}, headers={"set-uuid": "nope"}) == \
        {"error": "Invalid set-uuid: nope"}


def test_upload_errors_and_double_commit(target):
    uuid = init_task(target)
    assert jcall(target, "POST", f"/task/new/upload/{uuid}", files={"name": (None, "x")}) == \
        {"error": "Need at least 1 file.", "noRetry": True}
    assert jcall(target, "POST", f"/task/new/upload/{UNKNOWN}", files={"images": ("a.jpg", JPEG)}) == \
        {"error": "Invalid uuid (not found)"}
    upload(target, uuid, "a.jpg")
    jcall(target, "POST", f"/task/new/commit/{uuid}")
    assert jcall(target, "POST", f"/task/new/commit/{uuid}") == {"error": "Invalid uuid (not found)"}
    assert jcall(target, "POST", f"/task/new/upload/{uuid}", files={"images": ("b.jpg", JPEG)}) == \
        {"error": "Invalid uuid (not found)"}


def test_commit_without_files(target):
    uuid = init_task(target)
    assert jcall(target, "POST", f"/task/new/commit/{uuid}") == {"error": "Need at least 1 file."}


def test_duplicate_file_names_are_kept(target):
    uuid = init_task(target)
    upload(target, uuid, "a.jpg")
    upload(target, uuid, "a.jpg")
    jcall(target, "POST", f"/task/new/commit/{uuid}")
    assert wait_status(target, uuid, {40})["imagesCount"] == 2


@pytest.mark.parametrize("options, error", [
    ('[{"name": "pc-quality", "value": "X"}]', [{"name": "pc-quality", "error": "Invalid value X (not in enum)"}]),
    ('[{"name": "split-overlap", "value": -5}]', [{"name": "split-overlap", "error": "Invalid value -5 (out of range)"}]),
])
def test_domain_violations_use_nodeodm_shape(target, options, error):
    reply = jcall(target, "POST", "/task/new/init", files={"options": (None, options)})
    assert json.loads(reply["error"]) == error


def test_invalid_options_json(target):
    reply = jcall(target, "POST", "/task/new/init", files={"options": (None, "[{not json")})
    assert set(reply) == {"error"} and reply["error"]


@pytest.mark.parametrize("options", ['{"pc-quality": "lowest"}', "null", '"lowest"', "[1, 2]", "{}"])
def test_options_that_are_json_but_not_a_list_are_refused(target, options):
    if target.kind == "nodeodm":
        pytest.skip("NodeODM 2.2.4 runs such a task with no options; Passel is stricter (see test_conformance)")
    assert jcall(target, "POST", "/task/new/init", files={"options": (None, options)}) == {"error": OPTIONS_NOT_A_LIST}
    assert jcall(target, "GET", "/task/list") == []


def test_unknown_options_are_dropped_and_values_typed(target):
    options = json.dumps([{"name": "no-such-option", "value": 1}, {"name": "orthophoto-resolution", "value": "5.0"},
                          {"name": "skip-3dmodel", "value": "true"}])
    uuid = init_task(target, options=options)
    upload(target, uuid, "a.jpg")
    jcall(target, "POST", f"/task/new/commit/{uuid}")
    seen = {o["name"]: o["value"] for o in jcall(target, "GET", f"/task/{uuid}/info")["options"]}
    assert "no-such-option" not in seen
    assert seen["orthophoto-resolution"] == 5.0 and seen["skip-3dmodel"] is True


@pytest.mark.parametrize("name", ["../evil.jpg", "/etc/evil.jpg", "a\x00b.jpg", "..", "sub\\..\\evil.jpg",
                                  "a\u202egpj.exe"])
def test_path_tricks_in_file_names(target, name, tmp_path):
    if target.kind == "nodeodm":
        pytest.skip("NodeODM 2.2.4 takes such names (a NUL byte kills it); Passel and the simulated node refuse them")
    uuid = init_task(target)
    body, content_type = raw_multipart([("images", name, JPEG)])
    reply = jcall(target, "POST", f"/task/new/upload/{uuid}", data=body, headers={"Content-Type": content_type})
    assert set(reply) >= {"error"} and reply.get("noRetry") is True, reply
    assert jcall(target, "GET", "/info")["version"]  # still up
    assert not Path("/etc/evil.jpg").exists()


@pytest.mark.parametrize("body", [
    b"--b\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.jpg\"\r\n\r\nabc",  # truncated
    b"this is not multipart at all",
    b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",  # a part without a name
])
def test_malformed_multipart(target, body):
    uuid = init_task(target)
    reply = call(target, "POST", f"/task/new/upload/{uuid}", data=body,
                 headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert reply.status_code == 200 and "error" in reply.json(), reply.text
    assert jcall(target, "GET", "/info")["version"]
    upload(target, uuid, "ok.jpg")  # the task survived


def test_unknown_uuid_on_every_route(target):
    for path in (f"/task/{UNKNOWN}/info", f"/task/{UNKNOWN}/output"):
        assert jcall(target, "GET", path) == {"error": f"{UNKNOWN} not found"}
    assert jcall(target, "GET", f"/task/{UNKNOWN}/download/all.zip") == {"error": f"{UNKNOWN} not found"}
    assert jcall(target, "POST", f"/task/new/commit/{UNKNOWN}") == {"error": "Invalid uuid (not found)"}
    for action in ("cancel", "remove", "restart"):
        reply = jcall(target, "POST", f"/task/{action}", data={"uuid": UNKNOWN})
        assert reply["success"] is False and reply["error"], reply
    assert call(target, "GET", "/no/such/route").status_code == 404


def _committed(target, images: int = 2, **fields: str) -> str:
    uuid = init_task(target, **fields)
    for i in range(images):
        upload(target, uuid, f"IMG_{i}.JPG")
    jcall(target, "POST", f"/task/new/commit/{uuid}")
    return uuid


@pytest.mark.parametrize("encoding", ["urlencoded", "json"])
def test_cancel_restart_remove_with_every_body_encoding(target_factory, encoding):
    target = target_factory(task_seconds=5)

    def post(action: str, uuid: str) -> dict:
        if encoding == "json":
            return jcall(target, "POST", f"/task/{action}", json={"uuid": uuid})
        return jcall(target, "POST", f"/task/{action}", data={"uuid": uuid})

    uuid = _committed(target, images=20)
    wait_status(target, uuid, {20})
    assert post("restart", uuid) == {"success": False, "error": "Task cannot be restarted"}
    assert post("cancel", uuid) == {"success": True}
    wait_status(target, uuid, {50})
    assert post("cancel", uuid) == {"success": True}  # canceling twice is fine
    assert post("restart", uuid) == {"success": True}
    assert wait_status(target, uuid, {10, 20})["status"]["code"] in (10, 20)
    assert post("remove", uuid) == {"success": True}
    assert jcall(target, "GET", f"/task/{uuid}/info") == {"error": f"{uuid} not found"}


def test_actions_read_no_multipart_body(target):
    """NodeODM parses cancel, remove and restart bodies as urlencoded or JSON only, never multipart."""
    uuid = _committed(target, images=2)
    for action in ("cancel", "remove", "restart"):
        reply = jcall(target, "POST", f"/task/{action}", files={"uuid": (None, uuid)})
        assert reply == {"error": "uuid param missing."}, (action, reply)
    assert wait_status(target, uuid, {40})["uuid"] == uuid


def test_output_lines_and_negative_line_numbers(target):
    uuid = _committed(target, images=3)
    wait_status(target, uuid, {40})
    lines = jcall(target, "GET", f"/task/{uuid}/output")
    assert len(lines) >= 3 and all(isinstance(line, str) for line in lines)
    assert jcall(target, "GET", f"/task/{uuid}/output", params={"line": -2}) == lines[-2:]
    assert jcall(target, "GET", f"/task/{uuid}/output", params={"line": 1}) == lines[1:]
    assert jcall(target, "GET", f"/task/{uuid}/info", params={"with_output": -1})["output"] == lines[-1:]


def test_download_errors_and_ranges(target_factory):
    target = target_factory(task_seconds=3)
    uuid = _committed(target, images=10)
    assert jcall(target, "GET", f"/task/{uuid}/download/all.zip") == {"error": "Asset not ready"}
    sneaky = call(target, "GET", f"/task/{uuid}/download/..%2F..%2Fetc%2Fpasswd")
    assert sneaky.status_code == 404 or sneaky.json() == {"error": "Invalid asset"}
    assert jcall(target, "GET", f"/task/{uuid}/download/orthophoto.tif") == {"error": "Invalid asset"}
    wait_status(target, uuid, {40})
    whole = call(target, "GET", f"/task/{uuid}/download/all.zip")
    assert whole.headers["Content-Type"] == "application/zip"
    assert "attachment" in whole.headers["Content-Disposition"]
    assert int(whole.headers["Content-Length"]) == len(whole.content)
    part = call(target, "GET", f"/task/{uuid}/download/all.zip", headers={"Range": "bytes=10-99"})
    if whole.headers.get("Accept-Ranges") == "bytes":  # PyODM then downloads in parallel ranges
        assert part.status_code == 206
    if part.status_code == 206:  # Passel serves ranges once its results copy is made
        assert part.content == whole.content[10:100]
    else:  # NodeODM 2.2.4 serves no ranges, and says so by not sending Accept-Ranges
        assert part.status_code == 200 and part.content == whole.content
    zipfile.ZipFile(io.BytesIO(whole.content)).testzip()


def test_restart_with_new_options(target):
    uuid = _committed(target, images=2)
    wait_status(target, uuid, {40})
    reply = jcall(target, "POST", "/task/restart",
                  data={"uuid": uuid, "options": json.dumps([{"name": "pc-quality", "value": "high"}])})
    assert reply == {"success": True}
    info = wait_status(target, uuid, {40})
    assert {"name": "pc-quality", "value": "high"} in info["options"]
