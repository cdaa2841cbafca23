"""How fast and how far an upstream node is: bandwidth each way, learned from the transfers
themselves, and the round trip, from the health poll (the light probe).

An upstream sits beyond the site, behind a satellite or cellular link of a few Mbit/s and hundreds of
ms: placement must count the time a task's images take to go up and its results to come home
(`scheduler.py`). A node on the field network needs none of this (`scheduler.FIELD_LINK_MBPS`).
Pure: the registry keeps one meter per node and persists it as JSON in `nodes.link`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Until a transfer has been measured: a modest cellular or satellite uplink. Too low a guess only
# keeps work local until the first upload has measured the real link; too high a guess would send a
# big task up a thin link and hold up the whole job.
PRIOR_UP_MBPS = 5.0
PRIOR_DOWN_MBPS = 10.0
PRIOR_RTT_MS = 300.0
MIN_MEASURED_BYTES = 1_000_000  # a smaller transfer says more about the round trip than the bandwidth
RECENT_WEIGHT = 0.3  # links change through the day (weather, the other users of a shared uplink)


@dataclass(frozen=True)
class Link:
    """What is known about one node's link; `None` until measured, when the prior stands in."""

    up_mbps: float | None = None
    down_mbps: float | None = None
    rtt_ms: float | None = None

    @property
    def up(self) -> float:
        return self.up_mbps or PRIOR_UP_MBPS

    @property
    def down(self) -> float:
        return self.down_mbps or PRIOR_DOWN_MBPS

    @property
    def rtt(self) -> float:
        return self.rtt_ms if self.rtt_ms is not None else PRIOR_RTT_MS

    def summary(self) -> str:
        """One line for the pages and the CLI: what was measured, and what is still a guess."""
        def part(value: float | None, text: str) -> str:
            return text if value is not None else f"{text} (guess)"
        return ", ".join((part(self.up_mbps, f"up {self.up:.1f} Mbit/s"),
                          part(self.down_mbps, f"down {self.down:.1f} Mbit/s"),
                          part(self.rtt_ms, f"{self.rtt:.0f} ms round trip")))

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in (("up_mbps", self.up_mbps), ("down_mbps", self.down_mbps),
                                            ("rtt_ms", self.rtt_ms)) if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Link:
        """The `nodes.link` column; a damaged value counts as not measured."""
        def number(key: str) -> float | None:
            value = data.get(key)
            return float(value) if isinstance(value, (int, float)) and value > 0 else None
        return cls(number("up_mbps"), number("down_mbps"), number("rtt_ms"))


def _blend(old: float | None, new: float) -> float:
    return new if old is None else (1 - RECENT_WEIGHT) * old + RECENT_WEIGHT * new


def after_transfer(link: Link, sent: bool, size: int, seconds: float) -> Link:
    """Fold one whole transfer (a task's images up, or its results home) into the link. The round
    trip is taken off the time first: on a long thin link it is a real share of a small transfer."""
    if size < MIN_MEASURED_BYTES or seconds <= 0:
        return link
    moving = max(seconds - link.rtt / 1000.0, seconds / 2)
    mbps = size * 8 / moving / 1e6
    if sent:
        return Link(_blend(link.up_mbps, mbps), link.down_mbps, link.rtt_ms)
    return Link(link.up_mbps, _blend(link.down_mbps, mbps), link.rtt_ms)


def after_probe(link: Link, seconds: float) -> Link:
    """Fold one health poll's round trip in (a small request and reply: latency, not bandwidth)."""
    return Link(link.up_mbps, link.down_mbps, _blend(link.rtt_ms, seconds * 1000.0))
