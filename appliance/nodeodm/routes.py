"""NodeODM's route table, once, for every server that speaks the contract (the simulated node and
the coordinator), so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NodeODMHandlers(Protocol):
    """One handler per NodeODM endpoint."""

    info: Handler
    options: Handler
    task_new: Handler
    task_new_init: Handler
    task_new_upload: Handler
    task_new_commit: Handler
    task_list: Handler
    task_info: Handler
    task_output: Handler
    task_download: Handler
    task_cancel: Handler
    task_remove: Handler
    task_restart: Handler


def add_nodeodm_routes(app: web.Application, h: NodeODMHandlers) -> None:
    """Serve the API at the root, because PyODM drops any path in a node's URL."""
    app.router.add_get("/info", h.info)
    app.router.add_get("/options", h.options)
    app.router.add_post("/task/new", h.task_new)
    app.router.add_post("/task/new/init", h.task_new_init)
    app.router.add_post("/task/new/upload/{uuid}", h.task_new_upload)
    app.router.add_post("/task/new/commit/{uuid}", h.task_new_commit)
    app.router.add_get("/task/list", h.task_list)
    app.router.add_get("/task/{uuid}/info", h.task_info)
    app.router.add_get("/task/{uuid}/output", h.task_output)
    app.router.add_get("/task/{uuid}/download/{asset}", h.task_download)
    app.router.add_post("/task/cancel", h.task_cancel)
    app.router.add_post("/task/remove", h.task_remove)
    app.router.add_post("/task/restart", h.task_restart)
