"""Makespan of split-merge jobs: Passel's real scheduler against ClusterODM's policy and the lower bound.

Simulation (always): passels of 2 to 20 boxes (time per image differing up to 8×, 1 to 4 slots each)
run one job of 4 to 64 reconstruction submodels (sizes differing up to 4×), from fixed seeds, in
simulated time. Passel's side calls the real code: `scheduler.dispatch_order` and `choose_node`,
`speed` (learning, priors, calibration), `eta.remaining_ms` for each node's backlog and
`stragglers.plan_copies`. ClusterODM's side is its policy as the NodeODM contract describes it.

Live (`--live`): three simulated NodeODM nodes on loopback, 8× apart in speed, and a real coordinator
(`python -m appliance run`), each a separate process; one job of 8 submodels is uploaded the way ODM
sends submodels (init, upload, commit, one after the other) and then polled until all are done.
Unlike ODM, the client leaves a QUEUED task waiting instead of taking it back. Speed awareness on
(after an earlier job, and on a fresh passel) and off (`--no-speed-aware`), `--repeat` times each.

    cd /work/main && /tmp/venv/bin/python bench/makespan.py [--json] [--live [--repeat 3]]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

from appliance.cluster.eta import remaining_ms  # noqa: E402
from appliance.cluster.scheduler import (FIELD_LINK_MBPS, Demand, NodeView, choose_node,  # noqa: E402
                                         could_start_now, dispatch_order)
from appliance.cluster.speed import (Hardware, Sample, blend, calibrations, estimates, speed_key,  # noqa: E402
                                     task_kind)
from appliance.cluster.stragglers import ASSUMED_BYTES_PER_MS, Straggler, plan_copies  # noqa: E402

RECONSTRUCTION_OUTPUTS = ["opensfm/matches", "opensfm/features", "opensfm/reconstruction.json",
                          "opensfm/tracks.csv", "cameras.json"]  # what ODM asks back from a reconstruction submodel
KIND = task_kind(RECONSTRUCTION_OUTPUTS, [])
FASTEST_MS_PER_IMAGE = 1200.0  # reconstruction, one slot of the fastest box
BYTES_PER_IMAGE = 8_000_000  # a drone JPEG: what a straggler copy uploads again
MOVE_MS_PER_IMAGE = BYTES_PER_IMAGE * 8 / (FIELD_LINK_MBPS * 1e6) * 1000  # over a field switch's port
TICK_MS = 2000.0  # the live coordinator re-plans every 1 s (dispatch) and 2 s (tracker); the simulation every 2 s
TARGET_RATIO = 1.15
SURPRISE_SLOWDOWN = 3.0
# (boxes, submodels) of each scenario; seeds are fixed by position
SHAPES = [(2, 4), (2, 16), (3, 8), (3, 32), (4, 4), (4, 16), (5, 64), (6, 8),
          (8, 16), (8, 64), (10, 32), (12, 8), (16, 16), (16, 64), (20, 4), (20, 64)]


def say(*parts: Any) -> None:
    print("[makespan]", *parts, file=sys.stderr, flush=True)


# -- the simulated world ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Box:
    """One node: what it reports (slots, cores, memory) and how fast it really is."""

    id: int
    slots: int
    cores: int
    memory_mb: int
    ms_history: float  # true ms per image in the jobs before (what a warm passel learned from)
    ms_now: float  # true ms per image during the measured job (boxes drift: heat, other load)


@dataclass
class SimTask:
    """A submodel; `work` is its images times its own difficulty (unknown to any scheduler)."""

    uuid: str
    images_count: int
    work: float
    job_key: str = "job"
    committed_at: float | None = 0.0


@dataclass(frozen=True)
class Scenario:
    name: str
    boxes: tuple[Box, ...]
    history: tuple[SimTask, ...]  # an earlier job on the same passel
    job: tuple[SimTask, ...]


def make_job(rng: random.Random, count: int, prefix: str) -> tuple[SimTask, ...]:
    """Submodel sizes spread over 4× (the smallest and the largest are always there)."""
    base = rng.randint(40, 60)
    sizes = [base, 4 * base] + [rng.randint(base, 4 * base) for _ in range(count - 2)]
    rng.shuffle(sizes)
    return tuple(SimTask(f"{prefix}{i}", n, n * rng.uniform(0.85, 1.15)) for i, n in enumerate(sizes))


def make_scenario(index: int, boxes: int, submodels: int) -> Scenario:
    rng = random.Random(8000 + index)
    factors = [1.0, 8.0] + [math.exp(rng.uniform(0, math.log(8))) for _ in range(boxes - 2)]
    rng.shuffle(factors)
    made = []
    for i, factor in enumerate(factors):
        cores = max(2, min(64, round(32 / factor * math.exp(rng.gauss(0, 0.35)))))  # more cores, faster, roughly
        memory = rng.choice([8, 16, 32, 64] if factor < 3 else [4, 8, 16, 32]) * 1024
        history = FASTEST_MS_PER_IMAGE * factor
        made.append(Box(i + 1, rng.randint(1, 4), cores, memory, history, history * rng.uniform(0.85, 1.15)))
    return Scenario(f"{boxes:02d} boxes, {submodels:02d} submodels", tuple(made),
                    make_job(rng, submodels, "h"), make_job(rng, submodels, "t"))


def lower_bound_ms(boxes: Sequence[Box], tasks: Sequence[SimTask]) -> float:
    """All work spread perfectly over every slot, or the largest task on the fastest box."""
    speed = sum(b.slots / b.ms_now for b in boxes)
    return max(sum(t.work for t in tasks) / speed, max(t.work for t in tasks) * min(b.ms_now for b in boxes))


def oracle_ms(boxes: Sequence[Box], tasks: Sequence[SimTask]) -> float:
    """Longest first onto the slot that finishes it first, knowing every true time in advance: how much
    of Passel's distance to the bound is the bound's looseness rather than estimation error."""
    lanes = [(0.0, b) for b in boxes for _ in range(b.slots)]
    for task in sorted(tasks, key=lambda t: -t.work):
        i = min(range(len(lanes)), key=lambda i: (lanes[i][0] + task.work * lanes[i][1].ms_now, i))
        lanes[i] = (lanes[i][0] + task.work * lanes[i][1].ms_now, lanes[i][1])
    return max(end for end, _ in lanes)


# -- ClusterODM, from the contract -------------------------------------------------------------------
def clusterodm_ms(boxes: Sequence[Box], tasks: Sequence[SimTask]) -> float:
    """Each task goes, as it arrives, to the first node sorted by maxImages (all equal here), free slots
    descending, queue length, then round robin; when all are full it still goes to the first. Each node
    runs its own queue first in, first out. (Queue lengths are taken fresh, which flatters ClusterODM:
    it polls /info once a minute.)"""
    load = {b.id: 0 for b in boxes}
    queues: dict[int, list[SimTask]] = {b.id: [] for b in boxes}
    turn = 0
    for task in tasks:
        box = min(boxes, key=lambda b: (-max(0, b.slots - load[b.id]), load[b.id], (b.id - turn) % len(boxes)))
        turn += 1
        load[box.id] += 1
        queues[box.id].append(task)
    finish = 0.0
    for box in boxes:
        lanes = [0.0] * box.slots
        for task in queues[box.id]:
            lane = lanes.index(min(lanes))
            lanes[lane] += task.work * box.ms_now
        finish = max(finish, max(lanes))
    return finish


# -- Passel, with the real scheduler -----------------------------------------------------------------
@dataclass
class Run:
    task: SimTask
    box: Box
    start: float
    end: float
    copy: bool = False
    transfer: float = 0.0

    def progress(self, t: float) -> float:
        """What the node reports, in percent (the simulated NodeODM's progress is linear in time)."""
        return 100.0 * min(1.0, max(0.0, t - self.start - self.transfer) / (self.end - self.start - self.transfer))


@dataclass
class PasselSim:
    """A passel in simulated time: the coordinator's loop (finish, learn, dispatch, copy) every tick."""

    boxes: tuple[Box, ...]
    samples: dict[int, dict[str, Sample]] = field(default_factory=dict)
    speed_aware: bool = True
    copies: bool = True
    copies_started: int = 0
    copies_won: int = 0
    # the field network: the job's images sit on box `home` (ODM's split ran there and sent its submodels
    # to that box's agent), and any other box must receive them first; `counts_moves` says whether the
    # scheduler is told (Demand.data_mb and near), as Passel's dispatcher does
    home: int | None = None
    counts_moves: bool = True

    def views(self, t: float, runs: list[Run]) -> list[NodeView]:
        """What `registry.views` plus `eta.with_backlog` would give the scheduler at time t."""
        hardware = {b.id: Hardware(self.samples.get(b.id, {}), "odm", b.cores, b.memory_mb) for b in self.boxes}
        factor = calibrations(hardware.values()).get("odm", 1.0)
        views = []
        for box in self.boxes:
            guess = estimates(hardware[box.id], factor)
            here = [r for r in runs if r.box.id == box.id]
            backlog = tuple(remaining_ms(guess[KIND].ms_per_image * r.task.images_count, t - r.start, r.progress(t))
                            for r in here if not r.copy)
            views.append(NodeView(id=box.id, slots=box.slots, busy=len(here), cores=box.cores,
                                  memory_mb=box.memory_mb, backlog_ms=backlog,
                                  speeds=tuple((k, e.ms_per_image) for k, e in guess.items())))
        return views

    def run(self, tasks: Sequence[SimTask], history: bool = False) -> float:
        """The job's makespan in ms; what finishes is learned, as `registry.learn_speed` does."""
        by_id = {b.id: b for b in self.boxes}
        waiting, runs, done = list(tasks), [], set()
        t = makespan = 0.0
        while waiting or runs:
            for run in sorted((r for r in runs if r.end <= t), key=lambda r: r.end):
                if run not in runs:
                    continue
                runs.remove(run)
                done.add(run.task.uuid)
                makespan = max(makespan, run.end)
                self.copies_won += run.copy
                key, learned = speed_key("odm", KIND), self.samples.setdefault(run.box.id, {})
                learned[key] = blend(learned.get(key), (run.end - run.start - run.transfer) / run.task.images_count)
                runs = [r for r in runs if r.task.uuid != run.task.uuid]  # the other copy is canceled
            queue = dispatch_order(waiting, self.speed_aware)
            demands = [self._demand(task) for task in queue]
            ahead: list[Demand] = []  # as in `Coordinator.run_dispatch_loop`
            for task, demand, now in zip(queue, demands, could_start_now(self.views(t, runs), demands,
                                                                        self.speed_aware)):
                choice = choose_node(self.views(t, runs), demand, ahead, self.speed_aware) if now else None
                if choice is None:
                    ahead.append(demand)
                    continue
                box = by_id[choice.id]
                waiting.remove(task)
                move = 0.0 if self.home in (None, box.id) else task.images_count * MOVE_MS_PER_IMAGE
                runs.append(Run(task, box, t, t + move + task.work * (box.ms_history if history else box.ms_now),
                                transfer=move))
            if self.copies and self.speed_aware and not waiting:
                self._copy_stragglers(t, runs, by_id, history)
            if runs:
                next_end = min(r.end for r in runs)
                t = min(next_end, t + TICK_MS) if self.speed_aware else next_end
        return makespan

    def _demand(self, task: SimTask) -> Demand:
        if self.home is None or not self.counts_moves:
            return Demand(images=task.images_count, kind=KIND)
        return Demand(images=task.images_count, kind=KIND, data_mb=task.images_count * BYTES_PER_IMAGE / 1e6,
                      near=frozenset({self.home}))

    def _copy_stragglers(self, t: float, runs: list[Run], by_id: dict[int, Box], history: bool) -> None:
        views = self.views(t, runs)
        speeds = {v.id: v for v in views}
        copied = {r.task.uuid for r in runs if r.copy}
        candidates = [
            Straggler(r.task.uuid, r.box.id, Demand(images=r.task.images_count, kind=KIND),
                      remaining_ms(speeds[r.box.id].ms_per_image(KIND) * r.task.images_count, t - r.start,
                                   r.progress(t)),
                      r.task.images_count * BYTES_PER_IMAGE / ASSUMED_BYTES_PER_MS)
            for r in runs if not r.copy and r.task.uuid not in copied]
        for plan in plan_copies(candidates, views, queued=0):
            original = next(r for r in runs if r.task.uuid == plan.uuid)
            box = by_id[plan.node_id]
            transfer = original.task.images_count * BYTES_PER_IMAGE / ASSUMED_BYTES_PER_MS
            work_ms = original.task.work * (box.ms_history if history else box.ms_now)
            runs.append(Run(original.task, box, t, t + transfer + work_ms, copy=True, transfer=transfer))
            self.copies_started += 1


def simulate(scenario: Scenario) -> dict[str, Any]:
    """One scenario: warm Passel (it ran one earlier job on these boxes), cold, speed-blind and without
    copies; ClusterODM; the bound."""
    earlier = PasselSim(scenario.boxes)
    earlier.run(scenario.history, history=True)

    def warm(copies: bool, boxes: tuple[Box, ...] = scenario.boxes) -> tuple[PasselSim, float]:
        sim = PasselSim(boxes, samples={k: dict(v) for k, v in earlier.samples.items()}, copies=copies)
        return sim, sim.run(scenario.job)
    sim, passel = warm(copies=True)
    _, no_copies = warm(copies=False)
    # The box the passel trusts most runs 3× slower than it learned (throttling, another user's job):
    # what straggler copies are for.
    trusted = min(scenario.boxes, key=lambda b: b.ms_history)
    slowed = tuple(replace(b, ms_now=b.ms_now * SURPRISE_SLOWDOWN) if b is trusted else b for b in scenario.boxes)
    surprised, surprise = warm(copies=True, boxes=slowed)
    _, surprise_no_copies = warm(copies=False, boxes=slowed)
    fresh = PasselSim(scenario.boxes)
    cold = fresh.run(scenario.job)
    cold_no_copies = PasselSim(scenario.boxes, copies=False).run(scenario.job)
    blind = PasselSim(scenario.boxes, speed_aware=False).run(scenario.job)
    # On a 100 Mbit/s field network, with the job's images on box 1: placement that counts the move
    # against placement that does not (both pay it).
    field = {aware: PasselSim(scenario.boxes, samples={k: dict(v) for k, v in earlier.samples.items()},
                              home=scenario.boxes[0].id, counts_moves=aware).run(scenario.job)
             for aware in (True, False)}
    clusterodm = clusterodm_ms(scenario.boxes, scenario.job)
    bound = lower_bound_ms(scenario.boxes, scenario.job)
    return {
        "name": scenario.name, "passel_s": round(passel / 1000, 1), "clusterodm_s": round(clusterodm / 1000, 1),
        "lower_bound_s": round(bound / 1000, 1),
        "oracle_lpt_s": round(oracle_ms(scenario.boxes, scenario.job) / 1000, 1),
        "passel_over_bound": round(passel / bound, 3), "clusterodm_over_bound": round(clusterodm / bound, 3),
        "passel_cold_s": round(cold / 1000, 1), "passel_no_copies_s": round(no_copies / 1000, 1),
        "passel_cold_no_copies_s": round(cold_no_copies / 1000, 1), "cold_copies_won": fresh.copies_won,
        "passel_speed_blind_s": round(blind / 1000, 1),
        "field_counting_moves_s": round(field[True] / 1000, 1), "field_blind_to_moves_s": round(field[False] / 1000, 1),
        "copies_started": sim.copies_started, "copies_won": sim.copies_won,
        "surprise_passel_s": round(surprise / 1000, 1), "surprise_no_copies_s": round(surprise_no_copies / 1000, 1),
        "surprise_copies_won": surprised.copies_won,
        "boxes": len(scenario.boxes), "slots": sum(b.slots for b in scenario.boxes), "submodels": len(scenario.job),
        "speed_spread": round(max(b.ms_now for b in scenario.boxes) / min(b.ms_now for b in scenario.boxes), 2),
        "size_spread": round(max(t.images_count for t in scenario.job) / min(t.images_count for t in scenario.job), 2),
    }


def run_simulation() -> dict[str, Any]:
    scenarios = []
    for index, (boxes, submodels) in enumerate(SHAPES):
        entry = simulate(make_scenario(index, boxes, submodels))
        scenarios.append(entry)
        say(f"{entry['name']}: passel {entry['passel_s']} s, clusterodm {entry['clusterodm_s']} s, "
            f"bound {entry['lower_bound_s']} s ({entry['passel_over_bound']}×)")
    ratios = [s["passel_over_bound"] for s in scenarios]
    return {
        "scenarios": scenarios,
        "median_passel_over_bound": round(statistics.median(ratios), 3),
        "median_clusterodm_over_bound": round(statistics.median(s["clusterodm_over_bound"] for s in scenarios), 3),
        "median_passel_cold_over_bound": round(statistics.median(
            s["passel_cold_s"] / s["lower_bound_s"] for s in scenarios), 3),
        "worst_passel_over_bound": max(ratios),
        "passel_beats_clusterodm_everywhere": all(s["passel_s"] < s["clusterodm_s"] for s in scenarios),
        "median_surprise_gain_from_copies": round(statistics.median(
            s["surprise_no_copies_s"] / s["surprise_passel_s"] for s in scenarios), 3),
        "cold_gain_from_copies": {s["name"]: round(s["passel_cold_no_copies_s"] / s["passel_cold_s"], 3)
                                  for s in scenarios if s["cold_copies_won"]},
        "target_median_over_bound": TARGET_RATIO,
        "median_field_gain_from_counting_moves": round(statistics.median(
            s["field_blind_to_moves_s"] / s["field_counting_moves_s"] for s in scenarios), 3),
        "field_worse_from_counting_moves": [s["name"] for s in scenarios
                                            if s["field_counting_moves_s"] > s["field_blind_to_moves_s"] * 1.01],
    }


# -- live ------------------------------------------------------------------------------------------
LIVE_SECONDS_PER_IMAGE = (0.05, 0.15, 0.4)  # three nodes, 8× apart; one slot each
LIVE_JOB = (48, 12, 40, 16, 32, 20, 28, 24)  # images per submodel, in the order ODM would send them
LIVE_HISTORY = (30, 10, 25, 15, 35, 20, 12, 18)
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000") + b"\0" * 200 + bytes.fromhex("ffd9")


def _submit(session: Any, url: str, images: int, label: str) -> str:
    """One submodel the way ODM's split-merge sends it: init, upload, commit."""
    fields = {"name": "", "options": "[]", "skipPostProcessing": "true", "outputs": json.dumps(RECONSTRUCTION_OUTPUTS)}
    uuid = session.post(f"{url}/task/new/init", data=fields, timeout=30).json()["uuid"]
    files = [("images", (f"{label}_{i:03d}.JPG", JPEG, "image/jpeg")) for i in range(images)]
    assert session.post(f"{url}/task/new/upload/{uuid}", files=files, timeout=60).json().get("success")
    assert session.post(f"{url}/task/new/commit/{uuid}", timeout=30).json()["uuid"] == uuid
    return uuid


def _run_job(session: Any, url: str, sizes: Sequence[int], label: str, timeout: float = 300) -> dict[str, Any]:
    """Submit the submodels one after the other, then wait for all; the makespan runs from the first init."""
    start = time.monotonic()
    uuids = [_submit(session, url, n, f"{label}{i}") for i, n in enumerate(sizes)]
    finished: dict[str, float] = {}
    while len(finished) < len(uuids):
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"job {label} did not finish within {timeout} s")
        for uuid in uuids:
            if uuid not in finished:
                code = session.get(f"{url}/task/{uuid}/info", timeout=30).json()["status"]["code"]
                if code in (30, 50):
                    raise RuntimeError(f"task {uuid} ended with status {code}")
                if code == 40:
                    finished[uuid] = time.monotonic() - start
        time.sleep(0.1)
    tasks = {t["uuid"]: t for t in session.get(f"{url}/-/tasks", timeout=30).json()}
    placed = [{"uuid": u, "images": n, "node": tasks[u]["node_id"], "done_s": round(finished[u], 2)}
              for u, n in zip(uuids, sizes)]
    for uuid in uuids:
        session.post(f"{url}/task/remove", data={"uuid": uuid}, timeout=30)
    return {"makespan_s": round(max(finished.values()), 2), "tasks": placed}


