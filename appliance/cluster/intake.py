"""What clients ask of a task: init, upload, commit, cancel, restart and remove.

Every promise to a client (a uuid, a commit) is written to SQLite first, and every task keeps its
staged files until it is removed, so a crash or a lost node never loses accepted work.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from appliance.clock import wall
from appliance.cluster.dispatcher import Dispatcher, tell_node
from appliance.cluster.info_cache import InfoCache
from appliance.cluster.registry import NodeRegistry, NodeState
from appliance.cluster.replication import ReplicaProgress
from appliance.cluster.scheduler import Demand, could_ever_run
from appliance.cluster.staging import Staging, is_image
from appliance.cluster.task_states import Step, advance
from appliance.cluster.tasks import TaskBook, forwarded, set_forwarded
from appliance.nodeodm.client import NodeError, NodeUnreachable
from appliance.nodeodm.options import OptionsError, validate_options
from appliance.nodeodm.status import TaskStatus
from appliance.role import Role
from appliance.store.database import Store
from appliance.store.models import Phase, Task

log = logging.getLogger("passel.tasks")
UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-5][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}"
# the columns a client's init fields fill (`Intake._prepare`); a second init with the same set-uuid replaces them
CLIENT_COLUMNS = ("name", "options", "outputs", "skip_post_processing", "webhook", "date_created_ms", "job_key",
                  "parent_uuid")
HANDOVER_WAIT_SECONDS = 8.0  # under ODM's 30 s request timeout; a hand-over takes a heartbeat or two
HANDOVER_RECHECK_SECONDS = 0.2
Observe = Callable[[Task, NodeState, dict[str, Any]], Awaitable[None]]


class TaskRefused(Exception):
    """A request the coordinator will not carry out; the message goes to the client."""


@dataclass(frozen=True)
class NewTask:
    """The text fields of `/task/new/init` (or of the one-shot `/task/new`)."""

    name: str = ""
    options: str | None = None
    skip_post_processing: bool = False
    outputs: str | None = None
    webhook: str = ""
    date_created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    parent_uuid: str = ""  # a split job's submodel names its job in `?token=` (job_parts.py), not in a field

    @classmethod
    def from_fields(cls, fields: dict[str, str], parent_uuid: str = "") -> NewTask:
        # WebODM sends dateCreated, and NodeODM purges a finished task 48 h after it: keep it as sent.
        created = re.match(r"\s*(\d+)", fields.get("dateCreated", ""))
        return cls(name=fields.get("name", ""), options=fields.get("options"),
                   skip_post_processing=fields.get("skipPostProcessing") == "true",
                   outputs=fields.get("outputs"), webhook=fields.get("webhook", ""), parent_uuid=parent_uuid,
                   **({"date_created_ms": int(created.group(1))} if created else {}))


def _check_outputs(raw: str | None) -> list[str] | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise TaskRefused("Invalid outputs: not valid JSON") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskRefused("Invalid outputs: expected a JSON list of paths")
    return value


class Intake:
    """The client-facing calls of the NodeODM API, on the coordinator."""

    def __init__(self, book: TaskBook, registry: NodeRegistry, staging: Staging, store: Store,
                 dispatcher: Dispatcher, info_cache: InfoCache, replicas: ReplicaProgress, role: Role,
                 observe: Observe) -> None:
        self.book, self.registry, self.staging, self.store = book, registry, staging, store
        self.dispatcher, self.info_cache, self.replicas = dispatcher, info_cache, replicas
        self.role, self.self_id = role, role.self_id
        self._observe = observe  # the tracker's view of a node's reply, which can finish the task

    async def find_visible(self, uuid: str) -> Task | None:
        """The task a client asks about. While another box is still handing tasks over (it was
        coordinator on its side of a partition, or before a crash), an unknown uuid is waited for, up
        to HANDOVER_WAIT_SECONDS, rather than answered not-found: ODM would send the task again."""
        deadline = asyncio.get_running_loop().time() + HANDOVER_WAIT_SECONDS
        task = self.book.visible(uuid)
        while task is None and self.role.handovers_pending() and asyncio.get_running_loop().time() < deadline:
            await self.book.wait_newer(self.book.rev, HANDOVER_RECHECK_SECONDS)  # an adopted row wakes it
            task = self.book.visible(uuid)
        return task

    # -- a new task -------------------------------------------------------------------------
    def _prepare(self, new: NewTask) -> dict[str, Any]:
        """The task's columns from a client's init fields, validated."""
        try:
            options = validate_options(new.options, self.registry.option_specs())
        except OptionsError as exc:
            raise TaskRefused(str(exc)) from None
        outputs = _check_outputs(new.outputs)
        # NodeODM names an unnamed task this way, and PyODM shows the name.
        name = new.name or "Task of " + datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        job = hashlib.sha1(f"{json.dumps(options)}|{json.dumps(outputs) if outputs is not None else None}|"
                          f"{new.skip_post_processing}".encode()).hexdigest()[:16]
        return {"name": name, "options": options, "outputs": outputs, "skip_post_processing": new.skip_post_processing,
                "webhook": new.webhook, "date_created_ms": new.date_created_ms, "job_key": job,
                "parent_uuid": new.parent_uuid}

    async def init(self, new: NewTask, set_uuid: str | None, staged_on: str | None = None) -> Task:
        """Accept a new task: validate, and reserve a node. The files go to `staged_on`, the box the
        client uploads to (receiving.py); on this box, its staging directory is made here and each
        file is pre-sent to the reserved node as it arrives."""
        box = staged_on or self.self_id
        fields = self._prepare(new)
        pending = self._pending_upload(set_uuid, box)
        if pending is not None:
            return await self._reinit(pending, fields)
        uuid = self._claim_uuid(set_uuid)
        if uuid in self.book.tasks:  # a tombstone: NodeODM lets a removed task's uuid be used again
            await self.book.purge(uuid)
            self.staging.remove(uuid)
        path = str(self.staging.create(uuid)) if box == self.self_id else ""
        task = Task(uuid=uuid, staging_path=path, staged_on=box, **fields)
        self.dispatcher.reserve(task, send_early=box == self.self_id)
        await self.book.save(task)
        return task

    def _pending_upload(self, set_uuid: str | None, box: str) -> Task | None:
        """The uncommitted task a client initialises again with its set-uuid, as NodeODM allows."""
        task = self.book.known(set_uuid.lower()) if set_uuid else None
        return task if task is not None and task.phase == Phase.UPLOADING and task.staged_on == box else None

    async def _reinit(self, task: Task, fields: dict[str, Any]) -> Task:
        """New fields replace the old ones; files already uploaded stay, on Passel and on the node."""
        for column, value in fields.items():
            setattr(task, column, value)
        await self.book.save(task)
        await self.dispatcher.refresh_reservation(task)
        return task

    def _claim_uuid(self, set_uuid: str | None) -> str:
        if set_uuid is None:
            return str(uuidlib.uuid4())
        if not re.fullmatch(UUID_PATTERN, set_uuid) or self.book.known(set_uuid.lower()):
            raise TaskRefused(f"Invalid set-uuid: {set_uuid}")
        return set_uuid.lower()

    def uploaded(self, task: Task, names: list[str]) -> None:
        """Files are staged; send them on to the reserved node while the client keeps uploading."""
        self.dispatcher.staged(task, [self.staging.path(task.uuid) / n for n in names])

    async def commit(self, task: Task) -> None:
        """Make the task visible and place it; the reply waits for the replicas (replication.py), not
        for the node."""
        files = self.staging.files(task.uuid)
        await self._commit(task, {f.name: f.stat().st_size for f in files}, reserved_elsewhere=False)

    async def commit_received(self, task: Task, files: dict[str, int], node_url: str | None,
                              on_node: list[str]) -> None:
        """The box that holds the upload says it is complete: names and sizes, and which files it
        already sent to which node (receiving.py). No byte comes here."""
        node = self.registry.find_url(node_url) if node_url else None
        if node is not None:
            set_forwarded(task, node.id, on_node)
        await self._commit(task, files, reserved_elsewhere=node is not None and node.id == task.node_id)

    async def _commit(self, task: Task, files: dict[str, int], reserved_elsewhere: bool) -> None:
        if not files:
            await self._discard(task)
            raise TaskRefused("Need at least 1 file.")
        task.images_count = sum(1 for name in files if is_image(name))
        task.data_bytes = sum(files.values())
        views = self.dispatcher.views(task)
        if views and not could_ever_run(views, Demand(images=task.images_count)):
            largest = max((v.max_images or 0) for v in views)
            await self._discard(task)
            raise TaskRefused(f"{task.images_count} images uploaded, but the largest node in this passel "
                              f"can only process up to {largest}.")
        task.committed_at = wall()
        early = self.dispatcher.enqueue(task, reserved_elsewhere)
        await self.book.save(task)
        await self.store.record("accepted", f"Task {task.uuid} accepted: {task.images_count} images, "
                                f"{self._describe(task)}", task_uuid=task.uuid, node_id=task.node_id)
        self.dispatcher.start(task, early)
        await self.replicas.hold(task.rev)

    def _describe(self, task: Task) -> str:
        node = self.registry.get(task.node_id)
        if task.phase == Phase.FORWARDING and node is not None:
            return f"sending to {node.name}"
        if task.status == TaskStatus.RUNNING:
            return "waiting for a faster node"
        return "waiting for a free node"

    # -- actions on a task ------------------------------------------------------------------
    async def cancel(self, task: Task) -> None:
        self.info_cache.forget(task.uuid)
        await self.dispatcher.settle(task.uuid)
        node = self.registry.get(task.node_id)
        if task.phase == Phase.ON_NODE and node is not None:
            try:
                await node.client.task_cancel(task.uuid)
            except NodeError as exc:
                raise TaskRefused(str(exc)) from None
            except NodeUnreachable as exc:
                raise TaskRefused(f"The node running this task is not answering ({exc}); try again") from None
        task.status = TaskStatus.CANCELED
        if task.phase != Phase.ON_NODE:  # on a node, the node reports it canceled
            advance(task, Step.CANCEL)
        task.finished_at = wall()
        await self.book.save(task)
        await self.store.record("canceled", f"Task {task.uuid} canceled", task_uuid=task.uuid)
        self.dispatcher.wake()

    async def remove(self, task: Task) -> None:
        """Remove everywhere: the node's copy, the row and the staged files."""
        await self.dispatcher.settle(task.uuid)
        node = self.registry.get(task.node_id)
        if node is not None and forwarded(task)[0] == node.id:
            await tell_node(node, "remove", task)
        await self._discard(task)
        await self.store.record("removed", f"Task {task.uuid} removed", task_uuid=task.uuid)
        self.dispatcher.wake()

    async def restart(self, task: Task, options_field: str | None) -> None:
        self.info_cache.forget(task.uuid)
        node = self.registry.get(task.node_id)
        if node is not None and task.phase == Phase.ON_NODE:
            try:  # the node may have finished since our last poll
                await self._observe(task, node, await node.client.task_info(task.uuid))
            except (NodeError, NodeUnreachable):
                pass
        if not TaskStatus(task.status).restartable:
            raise TaskRefused("Task cannot be restarted")
        if options_field is not None:
            task.options = self._prepare(NewTask(options=options_field))["options"]
        if node is not None and node.online and task.phase in (Phase.ON_NODE, Phase.FINISHED) \
                and forwarded(task)[0] == node.id:
            try:
                await node.client.task_restart(task.uuid, json.dumps(task.options) if options_field is not None else None)
                advance(task, Step.RESTART_ON_NODE)
            except (NodeError, NodeUnreachable) as exc:
                log.info("Task %s: restart on %s failed (%s); sending it again from staging",
                         task.uuid[:8], node.row.url, exc)
                self.dispatcher.requeue(task)
        else:
            self.dispatcher.requeue(task)
        self.info_cache.start_over(task)
        task.status, task.progress, task.finished_at = TaskStatus.QUEUED, 0.0, None
        task.processing_time_ms, task.error_message = -1, ""
        await self.book.save(task)
        await self.store.record("restarted", f"Task {task.uuid} restarted", task_uuid=task.uuid)
        self.dispatcher.wake()

    async def abandoned(self, uuid: str) -> None:
        """Remember a client removing a task this coordinator does not show. ODM does that after a
        not-found or a failed upload, and then sends the work again under a new uuid, so a copy of the
        old task that turns up later (from a box that was cut off or crashed) is an orphan and must not
        run. The removal is a tombstone, which the replicas carry to the next coordinator and which the
        merge rule never lets a copy undo (`task_merge.py`): of a task given up for lost, of an upload
        never committed, and of a uuid this box never heard of (its commit reached only a coordinator
        that was cut off)."""
        if not re.fullmatch(UUID_PATTERN, uuid):
            return
        row = self.book.tasks.get(uuid)
        if row is not None and row.phase == Phase.UPLOADING:
            await self.remove(row)
        elif row is None or row.phase == Phase.LOST:
            await self.book.tombstone(row or Task(uuid=uuid), Step.REMOVE)

    def given_up(self, uuid: str) -> bool:
        """Its client removed it (after a not-found, it has sent the work again): no copy may run."""
        row = self.book.tasks.get(uuid)
        return row is not None and row.phase == Phase.REMOVED

    async def _discard(self, task: Task) -> None:
        self.info_cache.forget(task.uuid)
        self.dispatcher.forget(task.uuid)
        self.staging.remove(task.uuid)
        await self.book.tombstone(task)

