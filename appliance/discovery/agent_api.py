"""The internal API between agents, versioned under `/-/agent/v1/`, plus each box's own view of the passel."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from appliance.discovery.clock import boottime
from appliance.discovery.handover import parse_task
from appliance.discovery.passel import AGENT_API, Passel, TransferRefused
from appliance.discovery.trust import H_BOX, H_SIG, UNSIGNED_BODY, Untrusted, body_digest
from appliance.discovery.password_sync import receive as receive_password
from appliance.discovery.password_sync import sealed
from appliance.discovery.replica import export_since
from appliance.http_rules import Peer, rules_of
from appliance.keys import ADMIN_PASSWORD, COORDINATOR, PASSEL, REPLICA
from appliance.nodeodm.uploads import UploadError, receive_form

log = logging.getLogger("passel.trust")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


MAX_LONG_POLL_SECONDS = 10.0


@web.middleware
async def agent_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The box-to-box calls (Peer.SIGNED in appliance/http_rules.py) must be signed with the passel
    key; replies are signed back. Sleep, wake and a new key come from this box's own systemd or CLI,
    so they are accepted from loopback only."""
    peer = rules_of(request).peer
    if peer is Peer.ANY:
        return await handler(request)
    if peer is Peer.LOOPBACK:
        if request.remote not in ("127.0.0.1", "::1"):
            return web.json_response({"error": "only this box itself may ask it to sleep or wake"}, status=403)
        return await handler(request)
    passel = request.app[PASSEL]
    digest = UNSIGNED_BODY if peer is Peer.SIGNED_STREAM else body_digest(await request.read())
    try:
        box, _ = passel.trust.verify_request(request.method, request.path_qs, digest, request.headers)
    except Untrusted as exc:
        claimed = passel.membership.peers.get(request.headers.get(H_BOX, ""))
        if claimed is not None:
            passel.membership.mark_foreign(claimed, str(exc))
        log.warning("Refused %s %s from %s: %s", request.method, request.path, request.remote, exc)
        return web.json_response({"error": f"refused: {exc}"}, status=401)
    request["peer"] = box
    reply = await handler(request)
    if isinstance(reply, web.Response) and reply.body is not None:
        reply.headers[H_SIG] = passel.trust.sign_reply(reply.body, request.headers)  # type: ignore[arg-type]
    return reply


async def heartbeat(request: web.Request) -> web.Response:
    try:
        payload = await request.json()
    except ValueError:
        return web.json_response({"error": "heartbeat must be JSON"}, status=400)
    if not isinstance(payload, dict) or payload.get("v") != 1:
        return web.json_response({"error": "unsupported heartbeat version"}, status=400)
    if payload.get("id") != request["peer"]:
        return web.json_response({"error": "a heartbeat must come from the box it describes"}, status=400)
    if request.app[PASSEL].sleeping:
        return web.json_response({"error": "this box is going to sleep"}, status=503)
    return web.json_response(request.app[PASSEL].receive(payload, request.remote or ""))


async def takeover(request: web.Request) -> web.Response:
    passel = request.app[PASSEL]
    try:
        body = await request.json()
        giver = passel.membership.peers.get(str(body.get("from", "")))
        if giver is not None:  # catch up with the giver's table first, so no task blinks out
            await request.app[REPLICA].pull(giver)
        await passel.take_over(int(body["term"]), str(body.get("from", "?")))
    except (ValueError, KeyError, TypeError):
        return web.json_response({"accepted": False, "error": "expected {term, from}"}, status=400)
    except TransferRefused as exc:
        return web.json_response({"accepted": False, "error": str(exc)})
    return web.json_response({"accepted": True, "term": passel.state.term})


