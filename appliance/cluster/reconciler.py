"""Rebuilding the truth from the nodes, and moving work off nodes and boxes that are gone.

Runs at every election win and every few seconds while coordinating; what needs no node to answer
(silent nodes, boxes gone) is checked every second, so a silent node's work moves as soon as the grace
period ends rather than after a slow pass:
- a task a node no longer lists counts as lost there only after the grace period (a node
  restarting, or a poll racing a commit, is not a loss);
- a node silent for longer than the grace period (sized for a laptop lid closed for a minute)
  has its unfinished tasks sent again from staging to another node;
- a task whose staged upload is on a box that is gone for good is answered not-found, so ODM
  resubmits it (FAILED would abort the whole split-merge);
- a task a node lists is judged against its row by `task_merge.merge`: one given up for lost there
  comes back, and the copies a node still holds of tasks that moved on, were removed or were given
  up by their client are canceled and removed.
"""

from __future__ import annotations

import asyncio
import logging
import math

import aiohttp
from aiohttp import web

from appliance.clock import boottime
from appliance.cluster.coordinator import Coordinator
from appliance.cluster.registry import NodeState
from appliance.cluster.task_merge import Verdict, Version, merge
from appliance.nodeodm.client import NodeError, NodeUnreachable
from appliance.nodeodm.status import TaskStatus
from appliance.store.models import Phase, Task

log = logging.getLogger("passel.reconcile")
RECONCILE_SECONDS = 3.0  # comparing with every node's task list
SILENCE_CHECK_SECONDS = 1.0  # silent nodes and gone boxes: no network needed
# a node slower than this to list its tasks is skipped for one pass, never judged by it; short, so a
# node going silent cannot hold up the pass that would move its work
COMPARE_TIMEOUT = aiohttp.ClientTimeout(total=2)

class Reconciler:
    def __init__(self, coordinator: Coordinator, grace_seconds: float) -> None:
        self.coordinator = coordinator
        self.grace = grace_seconds
        self._missing_since: dict[str, float] = {}
        self._box_gone_since: dict[str, float] = {}

    async def run_forever(self) -> None:
        compared_at = -math.inf
        while True:
            if self.coordinator.role.coordinating:
                if boottime() - compared_at >= RECONCILE_SECONDS:
                    compared_at = boottime()
                    await self.reconcile()
                else:
                    await self._move_off_silent_nodes()
                    await self._check_staging_boxes()
            await asyncio.sleep(SILENCE_CHECK_SECONDS)

    async def reconcile(self) -> None:
        for node in list(self.coordinator.registry.nodes.values()):
            if node.online:
                await self._compare_with_node(node)
        await self._move_off_silent_nodes()
        await self._check_staging_boxes()

    async def _move_off_silent_nodes(self) -> None:
        c = self.coordinator
        for node in list(c.registry.nodes.values()):
            if not node.online and node.silent_for() >= self.grace:
                for task in self._sends_nobody_runs(node.id):
                    await c.settle_send(task, on_node=False)
                for task in self._unfinished_on(node.id):
                    await c.move_away(task, f"node {node.row.url} has not answered for {node.silent_for():.0f} s")

    def _sends_nobody_runs(self, node_id: int) -> list[Task]:
        """Tasks being sent to the node by no send of this coordinator: a coordinator before it was
        sending them when it stopped (from a box that took the upload in, the send itself may well
        have finished: receiving.py). Not told by the row's owner: a new coordinator makes every row
        its own before it leads (`TaskBook.take_ownership`)."""
        c = self.coordinator
        return [t for t in c.book.in_phase(Phase.FORWARDING) if t.node_id == node_id and not c.dispatcher.sending(t.uuid)]

    def _unfinished_on(self, node_id: int) -> list[Task]:
        return [t for t in self.coordinator.book.in_phase(Phase.ON_NODE)
                if t.node_id == node_id and not TaskStatus(t.status).finished]

    async def _compare_with_node(self, node: NodeState) -> None:
        c = self.coordinator
        try:
            listed = {str(item.get("uuid")) for item in await node.client.task_list(COMPARE_TIMEOUT)}
        except (NodeError, NodeUnreachable):
            return
        for task in self._sends_nobody_runs(node.id):
            await c.settle_send(task, on_node=task.uuid in listed)
        now = boottime()
        for task in c.book.in_phase(Phase.ON_NODE, Phase.FINISHED):
            if task.node_id != node.id:
                continue
            if task.uuid in listed:
                self._missing_since.pop(task.uuid, None)
                continue
            first = self._missing_since.setdefault(task.uuid, now)
            if now - first >= self.grace and not (task.phase == Phase.FINISHED and task.downloaded_at) \
                    and not c.results_kept(task):  # a copy of its results is on another box: it stays COMPLETED
                del self._missing_since[task.uuid]
                await c.move_away(task, f"node {node.row.url} no longer has it")
        for uuid in listed:
            row = c.book.tasks.get(uuid)
            if row is None:
                continue  # not ours: another user's task on a shared node
            verdict = merge(Version.of(row, row.node_id), Version.listed_on(node.id, row),
                            client_gave_up=c.intake.given_up(uuid))
            if verdict is Verdict.TAKE_THEIRS and row.phase == Phase.LOST:
                await c.found_again(row, node)
            elif verdict in (Verdict.KEEP_MINE_DROP_THEIR_NODE_COPY, Verdict.RECORD_GIVEN_UP):
                await c.drop_duplicate(node, row)

    async def _check_staging_boxes(self) -> None:
        """Tasks not yet on a node whose files sit on another box: lost once that box is gone for good."""
        c = self.coordinator
        now = boottime()
        for task in c.book.in_phase(Phase.UPLOADING, Phase.WAITING, Phase.FORWARDING):
            box = task.staged_on
            if not box or box == c.self_id:
                continue
            if self.coordinator.role.box_alive(box):
                self._box_gone_since.pop(box, None)
                continue
            if now - self._box_gone_since.setdefault(box, now) >= self.grace:
                await c.lose(task, f"its uploaded images are on box {box}, which has been gone for "
                                   f"{now - self._box_gone_since[box]:.0f} s")


RECONCILER_KEY: web.AppKey[Reconciler] = web.AppKey("reconciler")  # where the app holds it
