"""This box's own election state, kept on disk so a restarted box remembers the terms it has seen."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from appliance.discovery.election import FOLLOWER

TERM_FILE = "term.json"


@dataclass
class RoleState:
    role: str = FOLLOWER
    term: int = 0
    coordinator_id: str | None = None


def load_term(state_dir: Path) -> int:
    try:
        return int(json.loads((state_dir / TERM_FILE).read_text())["term"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def save_term(state_dir: Path, term: int) -> None:
    """Terms only grow; written atomically so a crash never leaves a torn file."""
    path = state_dir / TERM_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"term": term}))
    os.replace(temporary, path)
