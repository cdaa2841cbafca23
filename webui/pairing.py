"""Pairing from the browser: the "Join a passel" offer on a lone box's page, and the pairing code on the
Settings page of every box of the passel. docs/pairing.md says who may see and use which.
"""

from __future__ import annotations

from aiohttp import web

from appliance.admin_password import ADMIN_PASSWORD_KEY
from appliance.config import CONFIG_KEY
from appliance.discovery.passel import PASSEL_KEY
from appliance.discovery.trust import grouped, read_key
from appliance.passel_admin import join_refusal, strangers
from webui import security
from webui.contexts import JoinOffer, Pairing


def join_offer(request: web.Request) -> JoinOffer | None:
    """The join form, on the page of a box that may join (it is alone; appliance/passel_admin.py)."""
    passel = request.app.get(PASSEL_KEY)
    if passel is None or join_refusal(passel, request.app[CONFIG_KEY]) is not None:
        return None
    return JoinOffer(strangers=[p.name or p.id for p in strangers(passel)])


def pairing(request: web.Request) -> Pairing | None:
    """The passel's pairing code, shown to anyone until an admin password is set, then to admins only."""
    passel, config = request.app.get(PASSEL_KEY), request.app[CONFIG_KEY]
    if passel is None:
        return None
    try:
        code = read_key(config.key, config.state_dir)
    except (OSError, ValueError):  # a key file damaged since the start: the page still draws, without it
        return None
    if code is None:
        return None
    may_see = not request.app[ADMIN_PASSWORD_KEY].is_set or security.signed_in(request)
    return Pairing(code=grouped(code) if may_see else None, fingerprint=passel.trust.fingerprint())
