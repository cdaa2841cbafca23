"""The election rule as a pure function over membership snapshots."""

from dataclasses import replace

import pytest

from appliance.discovery.election import COORDINATOR, FOLLOWER, Decision, Member, elect


def m(id: str, priority: int = 0, term: int = 0, role: str = FOLLOWER, coordinator: str | None = None,
      followers: int = 0, unfinished: int = 0) -> Member:
    return Member(id=id, priority=priority, term=term, role=role, coordinator=coordinator, followers=followers,
                  unfinished=unfinished)


def boss(id: str, term: int, followers: int = 0, unfinished: int = 0, priority: int = 0) -> Member:
    """A coordinator as its heartbeat describes its side."""
    return m(id, priority, term, COORDINATOR, id, followers, unfinished)


def everyone(boxes: list[Member]) -> dict[str, Decision]:
    """What each box decides when it hears all the others."""
    return {b.id: elect(b, [p for p in boxes if p.id != b.id], True) for b in boxes}


def test_alone_and_settled_claims_term_one():
    assert elect(m("a"), [], settled=True) == Decision(COORDINATOR, "a", 1)


def test_not_settled_never_claims():
    assert elect(m("z", priority=9), [m("a")], settled=False) == Decision(FOLLOWER, None, 0)


def test_best_priority_claims_others_wait():
    peers = [m("a", priority=1), m("b", priority=5), m("c", priority=3)]
    assert elect(m("b", priority=5), [p for p in peers if p.id != "b"], True) == Decision(COORDINATOR, "b", 1)
    assert elect(m("a", priority=1), [p for p in peers if p.id != "a"], True) == Decision(FOLLOWER, None, 0)


def test_priority_tie_broken_by_id():
    assert elect(m("b"), [m("a")], True).role == COORDINATOR
    assert elect(m("a"), [m("b")], True).role == FOLLOWER


def test_claim_takes_highest_term_seen_plus_one():
    assert elect(m("z", term=3), [m("a", term=7)], True) == Decision(COORDINATOR, "z", 8)


def test_live_coordinator_is_sticky_against_better_newcomer():
    """A higher-priority box that joins does not take the role."""
    assert elect(m("z", priority=100), [m("a", term=4, role=COORDINATOR)], True) == Decision(FOLLOWER, "a", 4)


def test_coordinator_keeps_role_among_followers():
    assert elect(m("a", term=2, role=COORDINATOR), [m("z", priority=9, term=2)], True) == Decision(COORDINATOR, "a", 2)


def test_two_coordinators_higher_term_wins():
    me = m("z", priority=9, term=3, role=COORDINATOR)
    assert elect(me, [m("a", term=4, role=COORDINATOR)], True) == Decision(FOLLOWER, "a", 4)
    assert elect(m("a", term=4, role=COORDINATOR), [me], True) == Decision(COORDINATOR, "a", 4)


@pytest.mark.parametrize("mine, theirs, i_win", [
    ((5, "a"), (1, "b"), True),     # equal terms: priority decides
    ((1, "b"), (1, "a"), True),     # equal terms and priorities: id decides
    ((1, "a"), (1, "b"), False),
])
def test_equal_terms(mine, theirs, i_win):
    me = m(mine[1], priority=mine[0], term=6, role=COORDINATOR)
    other = m(theirs[1], priority=theirs[0], term=6, role=COORDINATOR)
    assert (elect(me, [other], True).role == COORDINATOR) is i_win
    assert (elect(other, [me], True).role == COORDINATOR) is not i_win, "both boxes must agree"


def test_every_box_agrees_on_one_coordinator_after_a_heal():
    boxes = [m("a", 1, 3, COORDINATOR), m("b", 2, 5, COORDINATOR), m("c", 9, 5, FOLLOWER), m("d", 0, 2, FOLLOWER)]
    decisions = {b.id: elect(b, [p for p in boxes if p.id != b.id], True) for b in boxes}
    assert [i for i, d in decisions.items() if d.role == COORDINATOR] == ["b"]
    assert {d.coordinator_id for d in decisions.values()} == {"b"}


