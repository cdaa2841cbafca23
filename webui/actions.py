"""What the UI's forms do: each calls the same admin API handler as the CLI, on the coordinator.

A form posted to a follower is relayed to the coordinator, where the form token and the session are
checked and the action runs; a failure is shown as a page that says what to do, never as JSON.
After an action the browser is sent back (303) to the page it came from, which says what happened.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from appliance.admin_auth import change_password
from appliance.admin_password import ADMIN_PASSWORD_KEY, FAILURE_DELAY_SECONDS, PasswordRefused
from appliance.passel_admin import join as join_passel
from appliance.passel_admin import transfer as transfer_role
from appliance.box_api import set_priority
from appliance.cluster import admin
from appliance.discovery.passel import PASSEL_KEY
from appliance.relay import RELAY_SESSION_KEY, relay
from webui import security
from webui.render import error_page

Act = Callable[[web.Request], Awaitable[web.Response]]
NODE_ACTIONS: dict[str, tuple[Act, str]] = {"lock": (admin.lock_node, "lock"), "unlock": (admin.unlock_node, "unlock"),
                                            "remove": (admin.remove_node, "forget")}


def _next(form: Mapping[str, Any], default: str) -> str:
    """Where to go back to: a path on this site only, never another site."""
    target = str(form.get("next") or "")
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else default


def _with_done(url: str, code: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}done={code}"


async def on_coordinator(request: web.Request, act: Act, done: str, back: str) -> web.StreamResponse:
    """Run the action here when this box is coordinator (or alone); otherwise relay the form there."""
    passel = request.app.get(PASSEL_KEY)
    if passel is None or passel.is_coordinator:
        return await run_here(request, act, done, back)
    leader = passel.coordinator()
    if leader is None:
        return error_page(request, 503, "No coordinator right now",
                          "The passel is choosing a coordinator, which takes about ten seconds. "
                          "Go back and try the action again then.", back)
    try:
        return await relay(request, leader.url, request.app[RELAY_SESSION_KEY])
    except (aiohttp.ClientError, TimeoutError) as exc:
        return error_page(request, 503, "The coordinator did not answer",
                          f"{leader.name or leader.id} at {leader.url} did not answer ({exc or 'timeout'}). "
                          "If it stays silent another box takes over within about ten seconds; "
                          "then try again.", back)


async def run_here(request: web.Request, act: Act, done: str, back: str) -> web.StreamResponse:
    """Check the form token and session, call the admin API handler, and report its answer."""
    form = await request.post()
    back = _next(form, back)
    reason = security.refusal(request, form)
    if reason is not None:
        return error_page(request, 403, "Not allowed", reason, "/ui/admin" if "sign in" in reason else back)
    reply = await act(request)
    data = json.loads(reply.text) if reply.text else {}
    if reply.status >= 400 or (isinstance(data, dict) and data.get("error")):
        message = str(data.get("error")) if isinstance(data, dict) else reply.text
        return error_page(request, reply.status if reply.status >= 400 else 409, "Not done", message, back)
    raise web.HTTPSeeOther(_with_done(back, done))


async def task_action(request: web.Request) -> web.StreamResponse:
    uuid, action = request.match_info["uuid"], request.match_info["action"]
    if action not in ("move", "cancel", "restart", "remove"):
        raise web.HTTPNotFound()
    back = "/ui/tasks" if action == "remove" else f"/ui/tasks/{uuid}"
    return await on_coordinator(request, admin.task_action, action, back)


async def node_add(request: web.Request) -> web.StreamResponse:
    return await on_coordinator(request, admin.add_node, "add", "/ui/admin")


async def node_action(request: web.Request) -> web.StreamResponse:
    if request.match_info["action"] not in NODE_ACTIONS:
        raise web.HTTPNotFound()
    act, done = NODE_ACTIONS[request.match_info["action"]]
    return await on_coordinator(request, act, done, "/ui/admin")


async def transfer(request: web.Request) -> web.StreamResponse:
    if request.app.get(PASSEL_KEY) is None:
        return error_page(request, 409, "No passel",
                          "Discovery is off on this box, so there is no role to hand over.", "/ui/admin")
    return await on_coordinator(request, transfer_role, "transfer", "/")


async def priority(request: web.Request) -> web.StreamResponse:
    """This box's own priority: changed here, whichever box is coordinator."""
    return await run_here(request, set_priority, "priority", "/ui/admin")


async def join(request: web.Request) -> web.StreamResponse:
    """Join a passel with its pairing code: this box's own key, so done here, never relayed."""
    return await run_here(request, join_passel, "join", "/")


async def password(request: web.Request) -> web.StreamResponse:
    """Set the first password, or change it with the current one; on every live box of the passel."""
    form = await request.post()
    if not security.token_matches(request, form):
        return error_page(request, 403, "Not allowed", security.EXPIRED, "/ui/admin")
    new = str(form.get("new", ""))
    if new != str(form.get("confirm", "")):
        return error_page(request, 400, "Passwords differ", "The new password and its confirmation differ.",
                          "/ui/admin")
    try:
        boxes = await change_password(request.app, str(form.get("old", "")), new, None, 0, whole_passel=True)
    except PasswordRefused as exc:
        return error_page(request, 403, "Password not changed", str(exc), "/ui/admin")
    failed = {name: outcome for name, outcome in boxes.items() if outcome != "changed"}
    if failed:
        listing = "; ".join(f"{name}: {outcome}" for name, outcome in failed.items())
        reply = error_page(request, 200, "Password saved, with exceptions",
                           f"The password is set on this box, but not on: {listing}. Set it there too.",
                           "/ui/admin")
        security.start_session(request, reply)  # whoever sets the password is signed in with it
        return reply
    redirect = web.HTTPSeeOther(_with_done("/ui/admin", "password"))
    security.start_session(request, redirect)
    raise redirect


async def sign_in(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    back = _next(form, "/ui/admin")
    if not security.token_matches(request, form):
        return error_page(request, 403, "Not allowed", security.EXPIRED, "/ui/admin")
    if not request.app[ADMIN_PASSWORD_KEY].is_set:
        return error_page(request, 409, "No password yet", "No admin password is set; set one first.",
                          "/ui/admin")
    if not await request.app[ADMIN_PASSWORD_KEY].check(str(form.get("password", ""))):
        await asyncio.sleep(FAILURE_DELAY_SECONDS)
        return error_page(request, 403, "Wrong password", "That is not the admin password. Try again.",
                          "/ui/admin")
    redirect = web.HTTPSeeOther(_with_done(back, "signin"))
    security.start_session(request, redirect)
    raise redirect


async def sign_out(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if not security.token_matches(request, form):
        return error_page(request, 403, "Not allowed", security.EXPIRED, "/ui/admin")
    redirect = web.HTTPSeeOther(_with_done(_next(form, "/ui/admin"), "signout"))
    security.end_session(redirect)
    raise redirect
