"""A box's stable identity: an id made once and kept in the state directory, and a friendly name."""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

IDENTITY_FILE = "box.json"


@dataclass(frozen=True)
class BoxIdentity:
    id: str  # 12 hex digits: short enough for mDNS instance names, unique enough for a field passel
    name: str

    @property
    def instance(self) -> str:
        """The mDNS instance name: stable across restarts, readable in a service browser."""
        return f"{self.name} ({self.id[:6]})"[:63]

    @property
    def hostname(self) -> str:
        """This box's own mDNS host name."""
        return f"passel-{self.id}.local."


def _clean_name(name: str) -> str:
    name = re.sub(r"[^\w .-]", "", name).strip()
    return name[:40] or "passel-box"


def load_identity(state_dir: Path, name: str | None = None) -> BoxIdentity:
    """Read the box's id, creating it on first start; a name given now replaces the stored one."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / IDENTITY_FILE
    stored: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            stored = {}
    box_id = stored.get("id") if re.fullmatch(r"[0-9a-f]{12}", str(stored.get("id", ""))) else uuid.uuid4().hex[:12]
    identity = BoxIdentity(id=box_id, name=_clean_name(name or stored.get("name") or socket.gethostname()))
    if stored != {"id": identity.id, "name": identity.name}:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"id": identity.id, "name": identity.name}))
        os.replace(temporary, path)
    return identity


IDENTITY_KEY: web.AppKey[BoxIdentity] = web.AppKey("identity")  # where the app holds it
