"""Who may act from the UI: a form token against cross-site posts, and a session once a password is set.

The form token is a random cookie (`passel_csrf`) that every action form repeats; another site can
neither read it nor send it (SameSite=Lax). With an admin password, the signed-in session (an
encrypted aiohttp-session cookie, keyed from the password hash) also holds that token, so a token
planted some other way does not match. Sessions are keyed from the hash, which every box of the
passel shares (admin_auth.py), so a form drawn by one box is accepted by the coordinator.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp_session import AbstractStorage, Session, get_session, new_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from appliance.admin_auth import PasswordRecord
from appliance.keys import ADMIN_PASSWORD

CSRF_COOKIE = "passel_csrf"
SESSION_COOKIE = "passel_session"
SESSION_SECONDS = 12 * 3600  # a field shift; then sign in again
_NEW_CSRF = "passel_new_csrf"
EXPIRED = "This form has expired (or came from another site). Reload the page and try again."
SIGN_IN = "An admin password is set: sign in on the Settings page first."


class PasswordBoundStorage(AbstractStorage):
    """Encrypted cookie sessions whose key follows the admin password; none while no password is set."""

    def __init__(self) -> None:
        super().__init__(cookie_name=SESSION_COOKIE, max_age=SESSION_SECONDS, httponly=True, samesite="Lax")
        self._inner: EncryptedCookieStorage | None = None

    def rekey(self, record: PasswordRecord | None) -> None:
        self._inner = None if record is None else EncryptedCookieStorage(
            record.session_key(), cookie_name=SESSION_COOKIE, max_age=SESSION_SECONDS, httponly=True, samesite="Lax")

    async def load_session(self, request: web.Request) -> Session:
        if self._inner is None:
            return Session(None, data=None, new=True, max_age=self.max_age)
        return await self._inner.load_session(request)

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        if self._inner is None:
            self.save_cookie(response, "")
            return
        await self._inner.save_session(request, response, session)


def csrf_token(request: web.Request) -> str:
    """This browser's form token; a new one is made (and set by `remember_csrf`) when it has none."""
    token = request.cookies.get(CSRF_COOKIE) or request.get(_NEW_CSRF)
    if not token:
        token = request[_NEW_CSRF] = secrets.token_urlsafe(24)
    return token


def remember_csrf(request: web.Request, response: web.StreamResponse) -> None:
    if request.get(_NEW_CSRF):
        response.set_cookie(CSRF_COOKIE, request[_NEW_CSRF], httponly=True, samesite="Lax", path="/")


async def signed_in(request: web.Request) -> bool:
    if not request.app[ADMIN_PASSWORD].is_set:
        return False
    session = await get_session(request)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(session.get("admin")) and bool(cookie) and hmac.compare_digest(str(session.get("csrf", "")), cookie)


def token_matches(request: web.Request, form: Mapping[str, Any]) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(str(form.get("csrf", "")), cookie)


async def refusal(request: web.Request, form: Mapping[str, Any]) -> str | None:
    """Why this form may not act, or None when it may."""
    if not token_matches(request, form):
        return EXPIRED
    if request.app[ADMIN_PASSWORD].is_set and not await signed_in(request):
        return SIGN_IN
    return None


async def sign_in(request: web.Request) -> None:
    """Start an admin session bound to this browser's form token."""
    session = await new_session(request)
    session["admin"], session["csrf"] = True, request.cookies.get(CSRF_COOKIE, "")


async def sign_out(request: web.Request) -> None:
    (await get_session(request)).invalidate()


def setup_sessions(app: web.Application) -> None:
    """Sessions follow the password: a new password re-keys them (and so signs everyone out)."""
    storage = PasswordBoundStorage()
    app[ADMIN_PASSWORD].listeners.append(storage.rekey)
    app.middlewares.append(session_middleware(storage))

