"""The nemesis in the suite: every seed that ever found a defect, on a 4-box passel with a
real NodeODM (tests/nemesis.py), each history read by the checker (tests/history_check.py).

The checker is tested first, on small made-up histories: each rule must see the defect it is for,
and a clean history must pass. bench/nemesis.py runs the 200-seed campaign.
"""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.history_check import check
from tests.nemesis import KINDS, make_schedule, recorded_seeds

U1, U2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
# -- the checker, on made-up histories ---------------------------------------------------------

def reply(t: float, path: str, reply: Any = None, http: int = 200, method: str = "GET", **extra: Any) -> dict[str, Any]:
    return {"t": t, "sent": t - 0.01, "kind": "reply", "method": method, "path": path, "http": http,
            "seconds": 0.01, **({"reply": reply} if reply is not None else {}), **extra}


def info(t: float, uuid: str, code: int) -> dict[str, Any]:
    return reply(t, f"/task/{uuid}/info", {"uuid": uuid, "status": {"code": code}})


def box(table: dict[str, list[Any]], coordinator: str = "c", node: dict[str, int] | None = None) -> dict[str, Any]:
    return {"table": table, "view": {"coordinator": coordinator, "self": "x", "alive": ["a", "b"]}, "node": node or {}}


def healthy_job(uuid: str = U1) -> list[dict[str, Any]]:
    """One submodel sent, run, downloaded and removed, the way ODM does it."""
    done = {uuid: ["removed", 40, "c", "b1"]}
    return [
        reply(1.0, "/task/new/init", {"uuid": uuid}, method="POST"),
        reply(1.5, f"/task/new/commit/{uuid}", {"uuid": uuid}, method="POST"),
        info(2.0, uuid, 20),
        info(3.0, uuid, 40),
        reply(3.5, f"/task/{uuid}/download/all.zip", bytes=1000),
        reply(4.0, "/task/remove", {"success": True}, method="POST", uuid=uuid),
        {"t": 4.1, "kind": "job-end", "finished": True,
         "submodels": [{"name": "s0", "status": "completed", "uuids": [uuid], "attempts": 1, "outputs": True}]},
        {"t": 5.0, "kind": "snapshot", "boxes": {str(i): box(done) for i in (1, 2, 3)}},
        {"t": 6.0, "kind": "final", "boxes": {str(i): box(done) for i in (1, 2, 3)}, "leftovers": {}},
    ]


def history(events: list[dict[str, Any]], schedule: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"seed": 0, "schedule": schedule or [], "events": events, "notes": {}}


def test_a_clean_history_passes():
    verdict = check(history(healthy_job()))
    assert verdict.ok, verdict.violations
    assert verdict.report["resubmissions"] == 0 and verdict.report["convergence_seconds"] is None


def test_a_submodel_that_never_completes_is_lost():
    events = healthy_job()
    events[6]["submodels"][0]["status"] = "gave up"
    assert any(v.startswith("lost:") for v in check(history(events)).violations)


def test_completed_then_a_failed_download_is_a_stale_completed():
    events = healthy_job()
    events[4] = reply(3.5, f"/task/{U1}/download/all.zip", {"error": f"{U1} not found"})
    assert any(v.startswith("stale COMPLETED:") for v in check(history(events)).violations)


def test_a_download_cut_by_the_entry_box_dying_is_not_a_stale_completed():
    events = healthy_job()
    events[4] = reply(3.5, f"/task/{U1}/download/all.zip")
    del events[4]["http"]
    events[4]["error"] = "connection: ('Connection aborted.', RemoteDisconnected())"
    verdict = check(history(events))
    assert not any(v.startswith("stale COMPLETED:") for v in verdict.violations) and verdict.report["downloads_cut"] == 1


def test_running_after_completed_moves_backwards():
    events = healthy_job()
    events.insert(4, info(3.2, U1, 20))
    assert any(v.startswith("backwards:") for v in check(history(events)).violations)


