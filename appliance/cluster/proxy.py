"""Streaming pass-through of task output and downloads from the node that holds the task."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from appliance.cluster.registry import NodeState

PASSED_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Content-Disposition", "Accept-Ranges",
                  "Last-Modified", "ETag")
CHUNK_BYTES = 256 * 1024
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_read=60)


async def stream_from_node(request: web.Request, node: NodeState, path: str,
                           refuse_errors: bool = False) -> web.StreamResponse:
    """Relay `path` from the node, byte for byte, with Range support and no buffering.

    Raises aiohttp.ClientError when the node cannot be reached before anything was sent, and, with
    `refuse_errors`, aiohttp.ClientResponseError when it answers with an error (a caller with another
    copy to offer tries that instead of relaying the node's refusal).
    """
    async with node.client.session.get(node.client.url(path), headers=range_headers(request),
                                       timeout=DOWNLOAD_TIMEOUT) as upstream:
        if refuse_errors and upstream.status >= 400:
            raise aiohttp.ClientResponseError(upstream.request_info, upstream.history, status=upstream.status,
                                              message="the node does not have it")
        return await relay(request, upstream)


def range_headers(request: web.Request) -> dict[str, str]:
    """What a client asked of a part of the file, passed on to where the file is."""
    return {k: v for k, v in request.headers.items() if k in ("Range", "If-Range")}


async def relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    """Send `upstream`'s status, file headers and body on to the client, chunk by chunk."""
    reply = web.StreamResponse(status=upstream.status)
    for name in PASSED_HEADERS:
        if name in upstream.headers:
            reply.headers[name] = upstream.headers[name]
    await reply.prepare(request)
    async for chunk in upstream.content.iter_chunked(CHUNK_BYTES):
        await reply.write(chunk)
    await reply.write_eof()
    return reply