def test_lone_box_with_higher_term_loses_to_the_side_that_kept_working():
    """Cut off alone, z elected itself at term 3; a kept term 2 with two followers and served clients."""
    boxes = [boss("a", term=2, followers=2), m("b", term=2, coordinator="a"), m("c", term=2, coordinator="a"),
             boss("z", term=3, priority=9)]
    decisions = everyone(boxes)
    assert decisions["z"] == Decision(FOLLOWER, "a", 3)
    assert decisions["a"] == Decision(COORDINATOR, "a", 4), "the winner's term ends above the loser's"
    assert {d.coordinator_id for d in decisions.values()} == {"a"}


@pytest.mark.parametrize("a, z, winner", [
    ({"followers": 2}, {"followers": 1, "priority": 9}, "a"),  # the bigger side
    ({"followers": 1}, {"followers": 2}, "z"),
    ({"followers": 1, "unfinished": 5}, {"followers": 1, "unfinished": 4, "priority": 9}, "a"),  # then the work in hand
    ({"followers": 1, "unfinished": 4}, {"followers": 1, "unfinished": 5}, "z"),
    ({"followers": 1, "unfinished": 4}, {"followers": 1, "unfinished": 4, "priority": 9}, "z"),  # then priority
])
def test_equal_terms_broken_by_side_then_unfinished(a, z, winner):
    """Both sides claimed term 2: the side that served more wins, not the better (priority, id)."""
    mine, theirs = boss("a", term=2, **a), boss("z", term=2, **z)
    seen_by_a, seen_by_z = elect(mine, [theirs], True), elect(theirs, [mine], True)
    assert seen_by_a.coordinator_id == seen_by_z.coordinator_id == winner, "both sides agree"
    loser = seen_by_z if winner == "a" else seen_by_a
    assert (seen_by_a if winner == "a" else seen_by_z) == Decision(COORDINATOR, winner, 3), "never equals at one term"
    assert loser == Decision(FOLLOWER, winner, 2)


def test_both_sides_and_their_followers_agree_after_a_heal():
    """Three boxes against two; every box, on either side, ends up following the same coordinator."""
    boxes = [boss("a", term=4, followers=2, unfinished=1), m("b", 3, 4, coordinator="a"), m("c", 1, 4, coordinator="a"),
             boss("y", term=5, followers=1, unfinished=7, priority=9), m("x", 5, 5, coordinator="y")]
    decisions = everyone(boxes)
    assert [i for i, d in decisions.items() if d.role == COORDINATOR] == ["a"]
    assert decisions["a"].term == 6 > max(b.term for b in boxes)
    assert decisions["y"] == Decision(FOLLOWER, "a", 5)
    # y's follower keeps following y until y steps down, then moves to a
    assert decisions["x"] == Decision(FOLLOWER, "y", 5)
    stepped_down = [boss("a", term=6, followers=2, unfinished=1), m("y", 9, 5, coordinator="a")]
    assert elect(m("x", 5, 5, coordinator="y"), stepped_down, True) == Decision(FOLLOWER, "a", 6)


def test_winner_fences_a_loser_that_stepped_down_with_a_higher_term():
    """The loser may step down before the winner hears it as a coordinator: its term still fences."""
    assert elect(boss("a", term=2, followers=2), [m("z", term=3, coordinator="a")], True) == Decision(COORDINATOR, "a", 4)
    assert elect(boss("a", term=4, followers=2), [m("z", term=4, coordinator="a")], True) == Decision(COORDINATOR, "a", 4)


def test_winner_keeps_its_term_when_already_above_the_loser():
    assert elect(boss("a", term=5, followers=2), [boss("z", term=4)], True) == Decision(COORDINATOR, "a", 5)


def test_follower_stays_with_its_coordinator_while_the_coordinators_decide():
    """Side sizes must not change while the coordinators compare them, or the outcome could flip."""
    heard = [boss("a", term=2, followers=1), boss("z", term=2, followers=3)]
    assert elect(m("b", term=2, coordinator="a"), heard, True) == Decision(FOLLOWER, "a", 2)
    assert elect(m("n", term=2), heard, True) == Decision(FOLLOWER, "z", 2)  # a newcomer picks the best side


def test_sticky_coordinator_not_displaced_by_better_newcomer_follower():
    """A newcomer with more priority, a higher term and a bigger replica is not a coordinator: no contest."""
    newcomer = m("z", priority=100, term=9, unfinished=50)
    kept = elect(boss("a", term=4, followers=1), [newcomer, m("b", term=4, coordinator="a")], True)
    assert kept == Decision(COORDINATOR, "a", 10), "kept, and fenced above the newcomer's old term"
    assert elect(newcomer, [boss("a", term=4, followers=1)], True) == Decision(FOLLOWER, "a", 9)


