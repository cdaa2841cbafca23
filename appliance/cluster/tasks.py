"""The task table in memory, written through to SQLite before anything is promised to a client (on a
full disk, promised from memory and the replicas, and written once there is room)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy.exc import OperationalError

from appliance.clock import boottime, wall
from appliance.nodeodm.status import TaskStatus, status_rank
from appliance.store.database import Store, is_disk_full
from appliance.cluster.task_states import Step, advance
from appliance.store.models import Phase, Task

log = logging.getLogger("passel.tasks")
OUTPUT_TAIL_LINES = 50  # kept in the table so output still answers when the node is gone
ACTIVE_PHASES = (Phase.FORWARDING, Phase.ON_NODE)
VISIBLE_PHASES = (Phase.WAITING, Phase.FORWARDING, Phase.ON_NODE, Phase.FINISHED)
GONE_PHASES = (Phase.REMOVED, Phase.LOST)
UNSAVED_RETRY_SECONDS = 2.0  # how soon rows a full disk refused are written again
RESERVATION_SECONDS = 15 * 60.0  # an upload holds its node's slot this long at most, uncommitted


class TaskBook:
    """All tasks this box knows, keyed by uuid: the truth on the coordinator, a replica elsewhere."""

    def __init__(self, store: Store, self_id: str = "") -> None:
        self.store = store
        self.self_id = self_id
        self.tasks: dict[str, Task] = {}
        self.rev = 0
        self._saved = asyncio.Event()
        self._reserved_at: dict[str, float] = {}  # uuid -> boot time its upload's node was reserved
        self._unsaved: set[str] = set()  # rows changed in memory that the disk refused (full)
        self._disk_full = False  # said once per spell, not at every refused write

    async def load(self) -> None:
        self.tasks = {t.uuid: t for t in await self.store.load(Task)}
        self.rev = max((t.rev for t in self.tasks.values()), default=0)

    def get(self, uuid: str) -> Task | None:
        return self.tasks.get(uuid)

    def known(self, uuid: str) -> Task | None:
        """Any row but tombstones."""
        task = self.tasks.get(uuid)
        return task if task is not None and task.phase not in GONE_PHASES else None

    def visible(self, uuid: str) -> Task | None:
        """A task the client may see: committed, not removed."""
        task = self.tasks.get(uuid)
        return task if task is not None and task.phase in VISIBLE_PHASES else None

    def all_visible(self) -> list[Task]:
        return sorted((t for t in self.tasks.values() if t.phase in VISIBLE_PHASES), key=lambda t: t.date_created_ms)

    def removed_parts(self, parent_uuid: str) -> list[Task]:
        """A split job's submodels that ODM downloaded and removed: still its parts, for its page."""
        return [t for t in self.tasks.values() if t.parent_uuid == parent_uuid and t.phase == Phase.REMOVED]

    def in_phase(self, *phases: str) -> list[Task]:
        return sorted((t for t in self.tasks.values() if t.phase in phases), key=lambda t: t.committed_at or 0)

    async def save(self, task: Task) -> None:
        """Write as the coordinator: a new version number, so replicas pull the change."""
        self.rev += 1
        task.rev, task.owner = self.rev, self.self_id
        self.tasks[task.uuid] = task
        if task.phase != Phase.UPLOADING:
            self._reserved_at.pop(task.uuid, None)
        await self._write(task)
        self._announce()

    async def _write(self, *tasks: Task) -> None:
        """Write these rows, and any that a full disk refused before: the in-memory row has changed
        already (the replicas may have it), so the file must follow it, or a restart would load the
        older version. A full disk does not stop the caller half-way (a task set FORWARDING whose send
        never starts would wait for ever): the rows stay in memory and on the replicas, and
        `keep_written` writes them once there is room."""
        self._unsaved.update(t.uuid for t in tasks)
        rows = [self.tasks[uuid] for uuid in self._unsaved if uuid in self.tasks]
        try:
            await self.store.save(*rows)
        except (OperationalError, OSError) as exc:
            if not is_disk_full(exc):
                raise
            if not self._disk_full:
                log.warning("The disk is full: %d task row(s) are kept in memory (and in the other boxes' "
                            "copies) and written here once there is room", len(rows))
            self._disk_full = True
            return
        self._unsaved.clear()
        if self._disk_full:
            self._disk_full = False
            log.info("The disk has room again: wrote the %d task row(s) it had refused", len(rows))

    async def keep_written(self) -> None:
        """Every few seconds, write what a full disk refused."""
        while True:
            await asyncio.sleep(UNSAVED_RETRY_SECONDS)
            if self._unsaved:
                await self._write()

    def _announce(self) -> None:
        """Wake the replica feed's long polls: a new version exists."""
        self._saved.set()
        self._saved = asyncio.Event()

    def release(self) -> None:
        """Let every long poll answer now: the server is stopping."""
        self._saved.set()

    async def wait_newer(self, rev: int, timeout: float) -> None:
        """Return once a version after `rev` exists, or after `timeout` (the replica feed's long poll)."""
        saved = self._saved
        if self.rev > rev:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await saved.wait()

    async def take_ownership(self) -> None:
        """Once this box coordinates, the rows it copied from the coordinator before are its own truth:
        stamped with its id and a new version (one transaction). Otherwise the box that wrote them,
        coming back as a follower, would read them in the feed as its own rows still to hand over."""
        taken = [t for t in self.tasks.values() if t.owner != self.self_id]
        for task in taken:
            self.rev += 1
            task.rev, task.owner = self.rev, self.self_id
        if taken:
            await self._write(*taken)
            self._announce()

    async def save_replica(self, task: Task) -> None:
        """Write a row as received from the coordinator, keeping its version."""
        self.tasks[task.uuid] = task
        await self._write(task)

    async def tombstone(self, task: Task, step: Step = Step.REMOVE) -> None:
        """Mark removed (or lost) rather than delete, so replicas and returning boxes learn of it."""
        advance(task, step)
        task.finished_at = wall()
        await self.save(task)

    async def purge(self, uuid: str) -> None:
        self.tasks.pop(uuid, None)
        self._unsaved.discard(uuid)
        await self.store.delete(Task, uuid)

    def changed_since(self, rev: int) -> list[Task]:
        return sorted((t for t in self.tasks.values() if t.rev > rev), key=lambda t: t.rev)

    def reserve(self, task: Task, node_id: int) -> None:
        """An upload's node, chosen at init so its files go on while they arrive (dispatcher.reserve)."""
        task.node_id = node_id
        self._reserved_at[task.uuid] = boottime()

    def reserving(self, task: Task) -> bool:
        """Whether an upload still holds its node's slot. ODM does not remove a task whose upload
        failed (it never learned the uuid), so a reservation lapses RESERVATION_SECONDS after init,
        or with this coordinator (a new one never made it): otherwise each upload that a fault cut
        short would take a node's slot until the upload is dropped as abandoned, a day later."""
        made = self._reserved_at.get(task.uuid)
        return made is not None and boottime() - made < RESERVATION_SECONDS

    def busy_by_node(self) -> dict[int, int]:
        """Slots each node owes to our tasks: sent or being sent, unfinished, plus upload reservations."""
        counts: Counter[int] = Counter()
        for t in self.tasks.values():
            if t.node_id is None:
                continue
            if t.phase in ACTIVE_PHASES and not TaskStatus(t.status).finished \
                    or t.phase == Phase.UPLOADING and self.reserving(t):
                counts[t.node_id] += 1
        return dict(counts)

    def same_job_by_node(self, job_key: str) -> dict[int, int]:
        counts: Counter[int] = Counter()
        for t in self.tasks.values():
            if t.job_key == job_key and t.node_id is not None and t.phase in ACTIVE_PHASES \
                    and not TaskStatus(t.status).finished:
                counts[t.node_id] += 1
        return dict(counts)

    def queue_count(self) -> int:
        """NodeODM's taskQueueCount: QUEUED plus RUNNING."""
        return sum(1 for t in self.tasks.values() if t.phase in VISIBLE_PHASES
                   and t.status in (TaskStatus.QUEUED, TaskStatus.RUNNING))