async def adopt(request: web.Request) -> web.Response:
    """Take a task row and its staged files from a box that is no longer coordinator (fenced by term)."""
    passel, coordinator = request.app[PASSEL], request.app[COORDINATOR]
    try:
        term = int(request.query.get("term", "-1"))
    except ValueError:
        term = -1
    if not passel.is_coordinator or term > passel.state.term:
        return web.json_response({"adopted": False, "error": "this box is not the current coordinator"})
    scratch = coordinator.staging.scratch()
    try:
        form = await receive_form(request, scratch, file_field="images")
        raw = form.fields.get("task", "")
        if body_digest(raw.encode()) != request.query.get("digest"):
            raise ValueError("the task row does not match its signed digest")
        values, node_url = parse_task(raw)
        adopted = await coordinator.adopt(values, node_url, scratch, request.query.get("from", "?"))
    except (UploadError, ValueError, TypeError) as exc:
        return web.json_response({"adopted": False, "error": f"bad hand-over: {exc}"})
    finally:
        coordinator.staging.discard_scratch(scratch)
    return web.json_response({"adopted": adopted})


async def tasks_since(request: web.Request) -> web.Response:
    """The replica feed: task rows newer than `since` (all of them without it), and the nodes.

    A follower that is up to date waits here up to `wait` seconds for the next change (a long poll),
    and each request with `since` confirms that it holds that version (replication.py)."""
    passel, coordinator = request.app[PASSEL], request.app[COORDINATOR]
    if not passel.is_coordinator:
        return web.json_response({"error": "this box is not the coordinator"}, status=409)
    try:
        since = int(request.query.get("since", "-1"))
        wait = min(max(float(request.query.get("wait", "0")), 0.0), MAX_LONG_POLL_SECONDS)
    except ValueError:
        since, wait = -1, 0.0
    if 0 <= since <= coordinator.book.rev:
        coordinator.replicas.applied(request["peer"], since)
        await coordinator.book.wait_newer(since, wait)
        if not passel.is_coordinator:
            return web.json_response({"error": "this box is not the coordinator"}, status=409)
    feed = export_since(coordinator, since, passel.trust)
    feed["admin_password"] = sealed(request.app[ADMIN_PASSWORD], passel.trust)
    return web.json_response(feed)


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
    view = passel_view(request.app[PASSEL])
    if request.app[PASSEL].is_coordinator:  # how far each follower's copy of the task table has got
        coordinator = request.app[COORDINATOR]
        view["table"] = {"rev": coordinator.book.rev, "replicas": coordinator.replicas.live()}
    return web.json_response(view)


async def transfer(request: web.Request) -> web.Response:
    """Hand the coordinator role to another box (runs on the coordinator; followers relay here)."""
    try:
        body = await request.json() if request.content_type == "application/json" else dict(await request.post())
        target = str(body["to"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": 'expected {"to": BOX_ID}'}, status=400)
    passel = request.app[PASSEL]
    try:
        await passel.transfer(target)
    except TransferRefused as exc:
        return web.json_response({"error": str(exc)}, status=409)
    return web.json_response({"success": True, "coordinator": target, "term": passel.state.term})


async def sleep(request: web.Request) -> web.Response:
    """Called by systemd before a suspend (passel-sleep.service); answers once the goodbye is sent."""
    await request.app[PASSEL].sleep()
    return web.json_response({"success": True})


async def wake(request: web.Request) -> web.Response:
    await request.app[PASSEL].wake()
    return web.json_response({"success": True})


async def set_key(request: web.Request) -> web.Response:
    """`passel key set` on this box: use the new key at once (loopback only)."""
    try:
        request.app[PASSEL].trust.set_key(str((await request.json())["key"]))
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    log.info("This box now uses a new passel key (fingerprint %s)", request.app[PASSEL].trust.fingerprint())
    return web.json_response({"success": True})


def setup_agent_routes(app: web.Application) -> None:
    app.router.add_post(f"{AGENT_API}/heartbeat", heartbeat)
    app.router.add_post(f"{AGENT_API}/takeover", takeover)
    app.router.add_post(f"{AGENT_API}/adopt", adopt)
    app.router.add_get(f"{AGENT_API}/tasks", tasks_since)
    app.router.add_post(f"{AGENT_API}/password", receive_password)
    app.router.add_post(f"{AGENT_API}/sleep", sleep)
    app.router.add_post(f"{AGENT_API}/wake", wake)
    app.router.add_post(f"{AGENT_API}/key", set_key)
    app.router.add_get("/-/passel.json", passel_json)
    app.router.add_post("/-/transfer", transfer)


__all__ = ["setup_agent_routes", "passel_view"]
