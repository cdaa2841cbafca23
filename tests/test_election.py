"""The election rule as a pure function over membership snapshots."""

import pytest

from appliance.discovery.election import COORDINATOR, FOLLOWER, Decision, Member, elect


def m(id: str, priority: int = 0, term: int = 0, role: str = FOLLOWER) -> Member:
    return Member(id=id, priority=priority, term=term, role=role)


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