def move_status(task: Task, code: int) -> bool:
    """Apply a status seen on a node, only forward: a stale poll must not undo a finish, and a node
    that holds a task QUEUED after showing it RUNNING (after its own restart, behind another user's
    task) must not undo the RUNNING clients were shown: ODM takes QUEUED then as "task limit
    reached" and sends the task again. Passel's own restart sets QUEUED itself."""
    held_running = code == TaskStatus.QUEUED and task.status == TaskStatus.RUNNING
    if status_rank(code) < status_rank(task.status) or held_running:
        return False
    changed = task.status != code
    task.status = code
    return changed


def forwarded(task: Task) -> tuple[int | None, set[str]]:
    """Which node already holds a pending upload of this task, and which files it surely has."""
    data = task.forwarded_files
    return data.get("node_id"), set(data.get("files", []))


def set_forwarded(task: Task, node_id: int | None, files: Iterable[str]) -> None:
    task.forwarded_files = {"node_id": node_id, "files": sorted(files)}


def apply_node_info(task: Task, info: dict[str, Any], tail: bool) -> bool:
    """Copy a node's view of the task into our row; True when anything worth saving changed.

    `tail` says the reply's output is the last lines of the log (our own poll), not a client's slice.
    """
    status = info.get("status") or {}
    before = (task.status, task.progress, task.processing_time_ms, task.error_message, task.output_tail)
    move_status(task, int(status.get("code", task.status)))
    if task.status == status.get("code"):
        task.progress = float(info.get("progress") or 0)
        raw_time = info.get("processingTime")
        task.processing_time_ms = int(raw_time) if raw_time is not None else -1
        task.error_message = str(status.get("errorMessage") or "")
        if tail and "output" in info:
            task.output_tail = list(info["output"])[-OUTPUT_TAIL_LINES:]
    return before != (task.status, task.progress, task.processing_time_ms, task.error_message, task.output_tail)
