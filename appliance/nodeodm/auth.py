"""NodeODM token auth: `?token=T` on every request, POSTs included."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from appliance.nodeodm import replies

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

AUTH_INFO = {"message": "Authentication not available on this node", "loginUrl": None, "registerUrl": None}


def token_matches(request: web.Request, token: str) -> bool:
    """The request's `token` query parameter is `token` (compared in constant time)."""
    return hmac.compare_digest(request.query.get("token", "").encode(), token.encode())


async def auth_info(request: web.Request) -> web.Response:
    return replies.ok(AUTH_INFO)


async def auth_not_available(request: web.Request) -> web.Response:
    return replies.error("Not available")


PROBES: frozenset[Handler] = frozenset({auth_info, auth_not_available})  # PyODM asks them before it has a token


def token_middleware(token: str | None) -> Callable[..., Awaitable[web.StreamResponse]]:
    """NodeODM's own rule, for the simulated node: refuse every route but the `/auth/` probes without
    the right `token` query parameter (HTTP 200). Passel's rules are in appliance/http_rules.py."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token and request.match_info.handler not in PROBES and not token_matches(request, token):
            return replies.error(replies.BAD_TOKEN)
        return await handler(request)

    return middleware


def setup_auth_routes(app: web.Application) -> None:
    """The `/auth/*` endpoints PyODM probes; a NodeODM with a static token has no login."""
    app.router.add_get("/auth/info", auth_info)
    app.router.add_post("/auth/login", auth_not_available)
    app.router.add_post("/auth/register", auth_not_available)
