"""Discovery and failover: how long does a box take to join a passel, and how long does the passel take
to have a coordinator again after the coordinator's agent is killed with `kill -9`?

Everything runs in network namespaces on a bridge (tests/netns.py). Each box runs its own simulated
NodeODM and its own agent (`python -m appliance run`). The benchmark process has a veth on the same
bridge and acts as a client on the field network. Every run builds a fresh bridge, so no run inherits
caches, leases or terms from the previous one.

* **join**: 2 boxes run and have settled on one coordinator. A 3rd box starts (its simnode first,
  then its agent). Three threads poll every 50 ms from the moment the agent process is started:
  the new agent's `GET /-/passel.json` (API ready), the coordinator's `GET /-/passel.json` (the new
  box listed alive) and the coordinator's `GET /-/nodes` (the new box's NodeODM listed online).
* **failover**: 3 boxes have settled. The coordinator's agent gets SIGKILL. One thread per survivor
  polls every 50 ms: its `GET /-/passel.json` until it names a coordinator other than the killed one,
  then its `GET /info` until `maxParallelTasks > 0`. The failover time is the first survivor to
  answer; the time until both answer is reported too.
* **commit**: before that kill, 10 small tasks go straight to the coordinator (init, one upload,
  commit). A commit is answered only once both followers hold the task (replication.py), so its
  latency is compared with the init's, which writes the same row without waiting. The last commit
  is followed at once by the kill, and the new coordinator must know that task.

    cd /work/main && /tmp/venv/bin/python bench/discovery.py [--runs 5] [--json] [--keep]

Needs root (network namespaces). Results go to bench/results/discovery.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
import common  # noqa: E402
from tests.netns import Bridge, netns_available, wait_until  # noqa: E402

RESULTS = REPO / "bench" / "results" / "discovery.json"
POLL = 0.05            # seconds between polls, as the brief asks
HTTP_TIMEOUT = 1.0     # short: a poll that hangs must not hide the moment the answer changes
INFO_TIMEOUT = 2.0     # /info on a follower is relayed to the coordinator: allow one hop more
MEASURE_LIMIT = 60.0   # a run that has not finished by then is recorded as a failure
COMMITS = 10
JPEG = b"\xff\xd8" + b"\0" * 4000 + b"\xff\xd9"
TARGET_JOIN_S = 2.0
TARGET_FAILOVER_S = 10.0
# ClusterODM (for the comparison line): nodes are added by hand; their health is polled every 60 s
# and a node is offline after 2 min without an answer; there is no coordinator failover at all.
CLUSTERODM = {"join": "manual (a human adds the node)", "dead_node_offline_s": 120.0,
              "health_poll_s": 60.0, "coordinator_failover": None}

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def say(*parts: Any) -> None:
    print("[discovery]", *parts, file=sys.stderr, flush=True)


def get_json(url: str, timeout: float = HTTP_TIMEOUT) -> Any:
    with _opener.open(url, timeout=timeout) as reply:
        return json.loads(reply.read())


def view(box, timeout: float = HTTP_TIMEOUT) -> dict[str, Any]:  # noqa: ANN001
    return get_json(box.api + "/-/passel.json", timeout)


def coordinator_id(v: dict[str, Any]) -> str | None:
    return (v.get("coordinator") or {}).get("id")


# -- polling ------------------------------------------------------------------------------------

class Poller(threading.Thread):
    """Calls `probe` every POLL seconds (fixed cadence from `t0`) until it returns something truthy.

    `probe` returns a value, or None / raises while the condition does not hold yet. `found_at` is the
    monotonic time at which the successful probe returned."""

    def __init__(self, name: str, t0: float, probe: Callable[[], Any], limit: float = MEASURE_LIMIT) -> None:
        super().__init__(name=name, daemon=True)
        self.t0, self.probe, self.deadline = t0, probe, t0 + limit
        self.found_at: float | None = None
        self.value: Any = None
        self.polls = 0
        self.last: Any = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        tick = 0
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            self.polls += 1
            try:
                value = self.probe()
            except Exception as exc:  # noqa: BLE001 - connection refused etc. mean "not yet"
                value, self.last = None, f"{type(exc).__name__}: {exc}"
            if value:
                self.found_at, self.value = time.monotonic(), value
                return
            tick += 1
            next_at = self.t0 + tick * POLL
            now = time.monotonic()
            if next_at < now:  # a slow probe: skip the missed ticks, keep the cadence
                tick = int((now - self.t0) / POLL) + 1
                next_at = self.t0 + tick * POLL
            self.stop_event.wait(max(0.0, next_at - now))

    def since(self, start: float | None) -> float | None:
        if self.found_at is None or start is None:
            return None
        return round(self.found_at - start, 3)


class InfoWatcher(threading.Thread):
    """A plain client of a survivor's `GET /info`, every POLL seconds from the kill until stopped: what it
    got back (errors by message, answers with no capacity) and the slowest answer."""

    def __init__(self, box, t0: float) -> None:  # noqa: ANN001
        super().__init__(name=f"info-box{box.index}", daemon=True)
        self.box, self.t0 = box, t0
        self.stop_event = threading.Event()
        self.polls = 0
        self.outcomes: dict[str, list[float]] = {}  # outcome -> [first s, last s, count]
        self.slowest = (0.0, 0.0)  # (latency s, at s)
        self.first_ok: float | None = None

    def note(self, outcome: str, at: float) -> None:
        seen = self.outcomes.setdefault(outcome[:160], [round(at, 3), round(at, 3), 0])
        seen[1], seen[2] = round(at, 3), seen[2] + 1

    def run(self) -> None:
        while not self.stop_event.is_set() and time.monotonic() < self.t0 + MEASURE_LIMIT:
            began = time.monotonic()
            self.polls += 1
            try:
                info = get_json(self.box.api + "/info", INFO_TIMEOUT)
                if info.get("error"):
                    outcome = f"error reply: {info['error']}"
                elif int(info.get("maxParallelTasks") or 0) > 0:
                    outcome = "ok"
                else:
                    outcome = f"no capacity: maxParallelTasks={info.get('maxParallelTasks')!r}"
            except Exception as exc:  # noqa: BLE001
                outcome = f"{type(exc).__name__}: {exc}"
            done = time.monotonic()
            self.note(outcome, began - self.t0)
            if done - began > self.slowest[0]:
                self.slowest = (round(done - began, 3), round(began - self.t0, 3))
            if outcome == "ok" and self.first_ok is None:
                self.first_ok = round(done - self.t0, 3)
            self.stop_event.wait(max(0.0, POLL - (time.monotonic() - began)))

    def summary(self) -> dict[str, Any]:
        return {"polls": self.polls, "first_ok_s": self.first_ok, "slowest_s": self.slowest[0],
                "slowest_at_s": self.slowest[1],
                "outcomes": [{"outcome": k, "first_s": v[0], "last_s": v[1], "count": v[2]}
                             for k, v in sorted(self.outcomes.items(), key=lambda kv: kv[1][0])]}


# -- settling ----------------------------------------------------------------------------------

def start_box(box, priority: int, poll_seconds: float) -> None:  # noqa: ANN001
    box.start_simnode(seconds_per_image=0.05)
    wait_simnode(box)
    box.start_agent("--priority", str(priority), "--poll-seconds", str(poll_seconds))


def wait_simnode(box) -> None:  # noqa: ANN001
    """The agent shares http://127.0.0.1:3001 only if it answers when the agent starts: wait for it."""
    wait_until(lambda: get_json(f"http://{box.address}:3001/info").get("maxParallelTasks"), 30,
               f"simnode of box{box.index}", interval=0.1)


