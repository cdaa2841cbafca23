"""The passel's boxes as cards: each with its role, its NodeODM nodes and its cores, memory and disk.

Cores, memory and free disk come from each box's own `/-/box.json`, fetched in the background and
kept for a few seconds, so drawing a page never waits on fifty boxes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from appliance.box_api import box_facts
from appliance.clock import boottime
from appliance.config import CONFIG_KEY
from appliance.discovery.identity import IDENTITY_KEY
from appliance.nodeodm.sentences import host_port, readable
from appliance.nodeodm.status import TaskStatus
from webui import format as fmt
from webui.contexts import BoxCard, NodeCard
from webui.snapshot import FetchFailed, Snapshot, fetch_json

FACTS_TTL_SECONDS = 5.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class BoxFactsCache:
    """Other boxes' facts, refreshed in the background when a page asks and they are stale."""

    def __init__(self) -> None:
        self.facts: dict[str, tuple[float, dict[str, Any]]] = {}
        self._job: asyncio.Task[None] | None = None

    def get(self, box_id: str) -> dict[str, Any] | None:
        entry = self.facts.get(box_id)
        return entry[1] if entry else None

    def refresh(self, app: web.Application, targets: dict[str, str]) -> None:
        """Fetch the facts of `targets` (box id -> URL) unless fresh or already being fetched."""
        now = boottime()
        stale = {i: u for i, u in targets.items() if now - self.facts.get(i, (-1e9, {}))[0] > FACTS_TTL_SECONDS}
        if stale and (self._job is None or self._job.done()):
            self._job = asyncio.create_task(self._fetch(app, stale), name="ui-box-facts")

    async def _fetch(self, app: web.Application, targets: dict[str, str]) -> None:
        async def one(box_id: str, url: str) -> None:
            with contextlib.suppress(FetchFailed):
                self.facts[box_id] = (boottime(), await fetch_json(app, url, "/-/box.json"))
        await asyncio.gather(*(one(i, u) for i, u in targets.items()))

    async def close(self) -> None:
        if self._job is not None:
            self._job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._job


def node_card(n: dict[str, Any], name: str | None = None, queued: int | None = None) -> NodeCard:
    """A node as a card; `name` is what the pages call it (node_names), `queued` how many of the
    passel's tasks wait on it (the node's own count includes the ones it runs)."""
    online = n.get("online")
    state = "unknown" if online is None else ("online" if online else "not answering")
    if n.get("locked"):
        state += ", locked"
    state_class = "muted" if online is None else ("warn" if online and n.get("locked") else ("ok" if online else "bad"))
    last_error = readable(str(n.get("last_error") or ""), {n["url"]: name or _label(n)})
    if n.get("upstream"):  # beyond the site: a link that is down is its normal state much of the day, not a fault
        state, last_error = f"upstream, link {n.get('link') or 'unknown'}", ""
        state_class = "ok" if online else "muted"
    last_seen = n.get("last_seen")
    return NodeCard(
        id=int(n["id"]), ref=quote(n["url"], safe=""), url=n["url"], label=name or _label(n), state=state,
        state_class=state_class, locked=bool(n.get("locked")), online=online,
        active_tasks=int(n.get("active_tasks") or 0), slots=int(n.get("slots") or 1),
        queue=queued if queued is not None else max(0, int(n.get("queue") or 0) - int(n.get("active_tasks") or 0)),
        cores=str(n.get("cores") or "?"), memory=fmt.size(n.get("total_memory")),
        max_images=str(n.get("max_images") or "any"), last_seen=fmt.since(last_seen) if last_seen else "never",
        source=str(n.get("source", "")), last_error=last_error)


def _label(n: dict[str, Any]) -> str:
    """The label a technician gave the node; none when the API fills in its address."""
    label = str(n.get("label") or "")
    return label if label and label != n["url"] else host_port(n["url"])


def _owner(node: dict[str, Any], boxes: list[dict[str, Any]], mine: set[str], leader_id: str | None) -> str | None:
    """Which box a node runs on: the box whose agent advertised it, else by host address."""
    agent = urlsplit(node.get("box_agent") or "")
    for box in boxes:
        if agent.hostname and box.get("address") == agent.hostname and box.get("port") == agent.port:
            return str(box["id"])
    host = agent.hostname or urlsplit(node["url"]).hostname or ""
    if host in LOOPBACK:
        return leader_id  # 127.0.0.1 as the coordinator sees it: the coordinator's own box
    if host in mine:
        return str(boxes[0]["id"])
    return next((str(b["id"]) for b in boxes[1:] if b.get("address") == host), None)


def _health(nodes: list[NodeCard]) -> tuple[str, str]:
    if not nodes:
        return "no NodeODM shared", "muted"
    if any(n.online is None for n in nodes):
        return "NodeODM health unknown", "muted"
    down = sum(1 for n in nodes if not n.online)
    if down:
        return f"{down} of {len(nodes)} NodeODM not answering", "bad"
    return ("NodeODM healthy" if len(nodes) == 1 else f"{len(nodes)} NodeODM healthy"), "ok"


def _boxes(request: web.Request, snap: Snapshot) -> list[dict[str, Any]]:
    if snap.view is not None:
        return list(snap.view["boxes"])
    identity = request.app[IDENTITY_KEY]
    return [{"id": identity.id, "name": identity.name, "role": "coordinator", "address": None,
             "port": request.app[CONFIG_KEY].port, "alive": True, "self": True,
             "priority": request.app[CONFIG_KEY].priority}]


