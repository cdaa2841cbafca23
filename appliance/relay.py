"""Any box is an entry point: a box that is not coordinator relays NodeODM calls to the one that is,
streaming both ways so a gigabyte upload never sits in a follower's memory."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from appliance.discovery.membership import LEASE_SECONDS
from appliance.discovery.passel import Passel, while_alive
from appliance.nodeodm import replies
from appliance.role import BoxUnreachable

log = logging.getLogger("passel.relay")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host"}
CHUNK_BYTES = 256 * 1024
RELAY_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_read=120)
NO_COORDINATOR = "This passel is choosing its coordinator; try again in a few seconds."
RESENDABLE = {"GET", "HEAD"}  # asking twice does nothing twice: sent again to the next coordinator


@dataclass
class Answering:
    """The reply a relay has begun to send its client, once it has: after that, no other can be sent."""

    reply: web.StreamResponse | None = None


async def relay(request: web.Request, base_url: str, session: aiohttp.ClientSession,
                answering: Answering | None = None) -> web.StreamResponse:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    body = request.content.iter_chunked(CHUNK_BYTES) if request.body_exists else None
    async with session.request(request.method, base_url + request.path_qs, headers=headers, data=body,
                               timeout=RELAY_TIMEOUT, allow_redirects=False) as upstream:
        reply = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in HOP_BY_HOP:
                reply.headers.add(name, value)
        if answering is not None:
            answering.reply = reply
        await reply.prepare(request)
        async for chunk in upstream.content.iter_chunked(CHUNK_BYTES):
            await reply.write(chunk)
        await reply.write_eof()
        return reply


async def relay_to_coordinator(request: web.Request, handler: Handler, passel: Passel) -> web.StreamResponse:
    """Relay a request for the coordinator (appliance/http_rules.py says which) to it, waiting out an
    election; `handler` answers it instead when this box becomes coordinator meanwhile.

    A request is held no longer than the coordinator is: once this box declares it gone, the request is
    cut and the client answered at once (a NodeODM error, so ODM sends its work again), unless asking
    again can do nothing twice; then the next coordinator gets it."""
    failed: str | None = None
    for _ in range(2):  # a second try only after the first coordinator could not have acted on it
        if not await passel.wait_for_coordinator(LEASE_SECONDS + 2, not_id=failed):
            return replies.error(NO_COORDINATOR)
        if passel.is_coordinator:
            return await handler(request)
        peer = passel.coordinator()
        if peer is None:
            return replies.error(NO_COORDINATOR)
        answering = Answering()
        try:
            return await while_alive(peer, relay(request, peer.url, request.app[RELAY_SESSION_KEY], answering))
        except aiohttp.ClientConnectorError:
            # Nothing was sent: the coordinator's process is gone. Hold the request through the
            # election instead of failing it, then send it to the new coordinator.
            failed = peer.id
        except BoxUnreachable as exc:  # declared gone while it had the request
            if answering.reply is not None:
                return _broken_off(request, answering.reply, str(exc))
            if request.method not in RESENDABLE:
                return replies.error(f"The coordinator ({peer.name} at {peer.url}) was declared gone while it had "
                                     "this request; try again in a few seconds.")
            failed = peer.id
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            if answering.reply is not None:
                return _broken_off(request, answering.reply, str(exc) or "timeout")
            return replies.error(f"The coordinator ({peer.name} at {peer.url}) stopped answering: "
                                 f"{exc or 'timeout'}; try again in a few seconds.")
    return replies.error(NO_COORDINATOR)


def _broken_off(request: web.Request, reply: web.StreamResponse, why: str) -> web.StreamResponse:
    """The client's reply had begun, so no error can replace it: close its connection, so it sees the
    reply broken off (and asks again) rather than ended as if whole."""
    log.info("Relayed %s %s broken off part-way: %s", request.method, request.path, why)
    if request.transport is not None:
        request.transport.close()
    return reply


RELAY_SESSION_KEY: web.AppKey[aiohttp.ClientSession] = web.AppKey("relay_session")  # where the app holds it