def settled(boxes) -> str | None:  # noqa: ANN001
    """The coordinator id when every box sees every other alive and all agree on one coordinator."""
    views = [view(box) for box in boxes]
    ids = {coordinator_id(v) for v in views}
    if len(ids) != 1 or None in ids:
        return None
    if not all(sum(b["alive"] for b in v["boxes"]) == len(boxes) for v in views):
        return None
    return ids.pop()


def box_of(boxes, box_id: str):  # noqa: ANN001, ANN201
    return next(box for box in boxes if view(box)["self"]["id"] == box_id)


def nodes_online(box, count: int) -> bool:  # noqa: ANN001
    nodes = get_json(box.api + "/-/nodes")
    return sum(1 for n in nodes if n.get("online")) >= count


def settle(boxes, timeout: float = 60) -> tuple[str, Any]:  # noqa: ANN001
    leader_id = wait_until(lambda: settled(boxes), timeout, "the passel to settle on one coordinator", interval=0.2)
    leader = box_of(boxes, leader_id)
    wait_until(lambda: nodes_online(leader, len(boxes)), 30, "every node online at the coordinator", interval=0.2)
    time.sleep(1.0)  # a quiet second: the measurement starts from a steady passel
    again = settled(boxes)
    if again != leader_id:
        raise AssertionError(f"coordinator changed while settling: {leader_id} -> {again}")
    return leader_id, leader


