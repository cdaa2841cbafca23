"""A completed task's products: the catalogue (pure, table-tested), each product downloaded from the
zip on its own (whole, in ranges, as a folder zip), the map tiles, the preview, the footprint, and the
page section in Chromium with every request kept on 127.0.0.1.

The zips are real: NodeODM's own test-mode archive (`processing_results/all.zip`), one made by a real
NodeODM 2.2.4 running a task to completion, the same members re-packed stored (as the simulated node
packs them), and the simulated node's own. The end-to-end test goes through `cluster/results.py`.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import struct
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from PIL import Image, TiffImagePlugin, TiffTags

from appliance import __version__
from appliance.agent import create_app
from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.config import load_config
from appliance.products import preview as preview_module
from appliance.products.archive import open_archive, read_member
from appliance.products.catalog import Kind, catalogue
from appliance.products.footprint import _epsg
from appliance.products.orthophoto import footprint, preview
from appliance.products.preview import NoPreview
from appliance.products.tiles import tile_set
from tests.conftest import require_realnode
from tests.nodeodm_helpers import JPEG, Api, committed, jcall, wait_for
from tests.realnode import KIT, RealNode
from tests.support import ServerThread
from tests.test_browser import SCREENSHOTS, chromium  # noqa: F401 - the module's Chromium, shared
from webui import products_view
from webui.contexts import Chrome
from webui.products_view import (
    NOT_GEOREFERENCED,
    ZIP_SOURCE_KEY,
    products_section,
    section_for,
)
from webui.render import environment

NODEODM_ZIP = KIT / "NodeODM" / "tests" / "processing_results" / "all.zip"
ORTHO = "odm_orthophoto/odm_orthophoto.tif"
# where NodeODM's test orthophoto lies: a field near Duluth, Minnesota (its tilemapresource.xml agrees)
FIELD_LAT, FIELD_LON = 46.8426, -91.9938
EXTENDED_TIMESTAMP = struct.pack("<HHBI", 0x5455, 5, 1, 1_700_000_000)  # a zip "extra field"


# --- the catalogue, from member lists -----------------------------------------------------------

REAL_MEMBERS = {  # a real NodeODM 2.2.4 test-mode all.zip (sizes as it serves them)
    "odm_orthophoto/odm_orthophoto.tif": 180356, "odm_orthophoto/odm_orthophoto.png": 0,
    "odm_dem/dsm.tif": 180298, "odm_dem/dtm.tif": 180298, "images.json": 417,
    "odm_georeferencing/odm_georeferenced_model.laz": 594, "odm_georeferencing/odm_georeferenced_model.las": 0,
    "odm_texturing/odm_textured_model_geo.glb": 5, "odm_texturing/odm_textured_model_geo.obj": 0,
    "odm_texturing/texture_0.jpg": 0, "odm_report/report.pdf": 0, "orthophoto_tiles/18/": 0,
    "orthophoto_tiles/tilemapresource.xml": 775, "orthophoto_tiles/18/64083/169773.png": 46905,
    "dsm_tiles/16/16020/42443.png": 4892,
}
SIMNODE_MEMBERS = {  # what the simulated node serves for a default task (appliance/simnode/assets.py)
    "odm_orthophoto/odm_orthophoto.tif": 2048, "odm_dem/dsm.tif": 2048,
    "odm_georeferencing/odm_georeferenced_model.laz": 2048, "odm_georeferencing/coords.txt": 30,
    "odm_texturing/odm_textured_model_geo.obj": 120, "odm_texturing/odm_textured_model_geo.mtl": 80,
    "odm_texturing/odm_textured_model_geo.glb": 2048,
    "odm_texturing/odm_textured_model_geo_material0000_map_Kd.png": 2048, "odm_report/report.pdf": 2048,
    "odm_report/shots.geojson": 300,
}


@pytest.mark.parametrize(("members", "expected"), [
    pytest.param(REAL_MEMBERS, [("orthophoto", 180356), ("dsm", 180298), ("dtm", 180298), ("point-cloud", 594),
                                ("model", 5), ("orthophoto-tiles", 47680), ("dsm-tiles", 4892), ("all", 1000)],
                 id="real NodeODM: empty placeholders are no products"),
    pytest.param(SIMNODE_MEMBERS, [("orthophoto", 2048), ("dsm", 2048), ("point-cloud", 2048), ("model", 2048),
                                   ("report", 2048), ("model-obj", 120 + 80 + 2048), ("all", 1000)],
                 id="simulated node: the OBJ set is a folder product"),
    pytest.param({"notice.txt": 13}, [("all", 1000)], id="NodeODM's empty archive: only the whole zip"),
    pytest.param({}, [("all", 1000)], id="nothing at all"),
    pytest.param({"odm_dem/dtm.tif": 10, "dtm_tiles/5/1/2.png": 7, "dtm_tiles/5/1/": 0},
                 [("dtm", 10), ("dtm-tiles", 7), ("all", 1000)], id="folders count files, not directories"),
])
def test_catalogue(members: dict[str, int], expected: list[tuple[str, int]]) -> None:
    assert [(p.key, p.size) for p in catalogue(members, 1000)] == expected


def test_catalogue_names_and_kinds() -> None:
    products = {p.key: p for p in catalogue(SIMNODE_MEMBERS, 5)}
    assert products["orthophoto"].name == "Orthophoto" and products["orthophoto"].filename == "odm_orthophoto.tif"
    assert products["model-obj"].kind is Kind.FOLDER and products["model-obj"].filename == "odm_texturing.zip"
    assert "odm_report/shots.geojson" not in products["model-obj"].members
    assert products["all"].kind is Kind.ARCHIVE and products["all"].filename == "all.zip"


@pytest.mark.parametrize(("resource", "z", "x", "y", "member"), [
    (b'<TileMap version="1.0.0" tilemapservice="http://tms.osgeo.org/1.0.0"/>', 18, 64083, 92370,
     "orthophoto_tiles/18/64083/169773.png"),
    (None, 18, 64083, 92370, "orthophoto_tiles/18/64083/169773.png"),  # ODM's default: TMS
    (b'<TileMap version="1.0.0" tilemapservice="http://tms.osgeo.org/1.0.0"/>', 17, 0, 0, None),  # no such zoom
    (b'<TileMap version="1.0.0" tilemapservice="http://tms.osgeo.org/1.0.0"/>', 18, 2 ** 18, 0, None),  # off the grid
])
def test_tile_rows_are_flipped_from_tms(resource: bytes | None, z: int, x: int, y: int, member: str | None) -> None:
    tiles = tile_set("orthophoto", ["orthophoto_tiles/18/64083/169773.png"], resource)
    assert tiles is not None and (tiles.min_zoom, tiles.max_zoom) == (18, 18)
    assert tiles.member(z, x, y) == member


# --- the zips ------------------------------------------------------------------------------------

def _run_on_real_node(workdir: Path) -> bytes:
    """all.zip of a task run to completion on a real NodeODM (test mode)."""
    node = RealNode(workdir, "--test_seconds", "1").start()
    try:
        files = [("images", (f"IMG_{i}.JPG", JPEG, "image/jpeg")) for i in range(3)]
        uuid = requests.post(node.url + "/task/new", files=files, data={"name": "field"}, timeout=30).json()["uuid"]
        wait_for(lambda: requests.get(f"{node.url}/task/{uuid}/info", timeout=5).json()["status"]["code"] == 40,
                 timeout=60, what="the real node to complete the task")
        return requests.get(f"{node.url}/task/{uuid}/download/all.zip", timeout=30).content
    finally:
        node.stop()


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The real node's all.zip (deflated, as NodeODM serves it) and the same members stored."""
    require_realnode()
    folder = tmp_path_factory.mktemp("zips")
    real = folder / "real" / "all.zip"
    real.parent.mkdir()
    real.write_bytes(_run_on_real_node(folder / "nodeodm"))
    stored = folder / "stored" / "all.zip"
    stored.parent.mkdir()
    with zipfile.ZipFile(real) as source, zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as out:
        for info in source.infolist():
            info.extra = EXTENDED_TIMESTAMP  # as Info-ZIP writes it: the data starts after this field
            out.writestr(info, source.read(info), compress_type=zipfile.ZIP_STORED)
    return SimpleNamespace(real=real, stored=stored)


