"""A completed task's products on its page: the list to download, the preview, the map; and the
routes that serve them straight out of the task's all.zip on this box.

The zip comes from a `ZipSource` (by default `cluster/results.local_results`: the copy this box keeps,
or one fetched now from the box or node that has it). Zip reading blocks, so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import logging
import weakref
import zipfile
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path

from aiohttp import web
from PIL import Image

from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.cluster.results import local_results
from appliance.nodeodm.status import TaskStatus
from appliance.products import orthophoto
from appliance.products.archive import (
    BadArchive,
    ResultsArchive,
    open_archive,
    read_member,
    write_folder_zip,
)
from appliance.products.catalog import Kind, Product, catalogue, find
from appliance.products.preview import NoPreview
from appliance.products.tiles import LAYERS
from appliance.store.models import Task
from webui import format as fmt
from webui.contexts import ProductMap, ProductRow, ProductsSection
from webui.render import error_page

log = logging.getLogger("passel.ui")
ZipSource = Callable[[Task], Awaitable[Path | None]]
ZIP_SOURCE_KEY: web.AppKey[ZipSource] = web.AppKey("products_zip_source")  # tests point it at a zip of their own
CONTENT_TYPES = {".tif": "image/tiff", ".laz": "application/vnd.laszip", ".glb": "model/gltf-binary",
                 ".pdf": "application/pdf", ".zip": "application/zip", ".png": "image/png"}
TILE_SIDE = 256
NOT_GEOREFERENCED = "The orthophoto is not georeferenced, so it cannot be placed on a map."
NO_ORTHOPHOTO = "This task made no orthophoto, so there is no map."
FETCHING = "Its results are being copied to this box; reload the page in a minute to see them."
PAGE_PATIENCE_SECONDS = 3.0
_fetches: weakref.WeakKeyDictionary[web.Application, dict[str, asyncio.Task[Path | None]]] = \
    weakref.WeakKeyDictionary()
UNREACHABLE = ("Its results are not on this box, and no box or node that has them answers right now; "
               "try again in a minute.")


HIDDEN = ProductsSection(shown=False, note="", products=[], preview_url="", map=None, map_note="")


def _base(uuid: str) -> str:
    return f"/ui/tasks/{uuid}"


def section_for(uuid: str, archive: ResultsArchive) -> ProductsSection:
    """The section for a task whose all.zip is at hand (blocking: reads the orthophoto's tags)."""
    base = _base(uuid)
    rows = [ProductRow(p.name, p.what, fmt.size(p.size), f"{base}/products/{p.key}")
            for p in catalogue(archive.sizes(), archive.size)]
    if not orthophoto.has_orthophoto(archive):
        return ProductsSection(True, "", rows, "", None, NO_ORTHOPHOTO)
    footprint = orthophoto.footprint(archive)
    if footprint is None:
        return ProductsSection(True, "", rows, f"{base}/preview.png", None, NOT_GEOREFERENCED)
    tiles = orthophoto.tiles(archive, "orthophoto")
    corners = json.dumps([[round(lat, 8), round(lon, 8)] for lat, lon in footprint.corners])
    view = ProductMap(corners, f"{base}/tiles/orthophoto/{{z}}/{{x}}/{{y}}.png" if tiles else "",
                      tiles.min_zoom if tiles else 0, tiles.max_zoom if tiles else 0, f"{base}/preview.png")
    return ProductsSection(True, "", rows, f"{base}/preview.png", view, "")


def _source(app: web.Application) -> ZipSource:
    chosen = app.get(ZIP_SOURCE_KEY)
    if chosen is not None:
        return chosen
    coordinator = app[COORDINATOR_KEY]
    return lambda task: local_results(coordinator, task)


def _fetch(app: web.Application, task: Task) -> asyncio.Task[Path | None]:
    """The task's zip on this box: one look-up (perhaps a long copy) per task at a time, which goes on
    when a page stops waiting for it."""
    running = _fetches.setdefault(app, {})
    job = running.get(task.uuid)
    if job is None:
        job = asyncio.ensure_future(_source(app)(task))
        running[task.uuid] = job

        def finished(done: asyncio.Task[Path | None]) -> None:
            running.pop(task.uuid, None)
            if not done.cancelled() and done.exception() is not None:
                log.warning("Task %s: its results could not be fetched to this box: %s", task.uuid[:8],
                            done.exception())

        job.add_done_callback(finished)
    return job


async def _archive(app: web.Application, task: Task, patience: float | None = None) -> ResultsArchive | None:
    """The task's all.zip, open; None when it cannot be had. Raises TimeoutError after `patience`
    seconds (the fetch goes on)."""
    job = _fetch(app, task)
    try:
        path = await asyncio.wait_for(asyncio.shield(job), patience)
    except TimeoutError:
        raise
    except Exception:  # noqa: BLE001 - logged once by the fetch itself
        return None
    if path is None:
        return None
    try:
        return await asyncio.to_thread(open_archive, path)
    except (BadArchive, OSError) as exc:
        log.warning("Task %s: its results cannot be read: %s", task.uuid[:8], exc)
        return None


async def products_section(request: web.Request, task: Task) -> ProductsSection:
    """The task page's products section (call it from `task_page`). The page waits a moment for the
    results to reach this box, never for a whole copy of a large all.zip."""
    if task.status != TaskStatus.COMPLETED:
        return HIDDEN
    try:
        archive = await _archive(request.app, task, PAGE_PATIENCE_SECONDS)
    except TimeoutError:
        return ProductsSection(True, FETCHING, [], "", None, "")
    if archive is None:
        return ProductsSection(True, UNREACHABLE, [], "", None, "")
    return await asyncio.to_thread(section_for, task.uuid, archive)


# --- the routes -------------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def _task_archive(request: web.Request) -> tuple[Task, ResultsArchive]:
    uuid = request.match_info["uuid"].lower()
    task = request.app[COORDINATOR_KEY].book.visible(uuid)
    if task is None:
        raise _Refused(404, f"There is no task {uuid} in this passel; it may have been removed.")
    if task.status != TaskStatus.COMPLETED:
        raise _Refused(404, "This task has not completed, so it has no products yet.")
    archive = await _archive(request.app, task)
    if archive is None:
        raise _Refused(503, UNREACHABLE)
    return task, archive


def _json_refusal(refusal: _Refused) -> web.Response:
    return web.json_response({"error": refusal.message}, status=refusal.status)


def _etag(*parts: object) -> str:
    return '"' + hashlib.sha1("\x00".join(map(str, parts)).encode()).hexdigest()[:20] + '"'


def _not_modified(request: web.Request, etag: str) -> bool:
    return etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]


