"""Who is coordinator: a pure rule over what this box knows about the passel at one moment.

The rule (see shared/design.md), and why:
1. Sticky: a live coordinator keeps the role; a better box that joins does not take it over, so a
   laptop arriving mid-job does not make everyone switch.
2. When no coordinator has been heard from for one lease, the live box with the best
   (priority, id) claims `term = highest term seen + 1`. Everyone computes the same best box, so
   only one claims.
3. When two coordinators meet (a partition heals), the one with the lower (term, priority, id)
   steps down. Terms only grow, so the newest claim wins and the rule is the same on every box.
4. A box that has just started, or has just woken from sleep, first listens for one lease before
   claiming: otherwise it would claim while a coordinator it has not heard yet is alive.

A majority protocol would stop a two-box passel when one lid closes; this one keeps working, and
resolves the split brain when the boxes meet again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

COORDINATOR = "coordinator"
FOLLOWER = "follower"


@dataclass(frozen=True)
class Member:
    """One box as this box last heard of it."""

    id: str
    priority: int = 0
    term: int = 0
    role: str = FOLLOWER

    def rank(self) -> tuple[int, str]:
        return (self.priority, self.id)


@dataclass(frozen=True)
class Decision:
    role: str
    coordinator_id: str | None
    term: int


def _seniority(m: Member) -> tuple[int, int, str]:
    return (m.term, m.priority, m.id)


def elect(me: Member, alive_peers: Sequence[Member], settled: bool) -> Decision:
    """This box's role, whom it follows, and its term, given the peers heard from within a lease.

    `me.role` and `me.term` are what this box was until now. `settled` is False while it is still
    listening after a start or a wake-up.
    """
    highest_term = max([me.term, *(p.term for p in alive_peers)])
    coordinators = [p for p in alive_peers if p.role == COORDINATOR]
    if me.role == COORDINATOR:
        coordinators.append(me)
    if coordinators:
        winner = max(coordinators, key=_seniority)
        if winner.id == me.id:
            return Decision(COORDINATOR, me.id, me.term)
        return Decision(FOLLOWER, winner.id, highest_term)
    if not settled:
        return Decision(FOLLOWER, None, highest_term)
    best = max((me, *alive_peers), key=Member.rank)
    if best.id == me.id:
        return Decision(COORDINATOR, me.id, highest_term + 1)
    return Decision(FOLLOWER, None, highest_term)
