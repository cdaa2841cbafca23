"""What only this box can answer or change: its own facts (`/-/box.json`) and its election priority.

Every box answers these itself (their rules in appliance/http_rules.py do not relay them): the passel page shows each
box's cores, memory and free disk from them, and `passel doctor` compares clocks with them.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from appliance import __version__
from appliance.config import CONFIG_KEY
from appliance.discovery.identity import IDENTITY_KEY
from appliance.discovery.passel import PASSEL_KEY
from appliance.netaddr import local_ipv4_addresses

PRIORITY_NOTE = "until this box restarts; set --priority or PASSEL_PRIORITY to keep it"


def own_addresses() -> list[str]:
    """This box's IPv4 addresses, loopback included (a node on 127.0.0.1 is on this box too), and
    link-local ones (a bare switch with no DHCP server gives nothing else)."""
    return ["127.0.0.1", *local_ipv4_addresses()]


def _existing(path: Path) -> Path:
    """The path, or its nearest existing parent (a state dir not made yet still has a disk)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def box_facts(state_dir: Path) -> dict[str, Any]:
    """Cores, memory, the disk that holds staging, and the clock: what a responder checks first."""
    memory = psutil.virtual_memory()
    disk = shutil.disk_usage(_existing(state_dir))
    return {"time": time.time(), "version": __version__, "cores": os.cpu_count(),
            "memory_total": memory.total, "memory_available": memory.available,
            "disk_free": disk.free, "disk_total": disk.total, "addresses": own_addresses()}


async def box_json(request: web.Request) -> web.Response:
    identity = request.app.get(IDENTITY_KEY)
    passel = request.app.get(PASSEL_KEY)
    facts = box_facts(request.app[CONFIG_KEY].state_dir)
    return web.json_response(facts | {
        "id": identity.id if identity else None, "name": identity.name if identity else None,
        "priority": passel.priority if passel else request.app[CONFIG_KEY].priority,
        "role": passel.state.role if passel else "coordinator"})


async def set_priority(request: web.Request) -> web.Response:
    """Change this box's election priority now; heartbeats carry it from the next beat on."""
    passel = request.app.get(PASSEL_KEY)
    if passel is None:
        return web.json_response({"error": "Discovery is off on this box, so it takes part in no election"}, status=409)
    try:
        body = await request.json() if request.content_type == "application/json" else dict(await request.post())
        priority = int(body["priority"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": 'expected {"priority": WHOLE_NUMBER}'}, status=400)
    passel.priority = priority
    return web.json_response({"success": True, "priority": priority, "note": PRIORITY_NOTE})


def setup_box_routes(app: web.Application) -> None:
    app.router.add_get("/-/box.json", box_json)
    app.router.add_post("/-/priority", set_priority)
