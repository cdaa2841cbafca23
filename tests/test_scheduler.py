"""The scheduler, the speed model, the ETA and the straggler decision as pure functions, including the
cases ClusterODM gets wrong."""

import random
from dataclasses import dataclass, replace

import pytest

from appliance.cluster.eta import forecast, remaining_ms
from appliance.cluster.scheduler import (Demand, NodeView, choose_node, could_ever_run, could_start_now,
                                         dispatch_order, keeps_reservation, move_ms, plan, rank, shows_running,
                                         why_not)
from appliance.cluster.speed import (Hardware, Sample, blend, calibrations, dump_samples, estimate, parse_samples,
                                     prior_ms_per_image, task_kind)
from appliance.cluster.stragglers import MIN_GAIN_MS, Straggler, plan_copies
from appliance.store.models import Phase, Task

RECONSTRUCTION = ["opensfm/matches", "opensfm/features", "opensfm/reconstruction.json", "opensfm/tracks.csv",
                  "cameras.json"]
TOOLCHAIN = ["odm_orthophoto/odm_orthophoto.tif", "odm_orthophoto/cutline.gpkg", "odm_dem", "odm_report",
             "odm_georeferencing"]


def node(id: int, **kw) -> NodeView:
    return NodeView(id=id, **kw)


def fast(ms: float) -> tuple[tuple[str, float], ...]:
    return (("full", ms),)


# -- filters ----------------------------------------------------------------------------------------
def test_everything_full_means_wait_not_pile_on():
    """ClusterODM piles onto the first full node; Passel keeps the task in its own queue."""
    nodes = [node(1, slots=1, busy=1), node(2, slots=2, busy=2)]
    assert choose_node(nodes, Demand(images=10)) is None
    assert choose_node(nodes, Demand(images=10), speed_aware=False) is None
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
    assert choose_node([node(1, memory_mb=1024, cores=64), node(2, cores=1)], Demand(images=500)).id == 2


# -- speed and the earliest finish --------------------------------------------------------------------
def test_faster_node_preferred_learned_speed_beats_cores():
    nodes = [node(1, cores=16, speeds=fast(5000.0)), node(2, cores=2, speeds=fast(900.0))]
    assert choose_node(nodes, Demand(images=20)).id == 2


def test_prior_speed_from_cores_until_learned():
    assert choose_node([node(1, cores=2), node(2, cores=8)], Demand(images=20)).id == 2


def test_speed_per_kind():
    """A box good at OpenSfM but slow at densifying gets the reconstruction, not the toolchain."""
    nodes = [node(1, speeds=(("reconstruction", 500.0), ("toolchain", 4000.0))),
             node(2, speeds=(("reconstruction", 1000.0), ("toolchain", 1000.0)))]
    assert choose_node(nodes, Demand(images=20, kind="reconstruction")).id == 1
    assert choose_node(nodes, Demand(images=20, kind="toolchain")).id == 2


def test_equal_nodes_share_a_job():
    nodes = [node(1, cores=8, slots=4, same_job=1), node(2, cores=8, slots=4)]
    assert choose_node(nodes, Demand(images=20)).id == 2


def test_a_faster_node_keeps_a_job_together_rather_than_spread_to_a_slow_one():
    nodes = [node(1, cores=8, slots=4, same_job=1), node(2, cores=2, slots=4)]
    assert choose_node(nodes, Demand(images=20)).id == 1


def test_waits_for_a_busy_fast_node_when_it_finishes_sooner():
    """Never onto a busy node, and not onto a slow free one either when waiting ends sooner."""
    busy_fast = node(1, slots=1, busy=1, speeds=fast(100.0), backlog_ms=(1000.0,))
    slow_free = node(2, slots=1, speeds=fast(800.0))
    assert choose_node([busy_fast, slow_free], Demand(images=20)) is None  # 1 s + 2 s beats 16 s
    long_backlog = node(1, slots=1, busy=1, speeds=fast(100.0), backlog_ms=(20_000.0,))
    assert choose_node([long_backlog, slow_free], Demand(images=20)).id == 2  # 22 s loses to 16 s
    assert choose_node([busy_fast, slow_free], Demand(images=20), speed_aware=False).id == 2


