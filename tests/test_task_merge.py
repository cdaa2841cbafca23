"""The merge rule for two versions of one task, as a table: every pair of kinds, with and without the
client having given the uuid up, plus properties no table can list (symmetry, a removal always wins,
a version merged with itself changes nothing)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.cluster.task_merge import STATUS_PROGRESS, Verdict, Version, merge
from appliance.nodeodm.status import TaskStatus
from appliance.store.models import Phase, Task

Q, RUN, FAIL, DONE, CANCEL = (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.FAILED, TaskStatus.COMPLETED,
                              TaskStatus.CANCELED)
KINDS = {  # node 1 held it first; "moved" is the same task sent again, to node 2
    "uploading": Version(Phase.UPLOADING, Q),
    "waiting": Version(Phase.WAITING, Q),
    "sending": Version(Phase.FORWARDING, RUN, node=1, sends=1),
    "on node": Version(Phase.ON_NODE, RUN, node=1, sends=1),
    "moved": Version(Phase.ON_NODE, RUN, node=2, sends=2),
    "completed": Version(Phase.FINISHED, DONE, node=1, sends=1),
    "failed": Version(Phase.FINISHED, FAIL, node=1, sends=1),
    "canceled": Version(Phase.FINISHED, CANCEL, node=1, sends=1),
    "lost": Version(Phase.LOST, RUN, node=1, sends=1),
    "removed": Version(Phase.REMOVED, DONE, node=1, sends=1),
}
K, D, F = Verdict.KEEP_MINE, Verdict.KEEP_MINE_DROP_THEIR_NODE_COPY, Verdict.KEEP_MINE_TAKE_THEIR_FILES
T, X, G = Verdict.TAKE_THEIRS, Verdict.TAKE_THEIR_TOMBSTONE, Verdict.RECORD_GIVEN_UP
CODES = {"K": K, "D": D, "F": F, "T": T, "X": X, "G": G}

# mine (row) against theirs (column), in the order of KINDS
TABLE = """
              upload wait send node moved compl fail cancel lost removed
uploading        K    T    T    T    T     T     T    T     X    X
waiting          K    K    T    T    T     T     T    T     X    X
sending          K    K    K    T    T     T     T    T     K    X
on_node          K    K    K    K    T     T     T    T     K    X
moved            K    K    D    D    K     D     D    D     K    X
completed        K    K    K    K    T     K     K    K     K    X
failed           K    K    K    K    T     T     K    T     K    X
canceled         K    K    K    K    T     T     K    K     K    X
lost             K    K    T    T    T     T     T    T     K    X
removed          K    K    D    D    D     D     D    D     K    K
"""
# the same, once the client gave the uuid up: no live version may run
GIVEN_UP_TABLE = """
              upload wait send node moved compl fail cancel lost removed
uploading        G    G    G    G    G     G     G    G     X    X
waiting          G    G    G    G    G     G     G    G     X    X
sending          G    G    G    G    G     G     G    G     X    X
on_node          G    G    G    G    G     G     G    G     X    X
moved            G    G    G    G    G     G     G    G     X    X
completed        G    G    G    G    G     G     G    G     X    X
failed           G    G    G    G    G     G     G    G     X    X
canceled         G    G    G    G    G     G     G    G     X    X
lost             K    K    D    D    D     D     D    D     K    X
removed          K    K    D    D    D     D     D    D     K    K
"""


def cases(table: str) -> list[tuple[str, str, Verdict]]:
    rows = [line.split() for line in table.strip().splitlines()[1:]]
    names = list(KINDS)
    assert [r[0].replace("_", " ") for r in rows] == names and all(len(r) == len(names) + 1 for r in rows)
    return [(mine, theirs, CODES[code]) for mine, row in zip(names, rows) for theirs, code in zip(names, row[1:])]


@pytest.mark.parametrize(("mine", "theirs", "expected"), cases(TABLE))
def test_every_pair_of_kinds(mine, theirs, expected):
    assert merge(KINDS[mine], KINDS[theirs]) is expected


@pytest.mark.parametrize(("mine", "theirs", "expected"), cases(GIVEN_UP_TABLE))
def test_every_pair_of_kinds_once_the_client_gave_it_up(mine, theirs, expected):
    assert merge(KINDS[mine], KINDS[theirs], client_gave_up=True) is expected


@pytest.mark.parametrize("theirs", list(KINDS))
def test_no_version_here_takes_theirs_unless_the_client_gave_it_up(theirs):
    tombstone = KINDS[theirs].phase in (Phase.REMOVED, Phase.LOST)
    assert merge(None, KINDS[theirs]) is T
    assert merge(None, KINDS[theirs], client_gave_up=True) is (T if tombstone else G)


def test_a_completed_copy_never_undoes_a_removal():
    """The old rule compared the status first: a COMPLETED copy (status 40) beat a REMOVED tombstone
    whose status was still RUNNING, and a client's removal came undone."""
    removed_early = Version(Phase.REMOVED, RUN)
    stale_completed = Version(Phase.FINISHED, DONE, node=1, sends=1)
    assert merge(removed_early, stale_completed) is D
    assert merge(stale_completed, removed_early) is X