def _content_type(filename: str) -> str:
    return CONTENT_TYPES.get(Path(filename).suffix.lower(), "application/octet-stream")


async def _pump(response: web.StreamResponse, chunks: Generator[bytes, None, None]) -> None:
    """Send chunks made in a thread, one at a time, so a slow client holds back the reading."""
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            await response.write(chunk)
    finally:
        await asyncio.to_thread(chunks.close)


async def _send_file(request: web.Request, archive: ResultsArchive, product: Product) -> web.StreamResponse:
    info = archive.members[product.members[0]]
    size, etag = info.file_size, _etag(archive.identity, info.filename, info.CRC, info.file_size)
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "no-cache",
               "Content-Type": _content_type(product.filename),
               "Content-Disposition": f'attachment; filename="{product.filename}"'}
    if _not_modified(request, etag):
        return web.Response(status=304, headers={"ETag": etag})
    start, stop, status = 0, size, 200
    if "Range" in request.headers and request.headers.get("If-Range", etag) == etag:
        try:
            wanted = request.http_range
            start, stop = wanted.indices(size)[:2]
        except ValueError:
            start, stop = size, size
        if start >= stop:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}", "ETag": etag})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = stop - start
    await response.prepare(request)
    if request.method != "HEAD":
        await _pump(response, read_member(archive, info.filename, start, stop))
    await response.write_eof()
    return response


