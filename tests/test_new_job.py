"""Starting a job from the browser: the files a passel holds of an unfinished upload (on the
coordinator and on a follower), resuming after a reload file by file, folder names, the options
check, and the New job page in Chromium uploading through a dropped connection to a real NodeODM."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.cluster.intake import NewTask, TaskRefused
from appliance.store.models import row_values
from tests import test_ui
from tests.nodeodm_helpers import (
    JPEG,
    init_task,
    jcall,
    make_images,
    raw_multipart,
    upload,
    wait_for,
)
from tests.test_browser import DESKTOP, PHONE, _shoot, chromium  # noqa: F401 - the browser fixture
from tests.ui_support import Browser, peer, start_box
from webui.new_job import NewJobPage

FOLDER_NAMES = {"images/DJI_0004.JPG": "DJI_0004.JPG", "DCIM/100MEDIA/DJI_0005.JPG": "DJI_0005.JPG",
                "DCIM\\101MEDIA\\DJI_0006.JPG": "DJI_0006.JPG", "./DJI_0007.JPG": "DJI_0007.JPG"}
PATH_TRICKS = ["../DJI_0001.JPG", "images/../../DJI_0001.JPG", "/etc/DJI_0001.JPG", "C:\\DCIM\\DJI_0001.JPG",
               "images/", "", "a\x00b/DJI_0001.JPG"]


class Client:
    def __init__(self, url: str, token: str = "") -> None:
        self.url, self.token = url, token


def held(target: Any, uuid: str) -> dict[str, int]:
    reply = jcall(target, "GET", f"/task/{uuid}/files")
    assert reply["committed"] is False and reply["arriving"] == [], reply
    return {f["name"]: f["size"] for f in reply["files"]}


def send(target: Any, uuid: str, name: str, content: bytes = JPEG) -> Any:
    body, content_type = raw_multipart([("images", name, content)])
    return jcall(target, "POST", f"/task/new/upload/{uuid}", data=body, headers={"Content-Type": content_type})


# -- what a passel holds ------------------------------------------------------------------------------
def test_a_reloaded_page_resumes_file_by_file(simnode_factory, passel_factory):
    """The page is closed half-way; opened again, it asks what is held and sends only the rest."""
    api = Client(passel_factory([simnode_factory().url]).url)
    uuid = init_task(api, name="Riverside")
    images = {f"DJI_{i:04d}.JPG": JPEG + bytes([i]) * i for i in range(6)}
    for name in list(images)[:3]:
        upload(api, uuid, name, images[name])
    assert held(api, uuid) == {name: len(images[name]) for name in list(images)[:3]}  # the "reload"
    for name in set(images) - set(held(api, uuid)):
        upload(api, uuid, name, images[name])
    assert held(api, uuid) == {name: len(content) for name, content in images.items()}
    assert jcall(api, "POST", f"/task/new/commit/{uuid}") == {"uuid": uuid}
    assert jcall(api, "GET", f"/task/{uuid}/files") == {"uuid": uuid, "committed": True, "files": [], "arriving": []}
    wait_for(lambda: jcall(api, "GET", f"/task/{uuid}/info")["status"]["code"] == 40, what="the task completed")
    assert jcall(api, "GET", f"/task/{uuid}/info")["imagesCount"] == 6


def test_unknown_or_removed_uploads_are_not_found(simnode_factory, passel_factory):
    """A page that remembers a task the passel no longer has starts afresh: it is told not-found."""
    api = Client(passel_factory([simnode_factory().url], token="field-token").url, token="field-token")
    for uuid in ("not-a-uuid", "5e0b8c2a-4a1e-4c1e-9d2b-000000000000"):
        assert jcall(api, "GET", f"/task/{uuid}/files") == {"error": f"{uuid} not found"}
    uuid = init_task(api)
    upload(api, uuid, "a.JPG")
    assert requests.get(f"{api.url}/task/{uuid}/files", timeout=10).json()["error"].startswith("Invalid authentication")
    jcall(api, "POST", "/task/new/commit/" + uuid)
    assert jcall(api, "POST", "/task/remove", data={"uuid": uuid}) == {"success": True}
    assert jcall(api, "GET", f"/task/{uuid}/files") == {"error": f"{uuid} not found"}


class CoordinatorOnItsThread:
    """A follower's passel whose coordinator is a box on loopback: the box-to-box calls of the data
    path go straight to that box's own intake, on its own loop (the signing is tested elsewhere)."""

    is_coordinator = False

    def __init__(self, coordinator: Any, follower_id: str) -> None:
        self.coordinator, self.follower_id = coordinator, follower_id

    def followers(self) -> list[str]:
        return []

    def handovers_pending(self) -> bool:
        return False

    def box_alive(self, box_id: str) -> bool:
        return True

    async def call(self, box_id: str | None, path: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._answer(path, body), self.coordinator.loop))

    async def _answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        c = self.coordinator.app[COORDINATOR_KEY]
        try:
            if path == "/intake/init":
                task = await c.intake.init(NewTask.from_fields(body["fields"]), body.get("set_uuid"),
                                           staged_on=self.follower_id)
                node = c.registry.get(task.node_id)
                return {"task": row_values(task), "node_url": node.row.url if node else None}
            if path == "/intake/commit":
                task = c.book.get(body["uuid"])
                await c.intake.commit_received(task, body["files"], body.get("node_url"), body.get("on_node", []))
                return {"uuid": task.uuid}
        except TaskRefused as exc:
            return {"error": str(exc)}
        return {"error": f"not served here: {path}"}


