"""The NodeODM API of the whole passel, answered by the coordinator.

Every handler answers in NodeODM's shapes (HTTP 200 with `{"error": ...}`), so PyODM, ODM's
split-merge executor, WebODM and curl cannot tell Passel from a single NodeODM.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

from appliance.cluster import held_files
from appliance.cluster.coordinator import COORDINATOR_KEY, Coordinator
from appliance.cluster.info_cache import Run, waiting_line
from appliance.cluster.intake import NewTask, TaskRefused
from appliance.cluster.job_parts import parent_of
from appliance.cluster.results import asks_to_the_end, completed, serve_results
from appliance.cluster.tracker import refresh_from_node
from appliance.nodeodm import replies
from appliance.nodeodm.routes import add_nodeodm_routes
from appliance.nodeodm.uploads import (
    UploadError,
    ensure_free_space,
    read_action_fields,
    receive_form,
)
from appliance.store.models import Phase, Task

log = logging.getLogger("passel.api")
API_VERSION = "2.2.4"  # the NodeODM API this implements; PyODM wants >= 1.4.0 for chunked uploads


def _coordinator(request: web.Request) -> Coordinator:
    return request.app[COORDINATOR_KEY]


async def info(request: web.Request) -> web.Response:
    """The passel as one node: summed capacity of the online nodes, honestly."""
    c = _coordinator(request)
    online = [s.info for s in c.registry.nodes.values() if s.online and s.info]
    max_images = [i.get("maxImages") for i in online]
    engines = Counter(str(i.get("engine") or "odm") for i in online)
    return replies.ok({
        "version": API_VERSION,
        "taskQueueCount": c.book.queue_count(),
        "totalMemory": sum(int(i.get("totalMemory") or 0) for i in online),
        "availableMemory": sum(int(i.get("availableMemory") or 0) for i in online),
        "cpuCores": sum(int(i.get("cpuCores") or 0) for i in online),
        "maxImages": None if not online or None in max_images else max(int(m) for m in max_images),
        "maxParallelTasks": sum(int(i.get("maxParallelTasks") or 1) for i in online),
        "engineVersion": ",".join(sorted({str(i.get("engineVersion") or "?") for i in online})) or "?",
        "engine": engines.most_common(1)[0][0] if engines else "odm",
    })


async def options(request: web.Request) -> web.Response:
    return replies.ok([s.to_json() for s in _coordinator(request).registry.option_specs()])


async def _check_disk(request: web.Request) -> None:
    staging = _coordinator(request).staging
    ensure_free_space(staging.root, staging.min_free_bytes)


async def task_new_init(request: web.Request) -> web.Response:
    """On the coordinator, or on a follower that takes the upload in itself (receiving.py)."""
    c = _coordinator(request)
    try:
        await _check_disk(request)
        form = await receive_form(request, directory=None)
        parent = parent_of(request.query.get("token"))  # a split job's submodel (job_parts.py)
        if c.role.coordinating:
            new = NewTask.from_fields(form.fields, parent)
            uuid = (await c.intake.init(new, request.headers.get("set-uuid"))).uuid
        else:
            uuid = await c.receiver.init(form.fields, request.headers.get("set-uuid"), parent)
    except (UploadError, TaskRefused) as exc:
        return replies.error(str(exc))
    return replies.ok({"uuid": uuid})


def _uploading(request: web.Request) -> Task | None:
    """A task still taking files, whose earlier files are on this box's disk (not left on a lost one)."""
    c = _coordinator(request)
    task = c.book.get(request.match_info["uuid"].lower())
    ok = task is not None and task.phase == Phase.UPLOADING and task.staged_on in ("", c.self_id)
    return task if ok else None


def _received_here(request: web.Request) -> bool:
    """An upload this box takes in for a coordinator on another box (receiving.py)."""
    return _coordinator(request).receiver.holds(request.match_info["uuid"])


async def task_new_upload(request: web.Request) -> web.Response:
    c = _coordinator(request)
    uuid = request.match_info["uuid"].lower()
    here = _received_here(request)
    task = _uploading(request)
    if task is None and not here:
        return replies.error(replies.TASK_NOT_FOUND_UPLOAD)
    early = c.receiver.early_for(uuid) if here else c.dispatcher.early_for(uuid)
    try:
        await _check_disk(request)
        form = await receive_form(request, directory=c.staging.path(uuid), on_file=early.stream if early else None)
    except UploadError as exc:
        return replies.error(str(exc), **({"noRetry": True} if exc.no_retry else {}))
    if not form.files:
        return replies.error(replies.NEED_ONE_FILE, noRetry=True)
    if here and _received_here(request):
        c.receiver.uploaded(uuid, form.files)
        return replies.success()
    if task is None or _uploading(request) is None:  # removed while the body was arriving
        c.staging.remove(uuid)
        return replies.error(replies.TASK_NOT_FOUND_UPLOAD)
    c.intake.uploaded(task, form.files)
    return replies.success()