def test_a_stale_completed_copy_after_a_heal_loses_to_the_move():
    """The cut-off box's node completed the copy it had; the task had moved to node 2 meanwhile."""
    moved_and_removed = Version(Phase.REMOVED, RUN, node=2, sends=2)
    moved_and_running = Version(Phase.ON_NODE, RUN, node=2, sends=2)
    stale = Version(Phase.FINISHED, DONE, node=1, sends=1)
    assert merge(moved_and_removed, stale) is D and merge(moved_and_running, stale) is D
    assert merge(stale, moved_and_running) is T


def test_mine_without_images_takes_the_ones_they_brought():
    mine = Version(Phase.FINISHED, DONE, node=1, sends=1)
    theirs = Version(Phase.ON_NODE, RUN, node=1, sends=1, has_files=True)
    assert merge(mine, theirs) is F
    assert merge(Version(Phase.REMOVED, RUN), theirs) is D, "a tombstone needs no images"
    assert merge(Version(Phase.FINISHED, DONE, node=1, sends=1, has_files=True), theirs) is K


def test_an_equal_version_without_images_takes_the_ones_they_brought():
    """The giver releases its copy once answered: a tie kept without them would leave them on no box
    (nemesis seed 320)."""
    theirs = Version(Phase.ON_NODE, RUN, node=1, sends=1, has_files=True)
    assert merge(Version(Phase.ON_NODE, RUN, node=1, sends=1), theirs) is F
    assert merge(Version(Phase.ON_NODE, RUN, node=1, sends=1, has_files=True), theirs) is K
    assert merge(Version(Phase.LOST, RUN, node=1, sends=1), Version(Phase.LOST, RUN, node=1, sends=1,
                                                                    has_files=True)) is K


def row(phase: str, node_id: int | None, attempts: int) -> Task:
    return Task(uuid="00000000-0000-4000-8000-000000000001", phase=phase, status=RUN, node_id=node_id,
                attempts=attempts)


@pytest.mark.parametrize(("task", "listed_on", "expected"), [
    (row(Phase.LOST, 1, 1), 1, T),            # lost there, but the node still has it: found again
    (row(Phase.LOST, 2, 2), 1, D),            # lost on the node it moved to: the old copy stays dropped
    (row(Phase.LOST, None, 0), 1, D),         # lost before it was placed: a copy on a node is left over
    (row(Phase.REMOVED, 1, 1), 1, D),         # removed: its node's copy goes
    (row(Phase.ON_NODE, 2, 2), 1, D),         # moved on to node 2: node 1's copy is stale
    (row(Phase.FORWARDING, 2, 2), 1, D),
    (row(Phase.FINISHED, 2, 2), 1, D),
    (row(Phase.ON_NODE, 1, 1), 1, K),         # its own placement
    (row(Phase.FINISHED, 1, 1), 1, K),
    (row(Phase.FORWARDING, 1, 1), 1, T),      # on its node already: the send is settled elsewhere
    (row(Phase.WAITING, None, 1), 1, T),      # not placed: nothing to judge a copy by
    (row(Phase.UPLOADING, 1, 0), 1, T),       # the node it is streamed to
])
def test_a_copy_a_node_lists_against_the_table(task, listed_on, expected):
    assert merge(Version.of(task, task.node_id), Version.listed_on(listed_on, task)) is expected


