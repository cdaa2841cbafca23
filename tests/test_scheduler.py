"""The scheduler as a pure function, including the cases ClusterODM gets wrong."""

import pytest

from appliance.cluster.scheduler import Demand, NodeView, choose_node, could_ever_run, rank, why_not


def node(id: int, **kw) -> NodeView:
    return NodeView(id=id, **kw)


def test_everything_full_means_wait_not_pile_on():
    """ClusterODM piles onto the first full node; Passel keeps the task in its own queue."""
    nodes = [node(1, slots=1, busy=1), node(2, slots=2, busy=2)]
    assert choose_node(nodes, Demand(images=10)) is None
    assert could_ever_run(nodes, Demand(images=10))


def test_node_reporting_queue_beyond_slots_is_full():
    assert why_not(node(1, slots=2, busy=5), Demand(images=1)) == "no free slot"


@pytest.mark.parametrize("max_images, images, ok", [(None, 10_000, True), (100, 100, True), (100, 101, False)])
def test_max_images(max_images, images, ok):
    assert (choose_node([node(1, max_images=max_images)], Demand(images=images)) is not None) is ok


def test_max_images_picks_the_node_that_can():
    nodes = [node(1, max_images=50, cores=32), node(2, max_images=None, cores=2)]
    assert choose_node(nodes, Demand(images=80)).id == 2
    assert not could_ever_run([node(1, max_images=50)], Demand(images=80))


def test_locked_and_offline_nodes_are_skipped():
    nodes = [node(1, locked=True, cores=64), node(2, online=False, cores=64), node(3, cores=1)]
    assert choose_node(nodes, Demand(images=5)).id == 3
    assert [why_not(n, Demand(images=5)) for n in nodes] == ["locked", "offline", None]


def test_locked_everywhere_waits_but_could_run_later():
    nodes = [node(1, locked=True)]
    assert choose_node(nodes, Demand(images=5)) is None
    assert could_ever_run(nodes, Demand(images=5))


def test_engine_mismatch():
    nodes = [node(1, engine="micmac", cores=64), node(2, engine="odm")]
    assert choose_node(nodes, Demand(images=5, engine="odm")).id == 2
    assert choose_node(nodes, Demand(images=5, engine="micmac")).id == 1
    assert choose_node([node(1, engine="micmac")], Demand(images=5, engine="odm")) is None


def test_memory_fit():
    assert why_not(node(1, memory_mb=1024), Demand(images=500)).startswith("1024 MB")
    assert why_not(node(1, memory_mb=1024), Demand(images=10)) is None


def test_faster_node_preferred_learned_speed_beats_cores():
    nodes = [node(1, cores=16, ms_per_image=5000.0), node(2, cores=2, ms_per_image=900.0)]
    assert choose_node(nodes, Demand(images=20)).id == 2


def test_prior_speed_from_cores_until_learned():
    assert choose_node([node(1, cores=2), node(2, cores=8)], Demand(images=20)).id == 2


def test_submodels_of_one_job_spread_across_nodes():
    nodes = [node(1, cores=8, slots=4, same_job=1), node(2, cores=2, slots=4)]
    assert choose_node(nodes, Demand(images=20)).id == 2


def test_more_free_slots_breaks_speed_ties_then_id():
    nodes = [node(3, cores=4, slots=2, busy=1), node(2, cores=4, slots=2), node(1, cores=4, slots=2)]
    assert [n.id for n in rank(nodes, Demand(images=1))] == [1, 2, 3]


def test_ranking_is_total_and_deterministic():
    """ClusterODM's comparator never returns 0; ours is a sort key, so shuffles give one answer."""
    import random
    nodes = [node(i, cores=random.Random(i).choice([2, 4, 8]), slots=2) for i in range(1, 12)]
    first = [n.id for n in rank(nodes, Demand(images=3))]
    for seed in range(5):
        shuffled = nodes[:]
        random.Random(seed).shuffle(shuffled)
        assert [n.id for n in rank(shuffled, Demand(images=3))] == first