def test_a_follower_answers_what_it_holds(simnode_factory, passel_factory, tmp_path):
    """A follower takes the upload in itself, so it, not the coordinator, says which files it holds."""
    coordinator = passel_factory([simnode_factory().url])
    leader = peer("leader", "127.0.0.1", coordinator.port, role="coordinator")
    box = start_box(tmp_path / "follower", [], [leader], leader, name="follower")
    try:
        follower = box.app[COORDINATOR_KEY]
        follower.role.attach(CoordinatorOnItsThread(coordinator, follower.self_id))  # type: ignore[arg-type]
        api = Client(box.url)
        uuid = init_task(api, name="From the follower")
        assert follower.receiver.holds(uuid)
        upload(api, uuid, "DJI_0001.JPG")
        send(api, uuid, "images/DJI_0002.JPG")
        assert held(api, uuid) == {"DJI_0001.JPG": len(JPEG), "DJI_0002.JPG": len(JPEG)}
        elsewhere = jcall(Client(coordinator.url), "GET", f"/task/{uuid}/files")
        assert "another box" in elsewhere["error"]  # the coordinator holds no byte of it
    finally:
        box.stop()


# -- folder names ---------------------------------------------------------------------------------
def uploaded_on(node: Any, uuid: str) -> set[str]:
    """The files a real NodeODM holds of an upload not yet committed (multer's `tmp/<uuid>/`)."""
    return {p.name for p in (node.workdir / "tmp" / uuid).iterdir()} - {"body.json"}


def _stored_names(target: Any, uuid: str) -> set[str]:
    if target.kind.startswith("passel"):
        return set(held(target, uuid))
    if target.real:
        return uploaded_on(target.node, uuid)
    return set()  # the simulated node keeps its uploads private; its count is checked after commit


def test_folder_names_keep_their_base_name(target):
    """A browser's folder upload sends `folder/name`; like NodeODM, the base name is kept."""
    uuid = init_task(target)
    for name in FOLDER_NAMES:
        assert send(target, uuid, name) == {"success": True}, name
    names = _stored_names(target, uuid)
    assert not names or names == set(FOLDER_NAMES.values()), names
    jcall(target, "POST", f"/task/new/commit/{uuid}")
    assert jcall(target, "GET", f"/task/{uuid}/info")["imagesCount"] == len(FOLDER_NAMES)


@pytest.mark.parametrize("name", PATH_TRICKS)
def test_path_tricks_are_refused(target, name):
    """NodeODM 2.2.4 keeps the base name of even `../x` (busboy strips the path); Passel and the
    simulated node refuse a name that climbs, starts at a root, or is empty, in NodeODM's error shape."""
    if target.kind == "nodeodm":
        pytest.skip("NodeODM takes the base name of any path; Passel refuses path tricks outright")
    uuid = init_task(target)
    reply = send(target, uuid, name)
    assert set(reply) == {"error", "noRetry"} and reply["error"].startswith("Invalid file name"), reply
    if target.kind.startswith("passel"):
        assert held(target, uuid) == {}


def test_real_nodeodm_keeps_base_names_of_folder_uploads(realnode_factory):
    """What the real node does with a folder's names, which Passel matches."""
    node = realnode_factory()
    target = Client(node.url)
    uuid = init_task(target)
    for name in FOLDER_NAMES:
        assert send(target, uuid, name) == {"success": True}
    assert uploaded_on(node, uuid) == set(FOLDER_NAMES.values())