def test_an_odm_submodel_waiting_for_a_faster_node_shows_running_not_queued():
    """ODM takes QUEUED as "task limit reached" and caps its remote tasks at those running then, so a
    submodel held back for a faster node shows RUNNING; with every node full it shows QUEUED, and once
    shown RUNNING it never turns QUEUED (ODM would send it again)."""
    for kind in ("reconstruction", "toolchain"):
        busy_fast = node(1, slots=1, busy=1, speeds=((kind, 100.0),), backlog_ms=(1000.0,))
        slow_free = node(2, slots=1, speeds=((kind, 800.0),))
        full = [busy_fast, replace(slow_free, busy=1)]
        submodel = Demand(images=20, kind=kind)
        assert submodel.impatient and choose_node([busy_fast, slow_free], submodel) is None  # it still waits
        assert shows_running([busy_fast, slow_free], submodel, shown=10)
        assert not shows_running(full, submodel, shown=10)
        assert shows_running(full, submodel, shown=20)
    assert not Demand(images=20).impatient and not shows_running([busy_fast, slow_free], Demand(images=20), shown=20)


def test_never_leaves_a_fast_free_node_idle():
    nodes = [node(1, slots=2, busy=1, speeds=fast(900.0), backlog_ms=(5000.0,)), node(2, speeds=fast(100.0))]
    assert choose_node(nodes, Demand(images=5)).id == 2


def test_tasks_ahead_in_the_queue_keep_their_claim():
    """The first queued task waits for the fast node; the next one then goes to the free slow node."""
    nodes = [node(1, slots=1, busy=1, speeds=fast(100.0), backlog_ms=(1000.0,)), node(2, speeds=fast(400.0))]
    big = Demand(images=40)
    assert choose_node(nodes, big) is None
    assert choose_node(nodes, Demand(images=10)) is None  # alone, it would wait too
    assert choose_node(nodes, Demand(images=10), ahead=[big]).id == 2
    assert could_start_now(nodes, [big, Demand(images=10)]) == [False, True]


def test_a_reservation_made_before_the_size_was_known_is_kept_only_when_it_is_nearly_as_good():
    """At init the task reserves the best node for a task of unknown size; at commit it may be too slow."""
    nodes = [node(1, slots=1, busy=1, speeds=fast(50.0), backlog_ms=(2500.0,)), node(2, speeds=fast(400.0)),
             node(3, speeds=fast(60.0))]
    big = Demand(images=40)
    assert not keeps_reservation(nodes, big, reserved=2)  # 16 s here, 2.4 s on node 3
    assert keeps_reservation(nodes, big, reserved=3)
    assert keeps_reservation(nodes[:2], Demand(images=4), reserved=2)  # 1.6 s beats waiting for node 1
    assert not keeps_reservation(nodes[:2], big, reserved=2)  # waiting 2.5 s for node 1 beats 16 s
    assert keeps_reservation(nodes[:2], big, reserved=2, speed_aware=False)
    assert not keeps_reservation(nodes, big, reserved=1), "no free slot"


# -- where the images are: each byte crosses the field network once, or not at all --------------------
# 200 MB at 100 Mbit/s takes 16 s to move; 40 images at 1 s each take 40 s to run.
@pytest.mark.parametrize("near_speed, far_speed, near_busy, data_mb, expected", [
    (1000.0, 1000.0, 0, 200.0, 1),     # equal nodes: the one beside the images, nothing moves
    (1000.0, 700.0, 0, 200.0, 1),      # 12 s faster run < 16 s move: stay
    (1000.0, 500.0, 0, 200.0, 2),      # 20 s faster run > 16 s move: go
    (1000.0, 500.0, 0, 1000.0, 1),     # but not with 1 GB to move (80 s)
    (1000.0, 1000.0, 1, 200.0, 2),     # the near node is busy: move rather than wait a whole run
    (1000.0, 1000.0, 0, 0.0, 1),       # size not known yet (reserved at init): the near one,
    (2000.0, 500.0, 0, 0.0, 1),        # even when slower: the commit weighs the real move and run
    (1000.0, 1000.0, 1, 0.0, 2),       # but never a busy one
])
def test_the_node_beside_the_images_wins_unless_another_is_faster_by_more_than_the_move(
        near_speed, far_speed, near_busy, data_mb, expected):
    nodes = [node(1, speeds=fast(near_speed), busy=near_busy, backlog_ms=(40_000.0,) * near_busy),
             node(2, speeds=fast(far_speed))]
    demand = Demand(images=40 if data_mb else 0, data_mb=data_mb, near=frozenset({1}))
    chosen = choose_node(nodes, demand)
    assert chosen is not None and chosen.id == expected


