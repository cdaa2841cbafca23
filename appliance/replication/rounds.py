"""A follower's work for one coordinator, ended the moment it is no longer the coordinator.

A hand-over sent to a coordinator that was then cut off waits up to HANDOVER_TIMEOUT's read (120 s),
and a long poll up to SYNC_TIMEOUT (15 s). Meanwhile the box neither copies the new coordinator's
table nor hands it the tasks it holds, and the new one answers their clients not-found. So each
such request runs here, and a change of role or coordinator ends it at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class CoordinatorRounds:
    """The requests in flight, each to the coordinator it was meant for."""

    def __init__(self) -> None:
        self._running: dict[asyncio.Future[Any], str] = {}

    async def run(self, work: Awaitable[T], coordinator_id: str) -> T | None:
        """The work's result, or None when `end()` ended it first. Cancelling the caller cancels it too."""
        job = asyncio.ensure_future(work)
        self._running[job] = coordinator_id
        try:
            await asyncio.wait({job})
        finally:
            self._running.pop(job, None)
            job.cancel()
        return None if job.cancelled() else job.result()

    def end(self, keep: str | None = None) -> None:
        """Cancel every request meant for a coordinator other than `keep` (all of them when None). A
        round may already have begun for the new coordinator when the change is announced: it stays."""
        for job, coordinator_id in self._running.items():
            if coordinator_id != keep:
                job.cancel()