def test_the_real_orthophoto_lies_where_the_field_is(zips: SimpleNamespace) -> None:
    place = footprint(open_archive(zips.real))
    assert place is not None and place.crs == "EPSG:32615"
    (south, west), (north, east) = place.bounds
    assert south < FIELD_LAT < north and west < FIELD_LON < east
    assert 50 < (north - south) * 111_000 < 200 and 50 < (east - west) * 76_000 < 200  # about 106 m square
    top_left, top_right, _, bottom_left = place.corners
    assert top_left[0] > bottom_left[0] and top_right[1] > top_left[1]  # north up, east right


def test_the_preview_is_a_png_of_the_orthophoto(zips: SimpleNamespace) -> None:
    for path in (zips.real, zips.stored):
        picture = Image.open(io.BytesIO(preview(open_archive(path))))
        assert picture.format == "PNG" and picture.size == (212, 212) and picture.mode == "RGBA"
        assert picture.getextrema()[3][1] == 255  # some of it is opaque: the image, not its transparent frame


def test_members_read_in_ranges_match_zipfile(zips: SimpleNamespace) -> None:
    for path in (zips.real, zips.stored, NODEODM_ZIP):
        archive = open_archive(path)
        with zipfile.ZipFile(path) as reference:
            for name in archive.members:
                whole = reference.read(name)
                assert b"".join(read_member(archive, name)) == whole, name
                middle = len(whole) // 3
                assert b"".join(read_member(archive, name, middle, middle + 700)) == whole[middle:middle + 700]


