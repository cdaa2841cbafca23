"""Templates in, HTML out: the page frame, the context contract, and error pages in the UI's style."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from appliance import __version__
from appliance.keys import ADMIN_PASSWORD, IDENTITY
from webui import security
from webui.contexts import Chrome, ErrorPage

log = logging.getLogger("passel.ui")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TEMPLATES_DIR = Path(__file__).parent / "templates"
UI_PREFIX = "/ui/"
API_PREFIXES = ("/-/", "/task/", "/info", "/options", "/auth/", "/static/")
DONE = {  # outcomes shown after an action's redirect; fixed texts, so a crafted link cannot say anything else
    "move": "The task is being moved; it starts again from its uploaded images on the new node.",
    "cancel": "The task was canceled.", "restart": "The task was restarted.", "remove": "The task was removed.",
    "lock": "The node is locked: it takes no new tasks (running ones finish).",
    "unlock": "The node is unlocked: it takes new tasks again.", "add": "The node was added.",
    "forget": "The node was removed.", "transfer": "The coordinator role was handed over.",
    "priority": "This box's priority was changed (until it restarts).", "password": "The admin password was saved.",
    "signin": "Signed in.", "signout": "Signed out.",
}

environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                                 autoescape=jinja2.select_autoescape(["html"]),
                                 trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


def context_of(page: Any) -> dict[str, Any]:
    """A page dataclass as template variables (shallow: no copying of thousands of rows)."""
    return {f.name: getattr(page, f.name) for f in fields(page)}


def is_ui(path: str) -> bool:
    return path == "/" or path.startswith(UI_PREFIX)


def chrome(request: web.Request, page: str, title: str, banner: str | None = None, live: bool = True) -> Chrome:
    """The frame of a page, for this request (its form token, sign-in state and last outcome)."""
    identity = request.app.get(IDENTITY)
    return Chrome(version=__version__, box_name=identity.name if identity else "passel", page=page, title=title,
                  csrf=security.csrf_token(request), password_set=request.app[ADMIN_PASSWORD].is_set,
                  signed_in=security.signed_in(request), banner=banner,
                  notice=DONE.get(request.query.get("done", "")), live=live)


def respond(request: web.Request, page: Any, status: int = 200) -> web.Response:
    """Render a page dataclass with its template, setting the form-token cookie when it is new."""
    html = environment.get_template(page.template).render(context_of(page))
    response = web.Response(text=html, status=status, content_type="text/html",
                            headers={"Cache-Control": "no-store"})
    security.remember_csrf(request, response, page.chrome.csrf)
    return response


def error_page(request: web.Request, status: int, heading: str, message: str, back_url: str = "/") -> web.Response:
    """Any refusal or failure as a page in the UI's style, with the right status and a way back."""
    frame = chrome(request, "", heading, live=False)
    return respond(request, ErrorPage(chrome=frame, status=status, heading=heading, message=message,
                                      back_url=back_url), status)


def _wants_html(request: web.Request) -> bool:
    return is_ui(request.path) or (request.method == "GET" and not request.path.startswith(API_PREFIXES)
                                   and "text/html" in request.headers.get("Accept", ""))


@web.middleware
async def ui_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A person who mistypes an address or hits a bug sees a page that says so, not JSON."""
    if not _wants_html(request):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return error_page(request, 404, "Not found",
                          f"There is no page at {request.path}. It may have been removed, "
                          "or the address is mistyped.")
    except web.HTTPMethodNotAllowed:
        return error_page(request, 405, "Not allowed", "This address does not take that kind of request.")
    except web.HTTPException:
        raise
    except Exception:  # noqa: BLE001 - the page must still say something useful
        log.exception("%s %s failed", request.method, request.path)
        return error_page(request, 500, "Something went wrong",
                          "Passel hit an error drawing this page; it is in this box's log "
                          "(journalctl -u passel). Reload to try again.")
