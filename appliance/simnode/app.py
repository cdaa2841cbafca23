"""The simulated node's HTTP API: NodeODM's routes plus `/-/sim/faults` to change faults live."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import StreamReader, hdrs, web

from appliance.nodeodm import replies
from appliance.nodeodm.replies import error_middleware, unknown_route_middleware
from appliance.nodeodm.auth import setup_auth_routes, token_middleware
from appliance.nodeodm.options import OptionsError, validate_options
from appliance.nodeodm.routes import add_nodeodm_routes
from appliance.nodeodm.uploads import UploadError, read_action_fields, receive_form
from appliance.simnode.engine import Engine, TaskActionError
from appliance.simnode.intake import IntakeError
from appliance.simnode.settings import SimnodeSettings
from appliance.simnode.tasks import PendingUpload, SimTask

log = logging.getLogger("passel.simnode")

ENGINE = web.AppKey("simnode_engine", Engine)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JS_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
LINE_LIMIT = 2 ** 31  # beyond any output's length, so "1e400" slices like JavaScript's Infinity


def _engine(request: web.Request) -> Engine:
    return request.app[ENGINE]


def _line_number(raw: str | None) -> int:
    """NodeODM slices output with the number as JavaScript reads it: negative counts from the end,
    a fraction is cut (-2.5 is -2), junk is 0."""
    text = (raw or "").strip()
    if not JS_DECIMAL.fullmatch(text):
        return 0
    return int(max(-LINE_LIMIT, min(LINE_LIMIT, float(text))))


def _set_uuid(request: web.Request) -> str | None:
    return request.headers.get("set-uuid") or None


async def _fill_pending(request: web.Request, engine: Engine, pending: PendingUpload, with_files: bool) -> str | None:
    """Read an init or one-shot form into `pending`; return an error message, or None when fine."""
    try:
        form = await receive_form(request, pending.directory if with_files else None)
        if with_files and not form.files:
            given_zipurl = bool(form.fields.get("zipurl"))
            raise IntakeError("The simulated node cannot download zipurl" if given_zipurl else replies.NEED_FILE_OR_ZIP)
        pending.options = validate_options(form.fields.get("options"), engine.catalog)
    except (UploadError, OptionsError, IntakeError) as exc:
        engine.discard_upload(pending)
        return str(exc)
    except BaseException:
        engine.discard_upload(pending)
        raise
    pending.fields = form.fields
    return None


async def task_new_init(request: web.Request) -> web.Response:
    engine = _engine(request)
    try:
        pending = engine.reserve_upload(_set_uuid(request))
    except IntakeError as exc:
        return replies.error(str(exc))
    problem = await _fill_pending(request, engine, pending, with_files=False)
    return replies.error(problem) if problem else replies.ok({"uuid": pending.uuid})


async def task_new_upload(request: web.Request) -> web.Response:
    engine = _engine(request)
    pending = engine.pending.get(request.match_info["uuid"])
    if pending is None:
        return replies.error(replies.TASK_NOT_FOUND_UPLOAD)
    if engine.drop_this_upload():
        log.info("%s: dropping an upload to task %s (fault injection)", engine.settings.name, pending.uuid[:8])
        return web.Response(status=500, text="Internal Server Error")
    if engine.settings.fragile and await _nul_in_file_name(request):
        log.critical("%s: a file name with a NUL byte; crashing the way NodeODM 2.2.x does", engine.settings.name)
        os._exit(70)
    try:
        form = await receive_form(request, pending.directory)
    except UploadError as exc:
        return replies.error(str(exc), **({"noRetry": True} if exc.no_retry else {}))
    if not form.files:
        return replies.error(replies.NEED_ONE_FILE, noRetry=True)
    return replies.success()


async def _nul_in_file_name(request: web.Request) -> bool:
    """Look at the raw part headers; the fragile mode reads the body into memory first (it is a
    test mode), then hands it back to the normal parser."""
    raw = await request.read()
    if any(b"\x00" in line for line in raw.split(b"\r\n") if line.lower().startswith(b"content-disposition")):
        return True
    replay = StreamReader(request.protocol, 2 ** 16, loop=asyncio.get_running_loop())
    replay.feed_data(raw)
    replay.feed_eof()
    request._payload = replay  # noqa: SLF001 - the body was consumed above
    return False


async def _commit(engine: Engine, uuid: str) -> web.Response:
    try:
        task = await engine.commit(uuid)
    except IntakeError as exc:
        return replies.error(str(exc))
    return replies.ok({"uuid": task.uuid})


async def task_new_commit(request: web.Request) -> web.Response:
    return await _commit(_engine(request), request.match_info["uuid"])


async def task_new(request: web.Request) -> web.Response:
    """The one-shot form: fields and `images` files in one multipart body."""
    engine = _engine(request)
    try:
        pending = engine.reserve_upload(_set_uuid(request))
    except IntakeError as exc:
        return replies.error(str(exc))
    problem = await _fill_pending(request, engine, pending, with_files=True)
    return replies.error(problem) if problem else await _commit(engine, pending.uuid)


async def task_list(request: web.Request) -> web.Response:
    return replies.ok([{"uuid": uuid} for uuid in _engine(request).tasks])


def _task(request: web.Request) -> SimTask | None:
    return _engine(request).tasks.get(request.match_info["uuid"])


async def task_info(request: web.Request) -> web.Response:
    task = _task(request)
    if task is None:
        return replies.task_not_found(request.match_info["uuid"])
    info = task.info(time.monotonic())
    if "with_output" in request.query:
        info["output"] = task.output[_line_number(request.query["with_output"]):]
    return replies.ok(info)


async def task_output(request: web.Request) -> web.Response:
    task = _task(request)
    if task is None:
        return replies.task_not_found(request.match_info["uuid"])
    return replies.ok(task.output[_line_number(request.query.get("line")):])


async def task_download(request: web.Request) -> web.StreamResponse:
    task = _task(request)
    if task is None:
        return replies.task_not_found(request.match_info["uuid"])
    if request.match_info["asset"] != "all.zip":
        return replies.error(replies.INVALID_ASSET)
    if not task.all_zip.is_file():
        return replies.error(replies.ASSET_NOT_READY)
    return web.FileResponse(task.all_zip, headers={
        hdrs.CONTENT_TYPE: "application/zip",
        hdrs.CONTENT_DISPOSITION: "attachment; filename=all.zip",
    })


def task_action(act: Callable[[Engine, str, dict[str, Any]], Awaitable[None]]) -> Handler:
    """Wrap an action on a task uuid with NodeODM's body parsing and reply shapes."""

    async def handler(request: web.Request) -> web.Response:
        try:
            body = await read_action_fields(request)
        except UploadError as exc:
            return replies.error(f"Malformed request body: {exc}")
        uuid = body.get("uuid")
        if not uuid:
            return replies.error(replies.UUID_MISSING)
        try:
            await act(_engine(request), str(uuid), body)
        except OptionsError as exc:
            return replies.error(str(exc))
        except TaskActionError as exc:
            return replies.action_error(str(exc))
        return replies.success()

    return handler


