"""Uploads that a box takes in while another box coordinates: the images cross the field network once.

The box a client uploads to keeps the files (its staging is what makes a re-dispatch possible) and
sends each one straight on to the node the coordinator reserved, while the client is still
uploading. The coordinator hears only names and sizes: the task's fields at init, the files at
commit. When the coordinator then places the task, it asks this box to send what the chosen node
lacks and commit it there (`deliver`), so no byte ever passes through the coordinator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.cluster.forwarding import EarlyForward, Forwarder
from appliance.cluster.intake import CLIENT_COLUMNS, TaskRefused
from appliance.cluster.registry import NodeRegistry
from appliance.cluster.staging import Staging
from appliance.cluster.tasks import TaskBook, forwarded, set_forwarded
from appliance.nodeodm.client import NodeError
from appliance.role import BoxUnreachable, Role
from appliance.store.models import Phase, Task, row_values, task_from_row

log = logging.getLogger("passel.receive")
INTAKE_TIMEOUT_SECONDS = 30.0
ABANDONED_FILE = "abandoned-commits.json"  # in the state directory, next to staging/
MAX_ABANDONED = 1000  # far more than the uploads a box holds: the oldest are forgotten first


class CoordinatorUnreachable(TaskRefused):
    """The coordinator did not answer: the client may try again, and the upload stays here."""


class CommitAbandoned(Exception):
    """A coordinator asked for the images of an upload whose commit this box gave up on."""


class AbandonedCommits:
    """The uploads whose commit this box gave up waiting for: the coordinator was declared gone, or did
    not answer, and the client was told the commit failed (ODM then removes the task and sends the work
    again). The commit may still have reached that coordinator, which would ask for the images when it
    can reach this box again, possibly after this box restarted: so the list lives in the state
    directory, and a task on it is never sent on from here."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._uuids = self._load()

    def _load(self) -> list[str]:
        try:
            uuids = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("Could not read %s (%s); uploads whose commit was given up on before are forgotten",
                        self.path, exc)
            return []
        return [str(u) for u in uuids][-MAX_ABANDONED:] if isinstance(uuids, list) else []

    def __contains__(self, uuid: str) -> bool:
        return uuid.lower() in self._uuids

    def add(self, uuid: str) -> None:
        if uuid.lower() not in self._uuids:
            self._uuids = (self._uuids + [uuid.lower()])[-MAX_ABANDONED:]
            self._save()

    def discard(self, uuid: str) -> None:
        if uuid.lower() in self._uuids:
            self._uuids.remove(uuid.lower())
            self._save()

    def _save(self) -> None:
        part = self.path.with_name(self.path.name + ".part")
        with open(part, "w") as handle:
            json.dump(self._uuids, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, self.path)


class _NotInTable:
    """A receiving box keeps no row of its own: what reached the node goes to the coordinator instead."""

    async def save(self, task: Task) -> None:
        return None


@dataclass
class Upload:
    """One task this box is taking in: the coordinator's copy of its fields, and the early send."""

    task: Task
    early: EarlyForward | None


