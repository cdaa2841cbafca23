"""Keeps the task table, and the live view clients' info and output are answered from
(info_cache.py), current from the nodes, which hold the truth about their tasks; and makes sure no
task stays RUNNING forever (a RUNNING task that never ends hangs ODM forever)."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any, Protocol

from appliance.clock import boottime
from appliance.cluster.info_cache import InfoCache, OutputRestarted, Run
from appliance.cluster.registry import NodeRegistry, NodeState
from appliance.cluster.stragglers import Stragglers
from appliance.cluster.tasks import OUTPUT_TAIL_LINES, TaskBook
from appliance.nodeodm.client import NodeError, NodeUnreachable
from appliance.nodeodm.status import TaskStatus
from appliance.role import Role
from appliance.store.models import Phase, Task

log = logging.getLogger("passel.tracker")


class TrackerHost(Protocol):
    """What the tracker needs of the coordinator: the table and the live view, to keep current, and
    the three things it may do to a task: take in a node's report, send it again, or fail it."""

    book: TaskBook
    registry: NodeRegistry
    info_cache: InfoCache
    role: Role
    stragglers: Stragglers
    dispatch_attempts: int

    def can_send_again(self, task: Task) -> bool: ...

    def bringing_home(self, task: Task) -> bool: ...

    async def observe(self, task: Task, node: NodeState, info: dict[str, Any], tail: bool = False) -> None: ...

    async def move_away(self, task: Task, reason: str) -> None: ...

    async def fail(self, task: Task, reason: str) -> None: ...


async def refresh_from_node(c: TrackerHost, task: Task, node: NodeState) -> None:
    """Ask the node what is new about the task (status, progress, the lines after those we have) and
    take it in: the live view answers clients from it, and the row keeps it."""
    try:
        run = await _fetch(c, task, node)
    except (NodeUnreachable, NodeError, OutputRestarted):
        return  # a node that lost the task, or is gone, is the reconciler's business; anything else, the next round's
    if run is not None:
        await c.observe(task, node, {**run.reply, "output": run.lines[-OUTPUT_TAIL_LINES:]}, tail=True)


async def _fetch(c: TrackerHost, task: Task, node: NodeState) -> Run | None:
    ask = partial(node.client.task_info, task.uuid)  # with output from the given line on
    try:
        return await c.info_cache.refresh(task, node.id, ask)
    except OutputRestarted:
        pass
    if task.node_id != node.id or task.phase not in (Phase.ON_NODE, Phase.FINISHED):
        return None  # it left that node meanwhile
    log.warning("Task %s: %s started it over from the beginning (did the node restart?); its new output "
                "follows the lines clients already have", task.uuid, node.row.url)
    c.info_cache.end_run(task, f"Passel: {node.row.url} started this task over; its new output follows")
    await c.book.save(task)
    return await c.info_cache.refresh(task, node.id, ask)


class TaskTracker:
    """Polls the unfinished tasks on each node (and a finished one once more, for its last lines); a task with no progress and no new output for
    `stall_seconds` is sent again from staging, or failed with an explanation."""

    def __init__(self, coordinator: TrackerHost, interval: float, stall_seconds: float) -> None:
        self.coordinator = coordinator
        self.interval = interval
        self.stall_seconds = stall_seconds
        # a node's reply answers clients until two rounds have passed without a newer one
        coordinator.info_cache.keep_for = 2 * interval
        self._last_change: dict[str, tuple[tuple[float, str], float]] = {}

    async def refresh(self, task: Task) -> None:
        node = self.coordinator.registry.get(task.node_id)
        if node is None or not node.online:
            return
        await refresh_from_node(self.coordinator, task, node)
        await self._check_stall(task)

    async def _check_stall(self, task: Task) -> None:
        if task.phase != Phase.ON_NODE or task.status != TaskStatus.RUNNING or self.coordinator.bringing_home(task):
            self._last_change.pop(task.uuid, None)  # done (or done upstream, its results on their way home)
            return
        now = boottime()
        signature = (task.progress, task.output_tail)
        seen, since = self._last_change.get(task.uuid, (None, now))
        if seen != signature:
            self._last_change[task.uuid] = (signature, now)
            return
        if now - since < self.stall_seconds:
            return
        del self._last_change[task.uuid]
        reason = f"it made no progress and wrote no output for {now - since:.0f} s"
        c = self.coordinator
        if task.attempts < c.dispatch_attempts and c.can_send_again(task):
            await c.move_away(task, reason)
        else:
            await c.fail(task, f"Stopped: {reason}")

    def _to_poll(self) -> list[Task]:
        """The unfinished tasks on nodes, and the finished ones whose whole output is still to be read."""
        c = self.coordinator
        active = [t for t in c.book.in_phase(Phase.ON_NODE) if not TaskStatus(t.status).finished]
        ended = [t for t in map(c.book.get, c.info_cache.unsettled()) if t is not None and t.phase == Phase.FINISHED]
        return active + ended

    async def run_forever(self) -> None:
        while True:
            if self.coordinator.role.coordinating:
                await asyncio.gather(*(self.refresh(t) for t in self._to_poll()))
                await self.coordinator.stragglers.tick()  # with fresh progress: copy, promote or drop
            await asyncio.sleep(self.interval)
