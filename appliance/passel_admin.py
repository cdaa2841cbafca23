"""The passel's admin API: how this box sees the passel, handing the coordinator role on, and
joining a passel with its pairing code (docs/pairing.md).

The web UI calls these same functions, so a page and `passel status --json` cannot disagree."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import web

from appliance.clock import boottime
from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.config import CONFIG_KEY, Config
from appliance.discovery.membership import Peer
from appliance.discovery.passel import AGENT_API, HEARTBEAT_TIMEOUT, PASSEL_KEY, Passel, TransferRefused
from appliance.discovery.peer_client import PeerClient
from appliance.discovery.trust import Trust, Untrusted, grouped, parse_typed_code, save_key

log = logging.getLogger("passel.trust")


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


def members(passel: Passel) -> list[Peer]:
    """The other boxes that proved they hold this box's key since it started, alive now or not."""
    return [p for p in passel.membership.peers.values() if p.last_heard is not None and not p.foreign]


def strangers(passel: Passel) -> list[Peer]:
    """Boxes on the network whose calls showed they hold another key: another passel's boxes."""
    return sorted((p for p in passel.membership.peers.values() if p.foreign), key=lambda p: p.name or p.id)


def join_refusal(passel: Passel | None, config: Config) -> tuple[int, str] | None:
    """Why this box may not join a passel from its web page, or None while it may: only a box alone
    in its passel joins, so nobody can pull a working box out of its passel by typing another code."""
    if passel is None:
        return 409, "Discovery is off on this box (--no-discovery), so it cannot join a passel."
    if config.key:
        return 409, (f"This box's passel key is set by {config.sources.get('key', 'its settings')}, "
                     "so it cannot be changed here; change it there.")
    known = members(passel)
    if known:
        names = ", ".join(sorted(p.name or p.id for p in known))
        return 409, (f"This box is already in a passel, with {names}. A box leaves its passel only from its "
                     "own terminal (passel key set CODE), so nobody can pull it out from the network.")
    return None


def use_key(passel: Passel, code: str) -> None:
    """Sign and check every call with this key from now on (its file is saved by the caller)."""
    passel.trust.set_key(code)
    log.info("This box now uses a new passel key (fingerprint %s)", passel.trust.fingerprint())


async def _holders(passel: Passel, code: str) -> list[tuple[Peer, dict[str, Any]]]:
    """The boxes on the network that answer a heartbeat signed with `code`, and their answers: a
    code nobody holds is a mistyped one, refused before anything changes."""
    trying = PeerClient(passel.peers.session, Trust(code, passel.identity.id), lambda: passel.state.term)

    async def answer(peer: Peer) -> dict[str, Any] | None:
        try:
            status, reply = await trying.call("POST", f"{peer.url}{AGENT_API}/heartbeat", json_body=passel.payload(),
                                              timeout=HEARTBEAT_TIMEOUT)
        except (aiohttp.ClientError, TimeoutError, ValueError, Untrusted):
            return None
        return reply if status == 200 and isinstance(reply, dict) and reply.get("id") == peer.id else None

    seen = list(passel.membership.peers.values())
    replies = await asyncio.gather(*(answer(p) for p in seen))
    return [(peer, reply) for peer, reply in zip(seen, replies, strict=True) if reply is not None]


async def join(request: web.Request) -> web.Response:
    """Join the passel whose pairing code is given, while this box is alone: a box on the network
    must answer to the code; then it is kept in the key file (it survives a restart) and used at once."""
    passel, config = request.app.get(PASSEL_KEY), request.app[CONFIG_KEY]
    try:
        body = await request.json() if request.content_type == "application/json" else dict(await request.post())
        typed = str(body["code"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": 'expected {"code": PAIRING_CODE}'}, status=400)
    refusal = join_refusal(passel, config)
    if refusal is not None:
        return web.json_response({"error": refusal[1]}, status=refusal[0])
    assert passel is not None  # join_refusal says so
    try:
        code = parse_typed_code(typed)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    if Trust(code, "").fingerprint() == passel.trust.fingerprint():
        return web.json_response({"error": "This box already uses that code: it is a box of that passel, and "
                                           "other boxes join it with that code."}, status=409)
    if not passel.membership.peers:
        return web.json_response({"error": "No other box is on this network yet, so the code cannot be checked. "
                                           "Connect this box to the passel's network, wait a few seconds and try "
                                           "again."}, status=409)
    holders = await _holders(passel, code)
    if not holders:
        return web.json_response({"error": "No box on this network answers to that code. Check it against the "
                                           "Settings page of a box of the passel and type it again."}, status=400)
    refusal = join_refusal(passel, config)  # asked again: another join may have finished meanwhile
    if refusal is not None:
        return web.json_response({"error": refusal[1]}, status=refusal[0])
    save_key(config.state_dir, grouped(code))
    use_key(passel, code)
    for peer, reply in holders:  # already heard with the new key: shown at once, not at the next heartbeat
        passel.membership.heard(reply, peer.address)
    return web.json_response({"success": True, "boxes": sorted(peer.name or peer.id for peer, _ in holders)})


def setup_passel_admin_routes(app: web.Application) -> None:
    app.router.add_get("/-/passel.json", passel_json)
    app.router.add_post("/-/transfer", transfer)
