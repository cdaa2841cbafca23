"""What a page is drawn from, wherever this box stands in the passel.

The coordinator draws from its own table. A follower draws tasks from its replica of the table
(synced every second) and asks the coordinator, with a short timeout, only for what is not
replicated: node health and events. When the coordinator does not answer, the follower still draws
its own view, says so in a banner, and shows node health as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from appliance.cluster.coordinator import COORDINATOR_KEY, Coordinator
from appliance.config import CONFIG_KEY
from appliance.discovery.passel import PASSEL_KEY
from appliance.passel_admin import passel_view
from appliance.store.models import Task

COORDINATOR_TIMEOUT = aiohttp.ClientTimeout(total=1.5)  # a page must not hang on a closed lid
NO_COORDINATOR = ("No box is coordinator right now: the boxes are choosing one (about 10 s). This page shows "
                  "what this box last knew; the buttons work again once one is chosen.")
ASLEEP = "This box has left the passel to sleep; what it shows may be out of date."


class FetchFailed(Exception):
    """The coordinator did not answer in time, or answered with an error."""


@dataclass(frozen=True)
class Snapshot:
    """Tasks, nodes and boxes as this box can know them right now."""

    coordinator: Coordinator
    tasks: list[Task]
    nodes: list[dict[str, Any]]
    view: dict[str, Any] | None  # passel_view(); None when discovery is off
    banner: str | None
    leader_url: str | None  # the coordinator's address when it is another box that answers
    authoritative: bool  # this box is the coordinator (or alone): its table and node health are the truth

    def node_url(self, task: Task) -> str | None:
        state = self.coordinator.registry.get(task.node_id)
        return state.row.url if state else None


def local_nodes(c: Coordinator) -> list[dict[str, Any]]:
    busy = c.book.busy_by_node()
    return [s.public(busy.get(s.id, 0)) for s in sorted(c.registry.nodes.values(), key=lambda s: s.id)]


async def fetch_json(app: web.Application, base_url: str, path: str) -> Any:
    """GET a JSON document from another box, quickly or not at all."""
    token = app[CONFIG_KEY].token
    try:
        async with app[COORDINATOR_KEY].registry.session.get(
                base_url + path, params={"token": token} if token else None, timeout=COORDINATOR_TIMEOUT) as reply:
            data = await reply.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise FetchFailed(str(exc) or type(exc).__name__) from None
    if reply.status != 200 or (isinstance(data, dict) and data.get("error")):
        raise FetchFailed(str(data.get("error") if isinstance(data, dict) else reply.status))
    return data


async def take(request: web.Request) -> Snapshot:
    """The snapshot for one page; never raises because another box is gone."""
    app = request.app
    c = app[COORDINATOR_KEY]
    passel = app.get(PASSEL_KEY)
    nodes, tasks = local_nodes(c), c.book.all_visible()
    if passel is None:
        return Snapshot(c, tasks, nodes, None, None, None, True)
    view = passel_view(passel)
    banner = ASLEEP if passel.sleeping else None
    if passel.is_coordinator:
        return Snapshot(c, tasks, nodes, view, banner, None, True)
    leader = passel.coordinator()
    unknown = [n | {"online": None} for n in nodes]  # a follower does not poll nodes itself
    if leader is None:
        return Snapshot(c, tasks, unknown, view, banner or NO_COORDINATOR, None, False)
    try:
        nodes = await fetch_json(app, leader.url, "/-/nodes")
    except FetchFailed:
        message = (f"The coordinator, box {leader.name or leader.id}, is not answering. This page shows what this "
                   "box last knew; whether the nodes work is unknown until it answers or another box takes over.")
        return Snapshot(c, tasks, unknown, view, banner or message, None, False)
    return Snapshot(c, tasks, nodes, view, banner, leader.url, False)


async def etas(request: web.Request, snap: Snapshot) -> dict[str, float | None]:
    """Seconds until each unfinished task should end: this box's forecast when it is the coordinator,
    the coordinator's otherwise (only it knows the nodes' speeds and backlogs); none when it is gone."""
    if snap.authoritative:
        return snap.coordinator.forecast().tasks
    if not snap.leader_url:
        return {}
    try:
        rows = await fetch_json(request.app, snap.leader_url, "/-/tasks?unfinished=1")
        return {str(t["uuid"]): t.get("eta_seconds") for t in rows}
    except (FetchFailed, KeyError, TypeError):
        return {}


async def events(request: web.Request, snap: Snapshot, limit: int = 12) -> list[dict[str, Any]]:
    """The audit log from the coordinator (this box's own when it is coordinator or the other is gone)."""
    if snap.leader_url:
        try:
            return list(await fetch_json(request.app, snap.leader_url, f"/-/events?limit={limit}"))
        except (FetchFailed, TypeError):
            pass
    rows = await snap.coordinator.store.events(limit=limit)
    return [{"at": e.at, "kind": e.kind, "message": e.message} for e in rows]


async def task_detail(request: web.Request, snap: Snapshot, uuid: str) -> tuple[list[dict[str, Any]], float | None]:
    """One task's history and expected seconds left, from the coordinator when it is another box."""
    if snap.leader_url:
        try:
            detail = await fetch_json(request.app, snap.leader_url, f"/-/tasks/{uuid}")
            return list(detail["events"]), detail.get("eta_seconds")
        except (FetchFailed, KeyError, TypeError):
            pass
    rows = await snap.coordinator.store.events(uuid)
    return [{"at": e.at, "kind": e.kind, "message": e.message} for e in rows], (await etas(request, snap)).get(uuid)
