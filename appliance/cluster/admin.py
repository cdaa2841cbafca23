"""Passel's own admin API under `/-/`, clear of NodeODM's paths; the CLI and the web UI use it."""

from __future__ import annotations

import math
import time
from typing import Any

from aiohttp import web

from appliance import __version__
from appliance.cluster.coordinator import COORDINATOR_KEY, Coordinator, public_task
from appliance.cluster.intake import TaskRefused
from appliance.cluster.registry import NodeNotFound
from appliance.cluster.scheduler import Demand, rank, why_not
from appliance.config import CONFIG_KEY
from appliance.nodeodm.status import TaskStatus


def _c(request: web.Request) -> Coordinator:
    return request.app[COORDINATOR_KEY]


def _nodes(c: Coordinator) -> list[dict[str, Any]]:
    busy = c.book.busy_by_node()
    return [s.public(busy.get(s.id, 0)) for s in sorted(c.registry.nodes.values(), key=lambda s: s.id)]


async def status(request: web.Request) -> web.Response:
    """Everything a dashboard or `passel status` needs in one reply."""
    c = _c(request)
    forecast = c.forecast()
    tasks = [public_task(t, c.registry, forecast.tasks.get(t.uuid)) for t in c.book.all_visible()]
    return web.json_response({
        "version": __version__, "time": time.time(), "public_url": c.public_url,
        "role": "coordinator", "nodes": _nodes(c), "tasks": tasks,
        "queue": sum(1 for t in tasks if t["status"] == 10 and t["phase"] == "waiting"),
        "jobs": forecast.jobs,
    })


async def list_nodes(request: web.Request) -> web.Response:
    return web.json_response(_nodes(_c(request)))


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text='{"error": "Invalid JSON body"}', content_type="application/json") from None
        return data if isinstance(data, dict) else {}
    return dict(await request.post())


async def add_node(request: web.Request) -> web.Response:
    data = await _body(request)
    url = str(data.get("url", ""))
    upstream = data.get("upstream") in (True, "1", "true", "on", "yes")
    try:
        state = await _c(request).registry.add(url, source="manual", label=str(data.get("label", "")),
                                               upstream=upstream)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(state.public(0))


async def remove_node(request: web.Request) -> web.Response:
    try:
        state = await _c(request).registry.remove(request.match_info["ref"])
    except NodeNotFound:
        return web.json_response({"error": f"No node {request.match_info['ref']}"}, status=404)
    return web.json_response({"success": True, "id": state.id})


async def _lock(request: web.Request, locked: bool) -> web.Response:
    try:
        state = await _c(request).registry.set_locked(request.match_info["ref"], locked)
    except NodeNotFound:
        return web.json_response({"error": f"No node {request.match_info['ref']}"}, status=404)
    return web.json_response(state.public(0))


async def lock_node(request: web.Request) -> web.Response:
    return await _lock(request, True)


async def unlock_node(request: web.Request) -> web.Response:
    return await _lock(request, False)


async def best_node(request: web.Request) -> web.Response:
    """Which node a task of N images (and `mb` megabytes of them, which an upstream must receive)
    would go to now (dispatch's own choice), the others that could take it in order, and why the
    rest could not."""
    c = _c(request)
    try:
        demand = Demand(images=int(request.query.get("images", "1")), data_mb=float(request.query.get("mb", "0")))
    except ValueError:
        demand = Demand(images=0, data_mb=-1.0)
    if not 0 <= demand.data_mb < math.inf:
        return web.json_response({"error": "images must be a whole number, and mb a number of megabytes"}, status=400)
    views = c.dispatcher.views()
    choice = c.dispatcher.choice_for(demand)
    return web.json_response({
        "best": choice.id if choice else None,
        "ranking": [v.id for v in rank(views, demand, c.speed_aware)],
        "refused": {str(v.id): why_not(v, demand) for v in views if why_not(v, demand)},
    })


