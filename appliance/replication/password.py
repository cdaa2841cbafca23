"""The admin password travels with the passel, so no box is left open.

A box that was away when the password was set or changed (asleep, cut off, or new) takes the newest
one from the coordinator along with the replica feed. A coordinator that lacks it (the cut-off side
of a partition won the heal) takes it from any follower that has a newer one. The record, a salted
scrypt hash and never the password, travels sealed with the passel key over the signed agent API.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any

import aiohttp
from aiohttp import web

from appliance.admin_password import ADMIN_PASSWORD_KEY, AdminPassword, PasswordRecord
from appliance.discovery.passel import AGENT_API, PASSEL_KEY, PEER_KEY, Peer
from appliance.discovery.peer_client import PeerClient
from appliance.discovery.trust import Trust, Untrusted

log = logging.getLogger("passel.password")
GIVE_TIMEOUT = aiohttp.ClientTimeout(total=5)


def sealed(password: AdminPassword, trust: Trust) -> str:
    """This box's record, sealed; empty when no password is set."""
    return trust.seal(json.dumps(asdict(password.record))) if password.record is not None else ""


def opened(value: Any, trust: Trust) -> PasswordRecord | None:
    """A sealed record from another box; None when there is none. Raises Untrusted or ValueError."""
    if not value:
        return None
    fields = json.loads(trust.unseal(str(value)))
    if not isinstance(fields, dict):
        raise ValueError("a password record must be an object")
    return PasswordRecord(**fields)


async def agree(password: AdminPassword, trust: Trust, peers: PeerClient, leader: Peer, theirs_sealed: Any) -> None:
    """After a pull from the coordinator: take its record when newer, or give it ours when ours is."""
    theirs = opened(theirs_sealed, trust)
    if theirs is not None and await password.adopt(theirs):
        log.info("The admin password was set or changed elsewhere in the passel; this box now uses it")
    elif password.record is not None and password.record.supersedes(theirs):
        await peers.call("POST", f"{leader.url}{AGENT_API}/password", json_body={"record": sealed(password, trust)},
                         timeout=GIVE_TIMEOUT)


async def receive(request: web.Request) -> web.Response:
    """A follower gives the coordinator a newer record than its own."""
    password, trust = request.app[ADMIN_PASSWORD_KEY], request.app[PASSEL_KEY].trust
    try:
        body = await request.json()
        record = opened(body.get("record") if isinstance(body, dict) else None, trust)
    except (ValueError, TypeError, Untrusted) as exc:
        return web.json_response({"error": f"bad password record: {exc}"}, status=400)
    adopted = record is not None and await password.adopt(record)
    if adopted:
        log.info("The admin password was set or changed on box %s while this box was away; this box now uses it",
                 request[PEER_KEY])
    return web.json_response({"adopted": adopted})