def test_not_found_while_the_passel_is_whole_is_false():
    events = healthy_job()
    events.insert(2, reply(1.8, f"/task/{U1}/info", {"error": f"{U1} not found"}))
    assert any(v.startswith("false not-found:") for v in check(history(events)).violations)


def test_not_found_during_a_fault_is_only_counted():
    events = healthy_job()
    events.insert(2, reply(1.8, f"/task/{U1}/info", {"error": f"{U1} not found"}))
    events.insert(0, {"t": 0.5, "kind": "fault", "id": 0, "fault": "kill", "box": 2, "detail": ""})
    events.insert(4, {"t": 4.5, "kind": "heal", "id": 0, "fault": "kill", "box": 2, "detail": ""})
    verdict = check(history(events))
    assert not any(v.startswith("false not-found:") for v in verdict.violations), verdict.violations
    assert verdict.report["not_found_during_faults"] == 1


def test_a_task_on_two_nodes_at_once_is_duplicated():
    events = healthy_job()
    running = {str(i): box({U1: ["on_node", 20, "c", "b1"]}, node={U1: 20}) for i in (1, 2)}
    events.insert(3, {"t": 2.2, "kind": "snapshot", "boxes": running})
    assert any(v.startswith("duplicated:") for v in check(history(events)).violations)


def test_a_removed_task_that_keeps_running_is_duplicated():
    events = healthy_job()
    events.insert(7, {"t": 20.0, "kind": "snapshot", "boxes": {"1": box({U1: ["removed", 40, "c", "b1"]},
                                                                        node={U1: 20})}})
    assert any("removed by its client" in v for v in check(history(events)).violations)


def test_a_removal_undone_at_the_end_is_caught():
    events = healthy_job()
    events[-1]["boxes"]["2"] = box({U1: ["finished", 40, "c", "b1"]})
    assert any(v.startswith("undone removal:") for v in check(history(events)).violations)


def test_a_submodel_listed_twice_in_a_final_table_is_duplicated():
    events = healthy_job()
    events[6]["submodels"][0]["uuids"] = [U1, U2]
    twice = {U1: ["finished", 40, "c", "b1"], U2: ["on_node", 20, "c", "b1"]}
    events[-1]["boxes"] = {str(i): box(twice) for i in (1, 2, 3)}
    events[5] = reply(4.0, "/task/remove", {"error": "timeout"}, method="POST", uuid=U1)
    assert any(v.startswith("duplicated: box") for v in check(history(events)).violations)


def test_an_upload_odm_gave_up_before_its_commit_is_not_a_duplicate():
    events = healthy_job()
    events[6]["submodels"][0]["uuids"] = [U2, U1]
    left = {U1: ["removed", 40, "c", "b1"], U2: ["uploading", 10, "c", "b1"]}
    events[-1]["boxes"] = {str(i): box(left) for i in (1, 2, 3)}
    verdict = check(history(events))
    assert verdict.ok, verdict.violations
    assert verdict.report["uploads_left_uncommitted"] == 1 and verdict.report["resubmissions"] == 1


def test_boxes_that_never_agree_after_the_last_heal_do_not_converge():
    events = healthy_job()
    split = {"1": box({U1: ["removed", 40, "c", "b1"]}, coordinator="c"),
             "2": box({U1: ["finished", 40, "d", "b1"]}, coordinator="d")}
    events = [e for e in events if e["kind"] not in ("snapshot", "final")]
    events.insert(0, {"t": 0.5, "kind": "fault", "id": 0, "fault": "split", "box": 1, "detail": "2"})
    events.insert(1, {"t": 4.5, "kind": "heal", "id": 0, "fault": "split", "box": 1, "detail": "2"})
    events += [{"t": t, "kind": "snapshot", "boxes": split} for t in (5.0, 50.0)]
    events.append({"t": 60.0, "kind": "final", "boxes": split, "leftovers": {}})
    violations = check(history(events)).violations
    assert sum(v.startswith("no convergence:") for v in violations) == 2, violations


