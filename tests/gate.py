"""A test-only HTTP relay in front of a node that can hold upload requests, to freeze a forward mid-way."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

HOP_HEADERS = {"Host", "Content-Length", "Transfer-Encoding", "Connection"}


class Gate:
    """Relays everything to `upstream`; while closed, `/task/new/upload` requests wait."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.open = asyncio.Event()
        self.open.set()
        self.held = 0
        self.uploads_passed = 0
        self.commits = 0

    async def relay(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/task/new/upload/"):
            self.held += 1
            await self.open.wait()
            self.held -= 1
            if request.transport is None or request.transport.is_closing():
                # The sender died while held: like a node that never saw the whole body.
                raise web.HTTPServiceUnavailable()
            self.uploads_passed += 1
        if request.path.startswith("/task/new/commit/"):
            self.commits += 1
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k not in HOP_HEADERS}
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, self.upstream + request.path_qs, data=body,
                                       headers=headers) as reply:
                payload = await reply.read()
                out = {k: v for k, v in reply.headers.items() if k not in HOP_HEADERS | {"Content-Encoding"}}
                return web.Response(status=reply.status, body=payload, headers=out)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_route("*", "/{tail:.*}", self.relay)
        return app