async def _send_folder(request: web.Request, archive: ResultsArchive, product: Product) -> web.StreamResponse:
    """A folder as a zip made while it is sent: no size known ahead, so no ranges."""
    infos = [archive.members[n] for n in product.members]
    etag = _etag(archive.identity, *[(i.filename, i.CRC) for i in infos])
    if _not_modified(request, etag):
        return web.Response(status=304, headers={"ETag": etag})
    response = web.StreamResponse(headers={
        "ETag": etag, "Accept-Ranges": "none", "Cache-Control": "no-cache", "Content-Type": "application/zip",
        "Content-Disposition": f'attachment; filename="{product.filename}"'})
    response.enable_chunked_encoding()
    await response.prepare(request)
    if request.method != "HEAD":
        loop = asyncio.get_running_loop()
        prefix = product.members[0].split("/", 1)[0] + "/"

        def send(block: bytes) -> None:
            asyncio.run_coroutine_threadsafe(response.write(block), loop).result()

        await asyncio.to_thread(write_folder_zip, archive, product.members, prefix, send)
    await response.write_eof()
    return response


async def product_download(request: web.Request) -> web.StreamResponse:
    """GET /ui/tasks/{uuid}/products/{product}: one product, read from the zip as it is sent."""
    try:
        task, archive = await _task_archive(request)
    except _Refused as refusal:
        return error_page(request, refusal.status, "No such product", refusal.message, "/ui/tasks")
    product = find(await asyncio.to_thread(lambda: catalogue(archive.sizes(), archive.size)),
                   request.match_info["product"])
    if product is None:
        return error_page(request, 404, "No such product",
                          f"Task {task.name or task.uuid[:8]} has no product called "
                          f"“{request.match_info['product']}”.", _base(task.uuid))
    if product.kind is Kind.ARCHIVE:
        return web.FileResponse(archive.path, headers={"Content-Type": "application/zip",
                                                       "Content-Disposition": 'attachment; filename="all.zip"'})
    send = _send_folder if product.kind is Kind.FOLDER else _send_file
    try:
        return await send(request, archive, product)
    except ConnectionError:  # the browser went away (a canceled download): nobody to answer
        log.debug("Task %s: the download of %s was canceled", task.uuid[:8], product.name)
    except (BadArchive, zipfile.BadZipFile, OSError) as exc:
        log.warning("Task %s: sending %s stopped: %s", task.uuid[:8], product.name, exc)
    # the reply was under way: cut the connection, so the browser sees a broken download, not a short file
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)


@functools.cache
def _blank_tile() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (TILE_SIDE, TILE_SIDE)).save(out, format="PNG")
    return out.getvalue()


async def tile(request: web.Request) -> web.StreamResponse:
    """GET /ui/tasks/{uuid}/tiles/{layer}/{z}/{x}/{y}.png, numbered as web maps number tiles (XYZ)."""
    try:
        _, archive = await _task_archive(request)
    except _Refused as refusal:
        return _json_refusal(refusal)
    layer = request.match_info["layer"]
    z, x, y = (int(request.match_info[k]) for k in ("z", "x", "y"))
    tiles = await asyncio.to_thread(orthophoto.tiles, archive, layer) if layer in LAYERS else None
    name = tiles.member(z, x, y) if tiles else None
    if name is None:
        return web.json_response({"error": f"No {layer} tile {z}/{x}/{y} in this task's results."}, status=404)
    if name not in archive.members:  # gdal2tiles leaves out tiles with nothing on them
        return web.Response(body=_blank_tile(), content_type="image/png", headers={"Cache-Control": "no-cache"})
    etag = _etag(archive.identity, name, archive.members[name].CRC)
    if _not_modified(request, etag):
        return web.Response(status=304, headers={"ETag": etag})
    body = await asyncio.to_thread(lambda: b"".join(read_member(archive, name)))
    return web.Response(body=body, content_type="image/png", headers={"ETag": etag, "Cache-Control": "no-cache"})


async def preview(request: web.Request) -> web.StreamResponse:
    """GET /ui/tasks/{uuid}/preview.png: the orthophoto, small."""
    try:
        _, archive = await _task_archive(request)
    except _Refused as refusal:
        return _json_refusal(refusal)
    etag = _etag(archive.identity, "preview")
    if _not_modified(request, etag):
        return web.Response(status=304, headers={"ETag": etag})
    try:
        picture = await asyncio.to_thread(orthophoto.preview, archive)
    except NoPreview as exc:
        return web.json_response({"error": f"No preview: {exc}."}, status=404)
    return web.Response(body=picture, content_type="image/png", headers={"ETag": etag, "Cache-Control": "no-cache"})
