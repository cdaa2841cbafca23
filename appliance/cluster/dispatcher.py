"""Placing committed tasks on nodes and sending them there: the coordinator's queue.

A task waits in Passel's own queue until the scheduler (`scheduler.py`, a pure function) picks the
node expected to finish it first; it is never piled onto a busy node. Sending goes through
`forwarding.py`; what reached the node is recorded per file, so a failed send resumes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.clock import boottime, wall
from appliance.cluster.eta import demand_of, with_backlog
from appliance.cluster.forwarding import EarlyForward, Forwarder
from appliance.cluster.registry import NodeRegistry, NodeState
from appliance.cluster.scheduler import (Demand, NodeView, choose_node, could_start_now, dispatch_order,
                                         keeps_reservation, move_ms, shows_running)
from appliance.cluster.staging import Staging
from appliance.cluster.task_states import Step, advance
from appliance.cluster.tasks import TaskBook, forwarded, set_forwarded
from appliance.nodeodm.client import NodeDown, NodeError, NodeUnreachable
from appliance.nodeodm.sentences import host_port, node_problem
from appliance.nodeodm.status import TaskStatus
from appliance.role import BoxUnreachable, Role
from appliance.store.database import Store
from appliance.store.models import Phase, Task, row_values

if TYPE_CHECKING:
    from appliance.cluster.stragglers import Stragglers

log = logging.getLogger("passel.tasks")
DISPATCH_RECHECK_SECONDS = 1.0
MB = 1024 * 1024
DELIVER_TIMEOUT_SECONDS = 120.0  # plus the time the images take on the slowest link worth waiting for
SLOWEST_LINK_BYTES_PER_SECOND = 1_000_000.0


class GivenUp(Exception):
    """The box holding a task's images gave up its commit (the coordinator was declared gone), and its
    client was told so: the client sent the work again, so this copy must never run."""


async def tell_node(node: NodeState, action: str, task: Task) -> None:
    """Cancel or remove a task's copy on a node, as far as the node answers: it may be gone."""
    try:
        await (node.client.task_cancel if action == "cancel" else node.client.task_remove)(task.uuid)
    except (NodeError, NodeUnreachable) as exc:
        log.info("Task %s: could not %s it on %s (%s)", task.uuid[:8], action, node.row.url, exc)