# -- the options check ----------------------------------------------------------------------------
BAD_OPTIONS = [[{"name": "pc-quality", "value": "extreme"}], [{"name": "mesh-octree-depth", "value": 40}],
               [{"name": "split", "value": -3}], [{"name": "dsm", "value": "maybe"}]]


@pytest.mark.parametrize("options", BAD_OPTIONS)
def test_the_server_checks_options_in_nodeodms_shape(simnode_factory, passel_factory, options):
    """The page checks options before the upload; the passel checks them again at init, and answers
    as NodeODM does: one `{"error": ...}` whose text is the JSON list of each option's problem."""
    api = Client(passel_factory([simnode_factory().url]).url)
    reply = jcall(api, "POST", "/task/new/init", files={"options": (None, json.dumps(options))})
    assert set(reply) == {"error"}
    problems = json.loads(reply["error"])
    assert [p["name"] for p in problems] == [options[0]["name"]] and problems[0]["error"]


# -- the page -------------------------------------------------------------------------------------
def test_the_page_offers_presets_advanced_options_and_a_plan(simnode_factory, passel_factory):
    nodes = [simnode_factory(memory_mb=16384, max_images=800).url, simnode_factory(memory_mb=8192).url]
    box = passel_factory(nodes)
    wait_for(lambda: len(jcall(Client(box.url), "GET", "/-/nodes")) == 2 and
             all(n["online"] for n in jcall(Client(box.url), "GET", "/-/nodes")), what="nodes online")
    page = Browser(box.url).get("/ui/new")
    assert page.status_code == 200
    for text in ("Quick orthophoto", "Standard", "High quality", "Elevation models", "webkitdirectory",
                 "/static/new_job.js", "Advanced"):
        assert text in page.text, text
    assert 'href="/ui/new"' in Browser(box.url).get("/").text
    plan = json.loads(page.text.split('id="plan">', 1)[1].split("</script>", 1)[0])
    assert {n["maxImages"] for n in plan["nodes"]} == {800, None} and plan["smCluster"]
    assert all(o["name"] in {s["name"] for s in jcall(Client(box.url), "GET", "/options")}
               for preset in plan["presets"].values() for o in preset)


def test_the_template_uses_only_its_documented_context():
    test_ui.test_templates_use_only_their_documented_context(NewJobPage)


# -- in Chromium, through a dropped connection, to a real NodeODM ---------------------------------------
def _network_failure(text: str) -> bool:
    """Chromium's own report of a request that the test cut, not a fault of the page."""
    return text.startswith("Failed to load resource") and "net::ERR_" in text


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_job_from_the_browser_survives_a_dropped_network(chromium, realnode_factory, passel_factory,  # noqa: F811
                                                           tmp_path, viewport):
    node = realnode_factory()
    box = passel_factory([node.url])
    api = Client(box.url)
    wait_for(lambda: any(n["online"] for n in jcall(api, "GET", "/-/nodes")), what="the node online")
    paths = make_images(tmp_path / "sd" / "DCIM", 20, size=256 * 1024)
    context = chromium.new_context(viewport=viewport)
    tab = context.new_page()
    outside: list[str] = []
    errors: list[str] = []
    tab.on("request", lambda r: outside.append(r.url) if not r.url.startswith("http://127.0.0.1:") else None)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" and not _network_failure(m.text) else None)
    uploads: list[str] = []

    def drop_once(route: Any) -> None:
        uploads.append(route.request.url)
        if len(uploads) == 6:  # mid-upload: the network goes away, then comes back
            context.set_offline(True)
            route.abort("internetdisconnected")
            time.sleep(2)
            context.set_offline(False)
            return
        route.continue_()

    try:
        tab.goto(box.url + "/")
        tab.get_by_role("link", name="New job").click()
        tab.wait_for_url("**/ui/new")
        tab.locator("#pick-files").set_input_files(paths)
        tab.fill("#job-name", "Riverside bridge")
        tab.check("input[name=preset][value=quick]")
        tab.wait_for_function("!document.getElementById('start').disabled")
        assert "20 images" in tab.inner_text("#summary") and "Expected processing time" in tab.inner_text("#summary")
        _shoot(tab, "new-job" + ("-phone" if viewport == PHONE else ""))
        tab.route("**/task/new/upload/**", drop_once)
        tab.click("#start")
        tab.wait_for_url("**/ui/tasks/*", timeout=60_000)
        uuid = tab.url.rsplit("/", 1)[1]
        assert len(uploads) > 20  # the cut file was sent again
        info = jcall(api, "GET", f"/task/{uuid}/info")
        assert info["imagesCount"] == 20 and info["name"] == "Riverside bridge"
        assert {"name": "fast-orthophoto", "value": True} in info["options"]
        wait_for(lambda: jcall(api, "GET", f"/task/{uuid}/info")["status"]["code"] == 40, timeout=90,
                 what="the task completed")
        tab.wait_for_selector("#task-head[data-status='COMPLETED']", timeout=30_000)
        tab.reload()
        with tab.expect_download() as download:
            tab.get_by_role("link", name="Download all results (all.zip)").click()
        saved = tmp_path / "all.zip"
        download.value.save_as(saved)
        assert saved.stat().st_size > 0 and saved.read_bytes()[:2] == b"PK"
        assert tab.evaluate("Object.keys(localStorage).filter(k => k.startsWith('passel-upload:')).length") == 0
        _the_products_show(tab, tmp_path)
    finally:
        context.close()
    assert not outside and not errors, (outside, errors)


