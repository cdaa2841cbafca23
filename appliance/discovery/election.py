"""Who is coordinator: a pure rule over what this box knows about the passel at one moment.

The rule, and why:
1. Sticky: a live coordinator keeps the role; a better box that joins does not take it over, so a
   laptop arriving mid-job does not make everyone switch.
2. When no coordinator has been heard from for one lease, the live box with the best
   (priority, id) claims `term = highest term seen + 1`. Everyone computes the same best box, so
   only one claims.
3. When two coordinators meet (a partition heals, or a coordinator that was cut off comes back),
   the one whose side did the most keeps the role: more live boxes following it, then more
   unfinished tasks in its table, then the higher term, priority and id. The term alone would be
   wrong: a box cut off alone elects itself with term + 1 while the side that kept serving clients
   keeps its term, and the lone box would then take every task over. Each coordinator sends its
   side's size (`followers`) and its unfinished count in its heartbeat, so every box that hears
   both computes the same winner; the loser steps down and follows it.
4. Fencing: a coordinator that keeps the role while another box holds its term or a higher one
   (a rival coordinator at the same term, or a loser that stepped down with a higher term) claims
   `highest term seen + 1`. Two coordinators therefore never share a term as equals, and nothing
   sent with a term the loser held is newer than the winner's (agent_api's `/adopt` accepts a
   hand-over whose term is not above the coordinator's, so the loser's hand-overs get through).
5. A hand-over by hand (`passel transfer`, or a box going to sleep) is not a contest: the new
   coordinator says in its heartbeat which box it succeeds, at a higher term. The giver and its
   followers move to it at once, even though the giver's side is still the bigger one (a giver going
   to sleep never says that it stepped down), and the new coordinator does not count the giver as a
   rival while the giver still shows its older term (it has not heard the answer yet).
6. A follower keeps following its coordinator while that box is alive and coordinator; it moves
   only when its coordinator steps down, goes silent or hands the role over (5), and then to the
   best coordinator it hears.
   This is what makes the heal converge: the followers counts the coordinators compare do not
   change while they decide, the loser's count falls to nothing once it steps down, and the
   winner's only grows, as does its term after the claim in 4, so the outcome never flips back.
   If both coordinators briefly saw different counts (a box leaving at that very moment) and
   both stepped down, rule 2 picks a coordinator one tick later.
7. A box that has just started, or has just woken from sleep, first listens for one lease before
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
    """One box as this box last heard of it; `followers` and `unfinished` describe a coordinator's side."""

    id: str
    priority: int = 0
    term: int = 0
    role: str = FOLLOWER
    coordinator: str | None = None  # the box it follows (itself, as coordinator)
    followers: int = 0  # live boxes following it
    unfinished: int = 0  # tasks in its table not yet finished
    succeeds: str | None = None  # the coordinator that handed it the role by hand, while it coordinates

    def rank(self) -> tuple[int, str]:
        return (self.priority, self.id)


@dataclass(frozen=True)
class Decision:
    role: str
    coordinator_id: str | None
    term: int


def _standing(m: Member) -> tuple[int, int, int, int, str]:
    """How two coordinators that meet are ordered: the side that did the most, then the newer claim."""
    return (m.followers, m.unfinished, m.term, m.priority, m.id)


def rivals(me: Member, peers: Sequence[Member]) -> list[Member]:
    """The coordinators among `peers` that `me` must settle with: not the box that handed `me` the role
    while that box still shows its older term (it spoke before it heard that the hand-over is done)."""
    return [p for p in peers if p.role == COORDINATOR and not (p.id == me.succeeds and p.term < me.term)]


def _heir(giver: Member, coordinators: Sequence[Member]) -> Member | None:
    """The coordinator that `giver` handed the role to by hand, at a newer term than `giver` shows."""
    heirs = [p for p in coordinators if p.succeeds == giver.id and p.term > giver.term]
    return max(heirs, key=_standing) if heirs else None


def elect(me: Member, alive_peers: Sequence[Member], settled: bool) -> Decision:
    """This box's role, whom it follows, and its term, given the peers heard from within a lease.

    `me.role`, `me.coordinator` and `me.term` are what this box was until now. `settled` is False
    while it is still listening after a start or a wake-up.
    """
    highest_term = max([me.term, *(p.term for p in alive_peers)])
    coordinators = rivals(me, alive_peers)
    if me.role == COORDINATOR:
        winner = _heir(me, coordinators) or max([me, *coordinators], key=_standing)
        if winner.id != me.id:
            return Decision(FOLLOWER, winner.id, highest_term)
        fenced = all(p.term < me.term or (p.term == me.term and p.role != COORDINATOR) for p in alive_peers)
        return Decision(COORDINATOR, me.id, me.term if fenced else highest_term + 1)
    if coordinators:
        current = next((p for p in coordinators if p.id == me.coordinator), None)
        leader = max(coordinators, key=_standing) if current is None else _heir(current, coordinators) or current
        return Decision(FOLLOWER, leader.id, highest_term)
    if not settled:
        return Decision(FOLLOWER, None, highest_term)
    best = max((me, *alive_peers), key=Member.rank)
    if best.id == me.id:
        return Decision(COORDINATOR, me.id, highest_term + 1)
    return Decision(FOLLOWER, None, highest_term)