async def list_tasks(request: web.Request) -> web.Response:
    """Every task, or with `unfinished=1` only those still to finish (what a follower's pages ask for ETAs)."""
    c = _c(request)
    forecast = c.forecast()
    tasks = c.book.all_visible()
    if request.query.get("unfinished") == "1":
        tasks = [t for t in tasks if not TaskStatus(t.status).finished]
    return web.json_response([public_task(t, c.registry, forecast.tasks.get(t.uuid)) for t in tasks])


async def show_task(request: web.Request) -> web.Response:
    c = _c(request)
    task = c.book.visible(request.match_info["uuid"].lower())
    if task is None:
        return web.json_response({"error": f"{request.match_info['uuid']} not found"}, status=404)
    events = await c.store.events(task.uuid)
    return web.json_response(public_task(task, c.registry, c.forecast().tasks.get(task.uuid)) | {
        "events": [{"at": e.at, "kind": e.kind, "message": e.message} for e in events]})


async def task_action(request: web.Request) -> web.Response:
    """Move, cancel, restart or remove a task: the same actions for the UI, the CLI and scripts."""
    c = _c(request)
    task = c.book.visible(request.match_info["uuid"].lower())
    if task is None:
        return web.json_response({"error": f"{request.match_info['uuid']} not found"}, status=404)
    action = request.match_info["action"]
    body = await _body(request) if request.body_exists else {}
    try:
        if action == "move":
            target = await c.move(task, str(body.get("node", "")))
            return web.json_response({"success": True, "node": target.row.url})
        if action == "cancel":
            await c.intake.cancel(task)
        elif action == "restart":
            await c.intake.restart(task, body.get("options"))
        elif action == "remove":
            await c.intake.remove(task)
        else:
            return web.json_response({"error": f"Unknown action {action}"}, status=404)
    except TaskRefused as exc:
        return web.json_response({"error": str(exc)}, status=409)
    return web.json_response({"success": True})


async def events(request: web.Request) -> web.Response:
    try:
        limit = min(1000, max(1, int(request.query.get("limit", "200"))))
    except ValueError:
        return web.json_response({"error": "limit must be a whole number"}, status=400)
    rows = await _c(request).store.events(limit=limit)
    return web.json_response([{"at": e.at, "kind": e.kind, "message": e.message,
                               "task": e.task_uuid, "node": e.node_id} for e in rows])


SECRET_SETTINGS = ("token", "key", "results_out_secret")  # the API token, the passel key, the bucket's secret


async def settings(request: web.Request) -> web.Response:
    """The effective configuration and where each value came from (secrets masked)."""
    cfg = request.app[CONFIG_KEY]
    shown = {k: ("***" if k in SECRET_SETTINGS and v else v) for k, v in vars(cfg).items() if k != "sources"}
    shown["node"] = [n.split("?")[0] for n in cfg.node]
    shown["upstream"] = [n.split("?")[0] for n in cfg.upstream]
    shown["state_dir"] = str(cfg.state_dir)
    return web.json_response({"settings": shown, "sources": dict(cfg.sources)})


def setup_admin_routes(app: web.Application) -> None:
    app.router.add_get("/-/status.json", status)
    app.router.add_get("/-/settings.json", settings)
    app.router.add_get("/-/nodes", list_nodes)
    app.router.add_post("/-/nodes", add_node)
    app.router.add_get("/-/nodes/best", best_node)
    app.router.add_delete("/-/nodes/{ref}", remove_node)
    app.router.add_post("/-/nodes/{ref}/lock", lock_node)
    app.router.add_post("/-/nodes/{ref}/unlock", unlock_node)
    app.router.add_get("/-/tasks", list_tasks)
    app.router.add_get("/-/tasks/{uuid}", show_task)
    app.router.add_post("/-/tasks/{uuid}/{action}", task_action)
    app.router.add_get("/-/events", events)
