"""The coordinator's task lifecycle: accept, stage, place, send, cancel, restart and remove.

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
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.cluster.eta import demand_of, with_backlog
from appliance.cluster.forwarding import EarlyForward, Forwarder
from appliance.cluster.info_cache import InfoCache
from appliance.cluster.registry import NodeRegistry, NodeState
from appliance.cluster.replication import ReplicaProgress
from appliance.cluster.scheduler import (Demand, NodeView, choose_node, could_ever_run, could_start_now,
                                         dispatch_order, keeps_reservation, shows_running, why_not)
from appliance.cluster.staging import Staging, is_image
from appliance.cluster.stragglers import Stragglers
from appliance.cluster.task_states import Step, advance
from appliance.cluster.tasks import (GONE_PHASES, TaskBook, apply_node_info, forwarded, progress_rank,
                                     set_forwarded)
from appliance.nodeodm.client import NodeError, NodeUnreachable
from appliance.nodeodm.options import OptionsError, validate_options
from appliance.nodeodm.status import TaskStatus
from appliance.store.database import Store
from appliance.store.models import Phase, Task

log = logging.getLogger("passel.tasks")
UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-5][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}"
DISPATCH_RECHECK_SECONDS = 1.0
HANDOVER_WAIT_SECONDS = 8.0  # under ODM's 30 s request timeout; a hand-over takes a heartbeat or two
HANDOVER_RECHECK_SECONDS = 0.2
MAX_ABANDONED = 10_000  # remembered removals of unknown uuids; bounded so such requests cannot grow memory


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

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> NewTask:
        # WebODM sends dateCreated, and NodeODM purges a finished task 48 h after it: keep it as sent.
        created = re.match(r"\s*(\d+)", fields.get("dateCreated", ""))
        return cls(name=fields.get("name", ""), options=fields.get("options"),
                   skip_post_processing=fields.get("skipPostProcessing") == "true",
                   outputs=fields.get("outputs"), webhook=fields.get("webhook", ""),
                   **({"date_created_ms": int(created.group(1))} if created else {}))


def _check_outputs(raw: str | None) -> str | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise TaskRefused("Invalid outputs: not valid JSON") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskRefused("Invalid outputs: expected a JSON list of paths")
    return json.dumps(value)


class Coordinator:
    """Owns the task table, the staging area and the flow of tasks to nodes."""

    def __init__(self, store: Store, registry: NodeRegistry, staging: Staging, public_url: str,
                 dispatch_attempts: int, self_id: str = "", speed_aware: bool = True) -> None:
        self.store, self.registry, self.staging = store, registry, staging
        self.speed_aware = speed_aware  # off: any free slot, oldest first, no straggler copies
        self.public_url = public_url
        self.dispatch_attempts = dispatch_attempts
        self.active: Callable[[], bool] = lambda: True  # False while this box is not the coordinator
        self.self_id = self_id
        self.book = TaskBook(store, self_id)
        self.replicas = ReplicaProgress()
        # True while another live box still has task rows to hand over to this one (discovery sets it)
        self.handovers_pending: Callable[[], bool] = lambda: False
        self.info_cache = InfoCache()
        self._wake = asyncio.Event()
        self._early: dict[str, EarlyForward] = {}
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._committing: set[str] = set()
        self._avoid: dict[str, set[int]] = {}
        self._pinned: dict[str, int] = {}  # moved by hand: this node, free slot or not
        self._abandoned: OrderedDict[str, float] = OrderedDict()
        self.stragglers = Stragglers(self)
        registry.on_change.append(self.wake)

    # -- start-up ---------------------------------------------------------------------------
    async def recover(self) -> None:
        """Reload the table after a restart and pick up every task where it stopped."""
        await self.book.load()
        self.staging.open()
        self.staging.clean(set(self.book.tasks))
        for task in self.book.in_phase(Phase.UPLOADING, Phase.FORWARDING):
            node_id, _ = forwarded(task)
            if node_id is not None:
                # Files were on their way to that node when we died: which arrived is uncertain, so
                # prefer another node; with no other node, the unconfirmed files are sent again.
                self._avoid.setdefault(task.uuid, set()).add(node_id)
            if task.phase == Phase.UPLOADING and task.node_id is not None:
                task.node_id = None  # the early forward died with the old process; the commit resends
                await self.book.save(task)
        resumed = self.book.in_phase(Phase.FORWARDING)
        for task in resumed:
            advance(task, Step.REQUEUE)
            await self.book.save(task)
            await self.store.record("resumed", f"Task {task.uuid} was being sent to a node when Passel stopped; "
                                    "sending it again from staging", task_uuid=task.uuid)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def find_visible(self, uuid: str) -> Task | None:
        """The task a client asks about. While another box is still handing tasks over (it was
        coordinator on its side of a partition, or before a crash), an unknown uuid is waited for, up
        to HANDOVER_WAIT_SECONDS, rather than answered not-found: ODM would send the task again."""
        deadline = asyncio.get_running_loop().time() + HANDOVER_WAIT_SECONDS
        task = self.book.visible(uuid)
        while task is None and self.handovers_pending() and asyncio.get_running_loop().time() < deadline:
            await self.book.wait_newer(self.book.rev, HANDOVER_RECHECK_SECONDS)  # an adopted row wakes it
            task = self.book.visible(uuid)
        return task

    # -- client actions ---------------------------------------------------------------------
    def _prepare(self, new: NewTask) -> dict[str, Any]:
        """The task's columns from a client's init fields, validated."""
        try:
            options = json.dumps(validate_options(new.options, self.registry.option_specs()))
        except OptionsError as exc:
            raise TaskRefused(str(exc)) from None
        outputs = _check_outputs(new.outputs)
        # NodeODM names an unnamed task this way, and PyODM shows the name.
        name = new.name or "Task of " + datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        job = hashlib.sha1(f"{options}|{outputs}|{new.skip_post_processing}".encode()).hexdigest()[:16]
        return {"name": name, "options": options, "outputs": outputs, "skip_post_processing": new.skip_post_processing,
                "webhook": new.webhook, "date_created_ms": new.date_created_ms, "job_key": job}

    def _pending_upload(self, set_uuid: str | None) -> Task | None:
        """The uncommitted task a client initialises again with its set-uuid, as NodeODM allows."""
        task = self.book.known(set_uuid.lower()) if set_uuid else None
        return task if task is not None and task.phase == Phase.UPLOADING and task.staged_on == self.self_id else None

    async def _reinit(self, task: Task, fields: dict[str, Any]) -> Task:
        """New fields replace the old ones; files already uploaded stay, on Passel and on the node."""
        for column, value in fields.items():
            setattr(task, column, value)
        await self.book.save(task)
        early = self._early.get(task.uuid)
        if early is not None:
            await early.forwarder.refresh_init()
        return task

    async def init(self, new: NewTask, set_uuid: str | None) -> Task:
        """Accept a new task: validate, create its staging directory, and pre-open it on a node."""
        fields = self._prepare(new)
        pending = self._pending_upload(set_uuid)
        if pending is not None:
            return await self._reinit(pending, fields)
        uuid = self._claim_uuid(set_uuid)
        if uuid in self.book.tasks:  # a tombstone: NodeODM lets a removed task's uuid be used again
            await self.book.purge(uuid)
            self.staging.remove(uuid)
        path = self.staging.create(uuid)
        task = Task(uuid=uuid, staging_path=str(path), staged_on=self.self_id, **fields)
        node = self._pick(task, images=0)
        if node is not None:
            task.node_id = node.id
            self._early[uuid] = EarlyForward(Forwarder(self.book, self.staging, task, node, self.public_url))
        await self.book.save(task)
        return task

    def _claim_uuid(self, set_uuid: str | None) -> str:
        if set_uuid is None:
            return str(uuidlib.uuid4())
        if not re.fullmatch(UUID_PATTERN, set_uuid) or self.book.known(set_uuid.lower()):
            raise TaskRefused(f"Invalid set-uuid: {set_uuid}")
        return set_uuid.lower()

    def uploaded(self, task: Task, names: list[str]) -> None:
        """Files are staged; send them on to the reserved node while the client keeps uploading."""
        early = self._early.get(task.uuid)
        if early is not None:
            early.push([self.staging.path(task.uuid) / n for n in names])

    async def commit(self, task: Task) -> None:
        """Make the task visible and place it; the reply waits for the replicas (replication.py), not
        for the node."""
        files = self.staging.files(task.uuid)
        if not files:
            await self._discard(task)
            raise TaskRefused("Need at least 1 file.")
        task.images_count = sum(1 for f in files if is_image(f.name))
        views = self._views(task)
        if views and not could_ever_run(views, Demand(images=task.images_count)):
            largest = max((v.max_images or 0) for v in views)
            await self._discard(task)
            raise TaskRefused(f"{task.images_count} images uploaded, but the largest node in this passel "
                              f"can only process up to {largest}.")
        task.committed_at = time.time()
        early = self._early.pop(task.uuid, None)
        reserved = task.node_id if early is not None and early.error is None else None
        advance(task, Step.COMMIT)
        self._place(task, keep_reserved=reserved is not None)
        if early is not None and task.node_id != reserved:
            early.cancel()  # placed elsewhere (or nowhere): the pre-opened copy is abandoned
            early = None
        await self.book.save(task)
        await self.store.record("accepted", f"Task {task.uuid} accepted: {task.images_count} images, "
                                f"{_describe(task, self.registry)}", task_uuid=task.uuid, node_id=task.node_id)
        if task.phase == Phase.FORWARDING:
            self._start_sending(task, early)
        await self.replicas.hold(task.rev)

    async def cancel(self, task: Task) -> None:
        self.info_cache.forget(task.uuid)
        await self.settle(task.uuid)
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
        task.finished_at = time.time()
        await self.book.save(task)
        await self.store.record("canceled", f"Task {task.uuid} canceled", task_uuid=task.uuid)
        self.wake()

    async def _best_effort(self, node: NodeState, action: str, task: Task) -> None:
        try:
            await (node.client.task_cancel if action == "cancel" else node.client.task_remove)(task.uuid)
        except (NodeError, NodeUnreachable) as exc:
            log.info("Task %s: could not %s it on %s (%s)", task.uuid[:8], action, node.row.url, exc)

    async def remove(self, task: Task) -> None:
        """Remove everywhere: the node's copy, the row and the staged files."""
        await self.settle(task.uuid)
        node = self.registry.get(task.node_id)
        if node is not None and forwarded(task)[0] == node.id:
            await self._best_effort(node, "remove", task)
        await self._discard(task)
        await self.store.record("removed", f"Task {task.uuid} removed", task_uuid=task.uuid)
        self.wake()

    async def restart(self, task: Task, options_field: str | None) -> None:
        self.info_cache.forget(task.uuid)
        node = self.registry.get(task.node_id)
        if node is not None and task.phase == Phase.ON_NODE:
            try:  # the node may have finished since our last poll
                await self.observe(task, node, await node.client.task_info(task.uuid))
            except (NodeError, NodeUnreachable):
                pass
        if not TaskStatus(task.status).restartable:
            raise TaskRefused("Task cannot be restarted")
        if options_field is not None:
            task.options = self._prepare(NewTask(options=options_field, outputs=task.outputs))["options"]
        if node is not None and node.online and task.phase in (Phase.ON_NODE, Phase.FINISHED) \
                and forwarded(task)[0] == node.id:
            try:
                await node.client.task_restart(task.uuid, options_field and task.options)
                advance(task, Step.RESTART_ON_NODE)
            except (NodeError, NodeUnreachable) as exc:
                log.info("Task %s: restart on %s failed (%s); sending it again from staging",
                         task.uuid[:8], node.row.url, exc)
                self._requeue(task)
        else:
            self._requeue(task)
        self.info_cache.start_over(task)
        task.status, task.progress, task.finished_at = TaskStatus.QUEUED, 0.0, None
        task.processing_time_ms, task.error_message = -1, ""
        await self.book.save(task)
        await self.store.record("restarted", f"Task {task.uuid} restarted", task_uuid=task.uuid)
        self.wake()

    async def observe(self, task: Task, node: NodeState, info: dict[str, Any], tail: bool = False) -> None:
        """Take in what a node says about a task (from a poll or a proxied info) and act on a finish."""
        if task.phase not in (Phase.ON_NODE, Phase.FINISHED) or task.node_id != node.id:
            return  # moved, canceled or removed while we asked
        was_finished = TaskStatus(task.status).finished
        if not apply_node_info(task, info, tail):
            return
        if TaskStatus(task.status).finished and not was_finished:
            advance(task, Step.FINISH)
            task.finished_at = time.time()
            if task.status == TaskStatus.COMPLETED and task.images_count and task.processing_time_ms > 0:
                await self.registry.learn_speed(node.id, task.processing_time_ms / task.images_count,
                                                demand_of(task).kind)
            log.info("Task %s is %s on %s", task.uuid, TaskStatus(task.status).name, node.row.url)
            self.wake()
        await self.book.save(task)

    async def abandoned(self, uuid: str) -> None:
        """Remember a client removing a task this coordinator does not show. ODM does that after a
        not-found, and then sends the work again under a new uuid, so a copy of the old task that
        turns up later (from a box that crashed) is an orphan and must not run. A task given up for
        lost becomes a removed one, which the replicas carry to the next coordinator."""
        row = self.book.tasks.get(uuid)
        if row is not None and row.phase == Phase.LOST:
            await self.book.tombstone(row, Step.REMOVE)
        if re.fullmatch(UUID_PATTERN, uuid):
            self._abandoned[uuid] = time.time()
            self._abandoned.move_to_end(uuid)
            while len(self._abandoned) > MAX_ABANDONED:
                self._abandoned.popitem(last=False)

    async def handed_over(self, task: Task, to: str) -> None:
        """Another coordinator has this task and its files now; keep the row as a replica only."""
        self._stop_sending(task.uuid)
        self.staging.remove(task.uuid)
        task.owner = to
        if task.staged_on == self.self_id:
            task.staged_on = to
        await self.book.save_replica(task)

    async def pause(self) -> None:
        """Stop sending when this box stops being coordinator; what was mid-way is resumed by the next."""
        for uuid in list(self._sending):
            await self.settle(uuid)

    async def adopt(self, values: dict[str, Any], node_url: str | None, files_from: Path, giver: str) -> bool:
        """Take a task from a box that is no longer coordinator; the further-along version wins.

        A task this box had given up for lost (its node and images were out of reach) comes back with
        the box that holds it, unless its client has given it up too (removed it after a not-found).
        Returns False when this box already had an equal or better version (its own is kept).
        """
        incoming = Task(**{k: v for k, v in values.items() if k in Task.__table__.columns.keys()})
        existing = self.book.tasks.get(incoming.uuid)
        if existing is None and incoming.uuid in self._abandoned:
            incoming.node_id = None
            await self.book.tombstone(incoming, Step.LOSE)
            await self.store.record("orphan", f"Task {incoming.uuid} from box {giver} was given up by its client "
                                    "(it sent the work again); dropped", task_uuid=incoming.uuid)
            return False
        has_files = any(files_from.iterdir())
        back = existing is not None and existing.phase == Phase.LOST and incoming.phase not in GONE_PHASES \
            and not self.given_up(incoming.uuid)
        if existing is not None and not back and (existing.phase in GONE_PHASES
                                                  or progress_rank(existing) >= progress_rank(incoming)):
            if has_files and existing.phase not in GONE_PHASES and not self.staging.files(existing.uuid):
                self._take_files(existing, files_from)
                await self.book.save(existing)
            return False
        node = await self.registry.ensure(node_url) if node_url else None
        old_node, files = forwarded(incoming)
        incoming.node_id = node.id if node else None
        set_forwarded(incoming, incoming.node_id if old_node is not None and node else None, files if node else [])
        if incoming.phase == Phase.FORWARDING:  # that send died with the giver's role
            advance(incoming, Step.REQUEUE)
        if incoming.phase == Phase.UPLOADING:
            incoming.node_id = None
        if has_files:
            self._take_files(incoming, files_from)
        self._stop_sending(incoming.uuid)
        await self.book.save(incoming)
        await self.store.record("adopted", f"Task {incoming.uuid} handed over by box {giver}",
                                task_uuid=incoming.uuid, node_id=incoming.node_id)
        self.wake()
        return True

    def _take_files(self, task: Task, files_from: Path) -> None:
        self.staging.remove(task.uuid)
        path = self.staging.create(task.uuid)
        self.staging.adopt(files_from, task.uuid)
        task.staging_path, task.staged_on = str(path), self.self_id

    # -- moving work -------------------------------------------------------------------------
    def has_staged_files(self, task: Task) -> bool:
        return task.staged_on in ("", self.self_id) and bool(self.staging.files(task.uuid))

    async def move_away(self, task: Task, reason: str) -> None:
        """Send a task again from staging because its node lost it or is gone; lose it when the
        staged copy is not here (not-found makes ODM resubmit; FAILED would abort its whole job)."""
        if task.phase not in (Phase.ON_NODE, Phase.FINISHED) or task.status == TaskStatus.CANCELED:
            return
        if not self.has_staged_files(task):
            await self.lose(task, f"{reason}, and its uploaded images are not on this coordinator")
            return
        old = self.registry.get(task.node_id)
        await self._leave_node(task, old)
        if old is not None:
            self._avoid.setdefault(task.uuid, set()).add(old.id)
        note = f"Passel: moved off {old.row.url if old else 'its node'} because {reason}; sending it to another node"
        await self._requeue_with_note(task, note, "redispatched")

    async def move(self, task: Task, node_ref: str) -> NodeState:
        """Move a queued or running task to a named node, by hand (the UI and CLI call this)."""
        if task.phase not in (Phase.WAITING, Phase.FORWARDING, Phase.ON_NODE) or TaskStatus(task.status).finished:
            raise TaskRefused("Only a queued or running task can be moved")
        try:
            target = self.registry.find(node_ref)
        except KeyError:
            raise TaskRefused(f"No node {node_ref}") from None
        refusal = why_not(replace(next(v for v in self._views(task) if v.id == target.id), busy=0),
                          Demand(images=task.images_count))
        if refusal:
            raise TaskRefused(f"Node {target.row.url} cannot take it: {refusal}")
        if task.node_id == target.id and task.phase == Phase.ON_NODE:
            raise TaskRefused(f"The task is already on {target.row.url}")
        if not self.has_staged_files(task):
            raise TaskRefused("The task's uploaded images are not on this coordinator, so it cannot be sent again")
        old = self.registry.get(task.node_id)
        await self.settle(task.uuid)
        await self._leave_node(task, old)
        self._pinned[task.uuid] = target.id
        where = old.row.url if old else "the queue"  # placed means on its node or on its way there
        await self._requeue_with_note(task, f"Passel: moved by hand from {where} to {target.row.url}", "moved")
        return target

    async def _leave_node(self, task: Task, node: NodeState | None) -> None:
        if node is not None and forwarded(task)[0] == node.id and node.online:
            await self._best_effort(node, "cancel", task)
            await self._best_effort(node, "remove", task)

    async def _requeue_with_note(self, task: Task, note: str, kind: str) -> None:
        self.info_cache.end_run(task, note)
        set_forwarded(task, None, [])
        advance(task, Step.REQUEUE)
        task.node_id, task.status = None, TaskStatus.RUNNING
        task.progress, task.processing_time_ms = 0.0, -1
        await self.book.save(task)
        await self.store.record(kind, f"Task {task.uuid}: {note}", task_uuid=task.uuid)
        self.wake()

    async def lose(self, task: Task, reason: str) -> None:
        """Give up on a task whose data is gone: clients get not-found, which ODM answers by resubmitting."""
        self._stop_sending(task.uuid)
        self.staging.remove(task.uuid)
        self.info_cache.forget(task.uuid)
        await self.book.tombstone(task, Step.LOSE)
        await self.store.record("lost", f"Task {task.uuid} is lost: {reason}", task_uuid=task.uuid)

    def given_up(self, uuid: str) -> bool:
        """Its client removed it after a not-found (and has sent the work again)."""
        return uuid in self._abandoned

    async def found_again(self, task: Task, node: NodeState) -> None:
        """A task given up for lost turns out to be on its node after all (it was out of reach, not gone)."""
        finished = TaskStatus(task.status).finished
        advance(task, Step.FOUND_FINISHED if finished else Step.FOUND_RUNNING)
        task.finished_at = task.finished_at if finished else None
        await self.book.save(task)
        await self.store.record("found", f"Task {task.uuid} was given up for lost, but {node.row.url} still has it",
                                task_uuid=task.uuid, node_id=node.id)
        self.wake()

    async def fail(self, task: Task, reason: str) -> None:
        """A real failure the client must see: FAILED, with the reason in the output."""
        await self._leave_node(task, self.registry.get(task.node_id))
        advance(task, Step.GIVE_UP)
        task.node_id, task.status, task.finished_at = None, TaskStatus.FAILED, time.time()
        task.error_message = reason
        self.info_cache.end_run(task, f"Passel: {reason}", keep_all=True)
        await self.book.save(task)
        await self.store.record("failed", f"Task {task.uuid} failed: {reason}", task_uuid=task.uuid)
        self.wake()

    async def drop_duplicate(self, node: NodeState, task: Task) -> None:
        """A node that came back still runs a copy of a task that moved on (or was removed)."""
        if self.stragglers.holds(node.id, task.uuid):
            return  # a live straggler copy, not a stale one
        await self._best_effort(node, "cancel", task)
        await self._best_effort(node, "remove", task)
        await self.store.record("duplicate-removed", f"Removed a stale copy of task {task.uuid} from {node.row.url}",
                                task_uuid=task.uuid, node_id=node.id)

    # -- placement and sending --------------------------------------------------------------
    def _views(self, task: Task | None = None) -> list[NodeView]:
        """Snapshots of the nodes with our backlog on each; seen by `task`, whose own slot is not a rival."""
        busy = self.book.busy_by_node()
        if task is not None and task.node_id is not None and task.uuid in self.book.tasks:
            busy[task.node_id] = busy.get(task.node_id, 1) - 1  # its own reservation is not a rival
        same_job = self.book.same_job_by_node(task.job_key) if task is not None else {}
        views = self.registry.views(busy, same_job, self.stragglers.by_node())
        return with_backlog(views, self.book.tasks.values(), exclude=task.uuid if task is not None else "")

    def _ahead_of(self, task: Task) -> list[Demand]:
        """The queued tasks that the dispatch order puts before this one: they get their slots first."""
        queue = [t for t in self.book.in_phase(Phase.WAITING) if t.uuid != task.uuid and t.uuid not in self._sending]
        order = dispatch_order([*queue, task], self.speed_aware)
        return [demand_of(t) for t in order[:next(i for i, t in enumerate(order) if t is task)]]

    def _pick(self, task: Task, images: int, ahead: list[Demand] | None = None) -> NodeState | None:
        """The best node for the task now, preferring nodes it has not just failed on; None to wait."""
        views = self._views(task)
        avoid = self._avoid.get(task.uuid, set())
        demand = replace(demand_of(task), images=images)
        ahead = self._ahead_of(task) if ahead is None else ahead
        choice = choose_node([v for v in views if v.id not in avoid], demand, ahead, self.speed_aware) \
            or choose_node(views, demand, ahead, self.speed_aware)
        return self.registry.get(choice.id) if choice else None

    def _place(self, task: Task, keep_reserved: bool, ahead: list[Demand] | None = None) -> None:
        """Choose the task's node now, or leave it QUEUED in the coordinator's queue."""
        pinned = self.registry.get(self._pinned.get(task.uuid))
        if pinned is not None and pinned.online and not pinned.row.locked:
            advance(task, Step.PLACE)
            task.status, task.node_id = TaskStatus.RUNNING, pinned.id
            return
        node = None
        reserved = self.registry.get(task.node_id) if keep_reserved else None
        if reserved is not None and keeps_reservation(self._views(task), demand_of(task), reserved.id,
                                                      self._ahead_of(task), self.speed_aware):
            node = reserved
        if node is None:
            node = self._pick(task, task.images_count, ahead)
        if node is None:  # it stays in the queue
            task.node_id = None
            task.status = self._waiting_status(task)
            return
        advance(task, Step.PLACE)
        task.status, task.node_id = TaskStatus.RUNNING, node.id

    def _waiting_status(self, task: Task) -> TaskStatus:
        """QUEUED, except for an ODM submodel held back for a faster node (scheduler.shows_running)."""
        demand = demand_of(task)  # the views cost a pass over the tasks: only submodels need them
        held = demand.impatient and shows_running(self._views(task), demand, task.status)
        return TaskStatus.RUNNING if held else TaskStatus.QUEUED

    def _start_sending(self, task: Task, early: EarlyForward | None = None) -> None:
        self._stop_sending(task.uuid)
        job = asyncio.create_task(self._send(task, early), name=f"send-{task.uuid[:8]}")
        self._sending[task.uuid] = job
        job.add_done_callback(lambda _: self._sending.pop(task.uuid, None) if self._sending.get(task.uuid) is job else None)

    async def settle(self, uuid: str) -> None:
        """Stop a send that is still uploading; let one that is committing finish, so the node and
        the table agree on whether the task exists there before we act on it."""
        job = self._sending.get(uuid)
        if job is None:
            self._stop_sending(uuid)
            return
        if uuid not in self._committing:
            self._stop_sending(uuid)
        await asyncio.gather(job, return_exceptions=True)

    def _stop_sending(self, uuid: str) -> None:
        job = self._sending.pop(uuid, None)
        if job is not None:
            job.cancel()
        early = self._early.pop(uuid, None)
        if early is not None:
            early.cancel()

    async def _send(self, task: Task, early: EarlyForward | None) -> None:
        if early is not None:
            await early.finish()  # whatever it could not send, deliver() sends again
        node = self.registry.get(task.node_id)
        if node is None:
            self._requeue(task)
            await self.book.save(task)
            return
        await self.stragglers.yield_slot(node, task.uuid)
        task.attempts += 1
        await self.book.save(task)
        try:
            await Forwarder(self.book, self.staging, task, node, self.public_url).deliver(
                on_commit=lambda: self._committing.add(task.uuid))
        except (NodeError, NodeUnreachable, OSError) as exc:
            await self._send_failed(task, node, exc)
            return
        finally:
            self._committing.discard(task.uuid)
        advance(task, Step.DELIVERED)
        task.last_error = ""
        await self.book.save(task)
        self._avoid.pop(task.uuid, None)
        self._pinned.pop(task.uuid, None)
        await self.store.record("dispatched", f"Task {task.uuid} is now on node {node.row.url}",
                                task_uuid=task.uuid, node_id=node.id)

    async def _send_failed(self, task: Task, node: NodeState, exc: Exception) -> None:
        task.last_error = f"{node.row.url}: {exc}"
        self._avoid.setdefault(task.uuid, set()).add(node.id)
        if task.attempts >= self.dispatch_attempts:
            advance(task, Step.GIVE_UP)
            task.status, task.finished_at = TaskStatus.FAILED, time.time()
            task.error_message = f"Could not send the task to any node after {task.attempts} attempts: {exc}"
            task.output_tail = json.dumps([task.error_message])
            await self.book.save(task)
            await self.store.record("failed", f"Task {task.uuid} failed: {task.error_message}",
                                    task_uuid=task.uuid, node_id=node.id)
            return
        self._requeue(task)
        await self.book.save(task)
        await self.store.record("send-failed", f"Task {task.uuid} could not be sent to {node.row.url} ({exc}); "
                                "trying again", task_uuid=task.uuid, node_id=node.id)
        self.wake()

    def _requeue(self, task: Task) -> None:
        advance(task, Step.REQUEUE)
        task.node_id = None

    async def run_dispatch_loop(self) -> None:
        """Place waiting tasks, job by job and longest first within a job, whenever a slot may have freed."""
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races its timeout,
                # and then this loop never stops.
                async with asyncio.timeout(DISPATCH_RECHECK_SECONDS):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if not self.active():
                continue
            queue = [t for t in dispatch_order(self.book.in_phase(Phase.WAITING), self.speed_aware)
                     if t.uuid not in self._sending
                     and (t.status == TaskStatus.QUEUED or not TaskStatus(t.status).finished)]
            startable = could_start_now(self._views(), [demand_of(t) for t in queue], self.speed_aware)
            ahead: list[Demand] = []  # tasks this round left waiting, which keep their claim on the nodes
            for task, now in zip(queue, startable):
                if task.phase != Phase.WAITING or self.book.tasks.get(task.uuid) is not task:
                    continue  # canceled, removed or replaced while this loop awaited a save
                if now or task.uuid in self._pinned:
                    self._place(task, keep_reserved=False, ahead=ahead)
                if task.phase == Phase.FORWARDING:
                    await self.book.save(task)
                    if task.phase == Phase.FORWARDING:  # not canceled or removed while it was saved
                        self._start_sending(task)
                    continue
                ahead.append(demand_of(task))
                shown = self._waiting_status(task)
                if task.status != shown:
                    task.status = shown
                    await self.book.save(task)

    async def _discard(self, task: Task) -> None:
        self.info_cache.forget(task.uuid)
        self._stop_sending(task.uuid)
        self._avoid.pop(task.uuid, None)
        self.staging.remove(task.uuid)
        await self.book.tombstone(task)

    async def shutdown(self) -> None:
        jobs = list(self._sending.values())
        for job in jobs:
            job.cancel()
        for early in self._early.values():
            early.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


def _describe(task: Task, registry: NodeRegistry) -> str:
    node = registry.get(task.node_id)
    if task.phase == Phase.FORWARDING and node is not None:
        return f"sending to {node.row.url}"
    if task.status == TaskStatus.RUNNING:
        return "waiting for a faster node (ODM is shown RUNNING)"
    return "waiting for a free node (QUEUED)"


def public_task(task: Task, registry: NodeRegistry, eta_seconds: float | None = None) -> dict[str, Any]:
    """A task as the admin API shows it; `eta_seconds` until it is expected to finish (eta.py)."""
    node = registry.get(task.node_id)
    return {
        "uuid": task.uuid, "name": task.name, "phase": task.phase, "status": task.status,
        "status_name": TaskStatus(task.status).name, "progress": task.progress,
        "images_count": task.images_count, "node_id": task.node_id,
        "node_url": node.row.url if node else None, "date_created": task.date_created_ms,
        "processing_time": task.processing_time_ms, "attempts": task.attempts,
        "last_error": task.last_error, "error_message": task.error_message,
        "options": json.loads(task.options or "[]"),
        "job_key": task.job_key, "committed_at": task.committed_at, "finished_at": task.finished_at,
        "eta_seconds": eta_seconds,
    }
