"""Fewer round trips to nodes for `GET /task/{uuid}/info`, the call every client polls.

- A finished task's info does not change until someone acts on it through Passel (cancel, restart,
  remove), so its last reply from the node is kept and served from memory.
- Identical requests that arrive together share one request to the node (single flight), so fifty
  clients polling one task cost the node one call.

Measured in bench/proxy_overhead.py: the extra hop to the node was the whole of Passel's overhead.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any

Fetch = Callable[[], Awaitable[dict[str, Any]]]
FINISHED_CODES = (30, 40, 50)


class InfoCache:
    def __init__(self) -> None:
        self._final: dict[str, dict[str, Any]] = {}
        self._flights: dict[tuple[str, int | None], asyncio.Future[dict[str, Any]]] = {}

    def final(self, uuid: str) -> dict[str, Any] | None:
        reply = self._final.get(uuid)
        return copy.deepcopy(reply) if reply is not None else None

    def forget(self, uuid: str) -> None:
        """Called whenever Passel acts on the task, so a stale final reply is never served."""
        self._final.pop(uuid, None)

    async def fetch(self, uuid: str, with_output: int | None, fetch: Fetch) -> dict[str, Any]:
        key = (uuid, with_output)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(fetch())
            self._flights[key] = flight
            flight.add_done_callback(lambda _: self._flights.pop(key, None))
        reply = copy.deepcopy(await asyncio.shield(flight))
        if with_output is None and (reply.get("status") or {}).get("code") in FINISHED_CODES:
            self._final[uuid] = copy.deepcopy(reply)
        return reply
