"""Reads a nemesis history (tests/nemesis.py) and says what went wrong, as Jepsen's checkers do.

Pure: a history in, a verdict out, so each rule is tested on small made-up histories
(tests/test_nemesis.py) as well as on real runs. What it asserts:

1. every submodel completes, with its outputs, within the job's time limit;
2. exactly once: no box's final table lists a submodel twice (uploads never committed aside: ODM
   does not remove an upload that failed, and they never run) or a task its client removed, no node
   still runs a task of the job at the end, or holds one its client removed, no task runs on two nodes at once, and no task
   its client removed (and so sent again) is still running on a node 10 s after the last heal;
3. no COMPLETED answered for a task whose all.zip then fails to download (an error or an empty
   answer; a connection that breaks because the client's own box died is counted apart);
4. no status moves backwards for the client (QUEUED < RUNNING < FAILED/COMPLETED/CANCELED);
5. no task the client was given is answered not-found while the passel is whole: no fault active,
   and none undone in the 12 s before (a lease, and the grace, with room);
6. after the last heal, every box follows the same coordinator, sees every other box, and knows the
   same tasks and tombstones within CONVERGE_LIMIT_SECONDS (the convergence time is reported); at
   the end, every box holds the very same table;
7. no staged upload or results copy is left on any box for a task that is no longer live (a task
   whose removal failed is still its client's, and keeps its files; an upload never committed whose
   row died with its coordinator is kept a day, and only counted).

It reports, without failing on them: the client's resubmissions (work sent again under a new
uuid), error replies, slowest reply, the copies of removed tasks that ran during a partition, the
job's duration, and any fault the harness could not make.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

GONE = ("removed", "lost")
QUEUED, RUNNING = 10, 20
FINISHED_CODES = (30, 40, 50)
CONVERGE_LIMIT_SECONDS = 30.0
WHOLE_AFTER_SECONDS = 12.0
ORPHAN_SLACK_SECONDS = 10.0


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


def _rank(code: int) -> int:
    return 2 if code in FINISHED_CODES else (1 if code == RUNNING else 0)


def _uuid_of(path: str) -> str | None:
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "task" and parts[1] not in ("new", "list", "remove", "cancel", "restart"):
        return parts[1]
    if len(parts) == 4 and parts[:2] == ["task", "new"] and parts[2] in ("upload", "commit"):
        return parts[3]
    return None


def _error_of(event: dict[str, Any]) -> str | None:
    if "error" in event:
        return str(event["error"])
    if event.get("http") != 200:
        return f"HTTP {event.get('http')}"
    reply = event.get("reply")
    return str(reply["error"]) if isinstance(reply, dict) and "error" in reply else None


class _Reading:
    """The history, indexed the ways the rules need."""

    def __init__(self, history: dict[str, Any]) -> None:
        self.events = sorted(history["events"], key=lambda e: e["t"])
        self.schedule = history["schedule"]
        self.replies = [e for e in self.events if e["kind"] == "reply"]
        self.snapshots = [e for e in self.events if e["kind"] == "snapshot"]
        self.end = next((e for e in self.events if e["kind"] == "job-end"), None)
        self.final = next((e for e in self.events if e["kind"] == "final"), None)
        faults = [e for e in self.events if e["kind"] == "fault"]
        heals = {e["id"]: e["t"] for e in self.events if e["kind"] == "heal"}
        end_t = self.events[-1]["t"] if self.events else 0.0
        self.fault_spans = [(f["t"], heals.get(f["id"], end_t), f) for f in faults]
        self.last_heal = max((until for _, until, _ in self.fault_spans), default=0.0)
        self.submodel_of = {u: s["name"] for s in (self.end or {}).get("submodels", []) for u in s["uuids"]}
        self.given: dict[str, float] = {}   # uuid -> when init answered it
        self.removed: dict[str, float] = {}  # uuid -> when the client's removal was answered success
        for e in self.replies:
            reply = e.get("reply")
            if e["path"] == "/task/new/init" and isinstance(reply, dict) and "uuid" in reply:
                self.given.setdefault(reply["uuid"], e["t"])
            if e["path"] == "/task/remove" and isinstance(reply, dict) and reply.get("success"):
                self.removed.setdefault(str(e.get("uuid", "")), e["t"])

    def whole_at(self, t: float) -> bool:
        """No fault active at `t`, and none undone in the WHOLE_AFTER_SECONDS before."""
        return all(not (start <= t <= until + WHOLE_AFTER_SECONDS) for start, until, _ in self.fault_spans)


def check(history: dict[str, Any]) -> Verdict:
    """Every rule of the module docstring over one history."""
    r = _Reading(history)
    verdict = Verdict()
    for rule in (_completion, _exactly_once, _no_stale_completed, _never_backwards, _no_false_not_found,
                 _convergence, _no_leaks):
        rule(r, verdict)
    _report(r, verdict)
    return verdict


def _completion(r: _Reading, v: Verdict) -> None:
    if r.end is None or not r.end.get("finished"):
        v.violations.append("stuck: the job did not finish within its time limit")
    for sub in (r.end or {}).get("submodels", []):
        if sub["status"] != "completed" or not sub["outputs"]:
            v.violations.append(f"lost: submodel {sub['name']} ended {sub['status']!r} (uuids {sub['uuids']})")


def _exactly_once(r: _Reading, v: Verdict) -> None:
    final_boxes = (r.final or {}).get("boxes", {})
    uploads_left: set[str] = set()
    for index, box in final_boxes.items():
        live: dict[str, list[str]] = defaultdict(list)
        for uuid, (phase, *_rest) in (box.get("table") or {}).items():
            if phase == "uploading":  # never committed, never run: ODM does not remove an upload that failed
                uploads_left.add(uuid)
            elif phase not in GONE:
                live[r.submodel_of.get(uuid, uuid)].append(uuid)
                if uuid in r.removed:
                    v.violations.append(f"undone removal: box {index} still lists task {uuid} ({phase}), "
                                        "which its client removed")
        v.violations += [f"duplicated: box {index} lists submodel {name} {len(us)} times: {us}"
                         for name, us in live.items() if len(us) > 1]
        for uuid, code in (box.get("node") or {}).items():
            if code in (QUEUED, RUNNING):
                v.violations.append(f"duplicated: node of box {index} still runs task {uuid} at the end")
            elif uuid in r.removed:
                v.violations.append(f"leaked: node of box {index} still holds task {uuid}, removed by its client")
    orphan_runs: set[str] = set()
    for snap in r.snapshots:
        running: dict[str, list[str]] = defaultdict(list)
        for index, box in snap["boxes"].items():
            for uuid, code in (box.get("node") or {}).items():
                if code == RUNNING:
                    running[uuid].append(index)
        for uuid, where in running.items():
            if len(where) > 1:
                v.violations.append(f"duplicated: task {uuid} ran on the nodes of boxes {where} at {snap['t']} s")
            removed_at = r.removed.get(uuid)
            if removed_at is not None and snap["t"] > removed_at + 1:
                orphan_runs.add(uuid)
                if snap["t"] > max(removed_at, r.last_heal) + ORPHAN_SLACK_SECONDS:
                    v.violations.append(f"duplicated: task {uuid}, removed by its client at {removed_at} s, still "
                                        f"ran at {snap['t']} s")
    v.report["orphan_runs"] = len(orphan_runs)
    v.report["uploads_left_uncommitted"] = len(uploads_left)


def _no_stale_completed(r: _Reading, v: Verdict) -> None:
    completed_at: dict[str, float] = {}
    for e in r.replies:
        uuid = _uuid_of(e["path"])
        reply = e.get("reply")
        if uuid and e["path"].endswith("/info") and isinstance(reply, dict) \
                and (reply.get("status") or {}).get("code") == 40:
            completed_at.setdefault(uuid, e["t"])
        if uuid in completed_at and e["path"].endswith("/download/all.zip"):
            if "error" in e:  # no answer at all: the box the client talks to died meanwhile, not a stale answer
                v.report["downloads_cut"] = v.report.get("downloads_cut", 0) + 1
            elif e.get("http") != 200 or not e.get("bytes"):
                v.violations.append(f"stale COMPLETED: task {uuid} was answered COMPLETED at {completed_at[uuid]} s, "
                                    f"then its download failed at {e['t']} s ({_error_of(e) or 'empty'})")
            completed_at.pop(uuid)


def _never_backwards(r: _Reading, v: Verdict) -> None:
    last: dict[str, int] = {}
    for e in sorted(r.replies, key=lambda e: e["sent"]):
        uuid, reply = _uuid_of(e["path"]), e.get("reply")
        if not uuid or not e["path"].endswith("/info") or not isinstance(reply, dict) or "status" not in reply:
            continue
        code = int(reply["status"]["code"])
        before = last.get(uuid)
        if before is not None and (_rank(code) < _rank(before) or (_rank(before) == 2 and code != before)):
            v.violations.append(f"backwards: task {uuid} went from status {before} to {code} at {e['t']} s")
        last[uuid] = code


def _no_false_not_found(r: _Reading, v: Verdict) -> None:
    during_faults = 0
    for e in r.replies:
        uuid, error = _uuid_of(e["path"]), _error_of(e)
        if not uuid or not error or "not found" not in error or uuid not in r.given:
            continue
        if uuid in r.removed and r.removed[uuid] <= e["sent"]:
            continue
        if r.whole_at(e["sent"]) and r.whole_at(e["t"]):
            v.violations.append(f"false not-found: task {uuid} was answered {error!r} at {e['t']} s, "
                                "while every box was up and connected")
        else:
            during_faults += 1
    v.report["not_found_during_faults"] = during_faults


def _tasks_known(box: dict[str, Any]) -> str:
    return json.dumps(sorted((u, row[0] in GONE) for u, row in (box.get("table") or {}).items()))


def _agreed(boxes: dict[str, Any], whole_table: bool) -> bool:
    views = [b.get("view") for b in boxes.values()]
    if not all(views) or len({w["coordinator"] for w in views}) != 1 or None in {w["coordinator"] for w in views}:
        return False
    if any(len(w["alive"]) != len(views) - 1 for w in views):
        return False
    tables = {json.dumps(b.get("table"), sort_keys=True) if whole_table else _tasks_known(b) for b in boxes.values()}
    return len(tables) == 1 and all(b.get("table") is not None for b in boxes.values())


def _convergence(r: _Reading, v: Verdict) -> None:
    if r.final is not None and not _agreed(r.final["boxes"], whole_table=True):
        silent = "; ".join(f"box {i} gave no view ({b['unanswered']})" for i, b in r.final["boxes"].items()
                           if b.get("unanswered"))
        v.violations.append("no convergence: at the end, the boxes' coordinators or task tables differ"
                            + (f": {silent}" if silent else ""))
    if not r.fault_spans:
        v.report["convergence_seconds"] = None
        return
    after = [s for s in [*r.snapshots, *([r.final] if r.final else [])] if s["t"] >= r.last_heal]
    first = next((s for s in after if _agreed(s["boxes"], whole_table=False)), None)
    if first is None or first["t"] - r.last_heal > CONVERGE_LIMIT_SECONDS:
        v.violations.append(f"no convergence: the boxes did not agree within {CONVERGE_LIMIT_SECONDS:.0f} s "
                            f"of the last heal at {r.last_heal} s")
    v.report["convergence_seconds"] = round(first["t"] - r.last_heal, 2) if first else None


def _no_leaks(r: _Reading, v: Verdict) -> None:
    """A task whose removal failed is still the client's (it may download it again): its files stay.
    So does, for a day (cluster/lifecycle.py), an upload its client never committed whose row no box
    lists: its coordinator died with the row before any replica copied it (seed 282)."""
    tables = [b.get("table") or {} for b in ((r.final or {}).get("boxes") or {}).values()]
    live = {u for table in tables for u, row in table.items() if row[0] not in GONE}
    listed = {u for table in tables for u in table}
    committed = {_uuid_of(e["path"]) for e in r.replies if e["path"].startswith("/task/new/commit/") and not _error_of(e)}
    without_row = 0
    for index, kept in ((r.final or {}).get("leftovers") or {}).items():
        leaked = []
        for name in kept:
            uuid = name.split("/")[-1][:36]
            if uuid in live:
                continue
            if name.startswith("staging/") and uuid in r.given and uuid not in committed and uuid not in listed:
                without_row += 1
            else:
                leaked.append(name)
        if leaked:
            v.violations.append(f"leaked: box {index} still keeps {leaked}")
    v.report["uploads_left_without_row"] = without_row


def _report(r: _Reading, v: Verdict) -> None:
    subs = (r.end or {}).get("submodels", [])
    errors = [e for e in r.replies if _error_of(e)]
    slowest = max(r.replies, key=lambda e: e.get("seconds", 0), default=None)
    v.report |= {
        "job_seconds": r.end["t"] if r.end else None,
        # work sent again under a new uuid; tries that never got a uuid (the entry box down) sent nothing
        "resubmissions": sum(max(len(s["uuids"]) - 1, 0) for s in subs),
        "error_replies": len(errors),
        "slowest_reply": {"seconds": round(slowest["seconds"], 2), "path": slowest["path"]} if slowest else None,
        "faults": [f"{f['kind']}@box{f['box']} {f['at']}+{f['hold']}s" for f in r.schedule],
        # a fault the harness could not make: the seed did not test what its schedule says
        "faults_not_made": [f"{e['fault']} at {e['t']} s: {e['error']}" for e in r.events
                            if e["kind"] == "nemesis-error"],
    }