# --- over HTTP -----------------------------------------------------------------------------------

@pytest.fixture
def passel(simnode_factory, tmp_path: Path) -> Iterator[SimpleNamespace]:
    """A passel of one box and one simulated node, whose tasks' zips are the ones a test names."""
    node = simnode_factory()
    config = load_config(environ={}, flags={
        "host": "127.0.0.1", "port": 3000, "state_dir": str(tmp_path / "box"), "discovery": False,
        "poll_seconds": 0.3, "task_poll_seconds": 0.2, "min_free_disk_mb": 0, "public_url": "http://127.0.0.1:3000",
        "node": [node.url]})
    chosen: dict[str, Path] = {}
    asked: list[str] = []
    slow: dict[str, float] = {}  # seconds a task's zip first takes to arrive, as a copy of a large all.zip would

    def build():
        app = create_app(config)

        async def source(task):
            asked.append(task.uuid)
            await asyncio.sleep(slow.pop(task.uuid, 0))  # once: then the copy is here
            return chosen.get(task.uuid)

        app[ZIP_SOURCE_KEY] = source
        return app

    server = ServerThread(build).start()
    api = Api(server)
    wait_for(lambda: all(n["online"] for n in jcall(api, "GET", "/-/nodes")), what="the node online")

    def completed_task(path: Path | None) -> str:
        uuid = committed(api, images=2)
        wait_for(lambda: jcall(api, "GET", f"/task/{uuid}/info")["status"]["code"] == 40, what="completion")
        if path is not None:
            chosen[uuid] = path
        return uuid

    try:
        yield SimpleNamespace(url=server.url, api=api, server=server, completed_task=completed_task, asked=asked,
                              slow=slow, chosen=chosen)
    finally:
        server.stop()