class Dispatcher:
    """Owns the queue and the sends in flight; the intake and the moves hand it tasks."""

    def __init__(self, book: TaskBook, registry: NodeRegistry, staging: Staging, store: Store, public_url: str,
                 dispatch_attempts: int, speed_aware: bool, role: Role, api_token: str = "") -> None:
        self.book, self.registry, self.staging, self.store = book, registry, staging, store
        self.public_url, self.api_token = public_url, api_token  # api_token: sm-cluster carries it (job_parts.py)
        self.dispatch_attempts = dispatch_attempts
        self.speed_aware = speed_aware  # off: any free slot, oldest first, no straggler copies
        self.role = role
        self.stragglers: Stragglers | None = None  # set once by the coordinator, which builds both
        self._wake = asyncio.Event()
        self._early: dict[str, EarlyForward] = {}
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._committing: set[str] = set()
        self._avoid: dict[str, set[int]] = {}
        self._pinned: dict[str, int] = {}  # moved by hand: this node, free slot or not
        registry.on_change.append(self.wake)

    def wake(self) -> None:
        self._wake.set()

    # -- what the scheduler sees ------------------------------------------------------------
    def views(self, task: Task | None = None) -> list[NodeView]:
        """Snapshots of the nodes with our backlog on each; seen by `task`, whose own slot is not a rival."""
        busy = self.book.busy_by_node()
        if task is not None and task.node_id is not None and task.uuid in self.book.tasks:
            busy[task.node_id] = busy.get(task.node_id, 1) - 1  # its own reservation is not a rival
        same_job = self.book.same_job_by_node(task.job_key) if task is not None else {}
        copies = self.stragglers.by_node() if self.stragglers is not None else {}
        views = self.registry.views(busy, same_job, copies)
        views = [replace(v, uploading_ms=self._uploading_ms(v)) if v.upstream else v for v in views]
        return with_backlog(views, self.book.tasks.values(), exclude=task.uuid if task is not None else "")

    def _uploading_ms(self, view: NodeView) -> float:
        """How long the sends under way to an upstream still hold its link (as if each had just begun:
        a send does not say how far it is)."""
        return sum(move_ms(view, self.demand(t)) for t in self.book.in_phase(Phase.FORWARDING)
                   if t.node_id == view.id and t.uuid in self._sending)

    def demand(self, task: Task) -> Demand:
        """What the task needs from a node, and where its images are: moving them costs time."""
        return replace(demand_of(task), data_mb=task.data_bytes / MB, near=self.registry.near(task.staged_on))

    def _ahead_of(self, task: Task) -> list[Demand]:
        """The queued tasks that the dispatch order puts before this one: they get their slots first."""
        queue = [t for t in self.book.in_phase(Phase.WAITING) if t.uuid != task.uuid and t.uuid not in self._sending]
        order = dispatch_order([*queue, task], self.speed_aware)
        return [self.demand(t) for t in order[:next(i for i, t in enumerate(order) if t is task)]]

    def pick(self, task: Task, images: int, ahead: list[Demand] | None = None) -> NodeState | None:
        """The best node for the task now, preferring nodes it has not just failed on; None to wait."""
        views = self.views(task)
        avoid = self._avoid.get(task.uuid, set())
        demand = replace(self.demand(task), images=images)
        ahead = self._ahead_of(task) if ahead is None else ahead
        choice = choose_node([v for v in views if v.id not in avoid], demand, ahead, self.speed_aware) \
            or choose_node(views, demand, ahead, self.speed_aware)
        return self.registry.get(choice.id) if choice else None

    def choice_for(self, demand: Demand) -> NodeView | None:
        """Where a new task of this size would go now, behind the queue: what dispatch itself would
        pick (None: it would wait in the queue)."""
        queue = [self.demand(t) for t in dispatch_order(self.book.in_phase(Phase.WAITING), self.speed_aware)
                 if t.uuid not in self._sending]
        return choose_node(self.views(), demand, queue, self.speed_aware)

    # -- the early forward, while the client still uploads ------------------------------------
    def reserve(self, task: Task, send_early: bool) -> None:
        """Choose a node at init, so files go on to it while the client uploads: from here with
        `send_early`, else from the box that receives them (receiving.py)."""
        node = self.pick(task, images=0)
        if node is not None:
            self.book.reserve(task, node.id)
            if send_early:
                self._early[task.uuid] = EarlyForward(Forwarder(self.book, self.staging, task, node, self.public_url, self.api_token))

    async def refresh_reservation(self, task: Task) -> None:
        """The client initialised its pending upload again: a node that holds it gets the new fields."""
        early = self._early.get(task.uuid)
        if early is not None:
            await early.forwarder.refresh_init()

    def early_for(self, uuid: str) -> EarlyForward | None:
        """The early forward of a task whose upload arrives here, to send files on as they arrive."""
        return self._early.get(uuid)

    def staged(self, task: Task, paths: list[Path]) -> None:
        early = self._early.get(task.uuid)
        if early is not None:
            early.push(paths)

    def enqueue(self, task: Task, reserved_elsewhere: bool = False) -> EarlyForward | None:
        """A committed task: place it (on its reserved node while that is still the best) or queue it.
        `reserved_elsewhere`: the box that holds the files sent them to the reserved node.

        Returns the early forward to finish the send with, once the commit is saved (`start`).
        """
        early = self._early.pop(task.uuid, None)
        reserved = task.node_id if (early is not None and early.error is None) or reserved_elsewhere else None
        advance(task, Step.COMMIT)
        self._place(task, keep_reserved=reserved is not None)
        if early is not None and task.node_id != reserved:
            early.cancel()  # placed elsewhere (or nowhere): the pre-opened copy is abandoned
            return None
        return early

    def start(self, task: Task, early: EarlyForward | None) -> None:
        """Begin the send that `enqueue` placed, if it placed one."""
        if task.phase == Phase.FORWARDING:
            self._start_sending(task, early)

    # -- placement --------------------------------------------------------------------------
    def _place(self, task: Task, keep_reserved: bool, ahead: list[Demand] | None = None) -> None:
        """Choose the task's node now, or leave it QUEUED in the coordinator's queue."""
        pinned = self.registry.get(self._pinned.get(task.uuid))
        if pinned is not None and pinned.online and not pinned.row.locked:
            advance(task, Step.PLACE)
            task.status, task.node_id = TaskStatus.RUNNING, pinned.id
            return
        node = None
        reserved = self.registry.get(task.node_id) if keep_reserved else None
        if reserved is not None and keeps_reservation(self.views(task), self.demand(task), reserved.id,
                                                      self._ahead_of(task), self.speed_aware):
            node = reserved
        if node is None:
            node = self.pick(task, task.images_count, ahead)
        if node is None:  # it stays in the queue
            task.node_id = None
            task.status = self.waiting_status(task)
            return
        advance(task, Step.PLACE)
        task.status, task.node_id = TaskStatus.RUNNING, node.id

    def waiting_status(self, task: Task) -> TaskStatus:
        """QUEUED, except for an ODM submodel held back for a faster node (scheduler.shows_running)."""
        demand = self.demand(task)  # the views cost a pass over the tasks: only submodels need them
        held = demand.impatient and shows_running(self.views(task), demand, task.status)
        return TaskStatus.RUNNING if held else TaskStatus.QUEUED

    def avoid(self, uuid: str, node_id: int) -> None:
        """Prefer other nodes for this task: it failed there, or its files there are uncertain."""
        self._avoid.setdefault(uuid, set()).add(node_id)

    def pin(self, uuid: str, node_id: int) -> None:
        """A move by hand: this node, free slot or not."""
        self._pinned[uuid] = node_id

    def requeue(self, task: Task) -> None:
        advance(task, Step.REQUEUE)
        task.node_id = None

    # -- sending ----------------------------------------------------------------------------
    def _start_sending(self, task: Task, early: EarlyForward | None = None) -> None:
        self.stop(task.uuid)
        job = asyncio.create_task(self._send(task, early), name=f"send-{task.uuid[:8]}")
        self._sending[task.uuid] = job
        job.add_done_callback(lambda _: self._sending.pop(task.uuid, None) if self._sending.get(task.uuid) is job else None)

    async def settle(self, uuid: str) -> None:
        """Stop a send that is still uploading; let one that is committing finish, so the node and
        the table agree on whether the task exists there before we act on it."""
        job = self._sending.get(uuid)
        if job is None:
            self.stop(uuid)
            return
        if uuid not in self._committing:
            self.stop(uuid)
        await asyncio.wait({job})  # not gather: a caller that is itself cancelled must not cut a commit off

    def sending(self, uuid: str) -> bool:
        """Whether a send of this task runs here now."""
        return uuid in self._sending

    def stop(self, uuid: str) -> None:
        """Stop sending the task, early forward included."""
        job = self._sending.pop(uuid, None)
        if job is not None:
            job.cancel()
        early = self._early.pop(uuid, None)
        if early is not None:
            early.cancel()

    def forget(self, uuid: str) -> None:
        """The task is gone from the queue for good."""
        self.stop(uuid)
        self._avoid.pop(uuid, None)

    async def pause(self) -> None:
        """Stop sending when this box stops being coordinator; what was mid-way is resumed by the next."""
        for uuid in list(self._sending):
            await self.settle(uuid)

    async def _send(self, task: Task, early: EarlyForward | None) -> None:
        if early is not None:
            await early.finish()  # whatever it could not send, deliver() sends again
        node = self.registry.get(task.node_id)
        if node is None:
            self.requeue(task)
            await self.book.save(task)
            return
        if self.stragglers is not None:
            await self.stragglers.yield_slot(node, task.uuid)
        task.attempts += 1
        await self.book.save(task)
        held_by, held = forwarded(task)
        fresh, began = held_by != node.id or not held, boottime()  # a whole send measures an upstream's link
        try:
            if task.staged_on in ("", self.role.self_id):
                await Forwarder(self.book, self.staging, task, node, self.public_url, self.api_token).deliver(
                    on_commit=lambda: self._committing.add(task.uuid))
            else:
                await self._send_from(task.staged_on, task, node)
        except GivenUp as exc:  # an orphan: its client was told the commit failed and sent the work again
            await self.book.tombstone(task, Step.LOSE)
            await self.store.record("orphan", f"Task {task.uuid} is dropped: {exc}", task_uuid=task.uuid)
            return
        except BoxUnreachable as exc:  # not the node's fault: wait for the box (the reconciler's grace)
            task.attempts -= 1
            log.info("Task %s: box %s, which holds its images, cannot send them now (%s)", task.uuid[:8],
                     task.staged_on, exc)
            self.requeue(task)
            await self.book.save(task)
            return
        except (NodeError, NodeUnreachable, OSError) as exc:
            await self._send_failed(task, node, exc)
            return
        finally:
            self._committing.discard(task.uuid)
        advance(task, Step.DELIVERED)
        task.last_error = ""
        await self.book.save(task)
        if fresh and node.upstream:
            await self.registry.learn_link(node.id, sent=True, size=task.data_bytes, seconds=boottime() - began)
        self._avoid.pop(task.uuid, None)
        self._pinned.pop(task.uuid, None)
        await self.store.record("dispatched", f"Task {task.uuid} is now on node {node.name}",
                                task_uuid=task.uuid, node_id=node.id)

    async def _send_from(self, box: str, task: Task, node: NodeState) -> None:
        """Ask the box that holds the images to send them straight to the node and commit them there
        (receiving.Receiver.deliver): they never pass through this box."""
        self._committing.add(task.uuid)  # the other box commits on the node: never cut it off mid-way
        node_id, on_node = forwarded(task)  # row ids are this box's own: name the node and its files
        reply = await self.role.call(box, "/deliver", {"task": row_values(task), "node_url": node.row.url,
                                                       "on_node": sorted(on_node) if node_id == node.id else []},
                                     timeout=DELIVER_TIMEOUT_SECONDS + task.data_bytes / SLOWEST_LINK_BYTES_PER_SECOND)
        if reply.get("given_up"):
            raise GivenUp(f"box {box}, which holds its images, gave up its commit: {reply['error']}")
        if reply.get("node_down"):
            raise NodeDown(f"box {box} could not send it: {reply['error']}")
        if "error" in reply:
            raise NodeError(f"box {box} could not send it: {reply['error']}")
        set_forwarded(task, node.id, reply.get("files", []))

    async def _send_failed(self, task: Task, node: NodeState, exc: Exception) -> None:
        task.last_error = node_problem(exc, node.row.label or host_port(node.row.url))  # a sentence for the pages
        self.avoid(task.uuid, node.id)
        if isinstance(exc, NodeDown):  # not the task's fault; and not to be tried again until it answers
            task.attempts -= 1
            await self.registry.went_down(node, task.last_error)
        elif node.upstream and isinstance(exc, (NodeUnreachable, OSError)):
            task.attempts -= 1  # the uplink dropped: not the task's fault, and the passel runs it itself
        if task.attempts >= self.dispatch_attempts:
            advance(task, Step.GIVE_UP)
            task.status, task.finished_at = TaskStatus.FAILED, wall()
            task.error_message = f"Could not send the task to any node after {task.attempts} attempts. {task.last_error}"
            task.output_tail = [task.error_message]
            await self.book.save(task)
            await self.store.record("failed", f"Task {task.uuid} failed: {task.error_message}",
                                    task_uuid=task.uuid, node_id=node.id)
            return
        self.requeue(task)
        await self.book.save(task)
        await self.store.record("send-failed", f"Task {task.uuid} could not be sent to {node.name} ({exc}); "
                                "trying again", task_uuid=task.uuid, node_id=node.id)
        self.wake()

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
            if not self.role.coordinating:
                continue
            await self._take_back_sends_to_lost_upstreams()
            queue = [t for t in dispatch_order(self.book.in_phase(Phase.WAITING), self.speed_aware)
                     if t.uuid not in self._sending
                     and (t.status == TaskStatus.QUEUED or not TaskStatus(t.status).finished)]
            startable = could_start_now(self.views(), [self.demand(t) for t in queue], self.speed_aware)
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
                ahead.append(self.demand(task))
                shown = self.waiting_status(task)
                if task.status != shown:
                    task.status = shown
                    await self.book.save(task)

    async def _take_back_sends_to_lost_upstreams(self) -> None:
        """A send to an upstream whose link dropped goes back to the queue as soon as the node is
        called offline, for a node that answers: with the link gone, its connection can hang for
        minutes without an error. Not once it commits: the node may already hold the task."""
        for uuid in list(self._sending):
            task = self.book.tasks.get(uuid)
            node = self.registry.get(task.node_id) if task is not None else None
            if task is None or node is None or node.online or not node.upstream or uuid in self._committing:
                continue
            await self.settle(uuid)
            if task.phase != Phase.FORWARDING or self.book.tasks.get(uuid) is not task:
                continue  # it finished its commit meanwhile, or was canceled or removed
            self.avoid(uuid, node.id)
            self.requeue(task)
            task.last_error = f"the link to upstream node {node.name} dropped while the task was being sent"
            await self.book.save(task)
            await self.store.record("send-failed", f"Task {uuid}: {task.last_error}; sending it to another node",
                                    task_uuid=uuid, node_id=node.id)

    async def shutdown(self) -> None:
        jobs = list(self._sending.values())
        for job in jobs:
            job.cancel()
        for early in self._early.values():
            early.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
