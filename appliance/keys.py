"""Typed keys for what the aiohttp application holds, declared once."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from appliance.admin_auth import AdminPassword
    from appliance.cluster.coordinator import Coordinator
    from appliance.cluster.reconciler import Reconciler
    from appliance.config import Config
    from appliance.discovery.identity import BoxIdentity
    from appliance.discovery.passel import Passel
    from appliance.discovery.replica import ReplicaFollower
    from webui.boxes import BoxFactsCache

CONFIG: web.AppKey["Config"] = web.AppKey("config")
COORDINATOR: web.AppKey["Coordinator"] = web.AppKey("coordinator")
PASSEL: web.AppKey["Passel"] = web.AppKey("passel")
RELAY_SESSION: web.AppKey["aiohttp.ClientSession"] = web.AppKey("relay_session")
IDENTITY: web.AppKey["BoxIdentity"] = web.AppKey("identity")
REPLICA: web.AppKey["ReplicaFollower"] = web.AppKey("replica")
RECONCILER: web.AppKey["Reconciler"] = web.AppKey("reconciler")
ADMIN_PASSWORD: web.AppKey["AdminPassword"] = web.AppKey("admin_password")
BOX_FACTS: web.AppKey["BoxFactsCache"] = web.AppKey("box_facts")
