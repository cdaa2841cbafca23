"""Time that keeps counting while a laptop sleeps, and that a change of the system clock does not move.

`time.monotonic()` (and asyncio's clock) stop during suspend, so a box waking from sleep would think
its old leases are still fresh. CLOCK_BOOTTIME keeps counting, so leases expire as they should.

Field boxes often have no battery clock and no time source: the wall clock may jump an hour or a
day when NTP arrives late or a technician fixes the date. Task timestamps kept in the table, and the
clean-up's ages read from them, use `wall()`, which such a jump does not move while the agent runs,
capped by `uptime()` for what an earlier run wrote under its own clock.
"""

import time


def boottime() -> float:
    """Seconds since boot, including time spent suspended."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


_STARTED_AT_BOOT = boottime()
_WALL_AT_BOOT = time.time() - _STARTED_AT_BOOT


def wall() -> float:
    """Epoch seconds: the system clock as it read when this process started, advanced by the boot clock."""
    return _WALL_AT_BOOT + boottime()


def uptime() -> float:
    """Seconds since this process started, suspend included: no age is longer than what this run saw."""
    return boottime() - _STARTED_AT_BOOT


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
