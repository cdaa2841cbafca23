"""Results that outlive the node that made them: a second copy of each completed task's all.zip.

When a task completes, the coordinator names a box to keep a copy (`Task.results_on`, never the box
whose node made it, `results_copies.choose_holder`). The row reaches that box through the replica
feed; the box notices it should hold a copy it lacks, pulls all.zip straight from the node (resuming
an interrupted pull with Range) and tells the coordinator, which records `results_copied_at`. From
then on, a lost node or box no longer costs the task: it stays COMPLETED (`Coordinator.move_away`,
the reconciler) and downloads are served from the copy.

A copy is kept and released by the staging rules (`lifecycle.py`): released when the task is
removed or lost, or expired after `staging_keep_hours`. A download does *not* release it: the copy is
what lets the task's products be read again (the web UI's product pages read from it).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
from aiohttp import web

from appliance.clock import boottime
from appliance.cluster.coordinator import Coordinator
from appliance.cluster.proxy import DOWNLOAD_TIMEOUT, range_headers, relay, stream_from_node
from appliance.cluster.results_copies import (
    FetchFailed,
    NoRoom,
    Opener,
)
from appliance.cluster.tasks import GONE_PHASES
from appliance.nodeodm.status import TaskStatus
from appliance.role import BoxUnreachable
from appliance.store.models import Phase, Task

log = logging.getLogger("passel.results")
AGENT_RESULTS = "/-/agent/v1/results"  # where a box serves the copies it holds to the other boxes
CHECK_SECONDS = 2.0
RETRY_SECONDS = (5.0, 15.0, 60.0, 300.0)  # after that many failed pulls, the box stops trying
REPORT_TIMEOUT_SECONDS = 15.0


def completed(task: Task) -> bool:
    return task.phase == Phase.FINISHED and task.status == TaskStatus.COMPLETED


def _node_opener(coordinator: Coordinator, task: Task) -> Opener | None:
    node = coordinator.registry.get(task.node_id)
    if node is None:
        return None
    url = node.client.url(f"/task/{task.uuid}/download/all.zip")
    return lambda headers: node.client.session.get(url, headers=headers, timeout=DOWNLOAD_TIMEOUT)


def _holder_opener(coordinator: Coordinator, task: Task) -> Opener | None:
    """The box that confirmed it holds the copy, when it is another live box of the passel."""
    boxes = coordinator.results.boxes
    box = task.results_on
    if boxes is None or task.results_copied_at is None or box in ("", coordinator.self_id) \
            or not coordinator.role.box_alive(box):
        return None
    return lambda headers: boxes.get(box, f"{AGENT_RESULTS}/{task.uuid}", headers)


async def local_results(coordinator: Coordinator, task: Task) -> Path | None:
    """A path on this box to a completed task's all.zip, for reading its products.

    The copy this box keeps when it has one; else one fetched now, from the box that holds the copy,
    else from the task's node (and then kept by the staging rules, like any copy). None when the task
    is not completed or no copy can be reached. The file is whole and is not changed while it exists;
    it may be released (task removed or expired) between two calls, so open it once per use.
    """
    results = coordinator.results
    if not completed(task):
        return None
    async with results.lock(task.uuid):
        if results.has(task.uuid):
            return results.path(task.uuid)
        for source, opener in (("the box that holds its copy", _holder_opener(coordinator, task)),
                               ("its node", _node_opener(coordinator, task))):
            if opener is None:
                continue
            try:
                return await results.fetch(task.uuid, opener)
            except (FetchFailed, BoxUnreachable) as exc:
                log.info("Task %s: could not fetch its results from %s: %s", task.uuid[:8], source, exc)
    return None


def asks_to_the_end(request: web.Request, path: Path) -> bool:
    """Whether a download of a file on this box's disk gets its last byte (PyODM asks big zips in ranges)."""
    try:
        wanted = request.http_range
    except ValueError:
        return False
    return wanted.stop is None or wanted.stop >= path.stat().st_size


async def serve_results(request: web.Request, coordinator: Coordinator, task: Task) -> web.StreamResponse | None:
    """Answer a download of a completed task's all.zip (Range honoured): from the copy on this box,
    else from the node while it answers, else from the box that holds the copy. None: from nowhere.
    A node that breaks off once it has begun raises aiohttp.ClientError (the reply has started).

    A copy on this box is answered unprepared (aiohttp's FileResponse sends it, ranges included);
    `asks_to_the_end` says whether that reply ends the file."""
    results = coordinator.results
    if results.has(task.uuid):
        return web.FileResponse(results.path(task.uuid), headers={
            "Content-Type": "application/zip", "Content-Disposition": 'attachment; filename="all.zip"'})
    node = coordinator.registry.get(task.node_id)
    opener = _holder_opener(coordinator, task)
    if node is not None and (node.online or not coordinator.role.coordinating):  # a follower does not poll nodes
        try:
            return await stream_from_node(request, node, f"/task/{task.uuid}/download/all.zip",
                                          refuse_errors=opener is not None)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:  # nothing sent yet
            log.info("Task %s: its node %s is not answering (%s); trying the copy of its results", task.uuid[:8],
                     node.name, exc or "timeout")
        except aiohttp.ClientResponseError:
            log.info("Task %s: its node %s no longer has its results; trying the copy", task.uuid[:8], node.name)
    if opener is None:
        return None
    try:
        async with opener(range_headers(request)) as upstream:
            if upstream.status not in (200, 206):
                return None
            return await relay(request, upstream)
    except (aiohttp.ClientError, TimeoutError, BoxUnreachable) as exc:
        log.info("Task %s: the box holding its results copy is not answering (%s)", task.uuid[:8], exc or "timeout")
        return None


