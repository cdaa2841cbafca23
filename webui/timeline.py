"""The Gantt chart: one lane per node, a bar per task (waiting, then running), so idle nodes and
stragglers stand out. A task's running part is its node's processing time, counted back from its end."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from appliance.clock import wall
from appliance.nodeodm.status import TaskStatus
from appliance.store.models import Phase, Task
from webui import format as fmt
from webui.contexts import Bar, Lane, Tick
from webui.snapshot import Snapshot
from webui.task_views import job_of, status_name

SPANS = {"auto": None, "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600}
SPAN_CHOICES = [("auto", "Recent tasks"), ("1h", "Last hour"), ("6h", "Last 6 hours"), ("24h", "Last 24 hours")]
MAX_BARS = 400
MIN_WINDOW_SECONDS = 10.0
MIN_WIDTH = 0.4  # per cent, so a two-second task is still something to click
STRAGGLER_FACTOR = 2.0
QUEUE = ""


@dataclass(frozen=True)
class Span:
    task: Task
    lane: str
    start: float
    run_start: float
    end: float


def _span(task: Task, lane: str, now: float) -> Span:
    start = task.committed_at or task.date_created_ms / 1000
    end = task.finished_at if TaskStatus(task.status).finished and task.finished_at else now
    on_node = task.phase in (Phase.ON_NODE, Phase.FINISHED) and task.processing_time_ms > 0
    run_start = max(start, end - task.processing_time_ms / 1000) if on_node else end
    return Span(task, lane, start, min(run_start, end), max(end, start))


def _stragglers(spans: list[Span]) -> set[str]:
    """Tasks that ran more than twice as long as the typical submodel of their job."""
    jobs: dict[str, list[Span]] = {}
    for s in spans:
        jobs.setdefault(job_of(s.task), []).append(s)
    slow = set()
    for members in jobs.values():
        done = [s.end - s.run_start for s in members if s.task.status == TaskStatus.COMPLETED]
        if len(members) < 3 or not done:
            continue
        typical = statistics.median(done)
        slow.update(s.task.uuid for s in members if typical > 0 and s.end - s.run_start > STRAGGLER_FACTOR * typical)
    return slow


def _busy_share(spans: list[Span], t0: float, t1: float) -> float:
    covered, reach = 0.0, t0
    for s in sorted(spans, key=lambda s: s.run_start):
        start, end = max(s.run_start, reach), min(s.end, t1)
        if end > start:
            covered += end - start
            reach = end
    return covered / (t1 - t0)


def build(snap: Snapshot, labels: dict[str, str], span: str) -> tuple[list[Lane], list[Tick], str]:
    """Lanes, axis ticks and the window in words, for the chosen span."""
    now = wall()
    spans = [_span(t, snap.node_url(t) or QUEUE, now) for t in snap.tasks]
    seconds = SPANS.get(span)
    if seconds is None:  # from the first of the recent tasks to the last moment anything happened
        spans = sorted(spans, key=lambda s: s.start)[-MAX_BARS:]
        t0 = min((s.start for s in spans), default=now - MIN_WINDOW_SECONDS)
        t1 = max([s.end for s in spans] + [t0 + MIN_WINDOW_SECONDS])
    else:
        t0, t1 = now - seconds, now
        spans = sorted((s for s in spans if s.end >= t0), key=lambda s: s.start)[-MAX_BARS:]
    slow = _stragglers(spans)
    by_lane: dict[str, list[Span]] = {url: [] for url in labels}
    for s in spans:
        by_lane.setdefault(s.lane, []).append(s)
    lanes = [_lane(labels.get(url, url) if url else "Waiting for a node", members, t0, t1, slow)
             for url, members in by_lane.items() if url or members]
    ticks = [Tick(left=i * 25.0, label=_tick_label(t0 + (t1 - t0) * i / 4, t1 - t0)) for i in range(5)]
    window = f"{fmt.clock(t0)} to {fmt.clock(t1)} ({fmt.duration(t1 - t0)})"
    return lanes, ticks, window


def _tick_label(moment: float, window: float) -> str:
    return time.strftime("%H:%M:%S" if window < 600 else "%H:%M", time.localtime(moment))


def _lane(label: str, spans: list[Span], t0: float, t1: float, slow: set[str]) -> Lane:
    def pct(moment: float) -> float:
        return round((min(max(moment, t0), t1) - t0) / (t1 - t0) * 100, 2)

    row_ends: list[float] = []
    bars = []
    for s in spans:
        row = next((i for i, end in enumerate(row_ends) if end <= s.start), len(row_ends))
        if row == len(row_ends):
            row_ends.append(s.end)
        row_ends[row] = s.end
        title = (f"{s.task.name}: {status_name(s.task)}, waited {fmt.duration(s.run_start - s.start)}, "
                 f"ran {fmt.duration(s.end - s.run_start)}")
        run_width = max(pct(s.end) - pct(s.run_start), MIN_WIDTH if s.end > s.run_start else 0.0)
        bars.append(Bar(uuid=s.task.uuid, title=title, status_class=status_name(s.task).lower(),
                        wait_left=pct(s.start), wait_width=pct(s.run_start) - pct(s.start),
                        run_left=pct(s.run_start), run_width=run_width, row=row, straggler=s.task.uuid in slow))
    busy = _busy_share(spans, t0, t1)
    detail = "idle" if not spans else f"{len(spans)} task{'s' if len(spans) != 1 else ''}, busy {busy:.0%}"
    return Lane(label=label, detail=detail, rows=max(1, len(row_ends)), bars=bars)
