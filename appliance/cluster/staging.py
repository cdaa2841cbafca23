"""Staged uploads on the coordinator's disk: one directory per task, kept until the task is done.

The staged copy is what lets a task be re-sent or moved without asking the client again.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import shutil
from pathlib import Path

from appliance.nodeodm.uploads import PARTIAL_SUFFIX

log = logging.getLogger("passel.staging")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".tif", ".tiff", ".png", ".dng", ".raw")


def is_image(name: str) -> bool:
    """NodeODM counts images only: not seed.zip, not the .txt files that go to gcp/."""
    return name.lower().endswith(IMAGE_SUFFIXES)


class Staging:
    """Owns `<state>/staging/<uuid>/`."""

    def __init__(self, root: Path, min_free_bytes: int) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes

    def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, uuid: str) -> Path:
        if not _UUID.match(uuid):
            raise ValueError(f"not a task uuid: {uuid!r}")
        return self.root / uuid

    def create(self, uuid: str) -> Path:
        path = self.path(uuid)
        path.mkdir(parents=True, exist_ok=False)
        return path

    def files(self, uuid: str) -> list[Path]:
        """The complete files of a task, in name order (partial uploads are not files yet)."""
        path = self.path(uuid)
        if not path.is_dir():
            return []
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.endswith(PARTIAL_SUFFIX))

    def uuids(self) -> list[str]:
        """The tasks that have a staging directory here (not the scratch of a one-shot upload)."""
        entries = self.root.iterdir() if self.root.is_dir() else []
        return sorted(e.name for e in entries if _UUID.match(e.name) and e.is_dir())

    def remove(self, uuid: str) -> None:
        shutil.rmtree(self.path(uuid), ignore_errors=True)

    def clean(self, known: set[str]) -> list[str]:
        """At start: drop partial files, and directories no task row owns. Returns what was removed."""
        removed: list[str] = []
        for entry in self.root.iterdir() if self.root.is_dir() else []:
            if entry.name not in known:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
                removed.append(entry.name)
                continue
            for partial in entry.glob("*" + PARTIAL_SUFFIX):
                partial.unlink(missing_ok=True)
        if removed:
            log.info("Removed %d staging entries left by tasks that no longer exist", len(removed))
        return removed

    def scratch(self) -> Path:
        """A private directory for a one-shot upload whose fields are not known yet."""
        return Path(tempfile.mkdtemp(prefix=".new-", dir=self.root))

    def adopt(self, scratch: Path, uuid: str) -> None:
        """Move a finished one-shot upload into the task's staging directory."""
        target = self.path(uuid)
        for entry in scratch.iterdir():
            os.replace(entry, target / entry.name)

    def discard_scratch(self, scratch: Path) -> None:
        shutil.rmtree(scratch, ignore_errors=True)

    def size(self, uuid: str) -> int:
        return sum(p.stat().st_size for p in self.files(uuid))
