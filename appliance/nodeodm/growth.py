"""How much of a file that is still arriving is on disk, so it can be sent on while it arrives.

The receiving side (uploads.py) says each time it writes, and once at the end whether the file was
kept; the sending side (file_upload.py) sends what is written and waits for more. Both run on one
event loop, so a plain counter and an Event are enough.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field


@dataclass
class Growth:
    """The written size of one file being received, and how its arrival ended."""

    written: int = 0
    done: bool = False  # the whole file arrived and was kept under its final name
    failed: bool = False  # the upload broke: the file was removed, and the client sends it again
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    wanted: int = 0  # the size the waiter waits for: a slow link writes in small pieces, and waking the
    # sender for each of them cost more CPU than the sending (bench/fieldnet.py, 100 Mbit/s)

    def grew(self, count: int) -> None:
        self.written += count
        if self.written >= self.wanted:
            self.changed.set()

    def end(self, kept: bool) -> None:
        self.done, self.failed = kept, not kept
        self.changed.set()

    async def wait(self, until: int) -> None:
        """Until the file has `until` bytes, or ends."""
        self.wanted = max(until, self.written + 1)
        self.changed.clear()
        await self.changed.wait()

    async def ended(self) -> bool:
        """Until the arrival ends; whether the file was kept."""
        while not (self.done or self.failed):
            await self.wait(until=sys.maxsize)
        return self.done
