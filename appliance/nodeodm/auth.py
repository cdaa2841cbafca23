"""NodeODM token auth: `?token=T` on every request, POSTs included."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from appliance.nodeodm import replies

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

AUTH_INFO = {"message": "Authentication not available on this node", "loginUrl": None, "registerUrl": None}


def token_middleware(token: str | None, exempt_prefixes: tuple[str, ...] = (),
                     exempt_paths: frozenset[str] = frozenset()) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Refuse requests without the right `token` query parameter, as NodeODM does (HTTP 200)."""
    exempt = ("/auth/", *exempt_prefixes)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token and request.path not in exempt_paths and not request.path.startswith(exempt):
            given = request.query.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return replies.error(replies.BAD_TOKEN)
        return await handler(request)

    return middleware


async def auth_info(request: web.Request) -> web.Response:
    return replies.ok(AUTH_INFO)


async def auth_not_available(request: web.Request) -> web.Response:
    return replies.error("Not available")


def setup_auth_routes(app: web.Application) -> None:
    """The `/auth/*` endpoints PyODM probes; a NodeODM with a static token has no login."""
    app.router.add_get("/auth/info", auth_info)
    app.router.add_post("/auth/login", auth_not_available)
    app.router.add_post("/auth/register", auth_not_available)