# -- one join run -----------------------------------------------------------------------------

def join_run(workdir: Path, poll_seconds: float) -> dict[str, Any]:
    bridge = Bridge(3, workdir)
    try:
        b1, b2, b3 = bridge.boxes
        for box in (b1, b2):
            start_box(box, box.index, poll_seconds)
        leader_id, leader = settle([b1, b2])
        # The new box's NodeODM runs before its agent, as on a box whose services start in order.
        b3.start_simnode(seconds_per_image=0.05)
        wait_simnode(b3)
        node_url = f"http://{b3.address}:3001"

        def api_ready() -> Any:
            return view(b3)["self"]["id"]

        def alive_at_coordinator() -> Any:
            return next((b for b in view(leader)["boxes"] if b["name"] == "box3" and b["alive"]), None)

        def node_at_coordinator() -> Any:
            return next((n for n in get_json(leader.api + "/-/nodes") if n["url"] == node_url and n["online"]), None)

        def follows() -> Any:
            return coordinator_id(view(b3)) == leader_id

        t0 = time.monotonic()
        b3.start_agent("--priority", "3", "--poll-seconds", str(poll_seconds))
        pollers = {name: Poller(name, t0, probe) for name, probe in (
            ("api", api_ready), ("alive", alive_at_coordinator), ("node", node_at_coordinator),
            ("follows", follows))}
        for p in pollers.values():
            p.start()
        for p in pollers.values():
            p.join(MEASURE_LIMIT + 5)
        api_at = pollers["api"].found_at
        result: dict[str, Any] = {
            "api_ready_from_start_s": pollers["api"].since(t0),
            "alive_from_api_s": pollers["alive"].since(api_at),
            "alive_from_start_s": pollers["alive"].since(t0),
            "node_online_from_api_s": pollers["node"].since(api_at),
            "node_online_from_start_s": pollers["node"].since(t0),
            "new_box_follows_from_api_s": pollers["follows"].since(api_at),
            "new_box_id": pollers["api"].value,
        }
        missing = [name for name, p in pollers.items() if p.found_at is None]
        if missing:
            result["error"] = "; ".join(f"{n} never happened (last: {pollers[n].last})" for n in missing)
        after = settled([b1, b2, b3]) if not missing else None
        result["coordinator_unchanged"] = after == leader_id  # sticky: a better box does not take over
        result["logs"] = log_notes(bridge)
        return result
    finally:
        bridge.close()


# -- one failover run -------------------------------------------------------------------------

