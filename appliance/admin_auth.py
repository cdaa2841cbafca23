"""The admin password: hashed at rest in the state dir; it guards every action once it is set.

Viewing stays open. Actions through the `/-/` admin API need the password as HTTP Basic (any user
name) or `Authorization: Bearer PASSWORD`, so the CLI and scripts keep working; the web UI signs in
once and carries a session cookie whose key is derived from the stored hash (webui/security.py).
Setting the password on one box sets it, with the same salt, on every live box of the passel, so a
session signed on one box is valid on the others and survives a change of coordinator. A box that was
away gets it later from the passel (replication/password.py): each change bumps a generation, and
every box converges on the highest.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

import aiohttp
from aiohttp import web

from appliance.admin_password import ADMIN_PASSWORD_KEY, FAILURE_DELAY_SECONDS, AdminPassword, PasswordRefused
from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.config import CONFIG_KEY
from appliance.discovery.passel import PASSEL_KEY

FAN_OUT_TIMEOUT = aiohttp.ClientTimeout(total=5)
NEEDS_PASSWORD = ("An admin password is set on this passel: pass it with --password or PASSEL_ADMIN_PASSWORD "
                  "(HTTP Basic or 'Authorization: Bearer ...')")


def given_password(request: web.Request) -> str | None:
    """The password in an Authorization header: Basic (any user) or Bearer."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[2] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


async def password_refusal(request: web.Request) -> web.Response | None:
    """None when the request carries the admin password, or none is set; else a 401, after a delay.
    Which routes ask for it is in appliance/http_rules.py."""
    if await request.app[ADMIN_PASSWORD_KEY].check(given_password(request)):
        return None
    await asyncio.sleep(FAILURE_DELAY_SECONDS)
    return web.json_response({"error": NEEDS_PASSWORD}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="passel admin"'})


async def change_password(app: web.Application, old: str | None, new: str, salt: str | None, generation: int,
                          whole_passel: bool) -> dict[str, str]:
    """Change this box's password, then every live peer's with the same salt and generation; says how
    each box fared."""
    password = app[ADMIN_PASSWORD_KEY]
    await password.change(old, new, salt, generation)
    results = {"this box": "changed"}
    passel = app.get(PASSEL_KEY)
    if not whole_passel or passel is None or password.record is None:
        return results
    body = {"old": old or "", "new": new, "salt": password.record.salt, "generation": password.record.generation,
            "only_this_box": True}
    session = app[COORDINATOR_KEY].registry.session
    token = app[CONFIG_KEY].token

    async def one(url: str) -> str:
        try:
            async with session.post(f"{url}/-/password", json=body, params={"token": token} if token else None,
                                    timeout=FAN_OUT_TIMEOUT) as reply:
                answer = await reply.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return f"not changed: {exc or 'no answer'}"
        return "changed" if isinstance(answer, dict) and answer.get("success") else \
            f"not changed: {answer.get('error', 'refused') if isinstance(answer, dict) else 'refused'}"

    peers = passel.membership.alive()
    for peer, outcome in zip(peers, await asyncio.gather(*(one(p.url) for p in peers)), strict=True):
        results[peer.name or peer.id] = outcome
    return results


async def _read(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return dict(await request.post())


async def password_state(request: web.Request) -> web.Response:
    return web.json_response({"set": request.app[ADMIN_PASSWORD_KEY].is_set})


async def password_change(request: web.Request) -> web.Response:
    """Set (the first time) or change (with the old one) the admin password, on the whole passel."""
    body = await _read(request)
    try:
        boxes = await change_password(request.app, str(body.get("old") or ""), str(body.get("new") or ""),
                                      str(body["salt"]) if body.get("salt") else None,
                                      int(body.get("generation") or 0), whole_passel=not body.get("only_this_box"))
    except PasswordRefused as exc:
        return web.json_response({"error": str(exc)}, status=403)
    except (ValueError, TypeError):
        return web.json_response({"error": "salt must be hex and generation a whole number"}, status=400)
    return web.json_response({"success": True, "boxes": boxes})


def setup_admin_auth(app: web.Application) -> None:
    """The password endpoints; the stored hash is read at start-up."""
    password = app[ADMIN_PASSWORD_KEY] = AdminPassword(app[CONFIG_KEY].state_dir)

    async def load(_app: web.Application) -> None:
        await asyncio.to_thread(password.load)

    app.on_startup.append(load)
    app.router.add_get("/-/password", password_state)
    app.router.add_post("/-/password", password_change)