async def task_new_commit(request: web.Request) -> web.Response:
    c = _coordinator(request)
    uuid = request.match_info["uuid"].lower()
    try:
        if _received_here(request) and not c.role.coordinating:
            await c.receiver.commit(uuid)
            return replies.ok({"uuid": uuid})
        task = _uploading(request)
        if task is None:
            return replies.error(replies.TASK_NOT_FOUND_UPLOAD)
        if _received_here(request):  # taken in here while another box coordinated; this one does now
            report = await c.receiver.report(uuid)
            c.receiver.done(uuid)
            await c.intake.commit_received(task, report["files"], report["node_url"], report["on_node"])
        else:
            await c.intake.commit(task)
    except TaskRefused as exc:
        return replies.error(str(exc))
    return replies.ok({"uuid": uuid})


async def task_new(request: web.Request) -> web.Response:
    """The one-shot form: fields and files in one body, in any order, so files land in a scratch dir first."""
    c = _coordinator(request)
    scratch = c.staging.scratch()
    try:
        await _check_disk(request)
        form = await receive_form(request, directory=scratch)
        if form.fields.get("zipurl"):
            raise TaskRefused("zipurl is not supported by Passel: upload the images instead")
        if not form.files:
            raise TaskRefused(replies.NEED_FILE_OR_ZIP)
        new = NewTask.from_fields(form.fields, parent_of(request.query.get("token")))
        task = await c.intake.init(new, request.headers.get("set-uuid"))
        c.staging.adopt(scratch, task.uuid)
        await c.intake.commit(task)
    except (UploadError, TaskRefused) as exc:
        return replies.error(str(exc))
    finally:
        c.staging.discard_scratch(scratch)
    return replies.ok({"uuid": task.uuid})


async def _visible(request: web.Request) -> Task | None:
    c = _coordinator(request)
    task = await c.intake.find_visible(request.match_info["uuid"].lower())
    if task is not None and c.images_out_of_reach(task):
        await c.lose(task, f"its images were only on box {task.staged_on}, which is gone; the client sends it again")
        return None
    return task


def _info(task: Task, run: Run | None) -> dict[str, Any]:
    """The node's last reply, with what the row knows better: the client's name, date and `sm-cluster`
    (`_as_sent`), and the status as Passel shows it (its own cancel or restart at once; a finish no
    stale poll undoes)."""
    status: dict[str, Any] = {"code": task.status}
    if task.error_message:
        status["errorMessage"] = task.error_message
    own: dict[str, Any] = {"uuid": task.uuid, "name": task.name, "dateCreated": task.date_created_ms, "status": status}
    if run is not None:
        own["options"] = _as_sent(run.reply.get("options"), task)
    if run is not None and (run.reply.get("status") or {}).get("code") == task.status:
        return {**run.reply, **own}
    row = {"processingTime": task.processing_time_ms, "progress": task.progress}
    if run is not None:
        return {**run.reply, **own, **row}
    return {**own, **row, "options": task.options, "imagesCount": task.images_count}


def _as_sent(options: Any, task: Task) -> Any:
    """The node's options (NodeODM adds its own post-processing ones), with `sm-cluster` as the
    client sent it: the node's is rewritten to a box's agent, and may carry the API token."""
    if not isinstance(options, list):
        return task.options
    sent = next((o for o in task.options if o.get("name") == "sm-cluster"), None)
    return [sent if isinstance(o, dict) and o.get("name") == "sm-cluster" else o for o in options
            if sent is not None or not (isinstance(o, dict) and o.get("name") == "sm-cluster")]


async def _live_run(c: Coordinator, task: Task) -> Run | None:
    """What the task's node last said: the tracker's copy while it is recent, else asked now (clients
    asking together share one request); with the node out of reach, the last known."""
    if c.info_cache.fresh(task) is None and task.phase in (Phase.ON_NODE, Phase.FINISHED):
        node = c.registry.get(task.node_id)
        if node is not None and node.online:
            await refresh_from_node(c, task, node)
    return c.info_cache.run(task)