def _owners(request: web.Request, snap: Snapshot, boxes: list[dict[str, Any]],
            mine: dict[str, Any]) -> dict[str, str | None]:
    """Node URL -> the id of the box it runs on (None: on no box of the passel)."""
    leader = (snap.view or {}).get("coordinator") or boxes[0]
    own = set(mine["addresses"]) - set(LOOPBACK)
    return {n["url"]: _owner(n, boxes, own, leader["id"]) for n in snap.nodes}


def node_names(request: web.Request, snap: Snapshot) -> dict[str, str]:
    """What the pages call each node (URL -> name): the label a technician gave it, else the name of
    the box it runs on (with its port when the box shares several), else its address. Never a URL
    where a name is known."""
    boxes = _boxes(request, snap)
    owners = _owners(request, snap, boxes, box_facts(request.app[CONFIG_KEY].state_dir))
    box_names = {str(b["id"]): str(b.get("name") or b["id"]) for b in boxes}
    shared: dict[str | None, int] = {}
    for owner in owners.values():
        shared[owner] = shared.get(owner, 0) + 1
    names = {}
    for n in snap.nodes:
        label, owner = str(n.get("label") or ""), owners[n["url"]]
        if label and label != n["url"]:
            names[n["url"]] = label
        elif owner in box_names:
            port = urlsplit(n["url"]).port
            names[n["url"]] = box_names[owner] + (f", port {port}" if shared[owner] > 1 and port else "")
        else:
            names[n["url"]] = host_port(n["url"])
    return names


def box_names(request: web.Request, snap: Snapshot) -> dict[str, str]:
    """Node URL -> the name of the box it runs on (its name when it is on no box of the passel)."""
    boxes = _boxes(request, snap)
    owners = _owners(request, snap, boxes, box_facts(request.app[CONFIG_KEY].state_dir))
    by_id = {str(b["id"]): str(b.get("name") or b["id"]) for b in boxes}
    names = node_names(request, snap)
    return {url: by_id.get(owner or "", names[url]) for url, owner in owners.items()}


def queued_on(snap: Snapshot) -> dict[str, int]:
    """Node URL -> the passel's tasks waiting on that node (sent, not started): counted from the same
    table as the page's summary, so a card never says more are queued than the passel has."""
    counts: dict[str, int] = {}
    for task in snap.tasks:
        url = snap.node_url(task) if task.status == TaskStatus.QUEUED and task.node_id is not None else None
        if url:
            counts[url] = counts.get(url, 0) + 1
    return counts


def box_cards(request: web.Request, snap: Snapshot, cache: BoxFactsCache) -> tuple[list[BoxCard], list[NodeCard]]:
    """Cards for every box, and the nodes that belong to none."""
    boxes = _boxes(request, snap)
    mine = box_facts(request.app[CONFIG_KEY].state_dir)
    cache.refresh(request.app, {str(b["id"]): f"http://{b['address']}:{b['port']}" for b in boxes[1:]
                                if b.get("alive") and b.get("address")})
    leader = (snap.view or {}).get("coordinator") or boxes[0]
    owners, names, queued = _owners(request, snap, boxes, mine), node_names(request, snap), queued_on(snap)
    owned: dict[str | None, list[NodeCard]] = {}
    for n in snap.nodes:
        owned.setdefault(owners[n["url"]], []).append(node_card(n, names[n["url"]], queued.get(n["url"], 0)))
    here = urlsplit(snap.coordinator.public_url).netloc  # the address this box tells clients to use
    cards = [_card(b, mine if b.get("self") else cache.get(str(b["id"])), owned.get(str(b["id"]), []),
                   leader["id"], here) for b in boxes]
    return cards, owned.get(None, [])


def _card(b: dict[str, Any], facts: dict[str, Any] | None, nodes: list[NodeCard], leader_id: str,
          here: str) -> BoxCard:
    alive, is_self = bool(b.get("alive")), bool(b.get("self"))
    if is_self:
        state, state_class, seen = "this box", "ok", "now"
    elif b.get("foreign"):
        state, state_class, seen = "not in this passel (another key)", "bad", "—"
    else:
        state, state_class = ("alive", "ok") if alive else ("gone", "bad")
        seen = fmt.ago(b.get("last_heard_s"))
    health, health_class = _health(nodes)
    facts = facts or {}
    cores = facts.get("cores") or sum(int(n.cores) for n in nodes if n.cores.isdigit()) or None
    memory = facts.get("memory_total")
    return BoxCard(
        id=str(b["id"]), name=str(b.get("name") or b["id"]), role=str(b.get("role") or "?"),
        address=here if is_self else f"{b.get('address') or '?'}:{b.get('port')}", state=state,
        state_class=state_class, is_self=is_self,
        is_coordinator=str(b["id"]) == leader_id, alive=alive or is_self, last_seen=seen,
        priority=int(b.get("priority") or 0), health=health, health_class=health_class,
        slots_used=sum(n.active_tasks for n in nodes), slots_total=sum(n.slots for n in nodes),
        queue=sum(n.queue for n in nodes), cores=str(cores or "—"),
        memory=(f"{fmt.size(facts.get('memory_available'))} free of {fmt.size(memory)}" if memory else "—"),
        disk_free=fmt.size(facts["disk_free"]) if "disk_free" in facts else "—", nodes=nodes)


BOX_FACTS_KEY: web.AppKey[BoxFactsCache] = web.AppKey("box_facts")  # where the app holds it