def _live_once(scratch: common.Scratch, speed_aware: bool, warm: bool, run: int) -> dict[str, Any]:
    """Fresh nodes and a fresh passel (its own state directory), an earlier job when `warm`, then the job."""
    import requests
    label = f"{'aware' if speed_aware else 'blind'}-{'warm' if warm else 'cold'}-{run}"
    nodes = []
    for i, seconds in enumerate(LIVE_SECONDS_PER_IMAGE):
        port = common.free_port()
        node = scratch.track(common.Server(f"simnode{i}", ["simnode", "--port", str(port), "--seconds-per-image",
                                                          str(seconds), "--cores", "4", "--data-dir",
                                                          str(scratch.path / f"{label}-node{i}")], port, scratch.path))
        node.wait_ready()
        nodes.append(node)
    port = common.free_port()
    args = ["run", "--host", common.LOOPBACK, "--port", str(port), "--state-dir", str(scratch.path / f"{label}-state"),
            "--no-discovery", "--min-free-disk-mb", "0", "--poll-seconds", "0.5", "--task-poll-seconds", "0.5",
            "--speed-aware" if speed_aware else "--no-speed-aware"]
    for node in nodes:
        args += ["--node", node.url]
    passel = scratch.track(common.Server(f"passel-{label}", args, port, scratch.path))
    passel.wait_ready(lambda info: int(info.get("maxParallelTasks") or 0) >= len(nodes))
    try:
        with requests.Session() as session:
            if warm:
                _run_job(session, passel.url, LIVE_HISTORY, "h")
            result = _run_job(session, passel.url, LIVE_JOB, "j")
            node_ids = {n["url"]: n["id"] for n in session.get(f"{passel.url}/-/nodes", timeout=30).json()}
            events = session.get(f"{passel.url}/-/events", params={"limit": 1000}, timeout=30).json()
    finally:
        scratch.stop_all()
    speed_of = {node_ids[n.url]: s for n, s in zip(nodes, LIVE_SECONDS_PER_IMAGE)}
    for task in result["tasks"]:
        task["node_seconds_per_image"] = speed_of.get(task["node"])
    ours = {t["uuid"] for t in result["tasks"]}
    result.update(speed_aware=speed_aware, warm=warm,
                  copies_won=sum(1 for e in events if e["kind"] == "copy-won" and e["task"] in ours),
                  copies_started=sum(1 for e in events if e["kind"] == "copy-started" and e["task"] in ours))
    return result


