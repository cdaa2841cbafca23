"""This box's role in the passel, as every part that acts on tasks needs to know it.

One `Role` is built in `agent.py` and handed to the registry, the coordinator and its parts, so
reading a constructor tells who decides whether this box coordinates. Without discovery (`--no-
discovery`, and most tests) the box coordinates its own nodes alone. With discovery, the passel's
membership and election answer (`discovery.passel.Passel` is the source), attached once at start.
"""

from __future__ import annotations

from typing import Any, Protocol


class BoxUnreachable(Exception):
    """Another box of the passel did not answer a box-to-box call (or refused it); the message says why."""


class RoleSource(Protocol):
    """What the passel knows about the boxes: the election's answer and who is alive."""

    @property
    def is_coordinator(self) -> bool: ...

    def followers(self) -> list[str]: ...

    def handovers_pending(self) -> bool: ...

    def box_alive(self, box_id: str) -> bool: ...

    async def call(self, box_id: str | None, path: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]: ...


class Role:
    """Whether this box coordinates, who follows it, and whether boxes still hand tasks over."""

    def __init__(self, self_id: str) -> None:
        self.self_id = self_id
        self._source: RoleSource | None = None

    def attach(self, source: RoleSource) -> None:
        """From now on the passel decides (discovery calls this once, at start)."""
        self._source = source

    @property
    def coordinating(self) -> bool:
        """Only the coordinator polls nodes, places and sends tasks, and moves lost work."""
        return self._source is None or self._source.is_coordinator

    def followers(self) -> list[str]:
        """The boxes whose replica must hold a task before its commit is answered."""
        return [] if self._source is None else self._source.followers()

    def handovers_pending(self) -> bool:
        """Another live box still holds tasks it accepted as coordinator: wait before not-found."""
        return self._source is not None and self._source.handovers_pending()

    def box_alive(self, box_id: str) -> bool:
        """Whether a box (one holding staged images, say) is still heard from."""
        return box_id == self.self_id or self._source is None or self._source.box_alive(box_id)

    async def call(self, box_id: str | None, path: str, body: dict[str, Any],
                   timeout: float | None = 30.0) -> dict[str, Any]:
        """A signed box-to-box call to `box_id`, or to the coordinator when None; raises BoxUnreachable.

        The data path uses it: a box that received an upload tells the coordinator what it holds, and
        the coordinator asks that box to send the files to the node it chose."""
        if self._source is None:
            raise BoxUnreachable("this box is not in a passel")
        return await self._source.call(box_id, path, body, timeout)
