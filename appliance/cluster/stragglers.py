"""Stragglers: when a slow box holds the last tasks of a job and a fast box sits idle, a copy of the
task runs on the fast box, whichever finishes first wins, and the other is canceled.

The client sees one task. The copy has the same uuid on another node (set-uuid is refused twice only
on the same node), the task row keeps pointing at the original until the copy wins, and then it is
switched to the copy's node, so info, output and download come from the winner. The copy is never
shown to a client: it cannot make a task look QUEUED or FAILED (ODM would resubmit or abort). Copies
live in memory only: after a restart or a hand-over, the reconciler finds the copy of a task that
lives on another node and removes it, as with any stale duplicate.

Copies are not made of split parents (they would send their submodels twice) nor of tasks with a
webhook (the client would hear from both runs). A copy gives its slot back at once to real work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.cluster.eta import demand_of, running, task_remaining_ms, with_backlog
from appliance.cluster.forwarding import Forwarder
from appliance.cluster.info_cache import InfoCache
from appliance.cluster.registry import NodeRegistry, NodeState
from appliance.cluster.staging import Staging
from appliance.cluster.scheduler import Demand, NodeView, run_ms, unfit
from appliance.cluster.tasks import OUTPUT_TAIL_LINES, TaskBook, set_forwarded
from appliance.nodeodm.client import NodeError, NodeUnreachable
from appliance.nodeodm.status import TaskStatus
from appliance.store.database import Store
from appliance.store.models import Phase, Task, row_values



class StragglerHost(Protocol):
    """What straggler copies need of the coordinator: its table, nodes and staged files, to read,
    and `observe`, to take in the winning copy's report."""

    book: TaskBook
    registry: NodeRegistry
    staging: Staging
    store: Store
    info_cache: InfoCache
    public_url: str
    speed_aware: bool

    def has_staged_files(self, task: Task) -> bool: ...

    async def observe(self, task: Task, node: NodeState, info: dict[str, Any], tail: bool = False) -> None: ...

log = logging.getLogger("passel.stragglers")
MIN_GAIN_SHARE = 0.25  # a copy must be expected to finish at least a quarter sooner than the original
MIN_GAIN_MS = 2000.0  # and at least this much sooner, so short tasks are not copied for nothing
ASSUMED_BYTES_PER_MS = 20_000.0  # 20 MB/s: a field network, for the copy's extra upload


@dataclass(frozen=True)
class Straggler:
    """A running task that a copy could overtake."""

    uuid: str
    node_id: int
    demand: Demand
    remaining_ms: float  # expected, on its node
    transfer_ms: float = 0.0  # sending its files again
    avoid: frozenset[int] = frozenset()  # nodes where a copy of it already failed


@dataclass(frozen=True)
class CopyPlan:
    uuid: str
    node_id: int
    expected_ms: float  # the copy's expected time to finish, upload included
    saves_ms: float


def plan_copies(candidates: Sequence[Straggler], nodes: Sequence[NodeView], queued: int) -> list[CopyPlan]:
    """Copies worth starting now: only when nothing waits in the queue (idle slots would otherwise
    take queued work), the latest-finishing task first, each onto the free slot that finishes it
    soonest, and only when that is clearly sooner than the original."""
    if queued:
        return []
    free = {n.id: n.free_slots for n in nodes}
    plans = []
    for task in sorted(candidates, key=lambda s: (-s.remaining_ms, s.uuid)):
        options = [(task.transfer_ms + run_ms(n, task.demand), n.id) for n in nodes
                   if n.id != task.node_id and n.id not in task.avoid and free[n.id] > 0
                   and unfit(n, task.demand) is None]
        if not options:
            continue
        expected, node_id = min(options)
        gain = task.remaining_ms - expected
        if gain >= MIN_GAIN_MS and gain >= MIN_GAIN_SHARE * task.remaining_ms:
            plans.append(CopyPlan(task.uuid, node_id, expected, gain))
            free[node_id] -= 1
    return plans


class _Unrecorded(TaskBook):
    """The book a copy's forwarder writes to: the copy is not a task of the table."""

    async def save(self, task: Task) -> None:
        return None


@dataclass
class Copy:
    """A copy of a task running on another node than the original."""

    node_id: int
    original_node_id: int
    sending: asyncio.Task[None] | None = None
    committed: bool = False
    closing: asyncio.Task[None] | None = None