async def _console(c: Coordinator, task: Task, run: Run | None, start: int) -> list[str]:
    """The task's console from line `start`; a waiting line served for the first time is kept in the row."""
    node = c.registry.get(task.node_id)
    lines, pinned = c.info_cache.serve(task, run, waiting_line(task, node.row.url if node else None), start)
    if pinned:
        await c.book.save(task)
    return lines


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return 0  # NodeODM parses with parseInt and falls back to the start


async def task_info(request: web.Request) -> web.Response:
    c = _coordinator(request)
    task = await _visible(request)
    if task is None:
        return replies.task_not_found(request.match_info["uuid"])
    with_output = _int_param(request, "with_output")
    run = await _live_run(c, task)
    reply = _info(task, run)
    if with_output is not None:
        reply["output"] = await _console(c, task, run, with_output)
    await c.told_finished(task)
    return replies.ok(reply)


async def task_output(request: web.Request) -> web.Response:
    c = _coordinator(request)
    task = await _visible(request)
    if task is None:
        return replies.task_not_found(request.match_info["uuid"])
    run = await _live_run(c, task)
    return replies.ok(await _console(c, task, run, _int_param(request, "line") or 0))


async def task_download(request: web.Request) -> web.StreamResponse:
    """From the box the client asked: its own copy of the results, else the node, else the box that
    keeps the copy (cluster/results.py); on a follower, never through the coordinator
    (http_rules.DOWNLOAD_CALL)."""
    c = _coordinator(request)
    if not c.role.coordinating:
        task = c.book.get(request.match_info["uuid"].lower())
    else:
        task = await _visible(request)
    if task is None:
        return replies.task_not_found(request.match_info["uuid"])
    if request.match_info["asset"] != "all.zip":
        return replies.error(replies.INVALID_ASSET)
    if not completed(task):
        return replies.error(replies.ASSET_NOT_READY)
    try:
        reply = await serve_results(request, c, task)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return replies.error(f"The node holding this task's results is not answering ({exc or 'timeout'}); try again")
    if reply is None:
        return replies.error("The node holding this task's results is not answering, and no copy of them can be "
                             "reached; try again")
    if isinstance(reply, web.FileResponse):  # this box's own copy, sent once this handler returns
        whole = asks_to_the_end(request, c.results.path(task.uuid))
    else:
        whole = _whole_file_sent(reply)
    if whole and not task.downloaded_at:
        if c.role.coordinating:
            await c.downloaded(task)
        else:  # the coordinator keeps the table: tell it, as metadata
            c.receiver.report_download(task.uuid)
    return reply


def _whole_file_sent(reply: web.StreamResponse) -> bool:
    """A full 200 reply, or the range that ends the file (PyODM downloads big zips in ranges)."""
    if reply.status == 200:
        return True
    if reply.status != 206:
        return False
    span, _, total = reply.headers.get("Content-Range", "").partition("/")
    return total.isdigit() and span.rsplit("-", 1)[-1] == str(int(total) - 1)


async def task_list(request: web.Request) -> web.Response:
    return replies.ok([{"uuid": t.uuid} for t in _coordinator(request).book.all_visible()])


async def _task_action(request: web.Request, action: str) -> web.Response:
    c = _coordinator(request)
    try:
        fields = await read_action_fields(request)
    except UploadError as exc:
        return replies.action_error(str(exc))
    uuid = fields.get("uuid", "").lower()
    if not uuid:
        return replies.error(replies.UUID_MISSING)
    task = await c.intake.find_visible(uuid)
    if task is None:
        if action == "remove":
            await c.intake.abandoned(uuid)
        return replies.action_error(f"{fields.get('uuid', '')} not found")
    try:
        if action == "cancel":
            await c.intake.cancel(task)
        elif action == "remove":
            await c.intake.remove(task)
        else:
            await c.intake.restart(task, fields.get("options"))
    except TaskRefused as exc:
        return replies.action_error(str(exc))
    return replies.success()


async def task_cancel(request: web.Request) -> web.Response:
    return await _task_action(request, "cancel")


async def task_remove(request: web.Request) -> web.Response:
    return await _task_action(request, "remove")


async def task_restart(request: web.Request) -> web.Response:
    return await _task_action(request, "restart")


def setup_routes(app: web.Application) -> None:
    add_nodeodm_routes(app, sys.modules[__name__])  # type: ignore[arg-type]
    app.router.add_get("/task/{uuid}/files", held_files.task_files)  # Passel's own: what a resumed upload lacks
