"""NodeODM's reply shapes.

NodeODM answers errors with HTTP 200 and a JSON `{"error": ...}` body, and PyODM only parses JSON
when the content type says so, so every reply goes through these helpers.
"""

import html
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("passel.api")

TASK_NOT_FOUND_UPLOAD = "Invalid uuid (not found)"
NEED_ONE_FILE = "Need at least 1 file."
NEED_FILE_OR_ZIP = "Need at least 1 file or a zip file url."
INVALID_ASSET = "Invalid asset"
ASSET_NOT_READY = "Asset not ready"
BAD_TOKEN = "Invalid authentication token: token does not match."
CANNOT_RESTART = "Task cannot be restarted"
UUID_MISSING = "uuid param missing."  # cancel, remove or restart without a uuid (a multipart body has none)


def ok(data: Any) -> web.Response:
    """A JSON reply with the content type PyODM insists on."""
    return web.json_response(data)


def error(message: str, **extra: Any) -> web.Response:
    """NodeODM's generic error: HTTP 200 with `{"error": message}`."""
    return web.json_response({"error": message, **extra})


def action_error(message: str) -> web.Response:
    """The error shape of cancel, remove and restart."""
    return web.json_response({"success": False, "error": message})


def success() -> web.Response:
    """The success shape of upload, cancel, remove and restart."""
    return web.json_response({"success": True})


def task_not_found(uuid: str) -> web.Response:
    """What `/task/{uuid}/info` and `/output` answer for an unknown task."""
    return error(f"{uuid} not found")


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Answer an unexpected failure in NodeODM's shape, and log it, instead of a bare 500."""
    try:
        return await handler(request)
    except (web.HTTPException, ConnectionError):
        raise
    except Exception as exc:  # noqa: BLE001 - the server must answer every request
        return internal_error(request, exc)


def internal_error(request: web.Request, exc: Exception) -> web.Response:
    """NodeODM's answer to an unexpected failure; call it where the exception is caught, so the log
    holds its traceback."""
    log.exception("%s %s failed", request.method, request.path)
    return error(f"Internal error: {exc}")


@web.middleware
async def unknown_route_middleware(request: web.Request,
                                   handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Answer a path NodeODM does not serve, or a method it does not serve there, as its Express
    does: 404 with an HTML page, before any token check (aiohttp would say 405, or 'bad token')."""
    if isinstance(request.match_info.http_exception, (web.HTTPNotFound, web.HTTPMethodNotAllowed)):
        page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
                f"</head>\n<body>\n<pre>Cannot {request.method} {html.escape(request.path)}</pre>\n</body>\n</html>\n")
        return web.Response(status=404, text=page, content_type="text/html")
    return await handler(request)
