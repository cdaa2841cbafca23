"""Keeps the task table current from the nodes, which hold the truth about their tasks."""

from __future__ import annotations

import asyncio
from collections import Counter

from appliance.cluster.coordinator import Coordinator
from appliance.cluster.tasks import OUTPUT_TAIL_LINES
from appliance.nodeodm.client import NodeError, NodeUnreachable
from appliance.nodeodm.status import TaskStatus
from appliance.store.models import Phase, Task

MISSING_POLLS_BEFORE_LOST = 3  # a node restarting, or a poll racing a commit, is not a lost task


class TaskTracker:
    """Polls the unfinished tasks on each node and notices when they finish or vanish."""

    def __init__(self, coordinator: Coordinator, interval: float) -> None:
        self.coordinator = coordinator
        self.interval = interval
        self._missing: Counter[str] = Counter()

    async def refresh(self, task: Task) -> None:
        node = self.coordinator.registry.get(task.node_id)
        if node is None or not node.online:
            return
        try:
            info = await node.client.task_info(task.uuid, with_output=-OUTPUT_TAIL_LINES)
        except NodeUnreachable:
            return
        except NodeError as exc:
            if "not found" in str(exc):
                await self._missing_on_node(task, node.row.url)
            return
        self._missing.pop(task.uuid, None)
        await self.coordinator.observe(task, node, info, tail=True)

    async def _missing_on_node(self, task: Task, url: str) -> None:
        self._missing[task.uuid] += 1
        if self._missing[task.uuid] < MISSING_POLLS_BEFORE_LOST or task.phase != Phase.ON_NODE:
            return
        del self._missing[task.uuid]
        task.phase, task.node_id, task.status = Phase.WAITING, None, TaskStatus.QUEUED
        task.forwarded_files = "{}"
        await self.coordinator.book.save(task)
        await self.coordinator.store.record("lost", f"Task {task.uuid} disappeared from {url}; sending it again "
                                            "from the staged copy", task_uuid=task.uuid)
        self.coordinator.wake()

    async def run_forever(self) -> None:
        while True:
            if not self.coordinator.active():
                await asyncio.sleep(self.interval)
                continue
            active = [t for t in self.coordinator.book.in_phase(Phase.ON_NODE) if not TaskStatus(t.status).finished]
            await asyncio.gather(*(self.refresh(t) for t in active))
            await asyncio.sleep(self.interval)
