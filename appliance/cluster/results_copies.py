"""The copies of completed tasks' all.zip kept on this box: `<state_dir>/results/<uuid>/all.zip`.

A node's results live only as long as the node and its box; a copy on a second box lets the passel
go on answering COMPLETED, and serving the zip, after that node is gone. This module owns the files
(fetching one, resumably, and releasing it) and the choice of the box that should hold each copy;
`results.py` decides when to fetch and tells the coordinator.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import uuid as uuidlib
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

import aiohttp

from appliance.cluster.proxy import CHUNK_BYTES

RESULTS_FILE = "all.zip"
PART_SUFFIX = ".part"

Opener = Callable[[dict[str, str]], AbstractAsyncContextManager[aiohttp.ClientResponse]]


class FetchFailed(Exception):
    """The source did not give the whole file this time; what arrived is kept for the next try."""


class NoRoom(FetchFailed):
    """This box's disk cannot hold the copy."""


class BoxFiles(Protocol):
    """A signed box-to-box GET that streams (agent_api.py implements it when the box is in a passel)."""

    def get(self, box_id: str, path: str,
            headers: dict[str, str]) -> AbstractAsyncContextManager[aiohttp.ClientResponse]: ...


def _is_uuid(name: str) -> bool:
    try:
        return str(uuidlib.UUID(name)) == name
    except ValueError:
        return False


def choose_holder(node_box: str, staged_on: str, self_id: str, followers: Iterable[str],
                  alive: Callable[[str], bool], refused: Iterable[str] = ()) -> str:
    """The box that should keep a task's results: never the box whose node made them. First the box
    the client talks to (it took the upload in), then the coordinator, then any live follower; a
    passel of one keeps it on its own box (it still outlives the node's process). '' when every box
    refused it."""
    shut_out = set(refused)
    for box in (staged_on, self_id, *followers):
        if box and box != node_box and box not in shut_out and alive(box):
            return box
    return self_id if self_id not in shut_out else ""


class ResultsStore:
    """Owns `<state_dir>/results/`."""

    def __init__(self, root: Path, min_free_bytes: int) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self.boxes: BoxFiles | None = None  # attached with the passel (agent_api.py); none: a box alone
        self._locks: dict[str, asyncio.Lock] = {}

    def path(self, uuid: str) -> Path:
        if not _is_uuid(uuid):  # a uuid in canonical form, never a path of its own
            raise ValueError(f"not a task uuid: {uuid!r}")
        return self.root / uuid / RESULTS_FILE

    def _part(self, uuid: str) -> Path:
        return self.path(uuid).with_name(RESULTS_FILE + PART_SUFFIX)

    def partial_bytes(self, uuid: str) -> int:
        """How much of an interrupted fetch is kept, to go on from."""
        part = self._part(uuid)
        return part.stat().st_size if part.exists() else 0

    def has(self, uuid: str) -> bool:
        return self.path(uuid).is_file()

    def held(self) -> list[str]:
        """The tasks with anything kept here, whole or partial."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _is_uuid(p.name))

    def release(self, uuid: str) -> bool:
        """Drop the copy (and any partial one); True when there was one."""
        if uuid in self._locks and not self._locks[uuid].locked():
            del self._locks[uuid]
        folder = self.path(uuid).parent
        existed = folder.exists()
        shutil.rmtree(folder, ignore_errors=True)
        return existed

    def lock(self, uuid: str) -> asyncio.Lock:
        """One fetch of a task's copy at a time (the background copy and an on-demand one share it)."""
        return self._locks.setdefault(uuid, asyncio.Lock())

    async def fetch(self, uuid: str, open_source: Opener) -> Path:
        """Fetch all.zip into `all.zip.part`, going on from what an interrupted try left (Range), then
        fsync and rename it into place, so a copy that exists is always whole."""
        target = self.path(uuid)
        part = self._part(uuid)
        target.parent.mkdir(parents=True, exist_ok=True)
        start = self.partial_bytes(uuid)
        headers = {"Range": f"bytes={start}-"} if start else {}
        try:
            async with open_source(headers) as reply:
                total = self._expected_total(reply, start)
                if reply.status == 200:
                    start = 0  # the source ignored the range: start over
                self._check_room(target.parent, total - start if total is not None else 0)
                with open(part, "r+b" if start else "wb") as out:  # noqa: ASYNC230 - small page-cache writes
                    out.seek(start)
                    out.truncate()
                    async for chunk in reply.content.iter_chunked(CHUNK_BYTES):
                        out.write(chunk)
                    out.flush()
                    await asyncio.to_thread(os.fsync, out.fileno())
            size = part.stat().st_size
            if total is not None and size != total:
                raise FetchFailed(f"only {size} of {total} bytes arrived")
            os.replace(part, target)
        except (aiohttp.ClientError, TimeoutError):
            kept = self.partial_bytes(uuid) / 2**20
            raise FetchFailed(f"the transfer broke off after {kept:.1f} MiB, which are kept") from None
        except OSError as exc:  # the disk filled up, or the copy was released meanwhile
            raise (NoRoom if exc.errno == errno.ENOSPC else FetchFailed)(f"could not write the copy ({exc})") from None
        with contextlib.suppress(OSError):  # the rename itself survives a power cut
            fd = os.open(target.parent, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        return target

    @staticmethod
    def _expected_total(reply: aiohttp.ClientResponse, start: int) -> int | None:
        """The whole file's size, as the reply says it; refuses a reply that is not the zip."""
        if reply.status == 416 and start:
            raise FetchFailed("the source no longer has the range asked for")
        if reply.status not in (200, 206) or reply.content_type == "application/json":
            raise FetchFailed(f"the source answered HTTP {reply.status} {reply.content_type} instead of the zip")
        if reply.status == 206:
            total = reply.headers.get("Content-Range", "").rpartition("/")[2]
            return int(total) if total.isdigit() else None
        return reply.content_length

    def _check_room(self, folder: Path, incoming: int) -> None:
        free = shutil.disk_usage(folder).free
        if free - incoming < self.min_free_bytes:
            raise NoRoom(f"this box has {free // 2**20} MiB free, too little for a {incoming // 2**20} MiB copy")