class Receiver:
    """The uploads held here for a coordinator on another box, and the sends it asks for."""

    def __init__(self, book: TaskBook, staging: Staging, registry: NodeRegistry, role: Role, public_url: str,
                 api_token: str = "") -> None:
        self.book, self.staging, self.registry, self.role = book, staging, registry, role
        self.public_url, self.api_token = public_url, api_token  # api_token: sm-cluster carries it (job_parts.py)
        self.uploads: dict[str, Upload] = {}
        self._reports: set[asyncio.Task[None]] = set()
        self.abandoned = AbandonedCommits(staging.root.parent / ABANDONED_FILE)

    def holds(self, uuid: str) -> bool:
        """Whether an upload in progress is taken in here. After a restart of this box, its replica
        still says which uploads it was taking in: the client goes on, and the files sent before stay."""
        uuid = uuid.lower()
        if uuid in self.uploads:
            return True
        row = self.book.get(uuid)
        if row is None or row.phase != Phase.UPLOADING or row.staged_on != self.role.self_id \
                or self.role.coordinating or not self.staging.path(uuid).exists():
            return False
        self.uploads[uuid] = Upload(task_from_row(row_values(row)), early=None)
        return True

    async def init(self, fields: dict[str, str], set_uuid: str | None, parent_uuid: str = "") -> str:
        """The coordinator validates the fields and reserves a node; the files will stay here.
        `parent_uuid`: the job a submodel belongs to, from its `?token=` (job_parts.py)."""
        reply = await self._ask_coordinator("/intake/init", {"fields": fields, "set_uuid": set_uuid,
                                                             "parent_uuid": parent_uuid})
        task = task_from_row(reply["task"])
        upload = self.uploads.get(task.uuid)
        if upload is not None:  # initialised again with its set-uuid: the client's new fields; what was
            for column in CLIENT_COLUMNS:  # staged here and sent on stays
                setattr(upload.task, column, getattr(task, column))
            if upload.early is not None:
                await upload.early.forwarder.refresh_init()
            return task.uuid
        task.staging_path = str(self.staging.create(task.uuid))
        node = self.registry.find_url(reply["node_url"]) if reply.get("node_url") else None
        early = EarlyForward(Forwarder(_NotInTable(), self.staging, task, node, self.public_url, self.api_token)) if node else None
        self.uploads[task.uuid] = Upload(task, early)
        log.info("Task %s: taking its upload here; the coordinator reserved %s", task.uuid[:8],
                 node.row.url if node else "no node yet")
        return task.uuid

    def early_for(self, uuid: str) -> EarlyForward | None:
        """The send to the reserved node of an upload taken in here, to send files on as they arrive."""
        upload = self.uploads.get(uuid.lower())
        return upload.early if upload is not None else None

    def uploaded(self, uuid: str, names: list[str]) -> None:
        upload = self.uploads.get(uuid.lower())
        if upload is None:
            return
        if upload.early is not None:
            upload.early.push([self.staging.path(upload.task.uuid) / n for n in names])

    async def report(self, uuid: str) -> dict[str, Any]:
        """What the coordinator needs at commit: every file's size, and which are on which node."""
        upload = self.uploads[uuid.lower()]
        if upload.early is not None:
            await upload.early.finish()
        node_id, on_node = forwarded(upload.task)
        node = self.registry.get(node_id)
        return {"uuid": upload.task.uuid, "files": {f.name: f.stat().st_size for f in self.staging.files(upload.task.uuid)},
                "node_url": node.row.url if node is not None else None, "on_node": sorted(on_node)}

    async def commit(self, uuid: str) -> dict[str, Any]:
        """Tell the coordinator the upload is complete; it places the task and answers the client."""
        report = await self.report(uuid)
        # a commit sent again lifts an earlier give-up at once: the coordinator that takes it may ask for
        # the images before its answer is back here (a box this one does not follow is refused anyway)
        self.abandoned.discard(uuid)
        try:
            reply = await self._ask_coordinator("/intake/commit", report)
        except CoordinatorUnreachable:
            # the commit may have landed on a coordinator now cut off: its client hears it failed and
            # sends the work again, so that coordinator must never have these images sent on
            self.abandoned.add(uuid)
            log.info("Task %s: gave up on its commit (the coordinator did not answer); its images will not be "
                     "sent on unless its client commits it again", uuid[:8])
            raise
        except TaskRefused:  # refused for good (no image, too many): the coordinator dropped the task
            self.done(uuid)
            self.staging.remove(uuid.lower())
            raise
        self.done(uuid)
        return reply

    def done(self, uuid: str) -> None:
        """The coordinator has the upload (committed, or refused and discarded)."""
        upload = self.uploads.pop(uuid.lower(), None)
        if upload is not None and upload.early is not None:
            upload.early.cancel()

    async def deliver(self, row: dict[str, Any], node_url: str, on_node: list[str]) -> list[str]:
        """The coordinator placed a task whose files are here: send what the node lacks (`on_node`: what
        it holds already), then commit it there. Returns the files the node holds; raises CommitAbandoned
        for a task whose commit was given up on here, whichever coordinator asks."""
        task = task_from_row(row)
        if task.uuid in self.abandoned:
            log.info("Task %s: refused to send its images, as its commit was given up on here", task.uuid[:8])
            raise CommitAbandoned(f"box {self.role.self_id} gave up on the commit of task {task.uuid} (the coordinator "
                                  "did not answer) and told its client, which sends the work again: it must not run")
        if not self.staging.files(task.uuid):
            raise NodeError(f"this box holds no files of task {task.uuid}")
        node = await self.registry.ensure(node_url)
        set_forwarded(task, node.id if on_node else None, on_node)
        await Forwarder(_NotInTable(), self.staging, task, node, self.public_url, self.api_token).deliver()
        log.info("Task %s: sent from this box straight to %s", task.uuid[:8], node.row.url)
        return sorted(forwarded(task)[1])

    def report_download(self, uuid: str) -> None:
        """This box streamed a task's whole all.zip from its node to a client: tell the coordinator,
        whose table decides when the staged images are released. Not awaited: the client has its file."""
        job = asyncio.create_task(self._report_download(uuid))
        self._reports.add(job)
        job.add_done_callback(self._reports.discard)

    async def _report_download(self, uuid: str) -> None:
        try:
            await self.role.call(None, "/downloaded", {"uuid": uuid}, timeout=INTAKE_TIMEOUT_SECONDS)
        except BoxUnreachable as exc:  # the images are then kept until they expire (lifecycle.py)
            log.info("Task %s: could not tell the coordinator it was downloaded (%s)", uuid[:8], exc)

    async def _ask_coordinator(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            reply = await self.role.call(None, path, body, timeout=INTAKE_TIMEOUT_SECONDS)
        except BoxUnreachable as exc:
            raise CoordinatorUnreachable(f"The coordinator cannot be reached ({exc}); try again in a few seconds.") from None
        if "error" in reply:
            raise TaskRefused(str(reply["error"]))
        return reply
