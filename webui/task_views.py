"""Tasks as a person reads them: rows with elapsed time (and the coordinator's estimate of the time
left, where it has one), filters, split-merge jobs grouped, and one task's detail."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from appliance.clock import wall
from appliance.nodeodm.sentences import host_port
from appliance.nodeodm.status import TaskStatus
from appliance.store.models import Phase, Task
from webui import format as fmt
from webui.contexts import JobSummary, TaskGroup, TaskRow
from webui.snapshot import Snapshot

PAGE_ROWS = 100
STATUS_CHOICES = [("all", "All"), ("active", "Queued or running"), ("queued", "Queued"), ("running", "Running"),
                  ("completed", "Completed"), ("failed", "Failed"), ("canceled", "Canceled")]
NOTES = {Phase.WAITING: "waiting for a free node", Phase.FORWARDING: "being sent to its node"}
NO_NODE_ONLINE = "waiting: no node is online"


def status_name(task: Task) -> str:
    return TaskStatus(task.status).name


def elapsed_seconds(task: Task, now: float) -> float:
    start = task.committed_at or task.date_created_ms / 1000
    end = task.finished_at if TaskStatus(task.status).finished and task.finished_at else now
    return max(0.0, end - start)


def eta_text(seconds: float | None) -> str:
    return "" if seconds is None else f"about {fmt.duration(seconds)} left"


def note_of(task: Task, any_online: bool) -> str:
    """What a waiting task waits for, in a few words; nothing once it runs or ended."""
    if TaskStatus(task.status).finished:
        return ""
    if task.phase == Phase.WAITING and not any_online:
        return NO_NODE_ONLINE
    return NOTES.get(task.phase, "")


def task_row(task: Task, node_url: str | None, labels: dict[str, str], now: float,
             eta: float | None = None, any_online: bool = True) -> TaskRow:
    status = status_name(task)
    return TaskRow(uuid=task.uuid, short=task.uuid[:8], name=task.name or task.uuid[:8], status=status,
                   status_class=status.lower(), progress=round(task.progress, 1),
                   node_label=labels.get(node_url or "", host_port(node_url or "") or "—"), node_url=node_url or "",
                   images=task.images_count, elapsed=fmt.duration(elapsed_seconds(task, now)),
                   eta="" if TaskStatus(task.status).finished else eta_text(eta),
                   created=fmt.clock(task.date_created_ms / 1000),
                   note=note_of(task, any_online))


def _matches(task: Task, status: str, node_url: str | None, node: str, text: str) -> bool:
    if status == "active" and TaskStatus(task.status).finished:
        return False
    if status not in ("all", "active") and status_name(task).lower() != status:
        return False
    if node and node_url != node:
        return False
    return not text or text in task.name.lower() or task.uuid.startswith(text)


COLLECTED = "collected by its job, then removed"


def job_of(task: Task) -> str:
    """A submodel that names its job (`parent_uuid`, cluster/job_parts.py) goes under that task;
    unnamed split-merge submodels share options and ask for partial outputs; other tasks stand alone."""
    if task.parent_uuid:
        return task.parent_uuid
    return task.job_key if task.job_key and (task.outputs or task.skip_post_processing) else task.uuid


def _in_job_order(key: str) -> Any:
    """The job's own task first (a linked job's key is its uuid), then its parts by name and age."""
    return lambda t: (t.uuid != key, t.name, t.date_created_ms)


@dataclass(frozen=True)
class TaskListing:
    groups: list[TaskGroup]
    matching: int
    page: int
    pages: int


def list_tasks(snap: Snapshot, labels: dict[str, str], etas: dict[str, float | None], status: str, node: str,
               text: str, page: int) -> TaskListing:
    """The filtered tasks, newest job first, grouped by job, one page of about PAGE_ROWS rows."""
    now = wall()
    text = text.strip().lower()
    jobs: dict[str, list[Task]] = {}
    urls: dict[str, str | None] = {}
    for task in snap.tasks:
        urls[task.uuid] = url = snap.node_url(task)
        if _matches(task, status, url, node, text):
            jobs.setdefault(job_of(task), []).append(task)
    ordered = sorted(jobs.items(), key=lambda kv: max(t.date_created_ms for t in kv[1]), reverse=True)
    pages: list[list[tuple[str, list[Task]]]] = [[]]
    rows_on_page = 0
    for key, members in ordered:
        if rows_on_page and rows_on_page + len(members) > PAGE_ROWS:
            pages.append([])
            rows_on_page = 0
        pages[-1].append((key, members))
        rows_on_page += len(members)
    page = min(max(page, 1), len(pages))
    online = any_online(snap)
    groups = [_group(key, sorted(members, key=_in_job_order(key)), urls, labels, etas, now, online,
                     len(snap.coordinator.book.removed_parts(key)))
              for key, members in pages[page - 1]]
    return TaskListing(groups, sum(len(m) for m in jobs.values()), page, len(pages))


def _group(key: str, members: list[Task], urls: dict[str, str | None], labels: dict[str, str],
           etas: dict[str, float | None], now: float, online: bool, collected: int) -> TaskGroup:
    """`collected`: parts of a linked job already removed (they show on the job's page only)."""
    rows = [task_row(t, urls[t.uuid], labels, now, etas.get(t.uuid), online) for t in members]
    done = sum(1 for t in members if t.status == TaskStatus.COMPLETED)
    if len(members) == 1 and not collected:
        return TaskGroup(key=key, title=rows[0].name, is_job=False, done=done, rows=rows)
    return TaskGroup(key=key, title=_title(key, members, collected), is_job=True, done=done, rows=rows,
                     url=f"/ui/jobs/{key}")


def _title(key: str, members: list[Task], collected: int = 0) -> str:
    """A linked job is named after its own task; other jobs after their parts' names (job_title)."""
    own = next((t for t in members if t.uuid == key), None)
    if own is None:
        return job_title([t.name for t in members])
    parts = len(members) - 1 + collected
    return f"Job {own.name} ({parts} part{'s' if parts != 1 else ''})"


def job_title(names: list[str]) -> str:
    """'Job submodel_0000 to submodel_0005 (6 parts)': the first and last names in full, since a
    common prefix cut inside a number ('submodel_000') reads as a wrong name."""
    ordered = sorted(n for n in names if n)
    span = f" {ordered[0]} to {ordered[-1]}" if len(ordered) > 1 and ordered[0] != ordered[-1] else ""
    return f"Job{span} ({len(names)} parts)"


def page_url(status: str, node: str, text: str, page: int) -> str:
    query = {k: v for k, v in (("status", status if status != "all" else ""), ("node", node), ("q", text),
                                ("page", str(page) if page > 1 else "")) if v}
    return "/ui/tasks" + (f"?{urlencode(query)}" if query else "")


def options_of(task: Task) -> list[tuple[str, str]]:
    return [(str(o.get("name")), json.dumps(o.get("value")) if not isinstance(o.get("value"), str) else o["value"])
            for o in task.options]


def log_of(task: Task) -> list[str]:
    """Passel's own notes (moves and why), then the last lines the node printed."""
    return [*task.notes, *task.output_tail]


def facts_of(task: Task, now: float) -> list[tuple[str, str]]:
    node_time = fmt.duration(task.processing_time_ms / 1000) if task.processing_time_ms > 0 else "—"
    return [("Task id", task.uuid), ("Created", fmt.clock(task.date_created_ms / 1000)),
            ("Accepted", fmt.clock(task.committed_at)), ("Finished", fmt.clock(task.finished_at)),
            ("Elapsed", fmt.duration(elapsed_seconds(task, now))), ("Time on its node", node_time),
            ("Attempts to send", str(task.attempts)), ("Images", str(task.images_count))]


def move_targets(task: Task, snap: Snapshot, names: dict[str, str]) -> list[tuple[str, str]]:
    current = snap.node_url(task)
    return [(n["url"], names.get(n["url"]) or host_port(n["url"])) for n in snap.nodes
            if n.get("online") is not False and not n.get("locked") and n["url"] != current]


def can_move(task: Task) -> bool:
    return task.phase in (Phase.WAITING, Phase.FORWARDING, Phase.ON_NODE) and not TaskStatus(task.status).finished


def counts(tasks: list[Task]) -> dict[str, int]:
    result = {s.name: 0 for s in TaskStatus}
    for task in tasks:
        result[status_name(task)] += 1
    return result


def any_online(snap: Snapshot) -> bool:
    """Whether some node answers; unknown health (a follower cut off) counts as yes."""
    return any(n.get("online") is not False for n in snap.nodes)


def members_of(snap: Snapshot, key: str) -> list[Task]:
    """The tasks of one job (by job_of's key): its own task first for a linked job, then its parts in
    name order, those ODM already collected and removed included."""
    found = [t for t in snap.tasks if job_of(t) == key] + snap.coordinator.book.removed_parts(key)
    return sorted(found, key=_in_job_order(key))


def member_row(task: Task, node_url: str | None, labels: dict[str, str], now: float, eta: float | None,
               online: bool) -> TaskRow:
    """A job's member as a row; a part its job collected says so rather than 'completed' alone."""
    row = task_row(task, node_url, labels, now, eta, online)
    return replace(row, note=COLLECTED) if task.phase == Phase.REMOVED else row


def outcome_of(task: Task) -> str:
    """One sentence, once the task ended: where its results are, or why there are none."""
    status = TaskStatus(task.status)
    if status == TaskStatus.COMPLETED:
        return "Done: the results are in one file, all.zip, on the “Download all results” button below."
    if status == TaskStatus.FAILED:
        return "This task failed, so it has no results: the reason is shown above; Restart tries it again."
    if status == TaskStatus.CANCELED:
        return "This task was canceled, so it has no results; Restart processes it again."
    return ""


def job_summary(snap: Snapshot, key: str, boxes_of: dict[str, str], etas: dict[str, float | None]) -> JobSummary | None:
    """A split-merge job as a whole (None for a task on its own): how far along across all its parts
    (weighted by images), which boxes work on it, when it should end, and where its results are."""
    members = members_of(snap, key)
    if len(members) < 2:
        return None
    own = next((t for t in members if t.uuid == key), None)
    if own is not None:  # a linked job: its own task's progress follows its parts and ends with the merge
        return _linked_summary(own, members, boxes_of, etas, snap)
    weights = [max(t.images_count, 1) for t in members]
    done = [TaskStatus(t.status).finished for t in members]
    progress = sum(w * (100.0 if d else t.progress) for t, w, d in zip(members, weights, done)) / sum(weights)
    working = sorted({boxes_of.get(url, host_port(url)) for t, d in zip(members, done)
                      if not d and (url := snap.node_url(t))})
    completed = sum(1 for t in members if t.status == TaskStatus.COMPLETED)
    failed = sum(1 for t in members if t.status == TaskStatus.FAILED)
    left = [etas.get(t.uuid) for t, d in zip(members, done) if not d]
    eta = "" if all(done) or not left or None in left else eta_text(max(x for x in left if x is not None))
    return JobSummary(key=key, title=job_title([t.name for t in members]), url=f"/ui/jobs/{key}",
                      parts=len(members), done=completed, failed=failed, progress=round(progress, 1),
                      boxes=working, eta=eta, finished=all(done),
                      outcome=_job_outcome(len(members), completed, failed) if all(done) else "")


def _linked_summary(own: Task, members: list[Task], boxes_of: dict[str, str], etas: dict[str, float | None],
                    snap: Snapshot) -> JobSummary:
    """A job started as one split task: it is done when that task has merged its parts, so its own
    status and progress speak for the job; the parts are counted beside it."""
    parts = [t for t in members if t is not own]
    status = TaskStatus(own.status)
    working = sorted({boxes_of.get(url, host_port(url)) for t in members
                      if not TaskStatus(t.status).finished and (url := snap.node_url(t))})
    eta = "" if status.finished else eta_text(etas.get(own.uuid))
    return JobSummary(key=own.uuid, title=_title(own.uuid, members), url=f"/ui/jobs/{own.uuid}",
                      parts=len(parts), done=sum(1 for t in parts if t.status == TaskStatus.COMPLETED),
                      failed=sum(1 for t in parts if t.status == TaskStatus.FAILED),
                      progress=round(100.0 if status == TaskStatus.COMPLETED else own.progress, 1),
                      boxes=working, eta=eta, finished=status.finished, outcome=_linked_outcome(own, status),
                      parent=own.uuid)


def _linked_outcome(own: Task, status: TaskStatus) -> str:
    if status == TaskStatus.COMPLETED:
        return (f"Done: {own.name} merged its parts; the results are in its all.zip, downloaded from its page.")
    if status == TaskStatus.FAILED:
        return f"{own.name} failed, so the job has no results: open it to see why and restart it."
    if status == TaskStatus.CANCELED:
        return f"{own.name} was canceled, so the job has no results."
    return ""


def _job_outcome(parts: int, completed: int, failed: int) -> str:
    if completed == parts:
        return (f"All {parts} parts are done: each part's results are in its own all.zip, downloaded from its "
                "page (the list below); ODM, if it sent the job, collects and merges them itself.")
    if failed:
        return (f"{failed} of {parts} parts failed, so the job is incomplete: open a failed part below to see "
                "why and restart it.")
    return f"{completed} of {parts} parts finished with results; the others were canceled."
