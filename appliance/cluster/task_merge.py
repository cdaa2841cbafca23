"""Which of two versions of one task wins, and what happens to the loser: one rule for every place
where two versions meet.

They meet when an old coordinator comes back or a partition heals (the hand-over,
`Coordinator.adopt`), when a follower's own rows meet the coordinator's (`replication/feed.py`), and
when a node lists a task the table placed elsewhere, removed or lost (`reconciler.py`). With one
pure rule they cannot disagree, and a table of tests pins it down. The first that applies decides:

1. A tombstone the client made wins: REMOVED, never undone however far the other copy got. When the
   client gave the uuid up (removed it after a not-found, then sent the work again), no live version
   may run: REMOVED beats LOST beats any live one, and two live ones leave only a tombstone.
2. A later placement beats a stale copy: both versions name a node (sent, on it, finished there, or
   lost with it; a LOST one may name none), the nodes differ, and the one sent more times wins. The
   task moved on; the other node's copy is left over from before.
3. A live version beats a LOST one: lost meant out of reach, not gone, and the side that holds it
   is back (on the same node, or on a box that never named one).
4. The further-along phase wins: UPLOADING < WAITING < FORWARDING < ON_NODE < FINISHED. Phase before
   status: comparing the status first let a COMPLETED copy beat a REMOVED tombstone.
5. Within one phase, the further-along status: finished beats queued or running, and COMPLETED beats
   CANCELED beats FAILED. A completed version holds results that took hours (a client that canceled
   it can still remove it); a cancel was the client's choice, a failure was not.

A live version kept without its staged images takes the ones the other side brought, even when
the two are equal: the other side releases its copy once answered (nemesis seed 320). Otherwise,
two versions equal under these rules keep mine: there is nothing to do. The winner never depends on
which side asks: merge(a, b) and merge(b, a) pick the same version.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from appliance.nodeodm.status import TaskStatus
from appliance.store.models import Phase, Task

PHASE_PROGRESS = (Phase.UPLOADING, Phase.WAITING, Phase.FORWARDING, Phase.ON_NODE, Phase.FINISHED)
STATUS_PROGRESS: dict[int, int] = {TaskStatus.QUEUED: 0, TaskStatus.RUNNING: 0, TaskStatus.FAILED: 1,
                                   TaskStatus.CANCELED: 2, TaskStatus.COMPLETED: 3}
NAMES_A_NODE = (Phase.FORWARDING, Phase.ON_NODE, Phase.FINISHED, Phase.LOST)
TOMBSTONES = (Phase.REMOVED, Phase.LOST)


@dataclass(frozen=True)
class Version:
    """One side's account of a task, reduced to what the rule reads."""

    phase: str
    status: int = TaskStatus.QUEUED
    node: int | None = None  # this box's id of the node that holds (or held) it
    sends: int = 0  # `Task.attempts`: each placement sends it again, so a move counts one more
    has_files: bool = False  # this side holds its staged images

    @classmethod
    def of(cls, task: Task, node: int | None, has_files: bool = False) -> Version:
        return cls(task.phase, task.status, node, task.attempts, has_files)

    @classmethod
    def listed_on(cls, node: int, row: Task) -> Version:
        """A copy a node lists: the row's own placement when the row names that node, else one from
        before the task moved on (one send fewer). Its status is not in the list: running, say."""
        same = node == row.node_id
        return cls(Phase.ON_NODE, TaskStatus.RUNNING, node, row.attempts if same else row.attempts - 1)

    @property
    def placed_on(self) -> int | None:
        return self.node if self.phase in NAMES_A_NODE else None


class Verdict(StrEnum):
    """What the box holding `mine` does; the value reads well in a log line."""

    KEEP_MINE = "keep this box's version"
    KEEP_MINE_TAKE_THEIR_FILES = "keep this box's version, with the staged images the other side brought"
    KEEP_MINE_DROP_THEIR_NODE_COPY = "keep this box's version; the other side's node copy is stale"
    TAKE_THEIRS = "take the other side's version"
    TAKE_THEIR_TOMBSTONE = "take the other side's removal (or loss): this box's node copy and staged images go"
    RECORD_GIVEN_UP = "its client gave it up: neither version may run, only a tombstone is kept"

    @property
    def mine_wins(self) -> bool:
        return self in (Verdict.KEEP_MINE, Verdict.KEEP_MINE_TAKE_THEIR_FILES, Verdict.KEEP_MINE_DROP_THEIR_NODE_COPY)


def merge(mine: Version | None, theirs: Version, client_gave_up: bool = False) -> Verdict:
    """Decide between this box's version of a task (None: it has none) and the other side's."""
    if mine is None:
        given_up_live = client_gave_up and theirs.phase not in TOMBSTONES
        return Verdict.RECORD_GIVEN_UP if given_up_live else Verdict.TAKE_THEIRS
    if client_gave_up and mine.phase not in TOMBSTONES and theirs.phase not in TOMBSTONES:
        return Verdict.RECORD_GIVEN_UP
    order = _compare(mine, theirs, client_gave_up)
    if order < 0:
        return Verdict.TAKE_THEIR_TOMBSTONE if theirs.phase in TOMBSTONES and theirs.phase != mine.phase \
            else Verdict.TAKE_THEIRS
    if mine.phase not in TOMBSTONES and theirs.has_files and not mine.has_files:
        return Verdict.KEEP_MINE_TAKE_THEIR_FILES  # on a tie too: the side that brought them lets them go
    if order == 0:
        return Verdict.KEEP_MINE
    their_copy = theirs.placed_on if theirs.phase != Phase.LOST else None
    if their_copy is not None and (mine.phase in TOMBSTONES or mine.placed_on != their_copy):
        return Verdict.KEEP_MINE_DROP_THEIR_NODE_COPY
    return Verdict.KEEP_MINE


def _compare(a: Version, b: Version, client_gave_up: bool) -> int:
    """Above zero when `a` wins, below when `b` does, zero when the rule cannot tell them apart."""
    removal = _sign(a.phase == Phase.REMOVED, b.phase == Phase.REMOVED)
    if removal or a.phase == b.phase == Phase.REMOVED:
        return removal
    if client_gave_up and (lost := _sign(a.phase == Phase.LOST, b.phase == Phase.LOST)):
        return lost
    if _placed_apart(a, b):
        return _sign(a.sends, b.sends)
    if live := _sign(a.phase != Phase.LOST, b.phase != Phase.LOST):
        return live
    if phase := _sign(_phase_progress(a), _phase_progress(b)):
        return phase
    return _sign(STATUS_PROGRESS.get(a.status, 0), STATUS_PROGRESS.get(b.status, 0))


def _placed_apart(a: Version, b: Version) -> bool:
    """Rule 2 applies: different nodes, different numbers of sends. A LOST version may name no node
    (lost before it was placed): against it, a copy on some node is a placement of its own."""
    if a.sends == b.sends or a.placed_on == b.placed_on:
        return False
    return (a.placed_on is not None and b.placed_on is not None) or Phase.LOST in (a.phase, b.phase)


def _phase_progress(version: Version) -> int:
    return PHASE_PROGRESS.index(version.phase) if version.phase in PHASE_PROGRESS else len(PHASE_PROGRESS)


def _sign(a: int | bool, b: int | bool) -> int:
    return (a > b) - (a < b)
