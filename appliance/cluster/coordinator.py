"""The coordinator: builds the parts that move tasks, and handles what happens to a task after it left.

- `intake.py` answers clients (init, upload, commit, cancel, restart, remove);
- `dispatcher.py` places committed tasks and sends them to nodes;
- this module takes in what nodes report, moves work off a lost node (or by hand), fails or loses a
  task, and merges tasks handed over by a box that was coordinator before.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.clock import wall
from appliance.cluster.dispatcher import Dispatcher, tell_node
from appliance.cluster.eta import Forecast, demand_of, forecast
from appliance.cluster.info_cache import InfoCache
from appliance.cluster.intake import Intake, TaskRefused
from appliance.cluster.receiving import Receiver
from appliance.cluster.registry import NodeRegistry, NodeState
from appliance.cluster.replication import ReplicaProgress
from appliance.cluster.results_copies import ResultsStore, choose_holder
from appliance.cluster.scheduler import Demand, why_not
from appliance.cluster.staging import Staging
from appliance.cluster.stragglers import Stragglers
from appliance.cluster.task_merge import Verdict, Version, merge
from appliance.cluster.task_states import Step, advance
from appliance.cluster.tasks import TaskBook, apply_node_info, forwarded, set_forwarded
from appliance.nodeodm.status import TaskStatus
from appliance.role import Role
from appliance.store.database import Store
from appliance.store.models import Phase, Task, row_values, task_from_row

log = logging.getLogger("passel.tasks")


class Coordinator:
    """Owns the task table and the staging area, and the parts that act on them."""

    def __init__(self, store: Store, registry: NodeRegistry, staging: Staging, public_url: str,
                 dispatch_attempts: int, role: Role, speed_aware: bool = True,
                 results_dir: Path | None = None, api_token: str = "") -> None:
        self.store, self.registry, self.staging = store, registry, staging
        self.api_token = api_token  # a split task's submodels carry it, or their job, in ?token= (job_parts.py)
        self.speed_aware = speed_aware  # off: any free slot, oldest first, no straggler copies
        self.public_url = public_url
        self.dispatch_attempts = dispatch_attempts
        self.role = role
        self.self_id = role.self_id
        self.book = TaskBook(store, self.self_id)
        self.replicas = ReplicaProgress(role)
        self.info_cache = InfoCache(secret=api_token)
        self.dispatcher = Dispatcher(self.book, registry, staging, store, public_url, dispatch_attempts,
                                     speed_aware, role, api_token)
        self.intake = Intake(self.book, registry, staging, store, self.dispatcher, self.info_cache, self.replicas,
                             role, observe=self.observe)
        self.receiver = Receiver(self.book, staging, registry, role, public_url, api_token)
        self.stragglers = Stragglers(self)
        self.dispatcher.stragglers = self.stragglers
        # copies of completed tasks' all.zip (results.py); beside staging unless the agent says where
        self.results = ResultsStore(results_dir or staging.root.parent / "results", staging.min_free_bytes)
        self.results_refused: dict[str, set[str]] = {}  # boxes that said they cannot hold a task's copy

    # -- start-up ---------------------------------------------------------------------------
    async def recover(self) -> None:
        """Reload the table after a restart and pick up every task where it stopped. Only the rows this
        box wrote as coordinator: the others are a replica of another coordinator's, which picks its
        own up (rewriting them here would make them this box's, to hand over with their images, and
        an upload this box takes in for that coordinator would be lost: nemesis seed 7)."""
        await self.book.load()
        self.staging.open()
        self.staging.clean(set(self.book.tasks))
        own = {uuid for uuid, task in self.book.tasks.items() if task.owner in ("", self.self_id)}
        for task in self.book.in_phase(Phase.UPLOADING, Phase.FORWARDING):
            if task.uuid not in own:
                continue
            node_id, _ = forwarded(task)
            if node_id is not None:
                # Files were on their way to that node when we died: which arrived is uncertain, so
                # prefer another node; with no other node, the unconfirmed files are sent again.
                self.dispatcher.avoid(task.uuid, node_id)
            if task.phase == Phase.UPLOADING and task.node_id is not None:
                task.node_id = None  # the early forward died with the old process; the commit resends
                await self.book.save(task)
        resumed = [task for task in self.book.in_phase(Phase.FORWARDING) if task.uuid in own]
        for task in resumed:
            advance(task, Step.REQUEUE)
            await self.book.save(task)
            await self.store.record("resumed", f"Task {task.uuid} was being sent to a node when Passel stopped; "
                                    "sending it again from staging", task_uuid=task.uuid)
        self.dispatcher.wake()

    # -- what nodes report ------------------------------------------------------------------
    async def observe(self, task: Task, node: NodeState, info: dict[str, Any], tail: bool = False) -> None:
        """Take in what a node says about a task (from a poll or a proxied info) and act on a finish."""
        if task.phase not in (Phase.ON_NODE, Phase.FINISHED) or task.node_id != node.id:
            return  # moved, canceled or removed while we asked
        if node.upstream and task.phase == Phase.ON_NODE:
            info = self._until_home(task, info)
        was_finished = TaskStatus(task.status).finished
        if not apply_node_info(task, info, tail):
            return
        finished_now = TaskStatus(task.status).finished and not was_finished
        if finished_now:
            advance(task, Step.FINISH)
            task.finished_at = wall()
            if task.status == TaskStatus.COMPLETED:
                task.results_on, task.results_copied_at = self.choose_results_holder(task), None
        # saved before anything else is awaited: a client reads the row (`told_finished`)
        await self.book.save(task)
        if finished_now:
            if task.status == TaskStatus.COMPLETED and task.images_count and task.processing_time_ms > 0:
                await self.registry.learn_speed(node.id, task.processing_time_ms / task.images_count,
                                                demand_of(task).kind)
            log.info("Task %s is %s on %s", task.uuid, TaskStatus(task.status).name, node.name)
            self.dispatcher.wake()

    async def told_finished(self, task: Task) -> None:
        """Before a client is told that a task finished: every live follower holds that row (a slow
        one is waited for `replication.WAIT_SECONDS` at most). Otherwise the next coordinator, if
        this one is cut off now, answers from its replica that the task still runs (nemesis seed
        376: COMPLETED, then RUNNING)."""
        if TaskStatus(task.status).finished:
            await self.replicas.hold(task.rev)

    def _until_home(self, task: Task, info: dict[str, Any]) -> dict[str, Any]:
        """An upstream's COMPLETED is shown as RUNNING at 99% until its all.zip is in the passel
        (`results.ResultsKeeper` brings it home, then `results_copied` completes the task): a client
        told COMPLETED must be able to download, even once the uplink is gone."""
        if (info.get("status") or {}).get("code") != TaskStatus.COMPLETED:
            task.results_on = ""  # running (again): nothing to bring home yet
            return info
        task.results_on = self.self_id  # the coordinator holds the upstream's token: it brings them home
        return {**info, "status": {"code": TaskStatus.RUNNING}, "progress": min(float(info.get("progress") or 0), 99.0)}

    def bringing_home(self, task: Task) -> bool:
        """An upstream node has completed the task, and its all.zip is on its way into the passel."""
        node = self.registry.get(task.node_id)
        return task.phase == Phase.ON_NODE and node is not None and node.upstream and bool(task.results_on) \
            and task.results_copied_at is None

    async def _home(self, task: Task, box: str) -> None:
        """An upstream's results are whole on a box of the passel: the task completes now, and the
        upstream's copy is removed (the link and its storage are not ours to keep busy)."""
        node = self.registry.get(task.node_id)
        advance(task, Step.FINISH)
        task.status, task.progress, task.finished_at = TaskStatus.COMPLETED, 100.0, wall()
        task.results_on, task.results_copied_at = box, wall()
        await self.book.save(task)
        await self.store.record("results-home", f"Task {task.uuid}: its results came home from "
                                f"{node.name if node else 'its upstream node'} to box {box}; it is completed",
                                task_uuid=task.uuid, node_id=task.node_id)
        if node is not None:
            if task.images_count and task.processing_time_ms > 0:
                await self.registry.learn_speed(node.id, task.processing_time_ms / task.images_count,
                                                demand_of(task).kind)
            await tell_node(node, "remove", task)
        self.dispatcher.wake()

    async def handed_over(self, task: Task, to: str) -> None:
        """Another coordinator has this task and its files now; keep the row as a replica only. Unless
        this box has taken the role back while the hand-over was under way: the row is its own truth
        again, and the other box hands its copy back when the two meet."""
        if self.role.coordinating:
            return
        self.dispatcher.stop(task.uuid)
        self.staging.remove(task.uuid)
        task.owner = to
        if task.staged_on == self.self_id:
            task.staged_on = to
        await self.book.save_replica(task)

    async def adopt(self, values: dict[str, Any], node_url: str | None, files_from: Path, giver: str) -> bool:
        """Take a task from a box that is no longer coordinator, as `task_merge.merge` decides: a
        removal is never undone, a task given up for lost comes back with the box that holds it
        (unless its client gave it up), else the further-along version wins. Returns False when this
        box's own version is kept."""
        incoming = task_from_row(values)
        existing = self.book.tasks.get(incoming.uuid)
        known_node = self.registry.find_url(node_url) if node_url else None
        theirs = Version.of(incoming, known_node.id if known_node else None, has_files=any(files_from.iterdir()))
        mine = Version.of(existing, existing.node_id, self._images_kept_without(existing, giver)) if existing else None
        # its client gave it up: removed it, or was told its commit failed here (this box took the
        # upload in, gave up waiting for a coordinator that was cut off, and ODM sent the work again)
        gave_up = self.intake.given_up(incoming.uuid) or incoming.uuid in self.receiver.abandoned
        verdict = merge(mine, theirs, client_gave_up=gave_up)
        if verdict is Verdict.RECORD_GIVEN_UP:
            reason = f"its client gave it up (it sent the work again) and box {giver} handed over a copy"
            if existing is not None:
                await self.lose(existing, reason)
                return False
            incoming.node_id = None
            await self.book.tombstone(incoming, Step.LOSE)
            await self.store.record("orphan", f"Task {incoming.uuid} from box {giver} was given up by its client "
                                    "(it sent the work again); dropped", task_uuid=incoming.uuid)
            return False
        if verdict is Verdict.TAKE_THEIR_TOMBSTONE and existing is not None:
            if incoming.phase == Phase.REMOVED:  # its client removed it on the other side
                await self.intake.remove(existing)
            else:
                await self.lose(existing, f"box {giver} had given it up for lost, and the copy here is older "
                                          "(or its client gave it up)")
            return True
        if verdict is Verdict.KEEP_MINE_TAKE_THEIR_FILES and existing is not None:
            self._take_files(existing, files_from)
            await self.book.save(existing)
        if verdict.mine_wins:
            return False
        node = await self.registry.ensure(node_url) if node_url else None
        old_node, files = forwarded(incoming)
        incoming.node_id = node.id if node else None
        set_forwarded(incoming, incoming.node_id if old_node is not None and node else None, files if node else [])
        if incoming.phase == Phase.FORWARDING:  # that send died with the giver's role
            advance(incoming, Step.REQUEUE)
        if incoming.phase == Phase.UPLOADING:
            incoming.node_id = None
        if theirs.has_files:
            self._take_files(incoming, files_from)
        self.dispatcher.stop(incoming.uuid)
        await self.book.save(_written_into(existing, incoming))
        await self.store.record("adopted", f"Task {incoming.uuid} handed over by box {giver}",
                                task_uuid=incoming.uuid, node_id=incoming.node_id)
        self.dispatcher.wake()
        return True

    def _images_kept_without(self, task: Task, giver: str) -> bool:
        """The images can still be sent once the box handing the task over releases its copy (it
        does when answered): they are here, or on another live box."""
        return task.staged_on != giver and self.can_send_again(task)

    def _take_files(self, task: Task, files_from: Path) -> None:
        self.staging.remove(task.uuid)
        path = self.staging.create(task.uuid)
        self.staging.adopt(files_from, task.uuid)
        task.staging_path, task.staged_on = str(path), self.self_id

    # -- moving work -------------------------------------------------------------------------
    def forecast(self) -> Forecast:
        """When each task its clients can see is expected to finish (eta.py)."""
        return forecast(self.dispatcher.views(), self.book.all_visible(), self.speed_aware)

    def has_staged_files(self, task: Task) -> bool:
        """The images are on this box's own disk."""
        return task.staged_on in ("", self.self_id) and bool(self.staging.files(task.uuid))

    def can_send_again(self, task: Task) -> bool:
        """The images are here, or on the live box that took the upload in (it sends them, receiving.py)."""
        return self.has_staged_files(task) or (task.staged_on not in ("", self.self_id)
                                               and self.role.box_alive(task.staged_on))

    async def move_away(self, task: Task, reason: str) -> None:
        """Send a task again from staging because its node lost it or is gone; lose it when the
        staged copy is not here (not-found makes ODM resubmit; FAILED would abort its whole job).
        A task failed or canceled stays so: its client was told, and may restart it."""
        if task.phase not in (Phase.ON_NODE, Phase.FINISHED) or task.status in (TaskStatus.CANCELED, TaskStatus.FAILED):
            return
        if self.results_kept(task):
            return  # its results are safe on another box (results.py): it stays COMPLETED, served from there
        if not self.can_send_again(task):
            await self.lose(task, f"{reason}, and its uploaded images are on no box that can send them")
            return
        old = self.registry.get(task.node_id)
        await self._leave_node(task, old)
        if old is not None:
            self.dispatcher.avoid(task.uuid, old.id)
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
        refusal = why_not(replace(next(v for v in self.dispatcher.views(task) if v.id == target.id), busy=0),
                          Demand(images=task.images_count))
        if refusal:
            raise TaskRefused(f"Node {target.row.url} cannot take it: {refusal}")
        if task.node_id == target.id and task.phase == Phase.ON_NODE:
            raise TaskRefused(f"The task is already on {target.row.url}")
        if not self.can_send_again(task):
            raise TaskRefused("The task's uploaded images are on no box that can send them, so it cannot be sent again")
        old = self.registry.get(task.node_id)
        await self.dispatcher.settle(task.uuid)
        await self._leave_node(task, old)
        self.dispatcher.pin(task.uuid, target.id)
        where = old.row.url if old else "the queue"  # placed means on its node or on its way there
        await self._requeue_with_note(task, f"Passel: moved by hand from {where} to {target.row.url}", "moved")
        return target

    async def _leave_node(self, task: Task, node: NodeState | None) -> None:
        if node is not None and forwarded(task)[0] == node.id and node.online:
            await tell_node(node, "cancel", task)
            await tell_node(node, "remove", task)

    async def _requeue_with_note(self, task: Task, note: str, kind: str) -> None:
        self.info_cache.end_run(task, note)
        set_forwarded(task, None, [])
        task.results_on, task.results_copied_at = "", None  # results of this run, if any, are not kept
        advance(task, Step.REQUEUE)
        task.node_id, task.status = None, TaskStatus.RUNNING
        task.progress, task.processing_time_ms = 0.0, -1
        await self.book.save(task)
        await self.store.record(kind, f"Task {task.uuid}: {note}", task_uuid=task.uuid)
        self.dispatcher.wake()

    def results_node(self, uuid: str) -> NodeState | None:
        """The node that holds a completed task's results, as this box's table says (on a follower, its
        replica): a follower streams downloads from it directly."""
        task = self.book.get(uuid.lower())
        if task is None or task.phase != Phase.FINISHED or task.status != TaskStatus.COMPLETED:
            return None
        return self.registry.get(task.node_id)

    def results_kept(self, task: Task) -> bool:
        """A completed task whose all.zip a box has confirmed it holds: it needs its node no more."""
        return task.phase == Phase.FINISHED and task.status == TaskStatus.COMPLETED \
            and task.results_copied_at is not None and bool(task.results_on)

    def choose_results_holder(self, task: Task) -> str:
        """The box to keep a copy of a completed task's all.zip: not the box whose node made it."""
        node = self.registry.get(task.node_id)
        return choose_holder(node.row.box if node else "", task.staged_on, self.self_id, self.role.followers(),
                             self.role.box_alive, self.results_refused.get(task.uuid, ()))

    async def results_copied(self, task: Task, box: str) -> None:
        """A box holds the whole all.zip now: record it, so a lost node no longer costs the results
        (an upstream's task completes only now)."""
        if self.bringing_home(task) and task.results_on == box:
            await self._home(task, box)
            return
        if task.results_copied_at is not None and task.results_on == box or not self._completed(task):
            return
        task.results_on, task.results_copied_at = box, wall()
        await self.book.save(task)
        await self.store.record("results-copied", f"Task {task.uuid}: a copy of its results is kept on box {box}",
                                task_uuid=task.uuid)

    async def results_not_held(self, task: Task, box: str, reason: str) -> None:
        """The chosen box cannot keep the copy (its disk is full, or it is gone): choose another, once."""
        if task.results_on != box or task.results_copied_at is not None or not self._completed(task):
            return
        self.results_refused.setdefault(task.uuid, set()).add(box)
        task.results_on = self.choose_results_holder(task)
        await self.book.save(task)
        await self.store.record("results-refused", f"Task {task.uuid}: box {box} cannot keep a copy of its results "
                                f"({reason}); {f'box {task.results_on} will' if task.results_on else 'no box can'}",
                                task_uuid=task.uuid)

    @staticmethod
    def _completed(task: Task) -> bool:
        return task.phase == Phase.FINISHED and task.status == TaskStatus.COMPLETED

    async def downloaded(self, task: Task) -> None:
        """A client has the whole all.zip: the staged images are no longer needed (lifecycle.py)."""
        if not task.downloaded_at:
            task.downloaded_at = wall()
            await self.book.save(task)

    def images_out_of_reach(self, task: Task) -> bool:
        """Not on a node yet, and its images are only on a box that is gone (receiving.py). A client
        asking about it is alive to send it again: it is told not-found at once, rather than after the
        grace (the reconciler's rule when nobody asks), and no second copy costs the network."""
        return task.phase in (Phase.WAITING, Phase.FORWARDING) and task.staged_on not in ("", self.self_id) \
            and not self.role.box_alive(task.staged_on)

    async def lose(self, task: Task, reason: str) -> None:
        """Give up on a task whose data is gone: clients get not-found, which ODM answers by resubmitting."""
        self.dispatcher.stop(task.uuid)
        self.staging.remove(task.uuid)
        self.results.release(task.uuid)
        self.info_cache.forget(task.uuid)
        await self.book.tombstone(task, Step.LOSE)
        await self.store.record("lost", f"Task {task.uuid} is lost: {reason}", task_uuid=task.uuid)

    async def settle_send(self, task: Task, on_node: bool) -> None:
        """A send that the previous coordinator started and could not see through: the task is on
        its node when the node lists it, else it is sent again (from wherever its images are)."""
        node = self.registry.get(task.node_id)
        if on_node and node is not None:
            advance(task, Step.DELIVERED)
            task.last_error = ""
            await self.book.save(task)
            await self.store.record("dispatched", f"Task {task.uuid} is now on node {node.name}",
                                    task_uuid=task.uuid, node_id=node.id)
            return
        self.dispatcher.requeue(task)
        await self.book.save(task)
        self.dispatcher.wake()

    async def found_again(self, task: Task, node: NodeState) -> None:
        """A task given up for lost turns out to be on its node after all (it was out of reach, not gone)."""
        finished = TaskStatus(task.status).finished
        advance(task, Step.FOUND_FINISHED if finished else Step.FOUND_RUNNING)
        task.finished_at = task.finished_at if finished else None
        await self.book.save(task)
        await self.store.record("found", f"Task {task.uuid} was given up for lost, but {node.name} still has it",
                                task_uuid=task.uuid, node_id=node.id)
        self.dispatcher.wake()

    async def fail(self, task: Task, reason: str) -> None:
        """A real failure the client must see: FAILED, with the reason in the output."""
        await self._leave_node(task, self.registry.get(task.node_id))
        advance(task, Step.GIVE_UP)
        task.node_id, task.status, task.finished_at = None, TaskStatus.FAILED, wall()
        task.error_message = reason
        self.info_cache.end_run(task, f"Passel: {reason}", keep_all=True)
        await self.book.save(task)
        await self.store.record("failed", f"Task {task.uuid} failed: {reason}", task_uuid=task.uuid)
        self.dispatcher.wake()

    async def drop_duplicate(self, node: NodeState, task: Task) -> None:
        """A node that came back still runs a copy of a task that moved on (or was removed)."""
        if self.stragglers.holds(node.id, task.uuid):
            return  # a live straggler copy, not a stale one
        await tell_node(node, "cancel", task)
        await tell_node(node, "remove", task)
        await self.store.record("duplicate-removed", f"Removed a stale copy of task {task.uuid} from {node.name}",
                                task_uuid=task.uuid, node_id=node.id)



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
        "options": task.options,
        "job_key": task.job_key, "committed_at": task.committed_at, "finished_at": task.finished_at,
        "eta_seconds": eta_seconds,
        "results_on": task.results_on or None, "results_copied_at": task.results_copied_at,
    }


def _written_into(existing: Task | None, incoming: Task) -> Task:
    """The version taken, as the one object the book holds for its uuid: a loop that holds the row
    across an await (a node poll, a removal) then sees it, and never writes an older copy back
    over it (nemesis seed 326: a poll begun before the hand-over undid the client's removal)."""
    if existing is None:
        return incoming
    for column, value in row_values(incoming).items():
        setattr(existing, column, value)
    return existing


COORDINATOR_KEY: web.AppKey[Coordinator] = web.AppKey("coordinator")  # where the app holds it