def test_the_move_is_timed_at_the_nodes_own_link_rate():
    demand = Demand(images=40, data_mb=200.0, near=frozenset({1}))
    assert move_ms(node(2), demand) == pytest.approx(16_000.0)
    assert move_ms(node(2, link_mbps=1000.0), demand) == pytest.approx(1_600.0)
    assert move_ms(node(1), demand) == 0.0
    on_gigabit = [node(1, speeds=fast(1000.0)), node(2, speeds=fast(900.0), link_mbps=1000.0)]
    assert choose_node(on_gigabit, demand).id == 2  # 4 s faster run > 1.6 s move


def test_a_reservation_beside_the_images_is_kept_when_the_move_would_cost_more():
    nodes = [node(1, speeds=fast(1000.0)), node(2, speeds=fast(1000.0))]
    demand = Demand(images=40, data_mb=200.0, near=frozenset({1}))
    assert keeps_reservation(nodes, demand, reserved=1)
    assert not keeps_reservation(nodes, demand, reserved=2)  # 16 s + 40 s against 40 s: more than the slack
    assert keeps_reservation(nodes, Demand(images=40, data_mb=50.0, near=frozenset({1})), reserved=2)  # 4 s: within


def test_speed_blind_placement_still_prefers_the_node_beside_the_images():
    nodes = [node(1), node(2)]
    assert choose_node(nodes, Demand(images=5, data_mb=50.0, near=frozenset({2})), speed_aware=False).id == 2


def test_unknown_tasks_on_a_node_count_as_busy_slots():
    """A node running someone else's task: its slot frees after a guess, never now."""
    shared = node(1, slots=1, busy=1, speeds=fast(100.0))
    assert why_not(shared, Demand(images=10)) == "no free slot"
    placement = plan([shared], [Demand(images=10)])[0]
    assert placement.node_id == 1 and placement.start_ms > 0


def test_plan_is_longest_first_list_scheduling():
    nodes = [node(1, slots=1, speeds=fast(100.0)), node(2, slots=1, speeds=fast(200.0))]
    placed = plan(nodes, [Demand(images=n) for n in (40, 30, 20, 10)])
    assert [(p.node_id, p.start_ms, p.finish_ms) for p in placed] == [
        (1, 0.0, 4000.0), (2, 0.0, 6000.0), (1, 4000.0, 6000.0), (1, 6000.0, 7000.0)]
    assert plan([node(1, locked=True)], [Demand(images=1)])[0].node_id is None


def test_more_free_slots_breaks_speed_ties_then_id():
    nodes = [node(3, cores=4, slots=2, busy=1), node(2, cores=4, slots=2), node(1, cores=4, slots=2)]
    assert [n.id for n in rank(nodes, Demand(images=1))] == [1, 2, 3]


def test_ranking_is_total_and_deterministic():
    """ClusterODM's comparator never returns 0; ours is a sort key, so shuffles give one answer."""
    nodes = [node(i, cores=random.Random(i).choice([2, 4, 8]), slots=2) for i in range(1, 12)]
    first = [n.id for n in rank(nodes, Demand(images=3))]
    for seed in range(5):
        shuffled = nodes[:]
        random.Random(seed).shuffle(shuffled)
        assert [n.id for n in rank(shuffled, Demand(images=3))] == first
        assert choose_node(shuffled, Demand(images=3)).id == choose_node(nodes, Demand(images=3)).id