def test_a_box_that_gives_no_view_at_the_end_is_named_with_the_reason():
    events = healthy_job()
    events[-1]["boxes"]["3"] |= {"view": None, "unanswered": "ReadTimeout: read timed out"}
    violations = check(history(events)).violations
    assert violations == ["no convergence: at the end, the boxes' coordinators or task tables differ: "
                          "box 3 gave no view (ReadTimeout: read timed out)"], violations


def test_staged_files_left_behind_are_a_leak():
    events = healthy_job()
    events[-1]["leftovers"] = {"2": [f"staging/{U1}"]}
    assert any(v.startswith("leaked: box 2") for v in check(history(events)).violations)


def test_an_uncommitted_upload_whose_row_died_with_its_coordinator_is_counted_not_leaked():
    """Seed 282: the client was given U2, its commit failed, and no box lists it; the images stay a day."""
    events = healthy_job()
    events[0:0] = [reply(0.5, "/task/new/init", {"uuid": U2}, method="POST"),
                   reply(0.6, f"/task/new/commit/{U2}", {"error": "The coordinator cannot be reached"}, method="POST")]
    events[-1]["leftovers"] = {"1": [f"staging/{U2}"]}
    verdict = check(history(events))
    assert verdict.ok, verdict.violations
    assert verdict.report["uploads_left_without_row"] == 1
    events[1] = reply(0.6, f"/task/new/commit/{U2}", {"uuid": U2}, method="POST")  # committed: its files must go
    assert any(v.startswith("leaked: box 1") for v in check(history(events)).violations)


def test_the_harness_observes_until_a_snapshot_after_the_last_heal_and_the_job_end():
    """Seeds 3 and 9 once failed only because observing stopped at the job's end, before the last heal;
    a baseline once failed because a snapshot begun before the job's last removal ended the watch."""
    from appliance.discovery.membership import LEASE_SECONDS
    from tests.nemesis import History, settled
    agreed = {str(i): box({U1: ["removed", 40, "c", "b1"]}) for i in (1, 2)}
    history = History(0, [])
    history.events = [{"t": 5.0, "kind": "snapshot", "boxes": agreed}, {"t": 6.0, "kind": "heal", "id": 0}]
    assert not settled(history)
    history.events.append({"t": 6.5, "kind": "snapshot", "boxes": agreed})
    assert not settled(history), "within a lease of the heal: a side may yet declare the other gone (seed 100)"
    history.events.append({"t": 6.0 + LEASE_SECONDS + 0.5, "kind": "snapshot", "boxes": agreed})
    assert settled(history)
    end = 6.0 + LEASE_SECONDS + 1.0
    history.events += [{"t": end, "kind": "job-end"},
                       {"t": end + 0.2, "kind": "snapshot", "boxes": agreed, "began": end - 0.1}]
    assert not settled(history), "begun before the job's end"
    history.events.append({"t": end + 0.7, "kind": "snapshot", "boxes": agreed, "began": end + 0.4})
    assert settled(history)


# -- the schedule ------------------------------------------------------------------------------

def test_only_a_number_that_opens_a_line_of_the_seeds_file_is_a_seed(tmp_path, monkeypatch):
    """Comments may name seeds (false alarms, say) without CI running them."""
    import tests.nemesis
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("# seeds 3 and 9 were false alarms\n7   # what seed 7 found, in 2 words\n12\n\n7\n")
    monkeypatch.setattr(tests.nemesis, "SEEDS_FILE", seeds)
    assert recorded_seeds() == [7, 12]


def test_a_seed_always_gives_the_same_schedule_of_two_to_four_faults():
    assert make_schedule(42) == make_schedule(42)
    kinds = set()
    for seed in range(200):
        schedule = make_schedule(seed)
        assert 2 <= len(schedule) <= 4
        assert all(1 <= f.box <= 4 and f.hold > 0 for f in schedule)
        kinds |= {f.kind for f in schedule}
    assert kinds == set(KINDS)