versions = st.builds(
    Version,
    phase=st.sampled_from([Phase.UPLOADING, Phase.WAITING, Phase.FORWARDING, Phase.ON_NODE, Phase.FINISHED,
                           Phase.LOST, Phase.REMOVED]),
    status=st.sampled_from(list(TaskStatus)),
    node=st.none() | st.integers(1, 3),
    sends=st.integers(0, 3),
    has_files=st.booleans(),
)


@given(versions, versions, st.booleans())
def test_the_winner_does_not_depend_on_who_asks(a, b, gave_up):
    ab, ba = merge(a, b, gave_up), merge(b, a, gave_up)
    if ab is G or ba is G:
        assert ab is ba is G
    elif ab.mine_wins and ba.mine_wins:  # a tie: only versions the rule cannot tell apart
        assert a.phase == b.phase
        assert a.phase == Phase.REMOVED or STATUS_PROGRESS[a.status] == STATUS_PROGRESS[b.status]
        # each keeps its own; the one without the images takes the other's
        assert (ab, ba) == (F if b.has_files > a.has_files and a.phase not in (Phase.REMOVED, Phase.LOST) else K,
                            F if a.has_files > b.has_files and b.phase not in (Phase.REMOVED, Phase.LOST) else K)
    else:
        assert ab.mine_wins != ba.mine_wins


@given(versions, versions, st.booleans())
def test_a_removal_always_wins(a, b, gave_up):
    removed = Version(Phase.REMOVED, a.status, a.node, a.sends)
    if b.phase != Phase.REMOVED:
        assert merge(removed, b, gave_up).mine_wins
        assert merge(b, removed, gave_up) is X
    assert merge(removed, b, gave_up) in (K, D)


@given(versions, st.booleans())
def test_a_version_merged_with_itself_changes_nothing(a, gave_up):
    live = a.phase not in (Phase.REMOVED, Phase.LOST)
    assert merge(a, a, gave_up) is (G if gave_up and live else K)


@given(versions, versions)
def test_a_given_up_task_never_keeps_a_live_version(a, b):
    verdict = merge(a, b, client_gave_up=True)
    winner = a if verdict.mine_wins else b if verdict in (T, X) else None
    assert winner is None or winner.phase in (Phase.REMOVED, Phase.LOST)


class ListingNode:
    """A node client that lists tasks and records what it is told to cancel and remove."""

    def __init__(self, uuids: list[str]) -> None:
        self.uuids, self.removed = uuids, []

    async def task_list(self, timeout):
        return [{"uuid": uuid} for uuid in self.uuids]

    async def task_cancel(self, uuid):
        pass

    async def task_remove(self, uuid):
        self.removed.append(uuid)


async def test_the_reconciler_judges_a_nodes_copies_by_the_rule(tmp_path):
    """Found again only on the node it was lost on, unless its client gave it up; stale copies of a
    task removed, lost elsewhere or moved on are removed from the node."""
    from appliance.cluster.reconciler import Reconciler
    from tests.support import coordinator_in
    async with coordinator_in(tmp_path) as c:
        node = await c.registry.add("http://127.0.0.1:9")
        other = await c.registry.add("http://127.0.0.2:9")
        uuid = "00000000-0000-4000-8000-0000000000{:02x}".format
        rows = {
            "found": Task(uuid=uuid(1), phase=Phase.LOST, status=RUN, node_id=node.id, attempts=1),
            "given up": Task(uuid=uuid(2), phase=Phase.LOST, status=RUN, node_id=node.id, attempts=1),
            "removed": Task(uuid=uuid(3), phase=Phase.REMOVED, status=DONE, node_id=node.id, attempts=1),
            "moved on": Task(uuid=uuid(4), phase=Phase.ON_NODE, status=RUN, node_id=other.id, attempts=2),
            "lost elsewhere": Task(uuid=uuid(5), phase=Phase.LOST, status=RUN, node_id=other.id, attempts=2),
            "its own": Task(uuid=uuid(6), phase=Phase.ON_NODE, status=RUN, node_id=node.id, attempts=1),
        }
        for task in rows.values():
            await c.book.save(task)
        await c.intake.abandoned(uuid(2))  # its client removed it after the not-found: a tombstone
        node.client, node.online = ListingNode([t.uuid for t in rows.values()]), True  # type: ignore[assignment]
        await Reconciler(c, grace_seconds=60)._compare_with_node(node)
        assert c.book.tasks[uuid(1)].phase == Phase.ON_NODE
        gone = {name for name, task in rows.items() if task.uuid in node.client.removed}
        assert gone == {"given up", "removed", "moved on", "lost elsewhere"}