def test_each_product_downloads_whole_and_in_ranges(passel, zips) -> None:
    for path in (zips.real, zips.stored):
        uuid = passel.completed_task(path)
        base = f"{passel.url}/ui/tasks/{uuid}/products"
        with zipfile.ZipFile(path) as reference:
            ortho = reference.read(ORTHO)
            whole = requests.get(f"{base}/orthophoto", timeout=10)
            assert whole.status_code == 200 and whole.content == ortho
            assert whole.headers["Content-Type"] == "image/tiff"
            assert whole.headers["Content-Length"] == str(len(ortho))
            assert whole.headers["Content-Disposition"] == 'attachment; filename="odm_orthophoto.tif"'
            assert whole.headers["Accept-Ranges"] == "bytes"
            etag = whole.headers["ETag"]
            head = requests.head(f"{base}/orthophoto", timeout=10)
            assert head.status_code == 200 and head.headers["Content-Length"] == str(len(ortho)) and not head.content
            for header, wanted in (("bytes=100000-100999", ortho[100000:101000]), ("bytes=-500", ortho[-500:]),
                                   ("bytes=180000-", ortho[180000:]), ("bytes=0-0", ortho[:1])):
                part = requests.get(f"{base}/orthophoto", headers={"Range": header}, timeout=10)
                assert part.status_code == 206 and part.content == wanted, header
                assert part.headers["Content-Range"].endswith(f"/{len(ortho)}")
            assert requests.get(f"{base}/orthophoto", headers={"Range": "bytes=999999-"}, timeout=10).status_code == 416
            assert requests.get(f"{base}/orthophoto", headers={"If-None-Match": etag}, timeout=10).status_code == 304
            stale = requests.get(f"{base}/orthophoto", headers={"Range": "bytes=0-9", "If-Range": '"old"'}, timeout=10)
            assert stale.status_code == 200 and stale.content == ortho
            laz = requests.get(f"{base}/point-cloud", timeout=10)
            assert laz.content == reference.read("odm_georeferencing/odm_georeferenced_model.laz")
            assert laz.headers["Content-Type"] == "application/vnd.laszip"
            glb = requests.get(f"{base}/model", timeout=10)
            assert glb.content == reference.read("odm_texturing/odm_textured_model_geo.glb")
            assert glb.headers["Content-Type"] == "model/gltf-binary"
            tiles = requests.get(f"{base}/orthophoto-tiles", timeout=10)
            assert tiles.status_code == 200 and tiles.headers["Content-Type"] == "application/zip"
            with zipfile.ZipFile(io.BytesIO(tiles.content)) as made:
                assert made.testzip() is None
                expected = {n[len("orthophoto_tiles/"):]: reference.read(n) for n in reference.namelist()
                            if n.startswith("orthophoto_tiles/") and not n.endswith("/")
                            and reference.getinfo(n).file_size}
                assert {n: made.read(n) for n in made.namelist()} == expected
        everything = requests.get(f"{base}/all", timeout=10)
        assert everything.content == path.read_bytes()
        assert everything.headers["Content-Disposition"] == 'attachment; filename="all.zip"'


def test_tiles_and_preview_over_http(passel, zips) -> None:
    uuid = passel.completed_task(zips.real)
    base = f"{passel.url}/ui/tasks/{uuid}"
    with zipfile.ZipFile(zips.real) as reference:
        tile = requests.get(f"{base}/tiles/orthophoto/18/64083/{2 ** 18 - 1 - 169773}.png", timeout=10)
        assert tile.status_code == 200 and tile.content == reference.read("orthophoto_tiles/18/64083/169773.png")
        assert tile.headers["Content-Type"] == "image/png"
    # the XYZ tile under the field's middle, as any web map computes it, is there
    zoom, n = 18, 2 ** 18
    x = int((FIELD_LON + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(FIELD_LAT))) / math.pi) / 2 * n)
    under = requests.get(f"{base}/tiles/orthophoto/{zoom}/{x}/{y}.png", timeout=10)
    assert under.status_code == 200 and Image.open(io.BytesIO(under.content)).getextrema()[3][1] == 255
    blank = requests.get(f"{base}/tiles/orthophoto/18/64000/{y}.png", timeout=10)  # in the set, nothing there
    assert blank.status_code == 200 and Image.open(io.BytesIO(blank.content)).getextrema()[3] == (0, 0)
    for wrong in ("tiles/orthophoto/3/0/0.png", "tiles/roads/18/64083/92370.png"):
        reply = requests.get(f"{base}/{wrong}", timeout=10)
        assert reply.status_code == 404 and "error" in reply.json(), wrong
    with zipfile.ZipFile(zips.real) as reference:  # a map asks for many tiles at once
        names = [n for n in reference.namelist() if n.startswith("orthophoto_tiles/") and n.endswith(".png")]
        expected = {n: reference.read(n) for n in names}

    def fetch(name: str) -> bytes:
        z, x, row = (int(p) for p in name.removesuffix(".png").split("/")[1:])
        return requests.get(f"{base}/tiles/orthophoto/{z}/{x}/{2 ** z - 1 - row}.png", timeout=10).content

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(fetch, names * 3)) == [expected[n] for n in names * 3]
    picture = requests.get(f"{base}/preview.png", timeout=10)
    assert picture.status_code == 200 and picture.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(picture.content)).format == "PNG"


