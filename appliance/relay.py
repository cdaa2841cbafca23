"""Any box is an entry point: a box that is not coordinator relays NodeODM calls to the one that is,
streaming both ways so a gigabyte upload never sits in a follower's memory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from appliance.discovery.membership import LEASE_SECONDS
from appliance.discovery.passel import Passel
from appliance.nodeodm import replies

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host"}
CHUNK_BYTES = 256 * 1024
RELAY_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_read=120)
NO_COORDINATOR = "This passel is choosing its coordinator; try again in a few seconds."


async def relay(request: web.Request, base_url: str, session: aiohttp.ClientSession) -> web.StreamResponse:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    body = request.content.iter_chunked(CHUNK_BYTES) if request.body_exists else None
    async with session.request(request.method, base_url + request.path_qs, headers=headers, data=body,
                               timeout=RELAY_TIMEOUT, allow_redirects=False) as upstream:
        reply = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in HOP_BY_HOP:
                reply.headers.add(name, value)
        await reply.prepare(request)
        async for chunk in upstream.content.iter_chunked(CHUNK_BYTES):
            await reply.write(chunk)
        await reply.write_eof()
        return reply


async def relay_to_coordinator(request: web.Request, handler: Handler, passel: Passel) -> web.StreamResponse:
    """Relay a request for the coordinator (appliance/http_rules.py says which) to it, waiting out an
    election; `handler` answers it instead when this box becomes coordinator meanwhile."""
    failed: str | None = None
    for _ in range(2):  # a second try only after the first coordinator refused to connect
        if not await passel.wait_for_coordinator(LEASE_SECONDS + 2, not_id=failed):
            return replies.error(NO_COORDINATOR)
        if passel.is_coordinator:
            return await handler(request)
        peer = passel.coordinator()
        if peer is None:
            return replies.error(NO_COORDINATOR)
        try:
            return await relay(request, peer.url, request.app[RELAY_SESSION_KEY])
        except aiohttp.ClientConnectorError:
            # Nothing was sent: the coordinator's process is gone. Hold the request through the
            # election instead of failing it, then send it to the new coordinator.
            failed = peer.id
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            return replies.error(f"The coordinator ({peer.name} at {peer.url}) stopped answering: "
                                 f"{exc or 'timeout'}; try again in a few seconds.")
    return replies.error(NO_COORDINATOR)


RELAY_SESSION_KEY: web.AppKey[aiohttp.ClientSession] = web.AppKey("relay_session")  # where the app holds it