async def test_a_follower_takes_the_coordinators_removal_of_its_own_task_at_once(tmp_path):
    """A task this box accepted as coordinator waits to be handed over; a removal from the new
    coordinator wins by the rule, so it is not shown undone meanwhile, and the staged images go.
    A live version from the coordinator waits for the hand-over instead (it merges with the images)."""
    from appliance.replication.feed import ReplicaFollower
    from appliance.store.models import row_values
    from tests.support import coordinator_in
    async with coordinator_in(tmp_path) as c:
        removed, completed = "00000000-0000-4000-8000-0000000000a1", "00000000-0000-4000-8000-0000000000a2"
        for uuid in (removed, completed):
            await c.book.save(Task(uuid=uuid, phase=Phase.WAITING, status=Q, staged_on="me"))
            c.staging.create(uuid)
            (c.staging.path(uuid) / "IMG_1.JPG").write_bytes(b"\xff\xd8")
        theirs = [row_values(Task(uuid=removed, phase=Phase.REMOVED, status=RUN, owner="boss", rev=5)),
                  row_values(Task(uuid=completed, phase=Phase.FINISHED, status=DONE, owner="boss", rev=6))]
        assert await ReplicaFollower(c, peers=None)._apply_tasks(theirs, full=False) == 1  # type: ignore[arg-type]
        assert c.book.tasks[removed].phase == Phase.REMOVED and not c.staging.path(removed).exists()
        assert c.book.tasks[completed].phase == Phase.WAITING and c.book.tasks[completed].owner == "me"
        assert c.staging.files(completed), "kept for the hand-over"


async def test_a_follower_never_undoes_a_removal_the_coordinator_has_not_heard_of(tmp_path):
    """Nemesis seed 48: the client removed a task on one side of a split; the other side's coordinator,
    which took the role back later, still had it on its node. The follower that saw the removal kept
    the coordinator's version (the removal undone on the box, and the task run again); now it keeps
    its tombstone and offers it to the coordinator as a row of its own to hand over."""
    from appliance.replication.feed import ReplicaFollower
    from appliance.replication.handover import own_rows
    from appliance.store.models import row_values
    from tests.support import coordinator_in
    async with coordinator_in(tmp_path) as c:
        uuid = "00000000-0000-4000-8000-0000000000a3"
        await c.book.save_replica(Task(uuid=uuid, phase=Phase.REMOVED, status=DONE, owner="other-side", rev=9))
        stale = [row_values(Task(uuid=uuid, phase=Phase.ON_NODE, status=RUN, owner="boss", rev=3))]
        await ReplicaFollower(c, peers=None)._apply_tasks(stale, full=True)  # type: ignore[arg-type]
        assert c.book.tasks[uuid].phase == Phase.REMOVED
        assert [t.uuid for t in own_rows(c)] == [uuid], "to hand over, so the coordinator removes it too"
        took_it = [row_values(Task(uuid=uuid, phase=Phase.REMOVED, status=DONE, owner="boss", rev=4))]
        await ReplicaFollower(c, peers=None)._apply_tasks(took_it, full=True)  # type: ignore[arg-type]
        assert c.book.tasks[uuid].phase == Phase.REMOVED