def commit_latencies(leader) -> tuple[dict[str, Any], str]:  # noqa: ANN001
    """Init and commit times of small tasks sent straight to the coordinator; the last task's uuid."""
    import requests
    inits, commits, uuid = [], [], ""
    with requests.Session() as session:
        session.trust_env = False  # never through a proxy
        for i in range(COMMITS):
            began = time.monotonic()
            uuid = session.post(f"{leader.api}/task/new/init", data={"name": f"bench-{i}"}, timeout=10).json()["uuid"]
            inits.append(time.monotonic() - began)
            session.post(f"{leader.api}/task/new/upload/{uuid}", files={"images": ("IMG_0001.JPG", JPEG)}, timeout=10)
            began = time.monotonic()
            assert session.post(f"{leader.api}/task/new/commit/{uuid}", timeout=10).json() == {"uuid": uuid}
            commits.append(time.monotonic() - began)
    init_ms, commit_ms = statistics.median(inits) * 1000, statistics.median(commits) * 1000
    return {"init_median_ms": round(init_ms, 1), "commit_median_ms": round(commit_ms, 1),
            "commit_max_ms": round(max(commits) * 1000, 1), "commit_over_init": round(commit_ms / init_ms, 2)}, uuid


def failover_run(workdir: Path, poll_seconds: float) -> dict[str, Any]:
    bridge = Bridge(3, workdir)
    try:
        for box in bridge.boxes:
            start_box(box, box.index, poll_seconds)
        leader_id, leader = settle(bridge.boxes)
        survivors = [box for box in bridge.boxes if box is not leader]
        for box in survivors:  # the entry points answer before the kill
            wait_until(lambda b=box: int(get_json(b.api + "/info", INFO_TIMEOUT).get("maxParallelTasks") or 0) > 0,
                       15, f"/info on box{box.index} before the kill", interval=0.2)
        term_before = view(leader)["term"]
        commits, last_uuid = commit_latencies(leader)

        marks: dict[int, dict[str, float]] = {box.index: {} for box in survivors}
        t0 = time.monotonic()

        def probe_for(box):  # noqa: ANN001, ANN202
            seen = marks[box.index]

            def probe() -> Any:
                v = view(box)
                now = time.monotonic()
                old = next((b for b in v["boxes"] if b["id"] == leader_id), None)
                if "old_lost" not in seen and (old is None or not old["alive"]):
                    seen["old_lost"] = now
                new_id = coordinator_id(v)
                if new_id is None or new_id == leader_id:
                    return None
                seen.setdefault("new_coordinator", now)
                info = get_json(box.api + "/info", INFO_TIMEOUT)
                if int(info.get("maxParallelTasks") or 0) <= 0:
                    return None
                return {"coordinator": new_id, "term": v["term"], "max_parallel_tasks": info["maxParallelTasks"]}
            return probe

        leader.signal("agent", signal.SIGKILL)  # SIGKILL, then reaped; t0 was taken just before
        pollers = [Poller(f"box{box.index}", t0, probe_for(box)) for box in survivors]
        watchers = [InfoWatcher(box, t0) for box in survivors]  # what a client of /info sees meanwhile
        for p in [*pollers, *watchers]:
            p.start()
        for p in pollers:
            p.join(MEASURE_LIMIT + 5)
        for w in watchers:
            w.stop_event.set()
            w.join(INFO_TIMEOUT + 5)
        done = [p for p in pollers if p.found_at is not None]
        per_box = {}
        for box, p in zip(survivors, pollers):
            seen = marks[box.index]
            per_box[f"box{box.index}"] = {
                "old_not_alive_s": round(seen["old_lost"] - t0, 3) if "old_lost" in seen else None,
                "new_coordinator_seen_s": round(seen["new_coordinator"] - t0, 3) if "new_coordinator" in seen else None,
                "info_served_s": p.since(t0), "answer": p.value,
                "info_during_gap": watchers[survivors.index(box)].summary(),
                **({"last_error": p.last} if p.found_at is None else {})}
        result: dict[str, Any] = {
            "killed": f"box{leader.index}", "killed_id": leader_id, "term_before": term_before,
            "failover_s": round(min(p.found_at for p in done) - t0, 3) if done else None,
            "all_survivors_served_s": round(max(p.found_at for p in done) - t0, 3) if len(done) == len(pollers) else None,
            "survivors": per_box,
        }
        new_ids = {p.value["coordinator"] for p in done}
        if len(done) != len(pollers):
            result["error"] = "a survivor never answered /info under a new coordinator"
        elif len(new_ids) != 1:
            result["error"] = f"survivors disagree on the new coordinator: {sorted(new_ids)}"
        else:
            new_id = new_ids.pop()
            result["new_coordinator"] = next(f"box{b.index}" for b in survivors if view(b)["self"]["id"] == new_id)
            result["term_after"] = max(p.value["term"] for p in done)
        if done:
            known = get_json(f"{survivors[0].api}/task/{last_uuid}/info", INFO_TIMEOUT)
            commits["last_commit_known_after_failover"] = "status" in known
        result["commit"] = commits
        result["logs"] = log_notes(bridge)
        return result
    finally:
        bridge.close()