class ResultsKeeper:
    """The background loop: on the coordinator, names a holder for each completed task; on every box,
    pulls the copies this box should hold and reports them."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self._failures: dict[str, tuple[int, float]] = {}  # uuid: failed pulls, and when to try next

    async def run_forever(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(CHECK_SECONDS)

    async def round(self) -> None:
        c = self.coordinator
        self.release_stale()
        if c.role.coordinating:
            await self.assign()
        for task in [t for t in c.book.tasks.values() if (completed(t) or c.bringing_home(t))
                     and t.results_on == c.self_id and t.results_copied_at is None]:
            await self._hold(task)

    def release_stale(self) -> None:
        """A copy whose task is no longer completed (restarted, removed, lost) goes at once: it would
        serve results of an earlier run, or of a task its client gave up. Expiry is lifecycle.py's."""
        c = self.coordinator
        for uuid in c.results.held():
            task = c.book.get(uuid)
            if (task is None or not (completed(task) or c.bringing_home(task))) and not c.results.lock(uuid).locked() \
                    and c.results.release(uuid):
                log.info("Task %s: released the copy of its results (the task was %s)", uuid[:8],
                         "restarted" if task is not None and task.phase not in GONE_PHASES else "removed")

    async def assign(self) -> None:
        """Name a holder for a completed task that has none, or whose holder went away before its copy."""
        c = self.coordinator
        for task in [t for t in c.book.tasks.values() if completed(t)]:
            holder_gone = task.results_copied_at is None and task.results_on and not c.role.box_alive(task.results_on)
            if task.results_on and not holder_gone:
                continue
            holder = c.choose_results_holder(task)
            if holder and holder != task.results_on:
                task.results_on = holder
                await c.book.save(task)
                log.info("Task %s: its results will be copied to box %s", task.uuid[:8], holder)

    async def _hold(self, task: Task) -> None:
        c = self.coordinator
        failures, not_before = self._failures.get(task.uuid, (0, 0.0))
        home = c.bringing_home(task)  # from an upstream: tried while the task waits for it, never given up
        node = c.registry.get(task.node_id)
        if (failures >= len(RETRY_SECONDS) and not home) or boottime() < not_before \
                or (home and node is not None and not node.online):
            return
        opener = _node_opener(c, task)
        try:
            async with c.results.lock(task.uuid):
                if not c.results.has(task.uuid):
                    if opener is None:
                        raise FetchFailed("this box does not know its node")
                    had, began = c.results.partial_bytes(task.uuid), boottime()
                    path = await c.results.fetch(task.uuid, opener)
                    if home and node is not None:
                        await c.registry.learn_link(node.id, sent=False, size=path.stat().st_size - had,
                                                    seconds=boottime() - began)
                    log.info("Task %s: %s its results (all.zip) to this box", task.uuid[:8],
                             "brought home" if home else "copied")
        except NoRoom as exc:
            self._failures[task.uuid] = (len(RETRY_SECONDS), boottime() + RETRY_SECONDS[-1])  # bringing home: later
            log.warning("Task %s: this box cannot keep a copy of its results: %s", task.uuid[:8], exc)
            await self._report(task, "/results/refused", {"reason": str(exc)})
            return
        except FetchFailed as exc:
            failures += 1
            self._failures[task.uuid] = (failures, boottime() + RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1])
            if home:
                log.info("Task %s: bringing its results home broke off (%s); going on from there once %s answers",
                         task.uuid[:8], exc, node.name if node else "its upstream node")
            elif failures < len(RETRY_SECONDS):
                log.info("Task %s: copying its results failed (%s); trying again in %.0f s", task.uuid[:8], exc,
                         RETRY_SECONDS[failures - 1])
            else:
                log.warning("Task %s: copying its results failed %d times (%s); giving up", task.uuid[:8],
                            failures, exc)
            return
        self._failures.pop(task.uuid, None)
        await self._report(task, "/results/copied", {})

    async def _report(self, task: Task, path: str, extra: dict[str, str]) -> None:
        """Tell the coordinator (itself, when this box coordinates) whether this box holds the copy."""
        c = self.coordinator
        if c.role.coordinating:
            if path == "/results/copied":
                await c.results_copied(task, c.self_id)
            else:
                await c.results_not_held(task, c.self_id, extra["reason"])
            return
        try:
            await c.role.call(None, path, {"uuid": task.uuid, **extra}, timeout=REPORT_TIMEOUT_SECONDS)
        except BoxUnreachable as exc:  # tried again next round: the row still says not copied
            log.info("Task %s: could not tell the coordinator about its results copy (%s)", task.uuid[:8], exc)


RESULTS_KEEPER_KEY: web.AppKey[ResultsKeeper] = web.AppKey("results_keeper")  # where the app holds it