def test_refusals_are_pages_or_nodeodm_errors(passel, zips) -> None:
    uuid = passel.completed_task(zips.real)
    html = {"Accept": "text/html"}
    unknown = requests.get(f"{passel.url}/ui/tasks/{'0' * 8}-0000-0000-0000-{'0' * 12}/products/orthophoto",
                           headers=html, timeout=10)
    assert unknown.status_code == 404 and "no task" in unknown.text and "Traceback" not in unknown.text
    nothing = requests.get(f"{passel.url}/ui/tasks/{uuid}/products/report", headers=html, timeout=10)
    assert nothing.status_code == 404 and "has no product called" in nothing.text  # its report.pdf is empty
    unreachable = passel.completed_task(None)  # completed, but its zip is nowhere to be had
    reply = requests.get(f"{passel.url}/ui/tasks/{unreachable}/preview.png", timeout=10)
    assert reply.status_code == 503 and "not on this box" in reply.json()["error"]


def test_the_page_does_not_wait_for_a_long_copy(passel, zips, monkeypatch) -> None:
    monkeypatch.setattr(products_view, "PAGE_PATIENCE_SECONDS", 0.2)
    uuid = passel.completed_task(zips.real)
    passel.slow[uuid] = 1.0
    task = passel.server.app[COORDINATOR_KEY].book.visible(uuid)
    asked = SimpleNamespace(app=passel.server.app)  # what products_section reads of the request
    first = passel.server.call(products_section(asked, task))
    assert first.note == products_view.FETCHING and first.products == []
    again = passel.server.call(products_section(asked, task))  # still copying: the same copy, not a second
    assert again.note == products_view.FETCHING and passel.asked.count(uuid) == 1
    time.sleep(1.0)
    done = passel.server.call(products_section(asked, task))
    assert done.note == "" and done.products[0].name == "Orthophoto" and done.map is not None


def test_the_empty_nodeodm_archive_and_the_simulated_nodes_fake_orthophoto(passel, simnode_factory,
                                                                            tmp_path: Path) -> None:
    empty = section_for("u", open_archive(NODEODM_ZIP))
    assert [p.name for p in empty.products] == ["Everything (all.zip)"] and empty.map is None
    assert empty.map_note == "This task made no orthophoto, so there is no map."
    uuid = passel.completed_task(None)
    simulated = tmp_path / "simulated.zip"
    simulated.write_bytes(requests.get(f"{passel.url}/task/{uuid}/download/all.zip", timeout=10).content)
    section = section_for(uuid, open_archive(simulated))
    assert section.map is None and section.map_note == NOT_GEOREFERENCED  # its GeoTIFF is only magic bytes
    assert {"Orthophoto", "Textured 3D model (OBJ set)"} <= {p.name for p in section.products}
    with pytest.raises(NoPreview):
        preview(open_archive(simulated))
    passel.chosen[uuid] = simulated
    obj_set = requests.get(f"{passel.url}/ui/tasks/{uuid}/products/model-obj", timeout=10)
    assert obj_set.headers["Content-Disposition"] == 'attachment; filename="odm_texturing.zip"'
    with zipfile.ZipFile(io.BytesIO(obj_set.content)) as made, zipfile.ZipFile(simulated) as reference:
        assert sorted(made.namelist()) == ["odm_textured_model_geo.mtl", "odm_textured_model_geo.obj",
                                           "odm_textured_model_geo_material0000_map_Kd.png"]
        assert made.read("odm_textured_model_geo.obj") == reference.read("odm_texturing/odm_textured_model_geo.obj")
    no_map = requests.get(f"{passel.url}/ui/tasks/{uuid}/preview.png", timeout=10)
    assert no_map.status_code == 404 and no_map.json()["error"].startswith("No preview")