def _the_products_show(tab: Any, tmp_path: Path) -> None:
    """The finished task's page: the orthophoto downloads on its own (a GeoTIFF, taken from the zip),
    its preview loads, and the map draws its tiles, all from the passel."""
    with tab.expect_download() as download:
        tab.get_by_role("link", name="Download Orthophoto", exact=True).click()
    ortho = tmp_path / "orthophoto.tif"
    download.value.save_as(ortho)
    assert ortho.read_bytes()[:4] in (b"II*\x00", b"MM\x00*")
    tab.wait_for_function("document.getElementById('products-preview').complete"
                          " && document.getElementById('products-preview').naturalWidth > 0")
    tab.wait_for_selector("#products-map[data-ready=true]")
    tab.wait_for_function("""() => { const tiles = document.querySelectorAll('#products-map img.leaflet-tile');
        return tiles.length > 0 && [...tiles].every(t => t.complete && t.naturalWidth === 256); }""")


def _open_new_job(chromium: Any, url: str, viewport: dict[str, int] = DESKTOP) -> tuple[Any, Any, list[str]]:  # noqa: F811
    """A fresh browser context on the New job page, collecting script errors."""
    context = chromium.new_context(viewport=viewport)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" and not _network_failure(m.text) else None)
    tab.goto(url + "/ui/new")
    return context, tab, errors


def test_a_closed_page_resumes_the_same_upload(chromium, simnode_factory, passel_factory, tmp_path):  # noqa: F811
    """Half the files sent, the page is reloaded; the same images chosen again finish the same task,
    sending only the files the passel does not hold."""
    box = passel_factory([simnode_factory().url])
    api = Client(box.url)
    paths = make_images(tmp_path / "sd", 20, size=64 * 1024)
    context, tab, errors = _open_new_job(chromium, box.url)
    sent: list[str] = []

    def first_eight(route: Any) -> None:
        sent.append(route.request.url)
        if len(sent) <= 8:
            route.continue_()  # the rest hang, unanswered, until the page is closed

    try:
        tab.route("**/task/new/upload/**", first_eight)
        tab.locator("#pick-files").set_input_files(paths)
        tab.wait_for_function("!document.getElementById('start').disabled")
        tab.click("#start")
        uuid = wait_for(lambda: next(iter(tab.evaluate(
            "Object.keys(localStorage).filter(k => k.startsWith('passel-upload:')).map(k => localStorage.getItem(k))")),
            None), what="the upload's uuid remembered")
        wait_for(lambda: tab.wait_for_timeout(50) or len(jcall(api, "GET", f"/task/{uuid}/files")["files"]) == 8,
                 what="eight files held")  # (Playwright's sync API serves the route only while it is called)
        tab.reload()  # the page is closed and opened again
        tab.unroute("**/task/new/upload/**")
        before = len(jcall(api, "GET", f"/task/{uuid}/files")["files"])
        resent: list[str] = []
        tab.route("**/task/new/upload/**", lambda route: (resent.append(route.request.url), route.continue_()))
        tab.locator("#pick-files").set_input_files(list(reversed(paths)))  # the same images, in another order
        tab.wait_for_function("!document.getElementById('start').disabled")
        tab.click("#start")
        tab.wait_for_url(f"**/ui/tasks/{uuid}")
        assert before == 8 and len(resent) == 12, (before, resent)
        assert jcall(api, "GET", f"/task/{uuid}/info")["imagesCount"] == 20
        assert [t["uuid"] for t in jcall(api, "GET", "/task/list")] == [uuid]
    finally:
        context.close()
    assert not errors, errors


