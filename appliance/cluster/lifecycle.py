"""The staged copy of a task lives until it is no longer needed, and no longer.

Kept until the task completed and its results were downloaded, or it was removed, or it expired;
abandoned uploads (never committed, no file for a day) are dropped, as is, on the same clock, a
staged upload no row owns any longer (its coordinator died with the row before any replica copied
it: nemesis seed 282); tombstones are purged once replicas have had time to learn of them.

A copy of a task's results (all.zip, cluster/results.py) is kept by the same clock: released when the
task is removed or lost, or expired `keep_hours` after it finished. A download does not release it:
the copy is what still serves the task, and its products, once its node is gone.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from appliance.clock import uptime, wall
from appliance.cluster.coordinator import Coordinator
from appliance.nodeodm.status import TaskStatus
from appliance.store.models import Phase, Task

log = logging.getLogger("passel.staging")
SWEEP_SECONDS = 60.0
ABANDONED_UPLOAD_SECONDS = 24 * 3600.0
TOMBSTONE_SECONDS = 3600.0


def done_with(task: Task) -> bool:
    """A staged copy that will never be sent again: its task was removed or lost, or completed and
    its results downloaded."""
    return task.phase in (Phase.REMOVED, Phase.LOST) or (
        task.phase == Phase.FINISHED and task.status == TaskStatus.COMPLETED and bool(task.downloaded_at))


class StagingLifecycle:
    def __init__(self, coordinator: Coordinator, keep_hours: float) -> None:
        self.coordinator = coordinator
        self.keep_seconds = keep_hours * 3600.0

    async def sweep(self, now: float | None = None) -> int:
        """One pass; returns how many staged copies or rows were dropped. The coordinator purges
        tombstones and abandoned uploads; every box releases the staged copies it holds (a box that
        took an upload in keeps it, cluster/receiving.py) once its replica says they are done with."""
        c = self.coordinator
        ceiling = uptime() if now is None else math.inf  # a test passes `now` to look into the future
        now = wall() if now is None else now

        def older(stamp: float | None, limit: float) -> bool:
            return bool(stamp) and min(now - stamp, ceiling) > limit  # type: ignore[operator]
        coordinating = c.role.coordinating
        dropped = 0
        for task in list(c.book.tasks.values()):
            staged = c.staging.path(task.uuid).exists()
            if task.phase in (Phase.REMOVED, Phase.LOST):
                # "": a removal of a uuid the coordinator never heard of, whose upload this box took in
                if staged and task.staged_on in ("", c.self_id) and not c.receiver.holds(task.uuid):
                    c.staging.remove(task.uuid)
                    dropped += 1
                if coordinating and older(task.finished_at, TOMBSTONE_SECONDS):
                    await c.book.purge(task.uuid)
                    dropped += 1
            elif coordinating and task.phase == Phase.UPLOADING \
                    and older(self._last_upload(task), ABANDONED_UPLOAD_SECONDS):
                await c.intake.remove(task)
                dropped += 1
            elif staged and task.phase == Phase.FINISHED and (
                    done_with(task) or older(task.finished_at, self.keep_seconds)):
                c.staging.remove(task.uuid)
                dropped += 1
        for uuid in c.staging.uuids():
            # a day, not at once: a row still on its way to this box's replica (an init moments ago,
            # or a partition since) is not known here yet, and its upload is still its client's
            if uuid not in c.book.tasks and older(self._last_file(uuid), ABANDONED_UPLOAD_SECONDS):
                c.receiver.done(uuid)  # a commit given up on waits for its client: not for a day with no row
                c.staging.remove(uuid)
                dropped += 1
        return dropped + self._sweep_results(lambda stamp: older(stamp, self.keep_seconds))

    def _sweep_results(self, expired: Callable[[float | None], bool]) -> int:
        """Release the results copies on this box whose task is gone, expired, or no longer completed
        (restarted: the copy is of an earlier run)."""
        c = self.coordinator
        dropped = 0
        for uuid in c.results.held():
            task = c.book.get(uuid)
            keep = task is not None and task.phase == Phase.FINISHED and task.status == TaskStatus.COMPLETED \
                and not expired(task.finished_at)
            if not keep and not c.results.lock(uuid).locked() and c.results.release(uuid):
                dropped += 1
        return dropped

    def _last_upload(self, task: Task) -> float:
        """When a file last reached the staged upload. Not the task's dateCreated: a client may send
        an old one, and it is kept as sent."""
        staged = self._last_file(task.uuid)
        return staged if staged is not None else task.date_created_ms / 1000  # no folder here: nothing better

    def _last_file(self, uuid: str) -> float | None:
        """When a file last reached a staged upload (its folder changes with each one); None: no folder."""
        try:
            return self.coordinator.staging.path(uuid).stat().st_mtime
        except OSError:
            return None

    async def run_forever(self) -> None:
        while True:
            dropped = await self.sweep()
            if dropped:
                log.info("Clean-up: released %d finished or abandoned upload(s) and results copies", dropped)
            await asyncio.sleep(SWEEP_SECONDS)