# -- logs ---------------------------------------------------------------------------------------

NOTEWORTHY = re.compile(r"Traceback|ERROR|CRITICAL|WARNING|Exception|exception|failed", re.ASCII)


def log_notes(bridge, limit: int = 12) -> dict[str, Any]:  # noqa: ANN001
    """Lines worth a look in every box's logs (errors, warnings, tracebacks), capped per file."""
    notes: dict[str, Any] = {}
    for box in bridge.boxes:
        for name in ("agent", "simnode"):
            lines = [line for line in box.log(name).splitlines() if NOTEWORTHY.search(line)]
            if lines:
                notes[f"box{box.index}/{name}"] = {"count": len(lines), "first": lines[:limit]}
    return notes


# -- machine and summary --------------------------------------------------------------------------

def stats(values: list[float | None]) -> dict[str, Any]:
    got = [v for v in values if v is not None]
    if not got:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": round(statistics.median(got), 3), "min": min(got), "max": max(got), "n": len(got)}


def error_window(run: dict[str, Any]) -> float | None:
    """Until when (s after the kill) a client of a survivor's /info still got errors."""
    ends = [o["last_s"] for s in run.get("survivors", {}).values()
            for o in (s.get("info_during_gap") or {}).get("outcomes", []) if o["outcome"] != "ok"]
    return max(ends) if ends else None