def test_through_the_results_copy_of_a_task_on_a_real_node(realnode_factory, passel_factory) -> None:
    """No zip handed in: the products come from cluster/results.py, which fetches all.zip from the node."""
    node = realnode_factory("--test_seconds", "1")
    api = Api(passel_factory([node.url]))
    wait_for(lambda: all(n["online"] for n in jcall(api, "GET", "/-/nodes")), what="the real node online")
    uuid = committed(api, images=3)
    wait_for(lambda: jcall(api, "GET", f"/task/{uuid}/info")["status"]["code"] == 40, timeout=60,
             what="completion on the real node")
    ortho = requests.get(f"{api.url}/ui/tasks/{uuid}/products/orthophoto", timeout=30)
    assert ortho.status_code == 200 and ortho.content[:4] == b"II*\x00" and len(ortho.content) == 180356
    part = requests.get(f"{api.url}/ui/tasks/{uuid}/products/orthophoto", headers={"Range": "bytes=10-19"}, timeout=30)
    assert part.status_code == 206 and part.content == ortho.content[10:20]


# --- the page section, in Chromium ---------------------------------------------------------------

SHOWCASE = """{% extends "_base.html" %}
{% block head %}
<link rel="stylesheet" href="/static/vendor/leaflet/leaflet.css">
<link rel="stylesheet" href="/static/products.css">
<script src="/static/vendor/leaflet/leaflet.js" defer></script>
<script src="/static/products.js" defer></script>
{% endblock %}
{% block main %}<h1>Products check</h1>{% include "_products.html" %}{% endblock %}"""


def test_the_section_in_a_browser_stays_in_the_passel(passel, zips, chromium) -> None:  # noqa: F811
    """The partial drawn from the real zip: tiles and preview load, from this box only, without errors."""
    uuid = passel.completed_task(zips.real)
    section = section_for(uuid, open_archive(zips.real))
    chrome = Chrome(version=__version__, box_name="test", page="tasks", title="Products", csrf="x",
                    password_set=False, signed_in=False, live=False)
    html = environment.from_string(SHOWCASE).render(chrome=chrome, products=section)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    requested: list[str] = []
    errors: list[str] = []
    tab.on("request", lambda r: requested.append(r.url))
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    page_url = f"{passel.url}/ui/tasks/{uuid}/products-check"
    tab.route(page_url, lambda route: route.fulfill(status=200, content_type="text/html", body=html))
    try:
        tab.goto(page_url)
        tab.wait_for_selector("#products-map[data-ready=true]")
        tab.wait_for_function("document.getElementById('products-preview').complete")
        assert tab.evaluate("document.getElementById('products-preview').naturalWidth") == 212
        tab.wait_for_function("""() => { const tiles = document.querySelectorAll('#products-map img.leaflet-tile');
            return tiles.length > 0 && [...tiles].every(t => t.complete && t.naturalWidth === 256); }""")
        assert tab.evaluate("""() => [...document.querySelectorAll('#products-map img.leaflet-tile')].some(img => {
            const canvas = document.createElement('canvas');
            canvas.width = canvas.height = 256;
            const pen = canvas.getContext('2d');
            pen.drawImage(img, 0, 0);
            return pen.getImageData(0, 0, 256, 256).data.some((v, i) => i % 4 === 3 && v > 0); })"""), \
            "every tile on the map is blank: the rows are counted from the wrong end"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(SCREENSHOTS / "products.png"), full_page=True)
        tile_urls = [u for u in requested if "/tiles/orthophoto/" in u]
        assert tile_urls and tab.locator("#products-map path.leaflet-interactive, #products-map path").count() == 1
        assert tab.locator(".products-table tbody tr").count() == len(section.products)
        time.sleep(0.3)  # late requests and console messages
        outside = [u for u in requested if not u.startswith(passel.url + "/")]
        assert not outside and not errors, (outside, errors)
        assert len(json.loads(tab.get_attribute("#products-map", "data-footprint"))) == 4  # the corners
    finally:
        context.close()


