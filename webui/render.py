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
from appliance.admin_password import ADMIN_PASSWORD_KEY
from appliance.discovery.identity import IDENTITY_KEY
from appliance.http_rules import Audience, rules_of
from appliance.nodeodm.replies import internal_error
from webui import security
from webui.contexts import Chrome, ErrorPage

log = logging.getLogger("passel.ui")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TEMPLATES_DIR = Path(__file__).parent / "templates"
DONE = {  # outcomes shown after an action's redirect; fixed texts, so a crafted link cannot say anything else
    "move": "The task is being moved; it starts again from its uploaded images on the new node.",
    "cancel": "The task was canceled.", "restart": "The task was restarted.", "remove": "The task was removed.",
    "lock": "The node is locked: it takes no new tasks (running ones finish).",
    "unlock": "The node is unlocked: it takes new tasks again.", "add": "The node was added.",
    "forget": "The node was removed.", "transfer": "The coordinator role was handed over.",
    "priority": "This box's priority was changed (until it restarts).", "password": "The admin password was saved.",
    "signin": "Signed in.", "signout": "Signed out.",
    "join": "This box joined the passel. Its boxes are shown below; their nodes appear within a few seconds.",
}

environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                                 autoescape=jinja2.select_autoescape(["html"]),
                                 trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


def context_of(page: Any) -> dict[str, Any]:
    """A page dataclass as template variables (shallow: no copying of thousands of rows)."""
    return {f.name: getattr(page, f.name) for f in fields(page)}


def chrome(request: web.Request, page: str, title: str, banner: str | None = None, live: bool = True) -> Chrome:
    """The frame of a page, for this request (its form token, sign-in state and last outcome)."""
    identity = request.app.get(IDENTITY_KEY)
    return Chrome(version=__version__, box_name=identity.name if identity else "passel", page=page, title=title,
                  csrf=security.csrf_token(request), password_set=request.app[ADMIN_PASSWORD_KEY].is_set,
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


def _for_people(request: web.Request) -> bool:
    audience = rules_of(request).audience
    return audience is Audience.PEOPLE or (audience is Audience.EITHER
                                           and "text/html" in request.headers.get("Accept", ""))


@web.middleware
async def failure_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure is answered in its reader's language: a person who mistypes an address or hits a
    bug sees a page that says so; a program gets NodeODM's JSON error. The route's rules are read only
    once something failed, so an answered request pays nothing here but the `try`."""
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
        if not _for_people(request):
            raise
        if isinstance(exc, web.HTTPMethodNotAllowed):
            return error_page(request, 405, "Not allowed", "This address does not take that kind of request.")
        return error_page(request, 404, "Not found",
                          f"There is no page at {request.path}. It may have been removed, "
                          "or the address is mistyped.")
    except web.HTTPException:
        raise
    except Exception as exc:
        if not _for_people(request):
            if isinstance(exc, ConnectionError):  # the client is gone: nobody to answer
                raise
            return internal_error(request, exc)
        log.exception("%s %s failed", request.method, request.path)
        return error_page(request, 500, "Something went wrong",
                          "Passel hit an error drawing this page; it is in this box's log "
                          "(journalctl -u passel). Reload to try again.")