@dataclass
class Queued:
    job_key: str
    committed_at: float | None
    images_count: int


def test_dispatch_order_jobs_in_arrival_order_longest_first_within_a_job():
    tasks = [Queued("a", 1.0, 10), Queued("b", 2.0, 90), Queued("a", 3.0, 50), Queued("a", 4.0, 20),
             Queued("new", None, 0)]
    assert [(t.job_key, t.images_count) for t in dispatch_order(tasks)] == [
        ("a", 50), ("a", 20), ("a", 10), ("b", 90), ("new", 0)]
    assert [t.images_count for t in dispatch_order(tasks, speed_aware=False)] == [10, 90, 50, 20, 0]


# -- the speed model ---------------------------------------------------------------------------------
@pytest.mark.parametrize("outputs, options, kind", [
    (RECONSTRUCTION, [], "reconstruction"),
    (TOOLCHAIN, [], "toolchain"),
    (None, [], "full"),
    (["odm_orthophoto/odm_orthophoto.tif"], [], "toolchain"),
    (None, [{"name": "split", "value": 200}], "split"),
    (["cameras.json"], [{"name": "dsm", "value": True}], "full"),
])
def test_task_kind(outputs, options, kind):
    assert task_kind(outputs, options) == kind


def test_blend_weighs_recent_tasks_more():
    first = blend(None, 1000.0)
    assert first == Sample(1000.0, 1)
    assert blend(first, 2000.0) == Sample(1300.0, 2)
    assert parse_samples(dump_samples({"odm/full": first})) == {"odm/full": first}
    assert parse_samples({"odm/full": "garbage"}) == {} and parse_samples({"odm/full": {"ms": -1}}) == {}


def test_prior_from_cores_and_memory():
    assert prior_ms_per_image(8, 0, "full") == prior_ms_per_image(4, 0, "full") / 2
    assert prior_ms_per_image(8, 4096, "full") == pytest.approx(prior_ms_per_image(8, 0, "full") * 2)
    assert prior_ms_per_image(8, 65536, "full") == prior_ms_per_image(8, 0, "full")
    assert prior_ms_per_image(8, 0, "reconstruction") < prior_ms_per_image(8, 0, "full")


def test_estimate_learned_then_other_kinds_then_prior():
    learned = Hardware({"odm/reconstruction": Sample(450.0, 3)}, "odm", 8, 16384)
    assert estimate(learned, "reconstruction") == estimate(learned, "reconstruction", 5.0)
    assert estimate(learned, "reconstruction").source == "learned"
    scaled = estimate(learned, "full")
    assert (scaled.source, scaled.ms_per_image) == ("other kinds", pytest.approx(1000.0))
    other_engine = Hardware({"micmac/full": Sample(450.0, 3)}, "odm", 8, 16384)
    assert estimate(other_engine, "full", 2.0).source == "prior"
    assert estimate(other_engine, "full", 2.0).ms_per_image == pytest.approx(2 * prior_ms_per_image(8, 16384, "full"))


def test_calibration_puts_priors_on_the_fleets_scale():
    measured = Hardware({"odm/full": Sample(3 * prior_ms_per_image(8, 0, "full"), 2)}, "odm", 8, 0)
    new = Hardware({}, "odm", 8, 0)
    factors = calibrations([measured, new])
    assert factors == {"odm": pytest.approx(3.0)}
    assert estimate(new, "full", factors["odm"]).ms_per_image == pytest.approx(estimate(measured, "full").ms_per_image)
    assert calibrations([Hardware({"odm/split": Sample(99.0, 1)}, "odm", 8, 0)]) == {}  # a split says nothing
    slower = Hardware({"odm/full": Sample(5 * prior_ms_per_image(8, 0, "full"), 1)}, "odm", 8, 0)
    assert calibrations([measured, slower, new]) == {"odm": pytest.approx(5.0)}, "unmeasured boxes: the slow end"


