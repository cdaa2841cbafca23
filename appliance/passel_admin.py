"""The passel's admin API: how this box sees the passel, and handing the coordinator role on.

The web UI calls these same functions, so a page and `passel status --json` cannot disagree."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from appliance.clock import boottime
from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.discovery.passel import PASSEL_KEY, Passel, TransferRefused


def passel_view(passel: Passel) -> dict[str, Any]:
    """The passel as this box sees it (what `passel status --json` prints)."""
    now = boottime()
    me = passel.identity
    boxes = [{"id": me.id, "name": me.name, "role": passel.state.role, "address": None, "port": passel.api_port,
              "alive": True, "self": True, "priority": passel.priority, "term": passel.state.term}]
    for peer in sorted(passel.membership.peers.values(), key=lambda p: p.name):
        boxes.append({"id": peer.id, "name": peer.name, "role": peer.role, "address": peer.address,
                      "port": peer.port, "alive": peer.alive(now), "self": False, "priority": peer.priority,
                      "term": peer.term, "last_heard_s": round(now - peer.last_heard, 1) if peer.last_heard else None,
                      "foreign": bool(peer.foreign), "why_foreign": peer.foreign or None})
    coordinator_id = passel.identity.id if passel.is_coordinator else passel.state.coordinator_id
    coordinator = next((b for b in boxes if b["id"] == coordinator_id), None)
    return {"self": boxes[0], "coordinator": coordinator, "term": passel.state.term, "boxes": boxes,
            "key_fingerprint": passel.trust.fingerprint()}


async def passel_json(request: web.Request) -> web.Response:
    view = passel_view(request.app[PASSEL_KEY])
    if request.app[PASSEL_KEY].is_coordinator:  # how far each follower's copy of the task table has got
        coordinator = request.app[COORDINATOR_KEY]
        view["table"] = {"rev": coordinator.book.rev, "replicas": coordinator.replicas.live()}
    return web.json_response(view)


async def transfer(request: web.Request) -> web.Response:
    """Hand the coordinator role to another box (runs on the coordinator; followers relay here)."""
    try:
        body = await request.json() if request.content_type == "application/json" else dict(await request.post())
        target = str(body["to"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": 'expected {"to": BOX_ID}'}, status=400)
    passel = request.app[PASSEL_KEY]
    try:
        await passel.transfer(target)
    except TransferRefused as exc:
        return web.json_response({"error": str(exc)}, status=409)
    return web.json_response({"success": True, "coordinator": target, "term": passel.state.term})


def setup_passel_admin_routes(app: web.Application) -> None:
    app.router.add_get("/-/passel.json", passel_json)
    app.router.add_post("/-/transfer", transfer)
