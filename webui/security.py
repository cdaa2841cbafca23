"""Who may act from the UI: a form token against cross-site posts, and a session once a password is set.

The form token is a random cookie (`passel_csrf`) that every action form repeats; another site can
neither read it nor send it along (SameSite=Lax). With an admin password, signing in sets a session
cookie signed with HMAC-SHA256 under a key derived from the password hash, binding the form token and
the time of sign-in. Every box of the passel holds the same hash (admin_auth.py), so a form drawn by
one box is accepted by the coordinator, and a new password signs everyone out.

aiohttp-session was the first choice, but it stores state under plain string request keys, which
aiohttp 3.14 warns about on every request; a signed cookie needs no server state at all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from appliance.admin_password import ADMIN_PASSWORD_KEY, PasswordRecord

CSRF_COOKIE = "passel_csrf"
SESSION_COOKIE = "passel_session"
SESSION_SECONDS = 12 * 3600  # a field shift; then sign in again
CLOCK_SLACK_SECONDS = 300  # boxes' clocks differ a little; a session "from the future" within this is fine
EXPIRED = "This form has expired (or came from another site). Reload the page and try again."
SIGN_IN = "An admin password is set: sign in on the Settings page first."


def csrf_token(request: web.Request) -> str:
    """This browser's form token, or a new one that `remember_csrf` then sets."""
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)


def remember_csrf(request: web.Request, response: web.StreamResponse, token: str) -> None:
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="Lax", path="/")


def token_matches(request: web.Request, form: Mapping[str, Any]) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    # as bytes: compare_digest refuses str with non-ASCII characters, which a hostile form may carry
    return bool(cookie) and hmac.compare_digest(str(form.get("csrf", "")).encode(), cookie.encode())


def _mac(record: PasswordRecord, payload: bytes) -> str:
    return hmac.new(record.session_key(), payload, hashlib.sha256).hexdigest()


def _session_value(record: PasswordRecord, csrf: str) -> str:
    payload = json.dumps({"csrf": csrf, "at": int(time.time())}).encode()
    return base64.urlsafe_b64encode(payload).decode() + "." + _mac(record, payload)


def signed_in(request: web.Request) -> bool:
    """A session signed under the current password, recent, and bound to this browser's form token."""
    record = request.app[ADMIN_PASSWORD_KEY].record
    encoded, _, mac = request.cookies.get(SESSION_COOKIE, "").partition(".")
    csrf = request.cookies.get(CSRF_COOKIE, "")
    if record is None or not mac or not csrf:
        return False
    try:
        payload = base64.urlsafe_b64decode(encoded.encode())
        session = json.loads(payload)
        age = time.time() - float(session["at"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        return False
    return (hmac.compare_digest(_mac(record, payload), mac) and -CLOCK_SLACK_SECONDS < age < SESSION_SECONDS
            and hmac.compare_digest(str(session.get("csrf", "")), csrf))


def refusal(request: web.Request, form: Mapping[str, Any]) -> str | None:
    """Why this form may not act, or None when it may."""
    if not token_matches(request, form):
        return EXPIRED
    if request.app[ADMIN_PASSWORD_KEY].is_set and not signed_in(request):
        return SIGN_IN
    return None


def start_session(request: web.Request, response: web.StreamResponse) -> None:
    """Sign this browser in (its form token must already be set)."""
    record = request.app[ADMIN_PASSWORD_KEY].record
    if record is not None:
        response.set_cookie(SESSION_COOKIE, _session_value(record, request.cookies.get(CSRF_COOKIE, "")),
                            max_age=SESSION_SECONDS, httponly=True, samesite="Lax", path="/")


def end_session(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/")