class Stragglers:
    """The live copies; the task tracker's loop calls `tick` after each round of polls."""

    def __init__(self, host: StragglerHost) -> None:
        self.c = host
        self.copies: dict[str, Copy] = {}
        self._bytes: dict[str, int] = {}
        self._failed: set[tuple[str, int]] = set()  # (task, node) pairs where a copy failed

    def by_node(self) -> dict[int, int]:
        """Slots the copies hold per node: placement counts them as free, since they give way."""
        counts: dict[int, int] = {}
        for copy in self.copies.values():
            counts[copy.node_id] = counts.get(copy.node_id, 0) + 1
        return counts

    def holds(self, node_id: int, uuid: str) -> bool:
        """True when the task on that node is our copy, not a stale duplicate."""
        copy = self.copies.get(uuid)
        return copy is not None and copy.node_id == node_id

    async def yield_slot(self, node: NodeState, uuid: str) -> None:
        """Before a real task is sent to a node: a copy of the same task there goes (the node would
        refuse the uuid), and other copies go while the node has more tasks than slots."""
        here = sorted((u for u, copy in self.copies.items() if copy.node_id == node.id), key=lambda u: u != uuid)
        excess = self.c.book.busy_by_node().get(node.id, 0) + len(here) - int(node.info.get("maxParallelTasks") or 1)
        for copy_uuid in here:
            if copy_uuid == uuid or excess > 0:
                await self._drop(copy_uuid, f"real work needs the slot on {node.row.url}")
                excess -= 1

    async def shutdown(self) -> None:
        """Copies still being sent stop with the box: the loop that runs them is about to close."""
        sending = [copy.sending for copy in self.copies.values() if copy.sending is not None]
        for job in sending:
            job.cancel()
        await asyncio.gather(*sending, return_exceptions=True)

    async def tick(self) -> None:
        for uuid in list(self.copies):
            await self._check(uuid)
        if self.c.speed_aware:
            await self._start_new()

    async def _check(self, uuid: str) -> None:
        copy = self.copies.get(uuid)
        if copy is None or copy.closing is not None:
            return
        if not self._original_runs(uuid, copy):
            await self._drop(uuid, "the original finished, moved or was canceled")
            return
        if copy.sending is not None and not copy.sending.done():
            return
        node = self.c.registry.get(copy.node_id)
        if node is None or not copy.committed:
            await self._drop(uuid, "it could not be sent", failed=True)
            return
        try:
            info = await node.client.task_info(uuid, with_output=-OUTPUT_TAIL_LINES)
        except NodeUnreachable:
            return  # the original still runs; try again next round
        except NodeError as exc:
            await self._drop(uuid, f"its node answered {exc}", failed=True)
            return
        code = (info.get("status") or {}).get("code")
        if code == TaskStatus.COMPLETED and self._original_runs(uuid, copy):
            await self._promote(uuid, copy, node, info)
        elif code in (TaskStatus.FAILED, TaskStatus.CANCELED):
            await self._drop(uuid, "the copy did not complete", failed=True)

    def _original_runs(self, uuid: str, copy: Copy) -> bool:
        task = self.c.book.get(uuid)
        return task is not None and task.phase == Phase.ON_NODE and task.node_id == copy.original_node_id \
            and not TaskStatus(task.status).finished

    async def _promote(self, uuid: str, copy: Copy, node: NodeState, info: dict[str, Any]) -> None:
        """The copy won: the row moves to its node before anything else can await, then the original goes."""
        c = self.c
        task = c.book.tasks[uuid]
        original = c.registry.get(task.node_id)
        del self.copies[uuid]
        task.node_id = node.id
        set_forwarded(task, node.id, [p.name for p in c.staging.files(uuid)])
        where = original.row.url if original else "its first node"
        note = f"Passel: a copy on {node.row.url} finished before the run on {where}, which was canceled"
        c.info_cache.end_run(task, note)  # what clients saw of the original stays; the copy's lines follow
        await c.observe(task, node, info, tail=True)
        await c.store.record("copy-won", f"Task {uuid}: the copy on {node.name} finished first; "
                             f"the run on {where} is canceled", task_uuid=uuid, node_id=node.id)
        if original is not None:
            await _remove(original, uuid)

    async def _drop(self, uuid: str, reason: str, failed: bool = False) -> None:
        copy = self.copies.get(uuid)
        if copy is None:
            return
        if failed:
            self._failed.add((uuid, copy.node_id))
        if copy.closing is None:
            copy.closing = asyncio.create_task(self._close(uuid, copy, reason))
        await copy.closing

    async def _close(self, uuid: str, copy: Copy, reason: str) -> None:
        try:
            if copy.sending is not None:
                copy.sending.cancel()
                await asyncio.gather(copy.sending, return_exceptions=True)
            node = self.c.registry.get(copy.node_id)
            if node is not None:
                await _remove(node, uuid)
            where = node.row.url if node else f"node {copy.node_id}"
            log.info("Task %s: copy on %s dropped: %s", uuid[:8], where, reason)
            if copy.committed:
                await self.c.store.record("copy-dropped", f"Task {uuid}: the copy on {where} was canceled: {reason}",
                                          task_uuid=uuid, node_id=copy.node_id)
        finally:
            self.copies.pop(uuid, None)

    async def _start_new(self) -> None:
        c = self.c
        queued = len(c.book.in_phase(Phase.WAITING))
        busy = c.book.busy_by_node()
        for node_id, n in self.by_node().items():
            busy[node_id] = busy.get(node_id, 0) + n
        # within the site only: a copy up a thin uplink, or of a task whose results are on their way
        # home from one, would cost the link more than the straggler costs the job
        views = [v for v in with_backlog(c.registry.views(busy), c.book.tasks.values()) if not v.upstream]
        if queued or not any(v.free_slots and unfit(v, Demand(images=1)) is None for v in views):
            return
        by_id = {v.id: v for v in views}
        candidates = []
        live = set()
        for task in running(c.book.in_phase(Phase.ON_NODE)):
            live.add(task.uuid)
            node = by_id.get(task.node_id)  # type: ignore[arg-type]
            if node is None or task.uuid in self.copies or task.status != TaskStatus.RUNNING \
                    or not self._copyable(task):
                continue
            candidates.append(Straggler(task.uuid, node.id, demand_of(task), task_remaining_ms(task, node),
                                        self._bytes_of(task) / ASSUMED_BYTES_PER_MS,
                                        frozenset(n for u, n in self._failed if u == task.uuid)))
        self._bytes = {u: b for u, b in self._bytes.items() if u in live}
        self._failed = {(u, n) for u, n in self._failed if u in live}
        for plan in plan_copies(candidates, views, queued):
            self._start(c.book.tasks[plan.uuid], plan)

    def _copyable(self, task: Task) -> bool:
        return demand_of(task).kind != "split" and not task.webhook and self.c.has_staged_files(task)

    def _bytes_of(self, task: Task) -> int:
        if task.uuid not in self._bytes:
            self._bytes[task.uuid] = sum(p.stat().st_size for p in self.c.staging.files(task.uuid))
        return self._bytes[task.uuid]

    def _start(self, task: Task, plan: CopyPlan) -> None:
        c = self.c
        node, original = c.registry.get(plan.node_id), c.registry.get(task.node_id)
        if node is None or original is None:
            return
        clone = Task(**row_values(task))
        set_forwarded(clone, None, [])
        copy = Copy(node.id, original.id)
        forwarder = Forwarder(_Unrecorded(c.store), c.staging, clone, node, c.public_url, c.api_token)
        copy.sending = asyncio.create_task(self._send(task.uuid, copy, forwarder), name=f"copy-{task.uuid[:8]}")
        self.copies[task.uuid] = copy
        log.info("Task %s on %s is expected to need %.0f s more; a copy starts on %s (expected %.0f s)",
                 task.uuid[:8], original.row.url, (plan.expected_ms + plan.saves_ms) / 1000, node.row.url,
                 plan.expected_ms / 1000)

    async def _send(self, uuid: str, copy: Copy, forwarder: Forwarder) -> None:
        try:
            await forwarder.deliver()
        except (NodeError, NodeUnreachable, OSError) as exc:
            log.info("Task %s: the copy could not be sent to %s: %s", uuid[:8], forwarder.node.row.url, exc)
            return
        copy.committed = True
        await self.c.store.record("copy-started", f"Task {uuid}: a copy runs on {forwarder.node.name}, where it is "
                                  "expected to finish sooner; the first to finish wins", task_uuid=uuid,
                                  node_id=forwarder.node.id)


async def _remove(node: NodeState, uuid: str) -> None:
    """Remove alone, which cancels a running task first: a separate cancel would let a client's info,
    in flight to the loser, see CANCELED (ODM aborts the whole job on that)."""
    try:
        await node.client.task_remove(uuid)
    except (NodeError, NodeUnreachable) as exc:
        log.info("Task %s: could not remove it on %s: %s", uuid[:8], node.row.url, exc)