# -- ETA ------------------------------------------------------------------------------------------------
def test_remaining_time_never_reaches_zero_while_running_and_follows_the_pace():
    assert remaining_ms(10_000, 4_000) == 6_000
    assert remaining_ms(10_000, 20_000) == 2_000  # overdue: another tenth of the time so far
    assert remaining_ms(10_000, 0) == 10_000
    slow = remaining_ms(10_000, 9_000, progress=25.0)  # at this pace it needs 27 s more, not 1 s
    assert 13_000 < slow < 27_000


def _task(uuid: str, phase: str, node_id: int | None, images: int, job: str = "j", **kw) -> Task:
    status = {Phase.WAITING: 10, Phase.ON_NODE: 20, Phase.FINISHED: 40}[phase]
    return Task(uuid=uuid, phase=phase, status=status, node_id=node_id, images_count=images, job_key=job,
                committed_at=1.0, **kw)


def test_forecast_of_running_queued_and_jobs():
    nodes = [node(1, slots=1, busy=1, speeds=fast(100.0), backlog_ms=(5000.0,))]
    tasks = [_task("a", Phase.ON_NODE, 1, 50, processing_time_ms=0),
             _task("b", Phase.WAITING, None, 20),
             _task("c", Phase.FINISHED, 1, 10),
             _task("d", Phase.WAITING, None, 10_000, job="huge", outputs=None)]
    result = forecast([node(1, slots=1, busy=1, speeds=fast(100.0), backlog_ms=(5000.0,), max_images=100)], tasks)
    assert result.tasks["a"] == 5.0 and result.tasks["b"] == 7.0 and "c" not in result.tasks
    assert result.tasks["d"] is None  # no node can ever take it
    jobs = {j["job"]: j for j in result.jobs}
    assert jobs["j"] == {"job": "j", "tasks": 3, "unfinished": 2, "eta_seconds": 7.0, "nodes": [1]}
    assert jobs["huge"]["eta_seconds"] is None
    assert forecast(nodes, [tasks[2]]).jobs[0]["eta_seconds"] == 0.0


# -- stragglers ------------------------------------------------------------------------------------------
def test_copy_when_a_slow_node_holds_the_last_task_and_a_fast_one_is_idle():
    nodes = [node(1, slots=1, busy=1, speeds=fast(1000.0)), node(2, slots=1, speeds=fast(100.0))]
    straggler = Straggler("t", 1, Demand(images=50), remaining_ms=40_000, transfer_ms=1_000)
    [copy] = plan_copies([straggler], nodes, queued=0)
    assert (copy.uuid, copy.node_id, copy.expected_ms, copy.saves_ms) == ("t", 2, 6_000, 34_000)
    assert plan_copies([straggler], nodes, queued=1) == [], "queued work gets idle slots first"
    assert plan_copies([Straggler("t", 1, Demand(images=50), 40_000, avoid=frozenset({2}))], nodes, 0) == []


def test_no_copy_unless_clearly_sooner():
    nodes = [node(1, slots=1, busy=1, speeds=fast(1000.0)), node(2, slots=1, speeds=fast(100.0))]
    assert plan_copies([Straggler("t", 1, Demand(images=50), remaining_ms=6_500)], nodes, 0) == []  # 5 s vs 6.5 s
    tiny = Straggler("t", 1, Demand(images=1), remaining_ms=MIN_GAIN_MS)
    assert plan_copies([tiny], nodes, 0) == []


def test_copies_take_the_latest_task_first_one_per_free_slot():
    nodes = [node(1, slots=2, busy=2, speeds=fast(1000.0)), node(2, slots=1, speeds=fast(100.0)),
             node(3, slots=1, busy=0, locked=True, speeds=fast(10.0))]
    stragglers = [Straggler("early", 1, Demand(images=50), 30_000), Straggler("late", 1, Demand(images=50), 45_000)]
    assert [(c.uuid, c.node_id) for c in plan_copies(stragglers, nodes, 0)] == [("late", 2)]
