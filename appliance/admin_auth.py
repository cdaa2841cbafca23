"""The admin password: hashed at rest in the state dir; it guards every action once it is set.

Viewing stays open. Actions through the `/-/` admin API need the password as HTTP Basic (any user
name) or `Authorization: Bearer PASSWORD`, so the CLI and scripts keep working; the web UI signs in
once and carries a session cookie whose key is derived from the stored hash (webui/security.py).
Setting the password on one box sets it, with the same salt, on every live box of the passel, so a
session signed on one box is valid on the others and survives a change of coordinator. A box that was
away gets it later from the passel (discovery/password_sync.py): each change bumps a generation, and
every box converges on the highest.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from appliance.keys import ADMIN_PASSWORD, CONFIG, COORDINATOR, PASSEL

PASSWORD_FILE = "admin-password.json"
MIN_LENGTH = 8
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1  # ~16 MB and ~50 ms per check: slow for a guesser, fine for a person
FAILURE_DELAY_SECONDS = 0.5  # after a wrong password, so guessing over the field Wi-Fi stays slow
FAN_OUT_TIMEOUT = aiohttp.ClientTimeout(total=5)
NEEDS_PASSWORD = ("An admin password is set on this passel: pass it with --password or PASSEL_ADMIN_PASSWORD "
                  "(HTTP Basic or 'Authorization: Bearer ...')")


class PasswordRefused(Exception):
    """A password change that cannot be made; the message says why."""


@dataclass(frozen=True)
class PasswordRecord:
    """What is kept on disk: a salted scrypt hash, never the password."""

    salt: str
    hash: str
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P
    generation: int = 0  # one more at every change

    @classmethod
    def make(cls, password: str, salt: str | None, generation: int) -> PasswordRecord:
        salt = salt or secrets.token_hex(16)
        return cls(salt=salt, hash=_scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P), generation=generation)

    def supersedes(self, other: PasswordRecord | None) -> bool:
        """Newer than `other`: a later generation. Two changes made apart (on the two sides of a
        partition) are ordered by their hashes, so every box picks the same one."""
        return other is None or (self.generation, self.hash) > (other.generation, other.hash)

    def matches(self, password: str) -> bool:
        return hmac.compare_digest(_scrypt(password, self.salt, self.n, self.r, self.p), self.hash)

    def session_key(self) -> bytes:
        """32 bytes for the UI's session cookies; a new password signs everyone out."""
        return hmac.new(bytes.fromhex(self.hash), b"passel-ui-session-v1", hashlib.sha256).digest()


def _scrypt(password: str, salt: str, n: int, r: int, p: int) -> str:
    return hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=n, r=r, p=p, maxmem=64 * 1024 * 1024).hex()


class AdminPassword:
    """This box's admin password, loaded at start and replaced atomically on a change."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / PASSWORD_FILE
        self.record: PasswordRecord | None = None

    @property
    def is_set(self) -> bool:
        return self.record is not None

    def load(self) -> None:
        try:
            self.record = PasswordRecord(**json.loads(self.path.read_text()))
        except FileNotFoundError:
            self.record = None

    async def check(self, password: str | None) -> bool:
        """True when no password is set, or this is it (hashed off the event loop)."""
        record = self.record
        if record is None:
            return True
        if not password:
            return False
        return await asyncio.to_thread(record.matches, password)

    async def change(self, old: str | None, new: str, salt: str | None = None, generation: int | None = None) -> None:
        """Set the first password, or change it given the current one; `salt` and `generation` come
        with a change made on another box."""
        if len(new) < MIN_LENGTH:
            raise PasswordRefused(f"The new password must be at least {MIN_LENGTH} characters")
        if self.record is not None and not await self.check(old):
            await asyncio.sleep(FAILURE_DELAY_SECONDS)
            raise PasswordRefused("The current password is wrong")
        next_generation = (self.record.generation if self.record else 0) + 1
        record = await asyncio.to_thread(PasswordRecord.make, new, salt, max(generation or 0, next_generation))
        await asyncio.to_thread(self._save, record)
        self.record = record

    async def adopt(self, record: PasswordRecord) -> bool:
        """Take a record from another box of the passel when it is newer than ours."""
        if not record.supersedes(self.record):
            return False
        await asyncio.to_thread(self._save, record)
        self.record = record
        return True

    def _save(self, record: PasswordRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(record)))
        os.chmod(temporary, 0o600)
        os.replace(temporary, self.path)


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
    if await request.app[ADMIN_PASSWORD].check(given_password(request)):
        return None
    await asyncio.sleep(FAILURE_DELAY_SECONDS)
    return web.json_response({"error": NEEDS_PASSWORD}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="passel admin"'})


async def change_password(app: web.Application, old: str | None, new: str, salt: str | None, generation: int,
                          whole_passel: bool) -> dict[str, str]:
    """Change this box's password, then every live peer's with the same salt and generation; says how
    each box fared."""
    password = app[ADMIN_PASSWORD]
    await password.change(old, new, salt, generation)
    results = {"this box": "changed"}
    passel = app.get(PASSEL)
    if not whole_passel or passel is None or password.record is None:
        return results
    body = {"old": old or "", "new": new, "salt": password.record.salt, "generation": password.record.generation,
            "only_this_box": True}
    session = app[COORDINATOR].registry.session
    token = app[CONFIG].token

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
    return web.json_response({"set": request.app[ADMIN_PASSWORD].is_set})


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
    password = app[ADMIN_PASSWORD] = AdminPassword(app[CONFIG].state_dir)

    async def load(_app: web.Application) -> None:
        await asyncio.to_thread(password.load)

    app.on_startup.append(load)
    app.router.add_get("/-/password", password_state)
    app.router.add_post("/-/password", password_change)
