"""Choosing a node for a task: a pure function of the task, the tasks queued ahead of it, and a
snapshot of the nodes.

The order of preference, and why:
1. Hard filters: online, not locked, `maxImages` allows the task, the engine matches, the memory fits.
2. The earliest expected finish (images × the node's ms per image for the task's kind, after the
   node's current backlog and after the queued tasks ahead of this one). Moving the task's images
   counts: a node on the box that already holds them gets them for free, any other node after
   `data_mb` has crossed the field network at the node's link rate (`move_ms`). So a task whose
   images sit on a box with a free node runs there, unless another node is faster by more than the
   move costs. The move overlaps the wait for a slot (NodeODM takes files before it runs a task). When that is on a node with
   no free slot, the task waits in the coordinator's queue as QUEUED: it never piles onto a busy node
   (ClusterODM does, and ODM then sees QUEUED from a node it thought had room), and a slow free node
   does not get a task that a fast node would finish sooner even after its current work.
   ODM's split-merge submodels that wait like this show RUNNING, not QUEUED (`shows_running`): ODM
   takes QUEUED as "task limit reached", takes the task back, and caps its remote tasks for the rest
   of the job at the number then running, although a slot is free. QUEUED means every node is full.
   An upstream node (beyond the site, `link.py`) counts its link both ways: its start waits for the
   uploads placed on that link before it (one uplink carries one upload at a time), and its finish
   adds the time the task's expected results (`OUTPUT_SHARE`) take to come home. So a task goes
   upstream only when that still finishes sooner than the best local choice; a task whose size is
   not known yet never does (nothing to weigh the link against).
3. The node beside the images (the same box), then, while the task's size is not known yet
   (reserved at init), the node that takes the most images.
4. Fewest tasks of the same job on the node: equal nodes share a job's submodels.
5. Most free slots, then most memory, then shortest queue, then the node id, so equal nodes always
   give the same answer.

Queued tasks are taken job by job in arrival order and, within a job, the longest first: that is the
longest-processing-time rule, which keeps a big submodel from being left to the end of a job.
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from appliance.cluster.speed import SUBMODEL_KINDS, prior_ms_per_image
from appliance.nodeodm.status import TaskStatus

MIN_MB_PER_IMAGE = 16.0  # below this the node would swap on a task of this size
MIN_BUSY_MS = 1.0  # a busy slot is never free "now", even when its task is overdue
RESERVATION_SLACK = 0.2  # the files already sent to a reserved node are worth this much of the run
FIELD_LINK_MBPS = 100.0  # a field switch's port, until a node's own rate is measured
# The size of a task's all.zip as a share of its images, by kind: what must come home from an upstream.
# ODM's reconstruction submodel sends back its OpenSfM folder; a toolchain submodel or a whole run its
# products (orthophoto, DEMs, point cloud, textured model), which with their tiles are about the images' size.
OUTPUT_SHARE = {"reconstruction": 0.3, "toolchain": 0.8, "full": 1.0, "split": 1.0}


@dataclass(frozen=True)
class NodeView:
    """What the scheduler knows about one node at one moment."""

    id: int
    online: bool = True
    locked: bool = False
    slots: int = 1
    busy: int = 0  # tasks queued or running on it, by its own count or ours, whichever is larger
    max_images: int | None = None
    engine: str = "odm"
    cores: int = 1
    memory_mb: int = 0
    speeds: tuple[tuple[str, float], ...] = ()  # expected ms per image by task kind (learned or prior)
    backlog_ms: tuple[float, ...] = ()  # expected remaining ms of each of our tasks active on it
    same_job: int = 0  # active tasks of the job being placed
    link_mbps: float = FIELD_LINK_MBPS  # how fast files reach it from another box
    upstream: bool = False  # beyond the site: its results come home over `home_mbps`, each way costs `rtt_ms`
    home_mbps: float = FIELD_LINK_MBPS
    rtt_ms: float = 0.0
    uploading_ms: float = 0.0  # uploads already under way on its link: a new one waits for them

    @property
    def free_slots(self) -> int:
        return max(0, self.slots - self.busy)

    def ms_per_image(self, kind: str) -> float:
        """The expected time per image for a kind; the hardware prior when the snapshot has none."""
        for known, ms in self.speeds:
            if known == kind:
                return ms
        return prior_ms_per_image(self.cores, self.memory_mb, kind)


@dataclass(frozen=True)
class Demand:
    """What a task needs from a node."""

    images: int
    engine: str | None = None
    kind: str = "full"
    data_mb: float = 0.0  # the task's files, which a node away from them must receive first
    near: frozenset[int] = frozenset()  # the nodes on the box that holds the files: nothing to move

    @property
    def output_mb(self) -> float:
        """The expected size of its results, which an upstream must send home."""
        return self.data_mb * OUTPUT_SHARE.get(self.kind, 1.0)

    @property
    def impatient(self) -> bool:
        """Its client takes QUEUED as a refusal (ODM's submodels), so it must not show QUEUED while a slot is free."""
        return self.kind in SUBMODEL_KINDS


@dataclass(frozen=True)
class Placement:
    """Where a task would run in the plan, and when it would start and finish (ms from now)."""

    node_id: int | None  # None: no known node can take it
    start_ms: float = 0.0
    finish_ms: float = 0.0


def run_ms(node: NodeView, demand: Demand) -> float:
    """How long the node is expected to take for the task."""
    return node.ms_per_image(demand.kind) * max(1, demand.images)


def move_ms(node: NodeView, demand: Demand) -> float:
    """How long the task's files take to reach the node: nothing on the box that holds them."""
    if node.id in demand.near or demand.data_mb <= 0:
        return 0.0
    return demand.data_mb * 8.0 / max(node.link_mbps, 0.001) * 1000.0


def home_ms(node: NodeView, demand: Demand) -> float:
    """How long the task's results take to come back from an upstream (nothing from a local node:
    results are read where they are)."""
    if not node.upstream:
        return 0.0
    return demand.output_mb * 8.0 / max(node.home_mbps, 0.001) * 1000.0 + 2 * node.rtt_ms


def unfit(node: NodeView, demand: Demand) -> str | None:
    """The reason `node` can never take `demand` as it is now, slots aside, or None."""
    if not node.online:
        return "offline"
    if node.locked:
        return "locked"
    if node.upstream and not demand.images:
        return "an upstream node gets a task only once its size is known"
    if node.max_images is not None and demand.images > node.max_images:
        return f"takes at most {node.max_images} images"
    if demand.engine and node.engine != demand.engine:
        return f"runs {node.engine}, not {demand.engine}"
    if node.memory_mb and demand.images * MIN_MB_PER_IMAGE > node.memory_mb:
        return f"{node.memory_mb} MB of memory is too little for {demand.images} images"
    return None


def why_not(node: NodeView, demand: Demand) -> str | None:
    """The reason `node` cannot take `demand` now, or None when it can."""
    reason = unfit(node, demand)
    if reason is None and node.free_slots <= 0:
        return "no free slot"
    return reason


def headroom(node: NodeView, demand: Demand) -> float:
    """Lower for a node that takes more images, when the task's size is not known yet (a node is
    reserved at init, while the client still uploads): a small node reserved for what turns out a
    big task would get files it cannot use. 0 for a known size."""
    if demand.images:
        return 0.0
    return -(node.max_images if node.max_images is not None else math.inf)


def slot_free_times(node: NodeView, unknown_ms: float) -> list[float]:
    """When each slot frees, in ms from now, as a heap: free slots at 0, busy ones after their task.

    Tasks on the node that are not ours (or not yet running) count as `unknown_ms` each; beyond the
    node's slots, tasks wait in its own queue, first in first out."""
    heap = [0.0] * max(1, node.slots)
    known = list(node.backlog_ms)
    unknown = max(0, node.busy - len(known))
    for ms in known + [unknown_ms] * unknown:
        heapq.heapreplace(heap, heap[0] + max(ms, MIN_BUSY_MS))
    return heap


def arrival(node: NodeView, demand: Demand, start: float, link_free: float = 0.0) -> float:
    """When the task can begin to run on the node: its slot is free and its files are there. The move
    overlaps the wait for a slot; on an upstream it queues behind the uploads before it on the link."""
    if node.upstream:
        return max(start, link_free + move_ms(node, demand) + node.rtt_ms)
    return max(start, move_ms(node, demand))


def plan(nodes: Sequence[NodeView], demands: Sequence[Demand]) -> list[Placement]:
    """Earliest-finish-time list scheduling of `demands`, in order, over the nodes' slots."""
    heaps: dict[int, list[float]] = {}
    link_free = {n.id: n.uploading_ms for n in nodes}  # when each upstream's link is next free to upload
    same_job = {n.id: n.same_job for n in nodes}
    placements = []
    for demand in demands:
        best: tuple[tuple[bool, float, float, bool, float, int, int, int, int], NodeView] | None = None
        for node in nodes:
            if unfit(node, demand) is not None:
                continue
            run = run_ms(node, demand)
            if node.id not in heaps:
                heaps[node.id] = slot_free_times(node, statistics.median(node.backlog_ms) if node.backlog_ms else run)
            start = heaps[node.id][0]
            free_now = sum(1 for t in heaps[node.id] if t == 0.0)
            far = node.id not in demand.near
            # size unknown (reserved at init): a free node beside the images first, whatever its speed;
            # the commit weighs the real move against the real run (keeps_reservation)
            away = not demand.images and (far or start > 0)
            key = (away, arrival(node, demand, start, link_free[node.id]) + run + home_ms(node, demand), start, far,
                   headroom(node, demand), same_job[node.id], -free_now, -node.memory_mb, node.id)
            if best is None or key < best[0]:
                best = (key, node)
        if best is None:
            placements.append(Placement(None))
            continue
        (_, finish, start, *_), node = best
        if node.upstream:
            link_free[node.id] += move_ms(node, demand) + node.rtt_ms
        heapq.heapreplace(heaps[node.id], finish - home_ms(node, demand))  # the slot frees once it has run
        same_job[node.id] += 1
        placements.append(Placement(node.id, start, finish))
    return placements


def rank(nodes: Sequence[NodeView], demand: Demand, speed_aware: bool = True) -> list[NodeView]:
    """Nodes with a free slot that can take the task, best first (speed-blind when told so)."""
    eligible = [n for n in nodes if why_not(n, demand) is None]

    def key(n: NodeView) -> tuple[float, ...]:
        tail = (n.id not in demand.near, headroom(n, demand), n.same_job, -n.free_slots, -n.memory_mb, n.busy, n.id)
        return (arrival(n, demand, 0.0, n.uploading_ms) + run_ms(n, demand) + home_ms(n, demand), *tail) \
            if speed_aware else tail
    return sorted(eligible, key=key)


def choose_node(nodes: Sequence[NodeView], demand: Demand, ahead: Sequence[Demand] = (),
                speed_aware: bool = True) -> NodeView | None:
    """The node to send `demand` to now, or None when it must wait in the coordinator's queue.

    `ahead` are the queued tasks before it that are still waiting: they get their slots first.
    Speed-blind, any free slot will do."""
    if not speed_aware:
        ranked = rank(nodes, demand, speed_aware=False)
        return ranked[0] if ranked else None
    placement = plan(nodes, [*ahead, demand])[-1]
    if placement.node_id is None or placement.start_ms > 0:
        return None
    return next(n for n in nodes if n.id == placement.node_id)


def keeps_reservation(nodes: Sequence[NodeView], demand: Demand, reserved: int, ahead: Sequence[Demand] = (),
                      speed_aware: bool = True) -> bool:
    """Whether a task stays on the node it reserved while its size was unknown (its files are partly
    there already): when that node can take it now and, speed-aware, is expected to finish it not much
    later than the best choice."""
    node = next((n for n in nodes if n.id == reserved), None)
    if node is None or why_not(node, demand) is not None:
        return False
    if not speed_aware:
        return True
    best = plan(nodes, [*ahead, demand])[-1]
    return best.node_id == reserved or arrival(node, demand, 0.0) + run_ms(node, demand) <= best.finish_ms * (
        1 + RESERVATION_SLACK)


def could_start_now(nodes: Sequence[NodeView], queue: Sequence[Demand], speed_aware: bool = True) -> list[bool]:
    """Which tasks of a queue, in dispatch order, may start now: one plan of the whole queue, so a long
    queue costs one pass, and `choose_node` is asked only about these."""
    if not speed_aware:
        return [any(why_not(n, d) is None for n in nodes) for d in queue]
    return [p.node_id is not None and p.start_ms == 0 for p in plan(nodes, queue)]


def shows_running(nodes: Sequence[NodeView], demand: Demand, shown: int) -> bool:
    """Whether a submodel waiting in the coordinator's queue shows RUNNING (`shown` is what it shows now).

    It does while it waits by choice, for a faster node, and once shown RUNNING it stays so: ODM takes
    RUNNING turning QUEUED as "delayed task limit reached" and sends the task again."""
    if not demand.impatient:
        return False
    return shown == TaskStatus.RUNNING or any(why_not(n, demand) is None for n in nodes)


def could_ever_run(nodes: Sequence[NodeView], demand: Demand) -> bool:
    """True when some known node could take the task once it has a free slot."""
    return any(unfit(replace(n, online=True, locked=False), demand) is None for n in nodes)


class Queued(Protocol):
    """A task waiting in the coordinator's queue, as the dispatch order sees it."""

    job_key: str
    committed_at: float | None
    images_count: int


Q = TypeVar("Q", bound=Queued)


def _age(task: Queued) -> float:
    """When it was committed; a task still uploading comes after every committed one."""
    return task.committed_at if task.committed_at is not None else math.inf


def dispatch_order(tasks: Iterable[Q], speed_aware: bool = True) -> list[Q]:
    """Jobs in the order they arrived and, within a job, the longest task first (oldest first when
    speed-blind)."""
    by_age = sorted(tasks, key=_age)
    if not speed_aware:
        return by_age
    first: dict[str, float] = {}
    for task in by_age:
        first.setdefault(task.job_key, _age(task))
    return sorted(by_age, key=lambda t: (first[t.job_key], t.job_key, -t.images_count))
