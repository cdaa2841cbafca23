"""Placement that counts the uplink: a task goes to an upstream node only when uploading its images,
running it there and bringing its results home still finishes sooner than the best local choice
(`scheduler.plan`), and an upstream's link is learned from its transfers (`link.py`)."""

from __future__ import annotations

import pytest

from appliance.cluster.link import PRIOR_UP_MBPS, Link, after_probe, after_transfer
from appliance.cluster.scheduler import Demand, NodeView, choose_node, home_ms, plan, why_not

LOCAL_MS = 2000.0  # a field laptop, per image of a whole run
UP_MS = 200.0  # a cloud node ten times faster


KINDS = ("full", "reconstruction", "toolchain")


def local(node_id: int, busy: int = 0, backlog: tuple[float, ...] = ()) -> NodeView:
    return NodeView(id=node_id, busy=busy, backlog_ms=backlog, speeds=tuple((k, LOCAL_MS) for k in KINDS))


def upstream(up: float = 10.0, down: float = 10.0, rtt: float = 300.0, online: bool = True,
             uploading_ms: float = 0.0) -> NodeView:
    return NodeView(id=9, online=online, speeds=tuple((k, UP_MS) for k in KINDS), upstream=True, link_mbps=up, home_mbps=down,
                    rtt_ms=rtt, uploading_ms=uploading_ms)


def task(images: int, mb: float, kind: str = "full") -> Demand:
    return Demand(images=images, kind=kind, data_mb=mb, near=frozenset({1}))


# (what, nodes, task, where it goes: a node id, or None to wait in the queue)
CASES = [
    ("few small images, slow locally: 25 MB up and home take 40 s, the run saves 180 s",
     [local(1), upstream()], task(100, 25), 9),
    ("the same images at full size: 800 MB up and home take 21 min, locally 200 s",
     [local(1), upstream()], task(100, 800), 1),
    ("the upstream is ten times faster, but the link is thin (1 Mbit/s)",
     [local(1), upstream(up=1.0, down=1.0)], task(100, 25), 1),
    ("the uplink is down: local, exactly as without an upstream",
     [local(1), upstream(online=False)], task(100, 25), 1),
    ("a fast link (100 Mbit/s) makes even full-size images worth sending",
     [local(1), upstream(up=100.0, down=100.0)], task(100, 800), 9),
    ("every local slot is busy for 10 min: the upstream starts now",
     [local(1, busy=1, backlog=(600_000.0,)), upstream()], task(100, 25), 9),
    ("local busy for 10 s only: waiting for it beats the upstream's link",
     [local(1, busy=1, backlog=(10_000.0,)), upstream(up=1.0, down=1.0)], task(100, 25), None),
    ("the link is busy with an upload for 10 more min: this one would queue behind it",
     [local(1), upstream(uploading_ms=600_000.0)], task(100, 25), 1),
    ("a reconstruction submodel's results are small (its OpenSfM folder): up, 300 MB at 20 Mbit/s",
     [local(1), upstream(up=20.0, down=20.0)], task(100, 300, "reconstruction"), 9),
    ("a toolchain submodel of the same size sends home its products, nearly as big: it stays",
     [local(1), upstream(up=20.0, down=20.0)], task(100, 300, "toolchain"), 1),
]


@pytest.mark.parametrize("what,nodes,demand,expected", CASES, ids=[c[0] for c in CASES])
def test_a_task_goes_upstream_only_when_it_finishes_sooner(what: str, nodes: list[NodeView], demand: Demand,
                                                          expected: int | None) -> None:
    choice = choose_node(nodes, demand)
    assert (choice.id if choice else None) == expected, what


def test_the_finish_upstream_counts_the_link_both_ways() -> None:
    node, demand = upstream(up=10.0, down=20.0, rtt=300.0), task(100, 25)
    [placement] = plan([node], [demand])
    upload_ms, run, home = 25 * 8 / 10.0 * 1000, 100 * UP_MS, 25 * 8 / 20.0 * 1000
    assert home_ms(node, demand) == pytest.approx(home + 600)
    assert placement.finish_ms == pytest.approx(upload_ms + 300 + run + home + 600)


def test_uploads_to_one_upstream_queue_on_its_link() -> None:
    """Two tasks placed at once share one uplink: the second's images go up after the first's."""
    fast = NodeView(id=9, slots=4, speeds=(("full", UP_MS),), upstream=True, link_mbps=10.0, home_mbps=10.0,
                    rtt_ms=0.0)
    first, second = plan([fast], [task(10, 25), task(10, 25)])
    assert second.finish_ms - first.finish_ms == pytest.approx(25 * 8 / 10.0 * 1000)


def test_an_upstream_never_takes_a_task_of_unknown_size() -> None:
    """At init the size is not known yet, so nothing weighs the link: the early forward stays local."""
    assert why_not(upstream(), Demand(images=0)) == "an upstream node gets a task only once its size is known"
    assert choose_node([upstream()], Demand(images=0)) is None


def test_the_link_is_learned_from_transfers_and_the_probe() -> None:
    link = Link()
    assert link.up == PRIOR_UP_MBPS and "guess" in link.summary()
    link = after_probe(link, 0.3)
    assert link.rtt == pytest.approx(300.0)
    link = after_transfer(link, sent=True, size=25_000_000, seconds=20.3)  # 20 s of moving, 0.3 s round trip
    assert link.up == pytest.approx(10.0)
    assert after_transfer(link, sent=True, size=1000, seconds=5.0) == link  # too small to say anything
    link = after_transfer(link, sent=False, size=50_000_000, seconds=20.3)
    assert link.down == pytest.approx(20.0) and link.up == pytest.approx(10.0)
    assert Link.from_json(link.to_json()) == link
    assert Link.from_json({"up_mbps": "fast", "rtt_ms": -1}) == Link()