def test_a_hand_over_by_hand_is_not_a_contest():
    """o handed the role to x at term 4 and still shows its side of three until it hears the answer."""
    giver, heir = boss("o", term=3, followers=2, unfinished=5), replace(boss("x", term=4), succeeds="o")
    assert elect(giver, [heir], True) == Decision(FOLLOWER, "x", 4)
    assert elect(heir, [giver], True) == Decision(COORDINATOR, "x", 4)
    # the giver's followers move too: a giver going to sleep never says that it stepped down
    assert elect(m("f", term=3, coordinator="o"), [giver, heir], True) == Decision(FOLLOWER, "x", 4)
    # the same numbers without the hand-over: the bigger side keeps the role, fenced above the other
    assert elect(boss("o", term=3, followers=2, unfinished=5), [boss("x", term=4)], True) == Decision(COORDINATOR, "o", 5)


def test_a_giver_that_claims_again_later_is_a_rival_like_any_other():
    """Once the giver holds a newer term (cut off, it claimed again), the old hand-over counts for nothing."""
    giver, heir = boss("o", term=6, followers=2), replace(boss("x", term=4), succeeds="o")
    assert elect(heir, [giver], True) == Decision(FOLLOWER, "o", 6)
    assert elect(giver, [heir], True) == Decision(COORDINATOR, "o", 6)


def test_clock_jump_after_sleep_listens_before_claiming():
    """A box waking from sleep has heard nobody lately; unsettled, it must not claim a new term."""
    assert elect(m("z", priority=9, term=4), [], settled=False) == Decision(FOLLOWER, None, 4)
    # once it hears the live coordinator, it follows it
    assert elect(m("z", priority=9, term=4), [m("a", term=5, role=COORDINATOR)], False) == Decision(FOLLOWER, "a", 5)


def test_sleeping_coordinator_wakes_and_steps_down_to_newer_term():
    me = m("z", priority=9, term=4, role=COORDINATOR)
    assert elect(me, [m("a", term=5, role=COORDINATOR)], settled=False) == Decision(FOLLOWER, "a", 5)


def test_clock_detector_sees_suspend(monkeypatch):
    from appliance import clock
    now = {"boot": 100.0, "mono": 50.0}
    monkeypatch.setattr(clock, "boottime", lambda: now["boot"])
    monkeypatch.setattr(clock.time, "monotonic", lambda: now["mono"])
    detector = clock.JumpDetector(threshold=2.0)
    now["boot"] += 1.0
    now["mono"] += 1.0
    assert not detector.jumped()
    now["boot"] += 600.0  # suspended ten minutes: boot time moved, monotonic did not
    now["mono"] += 1.0
    assert detector.jumped()


def test_a_heartbeat_held_up_in_a_cut_link_does_not_overwrite_newer_news() -> None:
    """TCP delivers a heartbeat sent before a cut once the link heals. Its news is stale: here, that the
    box was a follower with nothing to hand over, when it has since coordinated its own side and holds
    tasks to hand over. Taken in, the coordinator would answer those tasks not-found."""
    from appliance.discovery.membership import Membership

    members = Membership("me")
    newer = {"id": "island", "role": COORDINATOR, "coordinator": "island", "handover": True, "term": 2,
             "boot": "b1", "seq": 7}
    older = {"id": "island", "role": FOLLOWER, "coordinator": "me", "handover": False, "term": 1,
             "boot": "b1", "seq": 5}
    peer = members.heard(newer, "10.0.0.9")
    assert members.heard(older, "10.0.0.9") is peer
    assert (peer.role, peer.coordinator_id, peer.handover, peer.term) == (COORDINATOR, "island", True, 2)
    restarted = {**older, "boot": "b2", "seq": 1}  # a new process counts from 1 again: its news is new
    members.heard(restarted, "10.0.0.9")
    assert (peer.role, peer.handover) == (FOLLOWER, False)
    members.heard({**newer, "boot": "", "seq": "x"}, "10.0.0.9")  # a box that does not count: taken as it comes
    assert peer.role == COORDINATOR