async def _cancel(engine: Engine, uuid: str, body: dict[str, Any]) -> None:
    engine.cancel(uuid)


async def _remove(engine: Engine, uuid: str, body: dict[str, Any]) -> None:
    await engine.remove(uuid)


async def _restart(engine: Engine, uuid: str, body: dict[str, Any]) -> None:
    raw = body.get("options")
    engine.restart(uuid, validate_options(raw, engine.catalog) if raw else None)


async def get_faults(request: web.Request) -> web.Response:
    return replies.ok(_engine(request).faults.to_json())


async def set_faults(request: web.Request) -> web.Response:
    """Change faults live with a JSON object such as `{"fail_rate": 1}`; omitted keys stay."""
    engine = _engine(request)
    try:
        changes = json.loads(await request.text())
        if not isinstance(changes, dict):
            raise ValueError("Expected a JSON object")
        engine.faults.update(changes)
    except ValueError as exc:
        return replies.error(str(exc))
    log.info("%s: faults now %s", engine.settings.name, engine.faults.to_json())
    return replies.ok(engine.faults.to_json())


async def info(request: web.Request) -> web.Response:
    return replies.ok(_engine(request).node_info())


async def options(request: web.Request) -> web.Response:
    return replies.ok([spec.to_json() for spec in _engine(request).catalog])


def _engine_context(engine: Engine) -> Callable[[web.Application], AsyncIterator[None]]:
    """Open the engine's folders and run its loop for the app's lifetime; clean up a temporary folder."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = engine.settings
        temporary = settings.data_dir is None
        data_dir = Path(tempfile.mkdtemp(prefix="passel-simnode-")) if temporary else settings.data_dir
        assert data_dir is not None
        engine.open(data_dir)
        loop = asyncio.create_task(engine.run(), name=f"simnode {settings.name}")
        try:
            yield
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
            await engine.wait_for_builds()
            if temporary:
                await asyncio.to_thread(shutil.rmtree, data_dir, True)

    return context


task_cancel = task_action(_cancel)
task_remove = task_action(_remove)
task_restart = task_action(_restart)


def create_simnode_app(settings: SimnodeSettings) -> web.Application:
    """A NodeODM look-alike; cheap to build, its folders and loop start with the app."""
    engine = Engine(settings)
    app = web.Application(middlewares=[unknown_route_middleware, error_middleware, token_middleware(settings.token)])
    app[ENGINE] = engine
    app.cleanup_ctx.append(_engine_context(engine))
    setup_auth_routes(app)
    add_nodeodm_routes(app, sys.modules[__name__])  # type: ignore[arg-type]
    app.router.add_get("/-/sim/faults", get_faults)
    app.router.add_post("/-/sim/faults", set_faults)
    return app
