"""How far each follower's replica of the task table has caught up with the coordinator.

A commit is answered only once every live follower holds the task: a coordinator that dies right
after answering must not take the task with it, because the next coordinator would answer "not
found" for a task the client was told exists. Followers ask for changes in a long poll (replica.py),
so the wait is a round trip, not a sync period. A follower that is slow to confirm holds up one
commit for at most `WAIT_SECONDS` and is then not waited for until it asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from appliance.clock import boottime
from appliance.role import Role

log = logging.getLogger("passel.replica")
LIVE_SECONDS = 8.0  # a follower that has not asked for this long (a long poll lasts 3 s) is gone
WAIT_SECONDS = 1.0  # the most a commit waits for a slow follower


class ReplicaProgress:
    """The version of the task table each follower has applied, as its requests for more tell."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self._applied: dict[str, int] = {}
        self._asked_at: dict[str, float] = {}
        self._lagging: set[str] = set()
        self._moved = asyncio.Event()

    def applied(self, box: str, rev: int) -> None:
        """`box` asked for the rows after `rev`, so it holds everything up to `rev`."""
        self._applied[box], self._asked_at[box] = rev, boottime()
        self._lagging.discard(box)
        self._moved.set()
        self._moved = asyncio.Event()

    def live(self) -> dict[str, int]:
        """The followers a commit waits for, with the version each has applied."""
        now = boottime()
        for box in [b for b, at in self._asked_at.items() if now - at > LIVE_SECONDS]:
            del self._applied[box], self._asked_at[box]
            self._lagging.discard(box)
        # the followers the election knows of are waited for even before their first request, so
        # the commits of the first second after an election are covered too
        followers = dict.fromkeys(self.role.followers(), -1) | self._applied
        return {box: rev for box, rev in followers.items() if box not in self._lagging}

    async def hold(self, rev: int, timeout: float = WAIT_SECONDS) -> list[str]:
        """Wait until every live follower holds version `rev`; the followers that did not, in time."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            behind = [box for box, applied in self.live().items() if applied < rev]
            remaining = deadline - asyncio.get_running_loop().time()
            if not behind or remaining <= 0:
                break
            moved = self._moved
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await moved.wait()
        if behind:
            self._lagging.update(behind)
            log.warning("Box %s has not copied the task table in %.1f s; answering without waiting for it",
                        ", ".join(behind), timeout)
        return behind