def test_the_page_asks_for_the_api_token(chromium, simnode_factory, passel_factory, tmp_path):  # noqa: F811
    box = passel_factory([simnode_factory().url], token="field-token")
    context, tab, errors = _open_new_job(chromium, box.url, PHONE)
    try:
        assert tab.is_visible("#token")
        tab.wait_for_function("document.getElementById('options').textContent.includes('check the API token')")
        tab.fill("#token", "field-token")
        tab.press("#token", "Tab")
        tab.wait_for_selector("[data-option='pc-quality']", state="attached")
        tab.locator("#pick-files").set_input_files(make_images(tmp_path / "sd", 3))
        tab.wait_for_function("!document.getElementById('start').disabled")
        tab.click("#start")
        tab.wait_for_url("**/ui/tasks/*")
        assert jcall(Client(box.url, "field-token"), "GET", f"/task/{tab.url.rsplit('/', 1)[1]}/info")["imagesCount"] == 3
        assert tab.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    finally:
        context.close()
    assert not errors, errors


def test_a_large_set_is_split_and_a_bad_option_is_shown_before_upload(chromium, simnode_factory, passel_factory,  # noqa: F811
                                                                       tmp_path):
    box = passel_factory([simnode_factory(memory_mb=8192).url, simnode_factory(memory_mb=4096).url])
    api = Client(box.url)
    wait_for(lambda: sum(n["online"] for n in jcall(api, "GET", "/-/nodes")) == 2, what="both nodes online")
    context, tab, errors = _open_new_job(chromium, box.url)
    try:
        tab.locator("#pick-files").set_input_files(make_images(tmp_path / "sd", 250, size=256))
        tab.wait_for_selector("#split-box:not([hidden])")
        assert "split into about 2 parts of 125 images" in tab.inner_text("#split-why")
        assert tab.input_value("#split-size") == "125"
        tab.click("#advanced summary")
        tab.fill("[data-option='mesh-octree-depth']", "40")
        tab.press("[data-option='mesh-octree-depth']", "Tab")
        assert "between 1 and 14" in tab.inner_text("#problems") and tab.is_disabled("#start")
        tab.fill("[data-option='mesh-octree-depth']", "")
        tab.press("[data-option='mesh-octree-depth']", "Tab")
        tab.wait_for_function("!document.getElementById('start').disabled")
        tab.click("#start")
        tab.wait_for_url("**/ui/tasks/*", timeout=60_000)
        options = {o["name"]: o["value"] for o in jcall(api, "GET", f"/task/{tab.url.rsplit('/', 1)[1]}/info")["options"]}
        assert options["split"] == 125 and options["split-overlap"] == 150 and options["sm-cluster"]
    finally:
        context.close()
    assert not errors, errors


def test_a_folder_is_chosen_whole_or_dropped(chromium, simnode_factory, passel_factory, tmp_path):  # noqa: F811
    """A card's folder with two flights whose names repeat: every image is sent, the later of a
    repeated name as `name_.JPG`, as NodeODM names it; dropped files are taken as well."""
    box = passel_factory([simnode_factory().url])
    api = Client(box.url)
    make_images(tmp_path / "card" / "DCIM" / "100MEDIA", 4)
    make_images(tmp_path / "card" / "DCIM" / "101MEDIA", 3)
    (tmp_path / "card" / "DCIM" / "notes.txt").write_text("not an image")
    context, tab, errors = _open_new_job(chromium, box.url)
    try:
        tab.locator("#pick-folder").set_input_files(str(tmp_path / "card" / "DCIM"))
        tab.wait_for_selector("#chosen:has-text('7 images chosen (1 other files left out)')")
        tab.evaluate("""() => {
            const transfer = new DataTransfer();
            for (const name of ["DROP_1.JPG", "DROP_2.JPG"]) transfer.items.add(new File([new Uint8Array(64)], name));
            document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
        }""")
        tab.wait_for_selector("#chosen:has-text('2 images chosen')")
        tab.locator("#pick-folder").set_input_files(str(tmp_path / "card" / "DCIM"))
        tab.wait_for_function("!document.getElementById('start').disabled")
        tab.click("#start")
        tab.wait_for_url("**/ui/tasks/*")
        uuid = tab.url.rsplit("/", 1)[1]
        assert jcall(api, "GET", f"/task/{uuid}/info")["imagesCount"] == 7
        staged = {p.name for p in box.app[COORDINATOR_KEY].staging.files(uuid)}
        assert staged == {"IMG_0000.JPG", "IMG_0001.JPG", "IMG_0002.JPG", "IMG_0003.JPG",
                          "IMG_0000_.JPG", "IMG_0001_.JPG", "IMG_0002_.JPG"}, staged
    finally:
        context.close()
    assert not errors, errors