def run_live(repeat: int) -> dict[str, Any]:
    """Each setting `repeat` times, interleaved; the median makespan, and every run."""
    rate = sum(1 / s for s in LIVE_SECONDS_PER_IMAGE)
    bound = max(sum(LIVE_JOB) / rate, max(LIVE_JOB) * min(LIVE_SECONDS_PER_IMAGE))
    settings = {"blind_warm": (False, True), "aware_warm": (True, True), "aware_cold": (True, False)}
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in settings}
    scratch = common.Scratch("passel-makespan-")
    try:
        for run in range(repeat):
            for key, (speed_aware, warm) in settings.items():
                runs[key].append(_live_once(scratch, speed_aware, warm, run))
                say(f"live {key}: {runs[key][-1]['makespan_s']} s")
    finally:
        scratch.close()
    medians = {key: common.median([r["makespan_s"] for r in rs]) for key, rs in runs.items()}
    return {"nodes_seconds_per_image": list(LIVE_SECONDS_PER_IMAGE), "submodel_images": list(LIVE_JOB),
            "lower_bound_s": round(bound, 2), "median_makespan_s": medians, "runs": runs,
            "aware_over_blind": round(medians["aware_warm"] / medians["blind_warm"], 3)}


def _table(data: dict[str, Any]) -> str:
    lines = [f"{'scenario':26} {'slots':>5} {'passel':>8} {'cold':>8} {'blind':>8} {'ClusterODM':>10} "
             f"{'bound':>8} {'P/LB':>6} {'C/LB':>6} {'copies':>6}"]
    for s in data["scenarios"]:
        lines.append(f"{s['name']:26} {s['slots']:>5} {s['passel_s']:>8} {s['passel_cold_s']:>8} "
                     f"{s['passel_speed_blind_s']:>8} {s['clusterodm_s']:>10} {s['lower_bound_s']:>8} "
                     f"{s['passel_over_bound']:>6} {s['clusterodm_over_bound']:>6} "
                     f"{s['copies_won']}/{s['copies_started']:<4}")
    lines.append(f"field network (images on box 1, 100 Mbit/s): counting the move makes jobs "
                 f"{data['median_field_gain_from_counting_moves']}× faster at the median; worse in: "
                 f"{', '.join(data['field_worse_from_counting_moves']) or 'none'}")
    lines.append(f"median passel/bound {data['median_passel_over_bound']} (target ≤ {TARGET_RATIO}), cold "
                 f"{data['median_passel_cold_over_bound']}, ClusterODM/bound {data['median_clusterodm_over_bound']}; "
                 f"passel better than ClusterODM everywhere: {data['passel_beats_clusterodm_everywhere']}")
    if "live" in data:
        live = data["live"]
        shown = ", ".join(f"{k} {v} s" for k, v in live["median_makespan_s"].items())
        lines.append(f"live, median of {len(live['runs']['aware_warm'])} (bound {live['lower_bound_s']} s): {shown}; "
                     f"aware/blind {live['aware_over_blind']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--live", action="store_true", help="also run the live comparison (about 2 minutes a repeat)")
    parser.add_argument("--repeat", type=int, default=3, help="live runs of each setting (default 3)")
    args = parser.parse_args()
    common.exit_on_sigterm()
    data = run_simulation()
    if args.live:
        data["live"] = run_live(args.repeat)
    data["machine"] = common.machine()
    path = common.write_results("makespan", data)
    print(json.dumps(data) if args.json else _table(data))
    say(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
