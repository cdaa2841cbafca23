"""The agent's background loops, kept running: one that fails is logged and started again.

Without this, a loop that raised (a bug, or a disk that filled up under SQLite) would end quietly
and, say, task tracking or the replica of the task table would stop until the next restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("passel.agent")
RESTART_DELAY_SECONDS = 2.0


async def supervise(name: str, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `job` until it ends by itself (announcing this box, say), starting it again whenever it
    fails. A full disk is said in one line (the loop goes on once there is room); anything else is a
    bug, logged with its traceback."""
    while True:
        try:
            await job()
            return
        except asyncio.CancelledError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            log.warning("Background job %s could not write to this box's disk (%s); trying again in %.0f s",
                        name, str(exc).splitlines()[0][:200], RESTART_DELAY_SECONDS)
        except Exception:
            log.exception("Background job %s failed; restarting it in %.0f s", name, RESTART_DELAY_SECONDS)
        await asyncio.sleep(RESTART_DELAY_SECONDS)


def background(name: str, job: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
    """Start `job` as a supervised task named `name`."""
    return asyncio.create_task(supervise(name, job), name=name)
