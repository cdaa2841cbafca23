"""Time that keeps counting while a laptop sleeps.

`time.monotonic()` (and asyncio's clock) stop during suspend, so a box waking from sleep would think
its old leases are still fresh. CLOCK_BOOTTIME keeps counting, so leases expire as they should.
"""

import time


def boottime() -> float:
    """Seconds since boot, including time spent suspended."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class JumpDetector:
    """Notices a suspend: boot time advanced much more than monotonic time since the last look."""

    def __init__(self, threshold: float = 2.0) -> None:
        self.threshold = threshold
        self._last = (boottime(), time.monotonic())

    def jumped(self) -> bool:
        boot, mono = boottime(), time.monotonic()
        last_boot, last_mono = self._last
        self._last = (boot, mono)
        return (boot - last_boot) - (mono - last_mono) > self.threshold
