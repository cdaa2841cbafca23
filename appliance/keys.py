"""Typed keys for what the aiohttp application holds, declared once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from appliance.cluster.coordinator import Coordinator
    from appliance.config import Config

CONFIG: web.AppKey["Config"] = web.AppKey("config")
COORDINATOR: web.AppKey["Coordinator"] = web.AppKey("coordinator")
