"""How numbers read on screen: durations, ages, sizes and clock times, in words a responder scans."""

from __future__ import annotations

import time

from appliance.clock import wall

UNITS = ("B", "kB", "MB", "GB", "TB")


def duration(seconds: float | None) -> str:
    """'45 s', '3 min 12 s', '2 h 05 min'; an em dash when unknown."""
    if seconds is None or seconds < 0:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} days {hours % 24} h"


def ago(seconds: float | None) -> str:
    """How long ago, from a number of seconds; 'never' when there is none."""
    if seconds is None:
        return "never"
    if seconds < 2:
        return "just now"
    return f"{duration(seconds)} ago"


def since(epoch: float | None, now: float | None = None) -> str:
    """How long ago a wall-clock time was."""
    return "never" if epoch is None else ago((now or wall()) - epoch)


def size(count: float | None) -> str:
    """Bytes as '7.8 GB'."""
    if count is None:
        return "—"
    value = float(count)
    for unit in UNITS:
        if value < 1000 or unit == UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return "—"


def clock(epoch: float | None) -> str:
    """This box's local time of day, with the date when it is not today."""
    if epoch is None:
        return "—"
    moment = time.localtime(epoch)
    if time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", moment)
    return time.strftime("%Y-%m-%d %H:%M", moment)