# --- GeoTIFFs made here: other coordinate systems, overviews, none at all -----------------------

def _geotiff(path: Path, sizes: list[int], geo: bool = True) -> Path:
    """A GeoTIFF in plain latitude and longitude (EPSG:4326), with reduced copies of the given sizes."""
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    if geo:
        tags[33550] = (0.0001, 0.0001, 0.0)  # ModelPixelScale: degrees per pixel
        tags.tagtype[33550] = TiffTags.DOUBLE
        tags[33922] = (0.0, 0.0, 0.0, FIELD_LON, FIELD_LAT, 0.0)  # ModelTiepoint: the top left corner
        tags.tagtype[33922] = TiffTags.DOUBLE
        tags[34735] = (1, 1, 0, 3, 1024, 0, 1, 2, 1025, 0, 1, 1, 2048, 0, 1, 4326)  # geographic, EPSG:4326
        tags.tagtype[34735] = TiffTags.SHORT
    shades = [(200, 40, 40, 255), (40, 160, 60, 255), (40, 60, 200, 255)]  # one colour per size, to tell them apart
    frames = [Image.new("RGBA", (side, side), shades[i % 3]) for i, side in enumerate(sizes)]
    frames[0].save(path, format="TIFF", compression="tiff_deflate", tiffinfo=tags, save_all=True,
                   append_images=frames[1:])
    return path


def _zip_with(folder: Path, members: dict[str, Path]) -> Path:
    path = folder / "all.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, source in members.items():
            archive.write(source, name)
    return path


@pytest.mark.parametrize(("meta", "epsg"), [
    ({"GTModelTypeGeoKey": 1, "ProjectedCSTypeGeoKey": 32615}, 32615),
    ({"GTModelTypeGeoKey": 2, "GeographicTypeGeoKey": 4326}, 4326),
    ({"GTModelTypeGeoKey": 1, "ProjectedCSTypeGeoKey": 32767}, None),  # spelled out in parameters
    ({"GTModelTypeGeoKey": 2, "ProjectedCSTypeGeoKey": 32615}, None),  # the key of the other model
    ({"ProjectedCSTypeGeoKey": 32615}, None),
    ({}, None),
])
def test_the_coordinate_system_is_read_from_the_geokeys(meta: dict[str, int], epsg: int | None) -> None:
    assert _epsg(meta) == epsg


def test_a_geographic_orthophoto_with_overviews(tmp_path: Path) -> None:
    tif = _geotiff(tmp_path / "ortho.tif", [3000, 1500, 750])
    archive = open_archive(_zip_with(tmp_path, {ORTHO: tif}))
    place = footprint(archive)
    assert place is not None and place.crs == "EPSG:4326"
    assert place.corners[0] == pytest.approx((FIELD_LAT, FIELD_LON))
    assert place.corners[2] == pytest.approx((FIELD_LAT - 0.3, FIELD_LON + 0.3))
    picture = Image.open(io.BytesIO(preview(archive)))
    assert picture.size == (1024, 1024)
    assert picture.getpixel((500, 500)) == (40, 160, 60, 255)  # drawn from the 1500-pixel overview


def test_a_large_orthophoto_without_overviews_gets_no_preview(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(preview_module, "MAX_DECODE_PIXELS", 1000 * 1000)
    archive = open_archive(_zip_with(tmp_path, {ORTHO: _geotiff(tmp_path / "ortho.tif", [1200])}))
    with pytest.raises(NoPreview, match="too large to preview"):
        preview(archive)


def test_an_orthophoto_without_geotags_has_a_preview_and_no_map(tmp_path: Path) -> None:
    archive = open_archive(_zip_with(tmp_path, {ORTHO: _geotiff(tmp_path / "ortho.tif", [300], geo=False)}))
    section = section_for("u", archive)
    assert section.map is None and section.map_note == NOT_GEOREFERENCED
    assert section.preview_url == "/ui/tasks/u/preview.png"
    assert Image.open(io.BytesIO(preview(archive))).size == (300, 300)
