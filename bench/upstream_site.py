"""A simulated site with an upstream: does the link-aware placement pay, and is it ever worse?

Simulation, in simulated time: a site of 3 boxes (one slot each; the images are staged on box 1 and
reach boxes 2 and 3 over the 100 Mbit/s field switch) plus an upstream node 10x faster (4 slots, a
cloud cluster) behind an uplink of 5, 20 or 100 Mbit/s each way and 600 ms round trip. One
split-merge job of 40 reconstruction submodels, 20 to 60 drone images of 8 MB each, from fixed seeds.

Placement calls Passel's own code: `scheduler.dispatch_order` and `choose_node` over `NodeView`s
built each moment from the simulated state (each node's backlog, the uploads still holding the
uplink), with the passel warm (speeds and the link already learned). A task's images go up the
uplink one task at a time, it runs, and its results (`scheduler.OUTPUT_SHARE` of its images: the
OpenSfM folder) come home over the downlink, one at a time, before it counts as done.

Three policies, each the makespan of the same job:
- local only: no upstream (what the passel does with no uplink, today's baseline);
- Passel: the upstream offered to the scheduler like any node;
- always upstream: every task goes up (what a site that ships everything to the cloud does).

Target (issue #17): Passel is never worse than the better of the other two, and >= 1.5x faster than
local only at 100 Mbit/s.

    cd /work/main && .venv/bin/python bench/upstream_site.py [--json]
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

from appliance.cluster.scheduler import (FIELD_LINK_MBPS, OUTPUT_SHARE, Demand, NodeView,  # noqa: E402
                                         choose_node, dispatch_order, move_ms)

KIND = "reconstruction"
LOCAL_MS_PER_IMAGE = 4000.0  # a field laptop, reconstruction only
UPSTREAM_SPEEDUP = 10.0
UPSTREAM_SLOTS = 4
RTT_MS = 600.0  # a satellite link
MB_PER_IMAGE = 8.0
SUBMODELS = 40
LINKS_MBPS = (5.0, 20.0, 100.0)
SEEDS = range(1, 6)
TARGET_AT_100 = 1.5
UPSTREAM_ID = 9


def say(*parts: Any) -> None:
    print("[upstream-site]", *parts, file=sys.stderr, flush=True)


@dataclass
class Submodel:
    uuid: str
    images_count: int
    job_key: str = "job"
    committed_at: float = 0.0

    @property
    def data_mb(self) -> float:
        return self.images_count * MB_PER_IMAGE


@dataclass
class Site:
    """The simulated state at one moment: what runs where, and when the uplink is free."""

    link_mbps: float
    with_upstream: bool
    always_upstream: bool = False
    now: float = 0.0
    runs: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # node: (start, end) of its tasks
    up_free: float = 0.0  # when the uplink has sent everything placed on it
    down_free: float = 0.0
    done: list[float] = field(default_factory=list)

    def nodes(self) -> list[NodeView]:
        """The scheduler's snapshots: each node's backlog is what its placed tasks still have to run."""
        views = [NodeView(id=i, speeds=((KIND, LOCAL_MS_PER_IMAGE),), busy=self._busy(i), backlog_ms=self._backlog(i),
                          link_mbps=FIELD_LINK_MBPS) for i in (1, 2, 3)]
        if self.always_upstream:
            views = []
        if self.with_upstream:
            views.append(NodeView(id=UPSTREAM_ID, slots=UPSTREAM_SLOTS, busy=self._busy(UPSTREAM_ID),
                                  backlog_ms=self._backlog(UPSTREAM_ID),
                                  speeds=((KIND, LOCAL_MS_PER_IMAGE / UPSTREAM_SPEEDUP),), upstream=True,
                                  link_mbps=self.link_mbps, home_mbps=self.link_mbps, rtt_ms=RTT_MS,
                                  uploading_ms=max(0.0, self.up_free - self.now)))
        return views

    def _active(self, node_id: int) -> list[tuple[float, float]]:
        return [(s, e) for s, e in self.runs.get(node_id, []) if e > self.now]

    def _busy(self, node_id: int) -> int:
        return len(self._active(node_id))

    def _backlog(self, node_id: int) -> tuple[float, ...]:
        return tuple(e - max(s, self.now) for s, e in self._active(node_id))

    def slot_free(self, node_id: int, slots: int) -> float:
        ends = sorted(e for _, e in self._active(node_id))
        return self.now if len(ends) < slots else ends[len(ends) - slots]

    def place(self, task: Submodel, node: NodeView) -> float:
        """Start the task on the node; returns when its slot next changes (for the event queue)."""
        demand = demand_for(task)
        run = node.ms_per_image(KIND) * task.images_count
        if node.upstream:
            self.up_free = max(self.now, self.up_free) + move_ms(node, demand) + RTT_MS
            start = max(self.up_free, self.slot_free(node.id, node.slots))
            end = start + run
            self.down_free = max(end, self.down_free) + demand.output_mb * 8 / self.link_mbps * 1000 + 2 * RTT_MS
            self.done.append(self.down_free)
        else:
            start = max(self.now + move_ms(node, demand), self.slot_free(node.id, node.slots))
            end = start + run
            self.done.append(end)
        self.runs.setdefault(node.id, []).append((start, end))
        return end


def demand_for(task: Submodel) -> Demand:
    return Demand(images=task.images_count, kind=KIND, data_mb=task.data_mb, near=frozenset({1}))


def job(seed: int) -> list[Submodel]:
    rng = random.Random(seed)
    return [Submodel(f"s{seed}-{i}", rng.randint(20, 60)) for i in range(SUBMODELS)]


def makespan(tasks: list[Submodel], link_mbps: float, with_upstream: bool, always_upstream: bool = False) -> float:
    """Dispatch as the coordinator does: whenever something ends, place what may start now, in order."""
    site = Site(link_mbps, with_upstream, always_upstream)
    queue = dispatch_order(tasks)
    wakes: list[float] = [0.0]
    while queue:
        site.now = heapq.heappop(wakes)
        ahead: list[Demand] = []
        for task in list(queue):
            nodes = site.nodes()
            node = choose_node(nodes, demand_for(task), ahead)
            if node is None:
                ahead.append(demand_for(task))
                continue
            queue.remove(task)
            heapq.heappush(wakes, site.place(task, node))
            heapq.heappush(wakes, site.up_free)  # a freed uplink may change the next choice
        if queue and not wakes:
            raise RuntimeError("tasks left that no node will ever take")
    return max(site.done) / 1000.0


def run() -> dict[str, Any]:
    rows = []
    for link in LINKS_MBPS:
        spans = {"local_only": [], "passel": [], "always_upstream": []}
        for seed in SEEDS:
            tasks = job(seed)
            spans["local_only"].append(makespan(tasks, link, with_upstream=False))
            spans["passel"].append(makespan(tasks, link, with_upstream=True))
            spans["always_upstream"].append(makespan(tasks, link, with_upstream=True, always_upstream=True))
        median = {k: statistics.median(v) for k, v in spans.items()}
        worst_vs_better = max(p / min(lo, up) for p, lo, up in zip(spans["passel"], spans["local_only"],
                                                                     spans["always_upstream"]))
        row = {"link_mbps": link, "median_makespan_s": {k: round(v, 1) for k, v in median.items()},
               "speedup_vs_local_only": round(median["local_only"] / median["passel"], 2),
               "speedup_vs_always_upstream": round(median["always_upstream"] / median["passel"], 2),
               "worst_ratio_to_better_of_the_two": round(worst_vs_better, 3)}
        rows.append(row)
        say(f"{link:>5.0f} Mbit/s: local only {median['local_only']:7.0f} s, always upstream "
            f"{median['always_upstream']:7.0f} s, Passel {median['passel']:7.0f} s -> "
            f"{row['speedup_vs_local_only']:.2f}x local only, {row['speedup_vs_always_upstream']:.2f}x always "
            f"upstream; worst seed {worst_vs_better:.3f}x the better of the two")
    at_100 = next(r for r in rows if r["link_mbps"] == 100.0)
    never_worse = all(r["worst_ratio_to_better_of_the_two"] <= 1.0 + 1e-9 for r in rows)
    met = never_worse and at_100["speedup_vs_local_only"] >= TARGET_AT_100
    say(f"target (never worse than the better of the two; >= {TARGET_AT_100}x local only at 100 Mbit/s): "
        f"{'met' if met else 'NOT met'}")
    return {"benchmark": "upstream_site", "submodels": SUBMODELS, "seeds": list(SEEDS), "kind": KIND,
            "output_share": OUTPUT_SHARE[KIND], "upstream_speedup": UPSTREAM_SPEEDUP, "rtt_ms": RTT_MS,
            "rows": rows, "target_met": met, "machine": common.machine()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="also write bench/results/upstream_site.json")
    args = parser.parse_args()
    result = run()
    if args.json:
        path = common.RESULTS_DIR / "upstream_site.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        say(f"wrote {path}")
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