def summarize(joins: list[dict[str, Any]], failovers: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("api_ready_from_start_s", "alive_from_api_s", "alive_from_start_s", "node_online_from_api_s",
            "node_online_from_start_s", "new_box_follows_from_api_s")
    summary: dict[str, Any] = {"join": {k: stats([r.get(k) for r in joins]) for k in keys}}
    summary["join"]["failed_runs"] = sum(1 for r in joins if "error" in r)
    summary["join"]["coordinator_unchanged_runs"] = sum(1 for r in joins if r.get("coordinator_unchanged"))
    summary["failover"] = {
        "failover_s": stats([r.get("failover_s") for r in failovers]),
        "all_survivors_served_s": stats([r.get("all_survivors_served_s") for r in failovers]),
        "old_not_alive_s": stats([min((s["old_not_alive_s"] for s in r["survivors"].values()
                                       if s["old_not_alive_s"] is not None), default=None) for r in failovers]),
        "info_errors_until_s": stats([error_window(r) for r in failovers]),
        "failed_runs": sum(1 for r in failovers if "error" in r)}
    commits = [r["commit"] for r in failovers if "commit" in r]
    summary["commit"] = {
        **{k: stats([c[k] for c in commits]) for k in ("init_median_ms", "commit_median_ms", "commit_over_init")},
        "last_commit_known_after_failover": f"{sum(bool(c.get('last_commit_known_after_failover')) for c in commits)}"
                                            f" of {len(commits)}"}
    join_med = summary["join"]["alive_from_api_s"]["median"]
    fail_med = summary["failover"]["failover_s"]["median"]
    summary["targets"] = {
        "join_alive_from_api_s": {"target": TARGET_JOIN_S, "median": join_med,
                                  "met": join_med is not None and join_med <= TARGET_JOIN_S},
        "failover_s": {"target": TARGET_FAILOVER_S, "median": fail_med,
                       "met": fail_med is not None and fail_med <= TARGET_FAILOVER_S}}
    summary["vs_clusterodm"] = {
        "join": "ClusterODM: a human adds the node (NODE ADD / admin UI); Passel: automatic",
        "dead_node_vs_passel_coordinator_failover_ratio": (round(CLUSTERODM["dead_node_offline_s"] / fail_med, 1)
                                                           if fail_med else None),
        "coordinator_failover": "ClusterODM has none: if the ClusterODM host dies, the cluster is down"}
    return summary


def fmt(s: dict[str, Any]) -> str:
    if s["median"] is None:
        return "n/a"
    return f"{s['median']:6.2f} s  [{s['min']:.2f}-{s['max']:.2f}]"


def table(summary: dict[str, Any], runs: int) -> str:
    j, f = summary["join"], summary["failover"]
    join_rows = [
        ("join: agent API answers, from process start", fmt(j["api_ready_from_start_s"]), "-"),
        ("join: alive at coordinator, from API ready", fmt(j["alive_from_api_s"]), "needs a human"),
        ("join: alive at coordinator, from process start", fmt(j["alive_from_start_s"]), "needs a human"),
        ("join: its NodeODM online, from API ready", fmt(j["node_online_from_api_s"]), "needs a human"),
        ("join: its NodeODM online, from process start", fmt(j["node_online_from_start_s"]), "needs a human"),
        ("join: new box follows the coordinator (from API)", fmt(j["new_box_follows_from_api_s"]), "-")]
    failover_rows = [
        ("failover: dead coordinator no longer alive", fmt(f["old_not_alive_s"]), "-"),
        ("failover: /info served by a new coordinator", fmt(f["failover_s"]), "none (no failover)"),
        ("failover: both survivors served", fmt(f["all_survivors_served_s"]), "none"),
        ("failover: /info answered errors until", fmt(f["info_errors_until_s"]), "-"),
        ("dead node marked offline", "see failover", f"{CLUSTERODM['dead_node_offline_s']:.0f} s"),
    ]
    c = summary["commit"]
    if c["commit_median_ms"]["median"] is not None:
        failover_rows += [
            ("commit, held until both followers copied it", f"{c['commit_median_ms']['median']:.1f} ms", "-"),
            ("init (the same row, not held)", f"{c['init_median_ms']['median']:.1f} ms", "-"),
            ("commit / init", f"{c['commit_over_init']['median']:.2f}x", "-"),
            ("task committed just before the kill, known after",
             c["last_commit_known_after_failover"], "task table lost on a crash")]
    ran_join, ran_failover = j["api_ready_from_start_s"]["n"] > 0, f["failover_s"]["n"] > 0
    rows = (join_rows if ran_join else []) + (failover_rows if ran_failover else [])
    if not rows:
        return "no run finished; see the JSON for the errors"
    width = max(len(r[0]) for r in rows)
    out = [f"Discovery and failover in network namespaces: median [min-max] of {runs} runs each", "",
           f"{'':{width}}  {'Passel':<24}  ClusterODM", f"{'-' * width}  {'-' * 24}  {'-' * 20}"]
    out += [f"{a:{width}}  {b:<24}  {c}" for a, b, c in rows]
    t = summary["targets"]
    out.append("")
    if ran_join:
        out.append(f"target join <= {TARGET_JOIN_S:.0f} s (from API ready): median {t['join_alive_from_api_s']['median']} s "
                   f"-> {'met' if t['join_alive_from_api_s']['met'] else 'NOT met'}; "
                   f"from process start: {j['alive_from_start_s']['median']} s")
    if ran_failover:
        out.append(f"target failover <= {TARGET_FAILOVER_S:.0f} s: median {t['failover_s']['median']} s "
                   f"-> {'met' if t['failover_s']['met'] else 'NOT met'}")
    ratio = summary["vs_clusterodm"]["dead_node_vs_passel_coordinator_failover_ratio"]
    parts = []
    if ran_failover:
        parts.append(f"a dead node is offline after {CLUSTERODM['dead_node_offline_s']:.0f} s in ClusterODM vs a whole "
                     f"coordinator replaced in {f['failover_s']['median']:.2f} s here = {ratio}x faster "
                     "(ClusterODM cannot replace its own coordinator at all)")
    if ran_join:
        parts.append(f"join: a human in ClusterODM vs {j['alive_from_start_s']['median']:.2f} s from process start here")
    out.append("ratio vs ClusterODM: " + "; ".join(parts))
    if j["failed_runs"] or f["failed_runs"]:
        out.append(f"FAILED runs: join {j['failed_runs']}, failover {f['failed_runs']} (see the JSON for errors)")
    if j["coordinator_unchanged_runs"] != j["alive_from_api_s"]["n"]:
        out.append(f"note: the coordinator changed in {j['alive_from_api_s']['n'] - j['coordinator_unchanged_runs']} "
                   "join run(s) when the higher-priority box joined")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each measurement (default 5; at least 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--only", choices=("join", "failover"), help="run just one of the two measurements")
    parser.add_argument("--poll-seconds", type=float, default=3.0,
                        help="the agents' node health poll (default 3.0, the product default)")
    parser.add_argument("--keep", action="store_true", help="keep the boxes' work directories (logs)")
    args = parser.parse_args()
    if args.runs < 5:
        say(f"WARNING: --runs {args.runs} is below 5; medians of so few runs are fragile")
    reason = netns_available()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` tears the namespaces down
    scratch = Path(tempfile.mkdtemp(prefix="passel-discovery-"))
    joins: list[dict[str, Any]] = []
    failovers: list[dict[str, Any]] = []
    started = time.monotonic()
    digest_before = common.sources_digest()
    try:
        for i in range(args.runs):
            # Interleave the two kinds so slow drift in the machine affects both alike.
            if args.only in (None, "join"):
                say(f"join run {i + 1}/{args.runs}")
                try:
                    r = join_run(scratch / f"join{i + 1}", args.poll_seconds)
                except Exception as exc:  # noqa: BLE001 - record it, keep the other runs
                    r = {"error": f"{type(exc).__name__}: {exc}"}
                say("  ", {k: v for k, v in r.items() if k != "logs"})
                joins.append(r)
            if args.only in (None, "failover"):
                say(f"failover run {i + 1}/{args.runs}")
                try:
                    r = failover_run(scratch / f"failover{i + 1}", args.poll_seconds)
                except Exception as exc:  # noqa: BLE001
                    r = {"error": f"{type(exc).__name__}: {exc}"}
                say("  ", {k: v for k, v in r.items() if k not in ("logs", "survivors")})
                failovers.append(r)
    finally:
        if args.keep:
            say(f"work directories kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    summary = summarize(joins, failovers)
    digest_after = common.sources_digest()
    if digest_after != digest_before:
        say("WARNING: appliance/ changed while the benchmark ran; the runs measured different code")
    host = common.machine() | {"zeroconf": common.package_version("zeroconf")}
    host["code"].update({"appliance_sources_sha256": digest_before,
                         "changed_during_run": digest_after != digest_before})
    data = {"benchmark": "discovery", "runs": args.runs, "machine": host,
            "settings": {"poll_interval_s": POLL, "http_timeout_s": HTTP_TIMEOUT, "info_timeout_s": INFO_TIMEOUT,
                         "agent_poll_seconds": args.poll_seconds, "agent_task_poll_seconds": 0.5,
                         "fresh_bridge_per_run": True},
            "clusterodm": CLUSTERODM, "summary": summary, "join_runs": joins, "failover_runs": failovers,
            "wall_s": round(time.monotonic() - started, 1)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    if args.json:
        print(json.dumps(data))
    else:
        print(table(summary, args.runs))
        print(f"\nresults: {RESULTS.relative_to(REPO)}")
    failed = summary["join"]["failed_runs"] + summary["failover"]["failed_runs"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