def test_the_seeds_ci_runs_try_every_kind_of_fault_and_both_node_faults():
    schedules = [make_schedule(seed) for seed in recorded_seeds()]
    assert {f.kind for schedule in schedules for f in schedule} == set(KINDS)
    assert {f.detail for schedule in schedules for f in schedule if f.kind == "node"} == {"kill", "reboot"}


# -- the real thing ----------------------------------------------------------------------------

@pytest.mark.netns
@pytest.mark.timeout(420)
# A seed fixes the faults and their moments, not the boxes' timing on 2 shared cores: the same seed
# takes other paths from run to run (seed 48 did). A seed that fails twice running fails CI; one that
# fails once is a defect to hunt with bench/nemesis.py, which keeps each failing run's logs.
@pytest.mark.flaky(reruns=1)
@pytest.mark.parametrize("seed", recorded_seeds())
def test_a_seeded_fault_schedule_loses_duplicates_and_strands_nothing(seed, tmp_path, netns_required):
    from tests.conftest import require_realnode
    from tests.nemesis import run_seed

    require_realnode()
    verdict = check(run_seed(seed, tmp_path))
    assert verdict.ok, (f"seed {seed} ({verdict.report['faults']}); replay with bench/nemesis.py --seed {seed}; "
                        f"history and logs in {tmp_path}", verdict.violations)


def test_outputs_count_as_the_real_node_and_the_simulated_node_write_them():
    """Real NodeODM in test mode has no reconstruction.json to zip (nemesis seed 76 failed on that,
    not on Passel); an empty or a partial zip still counts as no outputs."""
    from tests.nemesis import has_outputs
    real = ["opensfm/features/test.txt", "opensfm/matches/test.txt", "cameras.json"]
    simulated = ["opensfm/features/IMG_0001.JPG.features.npz", "opensfm/matches/IMG_0001.JPG_matches.pkl.gz",
                 "opensfm/reconstruction.json", "opensfm/tracks.csv", "cameras.json"]
    assert has_outputs(real) and has_outputs(simulated)
    assert not has_outputs([]) and not has_outputs(["cameras.json"]) and not has_outputs(real[:2])


@pytest.fixture
def small_tmpfs(tmp_path: Path, netns_required) -> Any:
    """A 1 MiB tmpfs, as a box's state disk is (mounting needs root, as the namespaces do)."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(state)], check=True)
    yield state
    subprocess.run(["umount", "-l", str(state)], check=True)


def _write_fails_for_lack_of_space(state: Path) -> bool:
    try:
        (state / "after-the-fill").write_bytes(b"x" * 64 * 1024)
    except OSError as exc:
        return exc.errno == errno.ENOSPC
    return False


def test_the_disk_fault_fills_the_disk(small_tmpfs):
    from tests.nemesis import fill_disk
    fill_disk(small_tmpfs)
    assert _write_fails_for_lack_of_space(small_tmpfs)


def test_the_disk_fault_reads_the_free_space_again_when_the_box_wrote_in_between(small_tmpfs, monkeypatch):
    """Seed 245: the box copied results between the reading and the allocation, fallocate failed, and
    the fault was lost (the disk was full for a moment only, and the checker never heard of it)."""
    import shutil

    from tests import nemesis
    real = shutil.disk_usage
    readings = []

    def stale_first(path: Any) -> Any:
        usage = real(path)
        readings.append(usage.free)
        return usage._replace(free=usage.free + 512 * 1024) if len(readings) == 1 else usage

    monkeypatch.setattr(nemesis.shutil, "disk_usage", stale_first)
    nemesis.fill_disk(small_tmpfs)
    assert len(readings) == 2
    assert _write_fails_for_lack_of_space(small_tmpfs)


def test_a_fault_the_harness_could_not_make_is_reported():
    events = [*healthy_job(), {"t": 1.0, "kind": "nemesis-error", "id": 0, "fault": "disk", "error": "no space"}]
    verdict = check(history(events))
    assert verdict.report["faults_not_made"] == ["disk at 1.0 s: no space"]
