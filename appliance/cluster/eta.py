"""Expected finish times from the learned speeds: each task on its node, each queued task after the
queue ahead of it, and each job (when its last task ends). The scheduler's backlog uses the same
figures, so what the API promises is what placement assumed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from appliance.cluster.scheduler import Demand, NodeView, dispatch_order, plan, run_ms
from appliance.cluster.speed import task_kind
from appliance.cluster.tasks import ACTIVE_PHASES
from appliance.nodeodm.status import TaskStatus
from appliance.store.models import Phase, Task

OVERRUN_SHARE = 0.1  # a task past its estimate is given another tenth of its time so far


def remaining_ms(expected_ms: float, elapsed_ms: float, progress: float = 0.0) -> float:
    """What is left of a run: the estimate less the time spent, never zero while it still runs; as the
    node reports progress, its pace so far weighs more, so a box that slowed down shows."""
    elapsed = max(0.0, elapsed_ms)
    by_estimate = max(expected_ms - elapsed, OVERRUN_SHARE * elapsed)
    if not 0.0 < progress < 100.0 or elapsed == 0.0:
        return by_estimate
    weight = math.sqrt(progress / 100.0)  # a third of the way, the pace already counts for more than half
    return (1.0 - weight) * by_estimate + weight * elapsed * (100.0 - progress) / progress


def demand_of(task: Task) -> Demand:
    return Demand(images=task.images_count, kind=task_kind(task.outputs, task.options))


def running(tasks: Iterable[Task]) -> list[Task]:
    """Our tasks that hold a slot on a node: being sent or on it, not finished."""
    return [t for t in tasks if t.node_id is not None and t.phase in ACTIVE_PHASES
            and not TaskStatus(t.status).finished]


def task_remaining_ms(task: Task, node: NodeView) -> float:
    return remaining_ms(run_ms(node, demand_of(task)), task.processing_time_ms, task.progress)


def with_backlog(views: Sequence[NodeView], tasks: Iterable[Task], exclude: str = "") -> list[NodeView]:
    """The views with the expected remaining time of each of our tasks on each node."""
    by_id = {v.id: v for v in views}
    backlog: dict[int, list[float]] = {}
    for task in running(tasks):
        node = by_id.get(task.node_id)  # type: ignore[arg-type]
        if node is not None and task.uuid != exclude:
            backlog.setdefault(node.id, []).append(task_remaining_ms(task, node))
    return [replace(v, backlog_ms=tuple(backlog.get(v.id, ()))) for v in views]


@dataclass(frozen=True)
class Forecast:
    """Seconds until each unfinished task and each job is expected to finish (None: cannot tell)."""

    tasks: dict[str, float | None]
    jobs: list[dict[str, Any]]


def forecast(views: Sequence[NodeView], tasks: Sequence[Task], speed_aware: bool = True) -> Forecast:
    """Running tasks finish after their remaining time; queued ones as the scheduler would place them."""
    by_id = {v.id: v for v in views}
    etas: dict[str, float | None] = {}
    for task in running(tasks):
        node = by_id.get(task.node_id)  # type: ignore[arg-type]
        etas[task.uuid] = task_remaining_ms(task, node) / 1000 if node is not None else None
    waiting = dispatch_order([t for t in tasks if t.phase == Phase.WAITING], speed_aware)
    for task, placed in zip(waiting, plan(views, [demand_of(t) for t in waiting])):
        etas[task.uuid] = placed.finish_ms / 1000 if placed.node_id is not None else None
    jobs: dict[str, list[Task]] = {}
    for task in tasks:
        jobs.setdefault(task.job_key, []).append(task)
    summary = []
    for key, members in jobs.items():
        left = [etas.get(t.uuid) for t in members if t.uuid in etas]
        summary.append({
            "job": key, "tasks": len(members), "unfinished": len(left),
            "eta_seconds": None if None in left else round(max(left, default=0.0), 1),  # type: ignore[type-var]
            "nodes": sorted({t.node_id for t in members if t.node_id is not None}),
        })
    return Forecast({u: None if e is None else round(e, 1) for u, e in etas.items()}, summary)

