"""Keeps the task table current from the nodes, which hold the truth about their tasks."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from typing import Any

from appliance.cluster.coordinator import Coordinator
from appliance.cluster.tasks import move_status
from appliance.nodeodm.client import NodeError, NodeUnreachable
from appliance.nodeodm.status import TaskStatus
from appliance.store.models import Phase, Task

log = logging.getLogger("passel.tracker")
OUTPUT_TAIL_LINES = 50  # kept in the table so output still answers when the node is gone
MISSING_POLLS_BEFORE_LOST = 3  # a node restarting, or a poll racing a commit, is not a lost task


def apply_node_info(task: Task, info: dict[str, Any]) -> bool:
    """Copy a node's view of the task into our row; True when the status changed."""
    status = info.get("status") or {}
    changed = move_status(task, int(status.get("code", task.status)))
    if task.status == status.get("code"):
        task.progress = float(info.get("progress") or 0)
        task.processing_time_ms = int(info.get("processingTime") if info.get("processingTime") is not None else -1)
        task.error_message = str(status.get("errorMessage") or "")
        if "output" in info:
            task.output_tail = json.dumps(list(info["output"])[-OUTPUT_TAIL_LINES:])
    return changed


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
        if task.phase != Phase.ON_NODE:  # canceled or removed while we asked
            return
        changed = apply_node_info(task, info)
        if TaskStatus(task.status).finished:
            await self._finished(task, node.id)
        await self.coordinator.book.save(task)
        if changed:
            log.info("Task %s is %s on %s (%.0f%%)", task.uuid, TaskStatus(task.status).name, node.row.url, task.progress)

    async def _finished(self, task: Task, node_id: int) -> None:
        task.phase, task.finished_at = Phase.FINISHED, time.time()
        if task.status == TaskStatus.COMPLETED and task.images_count and task.processing_time_ms > 0:
            await self.coordinator.registry.learn_speed(node_id, task.processing_time_ms / task.images_count)
        self.coordinator.wake()

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
            active = [t for t in self.coordinator.book.in_phase(Phase.ON_NODE) if not TaskStatus(t.status).finished]
            await asyncio.gather(*(self.refresh(t) for t in active))
            await asyncio.sleep(self.interval)
