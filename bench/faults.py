"""Faults: how long a passel takes to make progress again after a crash, a sleeping box or a partition,
what an ODM split-merge client sees meanwhile, and what the fault costs the whole job.

The set-up is the one of tests/test_faults.py, with its harness and its client: three boxes in network
namespaces (tests/netns.py), each with a simulated NodeODM (1.5 s per image, 2 slots) and an agent
(priority = box number, `--grace-seconds 6`). A split-merge client that behaves like ODM's
(tests/odm_executor.py) sends 8 submodels of 3 images each through a follower box (the *entry*),
while one fault is injected:

* **a**: `kill -9` of the coordinator's agent while a submodel is being uploaded (the kill waits until
  the first file of the 3rd submodel is staged on the entry, the box that takes the upload in);
* **b**: `kill -9` of the coordinator's agent right after the 6th submodel is committed (processing);
* **c**: SIGSTOP of the other follower's agent and simnode (the *worker*) while one of its tasks runs,
  held longer than the grace period, then SIGCONT;
* **d**: the worker's link to the bridge goes down while one of its tasks runs, then up again;
* **b2** (only with `--extra`): as b, but the kill comes 2 s after the 6th commit, once every follower's
  replica (pulled every second) holds the tasks. The tests' b kills within ~0.3 s of the first commit.

Time to recover, measured from the fault (the kill, the SIGSTOP, the link down):

* a, b: until (1) the entry's `/info` is answered under a new coordinator (its `/-/passel.json` names
  another box, and `/info` reports `maxParallelTasks > 0`), and (2) the first submodel affected by the
  fault is RUNNING on a node or COMPLETED again in the new coordinator's task table (`/-/tasks` on the
  entry, polled every 0.25 s). Affected: in a, the submodel being uploaded; in b, the submodels
  committed but not completed at the kill. The submodel is tracked through the uuid that finally
  completed it, so a resubmission counts from the moment the new uuid runs.
* c, d: until every task that was RUNNING on the worker's node at the fault is RUNNING (phase on_node)
  or COMPLETED on another node, per `/-/tasks` on the entry (node_url, status, phase), under its own
  uuid or under one the client resubmitted it as. The fault is held at least grace + 6 s (as in the
  tests), and longer if the tasks have not moved yet (at most `--hold-cap`).

The job time (client start to the last submodel downloaded) is compared with the same job with no
fault, run `--runs` times too, on a fresh bridge each time. Every run checks what the tests check:
every submodel completes with its outputs, `/task/list` holds each final task exactly once, and no
staged upload is left behind once the tasks are removed. It also records copies of the job's tasks that
nodes ran twice, every client request slower than 2 s, and the agents' noteworthy log lines.

    cd /work/main && /tmp/venv/bin/python bench/faults.py [--runs 3] [--only a|b|b2|c|d|none] [--extra]
                                   [--json] [--commit REF] [--keep] [--hold-cap 60] [--budget-minutes 30]

`--commit REF` measures a clean copy of that commit (git archive into a temporary directory, harness
and client included), instead of the working tree. Needs root. Results go to bench/results/faults.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import common  # noqa: E402

RESULTS = REPO / "bench" / "results" / "faults.json"

SUBMODELS, IMAGES = 8, 3               # as in tests/test_faults.py
SECONDS_PER_IMAGE, SLOTS = 1.5, 2      # per simnode, as in the tests' fixture
CLIENT_POLL, CLIENT_RETRY_WAIT = 0.5, 2.0
PRODUCT_GRACE = 90.0
LEASE_SECONDS = 5.0                    # appliance/discovery/membership.py
RECONCILE_SECONDS = 3.0                # appliance/cluster/reconciler.py
TASKS_POLL = 0.25                      # /-/tasks on the entry
NODES_POLL = 1.0                       # each simnode's /task/list (duplicates, stale copies)
PROBE_POLL = 0.05                      # /-/passel.json and /info on the entry after a kill
JOB_LIMIT = 200.0                      # a job not done by then is a failed run
KINDS = {"none": "no fault (baseline)", "a": "kill -9 coordinator mid-upload",
         "b": "kill -9 coordinator mid-processing", "c": "SIGSTOP worker > grace, SIGCONT",
         "d": "partition worker, heal", "b2": "kill -9 coordinator 2 s after 6th commit"}
SLOW_REQUEST_S = 2.0  # a client request that took longer is listed (a relay holding it, a node not answering)
B2_DELAY = 2.0  # b2: long enough for every follower to have pulled the tasks into its replica (sync every 1 s)

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
netns: Any = None  # tests.netns and tests.odm_executor, imported from the code measured (see load_harness)
odm: Any = None


def say(*parts: Any) -> None:
    print("[faults]", *parts, file=sys.stderr, flush=True)


def get_json(url: str, timeout: float = 2.0) -> Any:
    with _opener.open(url, timeout=timeout) as reply:
        return json.loads(reply.read())


def rel(t: float | None, t0: float | None) -> float | None:
    return None if t is None or t0 is None else round(t - t0, 3)


# -- the code measured --------------------------------------------------------------------------

def load_harness(code_dir: Path) -> None:
    """Import the harness and the client from the code measured (they must match its CLI)."""
    global netns, odm
    sys.path.insert(0, str(code_dir))
    import tests.netns as _netns  # noqa: PLC0415
    import tests.odm_executor as _odm  # noqa: PLC0415
    netns, odm = _netns, _odm
    if Path(_netns.__file__).resolve().parent.parent != code_dir.resolve():
        raise RuntimeError(f"tests.netns came from {_netns.__file__}, not from {code_dir}")


def snapshot(ref: str, into: Path) -> str:
    sha = subprocess.run(["git", "rev-parse", ref], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", sha], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return sha


def appliance_digest(code_dir: Path) -> str:
    return common.sources_digest(code_dir, ("appliance", "webui", "tests"))


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def machine(code: dict[str, Any]) -> dict[str, Any]:
    return common.machine() | {"zeroconf": common.package_version("zeroconf"),
                               "loadavg_before": [round(x, 2) for x in os.getloadavg()], "code": code}


# -- the client, recording what it sees ------------------------------------------------------------

def classify(message: str) -> str:
    low = message.lower()
    if "not found" in low:
        return "not-found"
    if "connection" in low:
        return "connection error"
    if "coordinator" in low:
        return "coordinator unavailable"
    if low.startswith("http "):
        return message.split(":")[0].lower()
    return "error reply"


def make_client_class() -> type:
    base = odm.SplitMergeClient

    class RecordingClient(base):  # type: ignore[misc, valid-type]
        """The tests' client, unchanged, plus a log of every error reply and every resubmission."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.log: list[dict[str, Any]] = []
            self.slow: list[dict[str, Any]] = []  # requests that took more than SLOW_REQUEST_S
            self._lock = threading.Lock()

        def note(self, kind: str, what: str, sub: str | None = None) -> None:
            with self._lock:
                self.log.append({"t": time.monotonic(), "kind": kind, "what": what[:200], "sub": sub})

        def _json(self, method: str, path: str, **kwargs: Any) -> Any:
            short = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "{uuid}", path)
            began = time.monotonic()
            try:
                reply = super()._json(method, path, **kwargs)
            except odm.Retry as exc:
                self.note(classify(str(exc)), f"{method} {short}: {exc}")
                raise
            finally:
                took = time.monotonic() - began
                if took > SLOW_REQUEST_S:
                    with self._lock:
                        self.slow.append({"t": began, "took_s": round(took, 2), "what": f"{method} {short}"})
            if isinstance(reply, dict) and reply.get("error"):
                self.note(classify(str(reply["error"])), f"{method} {short}: {reply['error']}")
            return reply

        def _retry(self, where: str, exc: Exception, sub: Any) -> None:
            kind = "retry: task limit" if "task limit" in str(exc) else "retry: other"
            self.note(kind, f"{where}: {exc}", sub.name)

        def _submit(self, sub: Any) -> None:
            try:
                super()._submit(sub)
            except odm.Retry as exc:
                self._retry("submit", exc, sub)
                raise

        def _follow(self, sub: Any, out: Path) -> None:
            try:
                super()._follow(sub, out)
            except odm.Retry as exc:
                self._retry("follow", exc, sub)
                raise
            except odm.Aborted as exc:
                self.note("failed", str(exc), sub.name)
                raise

        def run_one(self, sub: Any, out: Path) -> None:
            try:
                super().run_one(sub, out)
            except odm.Aborted as exc:  # ODM would stop the whole split-merge here
                sub.status = f"failed: {exc}"
            except Exception as exc:  # noqa: BLE001 - a crash of the client is a result too
                sub.status = f"client crashed: {type(exc).__name__}: {exc}"
                self.note("client crash", repr(exc), sub.name)

    return RecordingClient


# -- watchers -----------------------------------------------------------------------------------

class Loop(threading.Thread):
    def __init__(self, name: str, every: float) -> None:
        super().__init__(name=name, daemon=True)
        self.every = every
        self.stop_event = threading.Event()

    def step(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        while not self.stop_event.is_set():
            began = time.monotonic()
            try:
                self.step()
            except Exception:  # noqa: BLE001 - a watcher never stops the run
                pass
            self.stop_event.wait(max(0.0, self.every - (time.monotonic() - began)))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(15)


class TaskWatch(Loop):
    """The coordinator's task table as the entry box relays it. Each sample keeps the time its request
    was sent and the time the answer came: only a request sent after a kill counts as the new
    coordinator's answer, and the answer's arrival is when that state was seen (a relayed request
    can be held through an election)."""

    def __init__(self, entry: Any) -> None:
        super().__init__("tasks", TASKS_POLL)
        self.entry = entry
        self.samples: list[tuple[float, float, dict[str, tuple[int, str, str | None]]]] = []
        self.failures: Counter[str] = Counter()
        self.slowest = 0.0

    def step(self) -> None:
        began = time.monotonic()
        try:
            rows = get_json(self.entry.api + "/-/tasks", timeout=15)
        except Exception as exc:  # noqa: BLE001
            self.failures[type(exc).__name__] += 1
            return
        ended = time.monotonic()
        self.slowest = max(self.slowest, ended - began)
        self.samples.append((began, ended, {r["uuid"]: (int(r["status"]), str(r["phase"]), r.get("node_url"))
                                            for r in rows}))

    def latest_after(self, t0: float) -> dict[str, tuple[int, str, str | None]] | None:
        if self.samples and self.samples[-1][0] > t0:
            return self.samples[-1][2]
        return None

    def first(self, after: float, uuids: list[str],
              ok: Callable[[tuple[int, str, str | None]], bool]) -> tuple[float, str, str | None] | None:
        """(arrival time, uuid, node) of the first answer sent after `after` showing one of `uuids` ok."""
        for began, ended, table in self.samples:
            if began > after:
                for uuid in uuids:
                    if uuid in table and ok(table[uuid]):
                        return ended, uuid, table[uuid][2]
        return None

    def transitions(self, t_ref: float) -> dict[str, list[list[Any]]]:
        out: dict[str, list[list[Any]]] = {}
        last: dict[str, Any] = {}
        for _, ended, table in self.samples:
            for uuid in set(table) | set(last):
                state = table.get(uuid)
                if state != last.get(uuid, "unseen"):
                    out.setdefault(uuid, []).append([round(ended - t_ref, 2), *(state or ("gone",))])
                    last[uuid] = state
        return out


class NodeWatch(Loop):
    """Every simnode's own task list and statuses, all three in one round: a uuid QUEUED or RUNNING on two
    nodes in the same round is a duplicate running; a copy still running on a node the task left is stale."""

    def __init__(self, boxes: list[Any]) -> None:
        super().__init__("nodes", NODES_POLL)
        self.boxes = boxes
        self.rounds: list[tuple[float, dict[int, dict[str, int] | None]]] = []

    def step(self) -> None:
        began = time.monotonic()
        seen: dict[int, dict[str, int] | None] = {}
        for box in self.boxes:
            base = f"http://{box.address}:3001"
            try:
                uuids = [t["uuid"] for t in get_json(base + "/task/list", timeout=1.0)]
                seen[box.index] = {u: int(get_json(f"{base}/task/{u}/info", timeout=1.0)["status"]["code"])
                                   for u in uuids}
            except Exception:  # noqa: BLE001 - a stopped or cut-off node: unknown this round
                seen[box.index] = None
        self.rounds.append((began, seen))

    def duplicates(self, t_ref: float) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for began, seen in self.rounds:
            where: dict[str, list[int]] = {}
            for index, tasks in seen.items():
                for uuid, code in (tasks or {}).items():
                    if code in (10, 20):
                        where.setdefault(uuid, []).append(index)
            for uuid, boxes in where.items():
                if len(boxes) > 1:
                    entry = found.setdefault(uuid, {"uuid": uuid, "nodes": boxes, "first_s": round(began - t_ref, 2),
                                                    "rounds": 0})
                    entry["rounds"] += 1
                    entry["last_s"] = round(began - t_ref, 2)
        return list(found.values())

    def superseded(self, subs: list[Any], t_ref: float) -> list[dict[str, Any]]:
        """Copies of a submodel under a uuid its client gave up (not its final uuid) that a node kept
        running or finished anyway: processing spent twice on the same work."""
        out = []
        for sub in subs:
            for uuid in sub.history[:-1] if sub.status == "completed" else sub.history:
                active = [(began, i) for began, seen in self.rounds for i, tasks in seen.items()
                          if tasks and tasks.get(uuid) in (10, 20)]
                done = sorted({i for _, seen in self.rounds for i, tasks in seen.items() if tasks and tasks.get(uuid) == 40})
                if active or done:
                    out.append({"submodel": sub.name, "uuid": uuid, "nodes": sorted({f"box{i}" for _, i in active}),
                                "active_from_s": round(min(b for b, _ in active) - t_ref, 1) if active else None,
                                "active_until_s": round(max(b for b, _ in active) - t_ref, 1) if active else None,
                                "completed_on": [f"box{i}" for i in done]})
        return out

    def active_on(self, index: int, uuids: set[str], after: float) -> list[tuple[float, set[str] | None]]:
        """(time, which of `uuids` are QUEUED/RUNNING on node `index`) for every round after `after`."""
        out = []
        for began, seen in self.rounds:
            if began > after:
                tasks = seen.get(index)
                out.append((began, None if tasks is None else {u for u, c in tasks.items() if c in (10, 20) and u in uuids}))
        return out


class CoordinatorProbe(threading.Thread):
    """After a kill: the entry's /-/passel.json until it names another coordinator, then its /info until
    it reports capacity (a follower relays /info to the coordinator)."""

    def __init__(self, entry: Any, killed_id: str, t0: float, limit: float = 60.0) -> None:
        super().__init__(name="probe", daemon=True)
        self.entry, self.killed_id, self.t0, self.limit = entry, killed_id, t0, limit
        self.named_at: float | None = None
        self.served_at: float | None = None
        self.new_id: str | None = None
        self.info_outcomes: Counter[str] = Counter()

    def run(self) -> None:
        while time.monotonic() < self.t0 + self.limit:
            began = time.monotonic()
            try:
                view = get_json(self.entry.api + "/-/passel.json", timeout=1.0)
                cid = (view.get("coordinator") or {}).get("id")
                if cid and cid != self.killed_id:
                    self.named_at = self.named_at or time.monotonic()
                    self.new_id = cid
                    info = get_json(self.entry.api + "/info", timeout=10.0)
                    if info.get("error"):
                        self.info_outcomes[f"error: {str(info['error'])[:80]}"] += 1
                    elif int(info.get("maxParallelTasks") or 0) > 0:
                        self.served_at = time.monotonic()
                        return
            except Exception as exc:  # noqa: BLE001
                self.info_outcomes[type(exc).__name__] += 1
            time.sleep(max(0.0, PROBE_POLL - (time.monotonic() - began)))


# -- the passel -------------------------------------------------------------------------------------

def view(box: Any, timeout: float = 2.0) -> dict[str, Any]:
    return get_json(box.api + "/-/passel.json", timeout)


def cid(v: dict[str, Any]) -> str | None:
    return (v.get("coordinator") or {}).get("id")


def agreed(boxes: list[Any]) -> str | None:
    """The coordinator's id when every box sees every other alive and names the same coordinator."""
    views = [view(b, 1.0) for b in boxes]
    ids = {cid(v) for v in views}
    if len(ids) != 1 or None in ids:
        return None
    if not all(sum(1 for b in v["boxes"] if b["alive"]) == len(boxes) for v in views):
        return None
    return ids.pop()


def start_field(bridge: Any, grace: float) -> None:
    for box in bridge.boxes:
        box.start_simnode(seconds_per_image=SECONDS_PER_IMAGE, slots=SLOTS)
    for box in bridge.boxes:  # the agent shares its NodeODM when it answers at start: wait for it
        netns.wait_until(lambda b=box: get_json(f"http://{b.address}:3001/info").get("maxParallelTasks"), 30,
                         f"simnode of box{box.index}", interval=0.1)
    for box in bridge.boxes:
        box.start_agent("--priority", str(box.index), "--grace-seconds", f"{grace:g}")


def roles(bridge: Any) -> tuple[Any, Any, Any, str]:
    """(coordinator box, entry: a follower, worker: the other follower, coordinator id), as in the tests."""
    leader_id = netns.wait_until(lambda: agreed(bridge.boxes), 60, "one coordinator", interval=0.2)
    leader = next(b for b in bridge.boxes if view(b)["self"]["id"] == leader_id)
    entry, worker = [b for b in bridge.boxes if b is not leader]
    netns.wait_until(lambda: sum(n["online"] for n in get_json(entry.api + "/-/nodes", 3)) == 3, 30,
                     "all three nodes online")
    netns.wait_until(lambda: int(get_json(entry.api + "/info", 5).get("maxParallelTasks") or 0) >= 3 * SLOTS, 15,
                     "/info with every slot on the entry")
    return leader, entry, worker, leader_id


# -- logs ---------------------------------------------------------------------------------------

NOTEWORTHY = re.compile(r"Traceback|ERROR|CRITICAL|WARNING|Exception|exception|failed|refused|Untrusted", re.ASCII)
EVENTS = {"lost": r"is lost:", "moved off (re-dispatched)": r"moved off", "stale copy removed": r"Removed a stale copy",
          "orphan dropped": r"given up by its client", "handed over": r"handed over by box",
          "resumed after restart": r"was being sent to a node when Passel stopped", "send failed": r"could not be sent",
          "node offline": r"is not answering", "became coordinator": r"is now the coordinator",
          "task failed": r"Task \S+ failed"}


def log_notes(bridge: Any, limit: int = 15) -> dict[str, Any]:
    notes: dict[str, Any] = {}
    for box in bridge.boxes:
        for name in ("agent", "simnode"):
            text = box.log(name)
            lines = [line for line in text.splitlines() if NOTEWORTHY.search(line) and " 200 " not in line]
            events = {k: len(re.findall(p, text)) for k, p in EVENTS.items()}
            entry: dict[str, Any] = {}
            if lines:
                entry["noteworthy"] = {"count": len(lines), "first": lines[:limit]}
            if any(events.values()):
                entry["events"] = {k: v for k, v in events.items() if v}
            if entry:
                notes[f"box{box.index}/{name}"] = entry
    return notes


def log_timeline(bridge: Any, t0_wall: float, limit: int = 40) -> list[list[Any]]:
    """The agents' event lines (see EVENTS) with their time relative to the fault. The logs stamp
    HH:MM:SS in local time, so these are good to about 1 s."""
    pattern = re.compile("|".join(EVENTS.values()))
    day = dt.datetime.fromtimestamp(t0_wall).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    for box in bridge.boxes:
        for line in box.log("agent").splitlines():
            stamp = re.match(r"(\d\d):(\d\d):(\d\d) ", line)
            if not stamp or not pattern.search(line):
                continue
            at = day + dt.timedelta(hours=int(stamp[1]), minutes=int(stamp[2]), seconds=int(stamp[3]))
            offset = at.timestamp() - t0_wall
            if offset < -43200:  # past midnight
                offset += 86400
            out.append([round(offset, 1), f"box{box.index}", line[9:][:180]])
    out.sort(key=lambda row: row[0])
    return out[:limit]


def keep_logs(bridge: Any, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    for box in bridge.boxes:
        for name in ("agent", "simnode"):
            (into / f"box{box.index}-{name}.log").write_text(box.log(name))


# -- one run ------------------------------------------------------------------------------------

class Run:
    def __init__(self, kind: str, workdir: Path, args: argparse.Namespace) -> None:
        self.kind, self.workdir, self.args = kind, workdir, args
        self.result: dict[str, Any] = {"fault": kind}
        self.t0: float | None = None          # the fault
        self.t0_wall = 0.0
        self.t_undo: float | None = None      # SIGCONT / link up
        self.fault: dict[str, Any] = {}
        self.affected: list[Any] = []         # submodels (a, b)
        self.affected_uuids: list[str] = []   # tasks on the worker at the fault (c, d)
        self.probe: CoordinatorProbe | None = None
        self.committed: list[str] = []
        self.stages: list[tuple[float, str, str, str | None]] = []
        self.fired = threading.Event()

    # -- the faults ----------------------------------------------------------------------------
    def hook(self, sub: Any, stage: str) -> None:
        self.stages.append((time.monotonic(), sub.name, stage, sub.uuid))
        if stage == "committed":
            self.committed.append(sub.name)
        if self.kind == "a" and stage == "uploading" and len(self.committed) >= 2 and not self.fired.is_set():
            self.fired.set()
            threading.Thread(target=self.kill_mid_upload, args=(sub,), daemon=True).start()
        if self.kind in ("b", "b2") and stage == "committed" and len(self.committed) == 6 and not self.fired.is_set():
            self.fired.set()
            if self.kind == "b":
                self.kill_mid_processing()
            else:
                threading.Timer(B2_DELAY, self.kill_mid_processing).start()

    def kill_mid_processing(self) -> None:
        self.affected = [s for s in self.subs if s.name in self.committed and s.status != "completed"]
        self.kill_leader({"committed_at_kill": len(self.committed), "delay_after_6th_commit_s": 0.0 if self.kind == "b"
                          else B2_DELAY, "completed_at_kill": sum(1 for s in self.subs if s.status == "completed")})

    def kill_mid_upload(self, sub: Any) -> None:
        """Wait (at most 2 s) until a first file of this submodel is complete in the entry's staging (the
        box the client uploads to keeps the images; the coordinator hears only their names)."""
        staging = self.entry.workdir / "state" / "staging" / str(sub.uuid)
        deadline = time.monotonic() + 2.0
        files: list[Path] = []
        while time.monotonic() < deadline:
            try:
                files = [p for p in staging.iterdir() if p.is_file()]
            except OSError:
                files = []
            if any(not p.name.endswith(".part") for p in files):
                break
            time.sleep(0.002)
        self.affected = [sub]
        self.kill_leader({"submodel": sub.name, "uuid_at_kill": sub.uuid,
                          "files_staged_at_kill": sum(1 for p in files if not p.name.endswith(".part")),
                          "partial_files_at_kill": sum(1 for p in files if p.name.endswith(".part")),
                          "files_in_submodel": len(sub.files),
                          "committed_before_kill": sub.name in self.committed})

    def kill_leader(self, detail: dict[str, Any]) -> None:
        self.t0, self.t0_wall = time.monotonic(), time.time()
        self.leader.signal("agent", signal.SIGKILL)
        self.fault = {"killed": f"box{self.leader.index}", "at_job_s": rel(self.t0, self.t_start), **detail}
        self.probe = CoordinatorProbe(self.entry, self.leader_id, self.t0)
        self.probe.start()

    def worker_fault(self) -> None:
        node = self.worker_node
        netns.wait_until(lambda: any(t["node_url"] == node and t["status"] == 20 and t["phase"] == "on_node"
                                     for t in get_json(self.entry.api + "/-/tasks", 5)), 90,
                         "a running task on the worker's node", interval=0.1)
        before = get_json(self.entry.api + "/-/tasks", 5)
        self.affected_uuids = [t["uuid"] for t in before if t["node_url"] == node and t["status"] == 20]
        self.t0, self.t0_wall = time.monotonic(), time.time()
        if self.kind == "c":
            for name in ("agent", "simnode"):
                self.worker.signal(name, signal.SIGSTOP)  # the lid closes
        else:
            self.worker.link(False)
        min_hold = self.args.grace_seconds + 6
        extended = False
        while True:
            held = time.monotonic() - self.t0
            if held >= min_hold and (self.moved_live() or held >= self.args.hold_cap):
                break
            extended = held >= min_hold
            time.sleep(0.1)
        self.worker_view_during = self.peek_worker_view() if self.kind == "d" else None
        self.t_undo = time.monotonic()
        if self.kind == "c":
            for name in ("agent", "simnode"):
                self.worker.signal(name, signal.SIGCONT)  # and opens again
        else:
            self.worker.link(True)
        self.fault = {"worker": f"box{self.worker.index}", "at_job_s": rel(self.t0, self.t_start),
                      "held_s": rel(self.t_undo, self.t0), "hold_extended_past_grace_plus_6": extended,
                      "tasks_on_worker_at_fault": len(self.affected_uuids),
                      "tasks_at_fault": {t["uuid"]: [t["status"], t["phase"], t["node_url"]] for t in before}}

    def peek_worker_view(self) -> dict[str, Any] | None:
        """The cut-off worker's own idea of the passel, asked from inside its namespace."""
        try:
            v = self.worker.get_json("/-/passel.json", timeout=3)
            return {"coordinator": (v.get("coordinator") or {}).get("name"), "term": v.get("term"),
                    "alive": [b["name"] for b in v.get("boxes", []) if b.get("alive")]}
        except Exception as exc:  # noqa: BLE001
            return {"error": str(exc)[-200:]}

    def sub_of(self, uuid: str) -> Any:
        return next((s for s in self.subs if uuid in s.history), None)

    def moved_live(self) -> bool:
        table = self.tasks.latest_after(self.t0 or 0)
        if table is None:
            return False
        for uuid in self.affected_uuids:
            sub = self.sub_of(uuid)
            if not any(table.get(u) and self.elsewhere(table[u]) for u in (sub.history if sub else [uuid])):
                return False
        return True

    def elsewhere(self, state: tuple[int, str, str | None]) -> bool:
        status, phase, node = state
        return node is not None and node != self.worker_node and (status == 40 or (status == 20 and phase == "on_node"))

    @staticmethod
    def going(state: tuple[int, str, str | None]) -> bool:
        status, phase, _ = state
        return status == 40 or (status == 20 and phase == "on_node")

    # -- the run ----------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        bridge = netns.Bridge(3, self.workdir)
        self.tasks: TaskWatch | None = None
        self.nodes: NodeWatch | None = None
        try:
            t_setup = time.monotonic()
            start_field(bridge, self.args.grace_seconds)
            self.leader, self.entry, self.worker, self.leader_id = roles(bridge)
            self.worker_node = f"http://{self.worker.address}:3001"
            self.result["roles"] = {"coordinator": f"box{self.leader.index}", "entry": f"box{self.entry.index}",
                                    "worker": f"box{self.worker.index}", "setup_s": round(time.monotonic() - t_setup, 1)}
            self.subs = odm.make_submodels(self.workdir / "job", SUBMODELS, images=IMAGES)
            client = make_client_class()(self.entry.api, poll=CLIENT_POLL, retry_wait=CLIENT_RETRY_WAIT, keep=True,
                                         on_stage=self.hook)
            self.tasks, self.nodes = TaskWatch(self.entry), NodeWatch(bridge.boxes)
            self.tasks.start()
            self.nodes.start()
            done_at: list[float] = []

            def job() -> None:
                client.run(self.subs, self.workdir / "out")
                done_at.append(time.monotonic())
            self.t_start = time.monotonic()
            thread = threading.Thread(target=job, name="client", daemon=True)
            thread.start()
            if self.kind in ("c", "d"):
                self.worker_fault()
            thread.join(max(0.0, self.t_start + JOB_LIMIT - time.monotonic()))
            finished = not thread.is_alive()
            self.result["job_s"] = round(done_at[0] - self.t_start, 2) if done_at else None
            if not finished:
                self.result["error"] = f"the job did not finish in {JOB_LIMIT:.0f} s"
            if self.kind in ("a", "b", "b2") and self.t0 is None:
                self.result["error"] = "the fault never fired"
            if self.kind in ("c", "d"):
                self.after_heal(bridge)
            self.measure()
            self.client_saw(client)
            self.check(bridge, finished)
            return self.result
        except Exception as exc:  # noqa: BLE001 - record it; the other runs go on
            self.result["error"] = f"{type(exc).__name__}: {exc}"
            return self.result
        finally:
            for watcher in (self.tasks, self.nodes):
                if watcher is not None:
                    watcher.stop()
            if self.probe is not None:
                self.probe.join(1)
            try:
                self.result["logs"] = log_notes(bridge)
                if self.t0 is not None:
                    self.result["log_timeline_from_fault"] = log_timeline(bridge, self.t0_wall)
                if self.args.keep or "error" in self.result or self.result.get("problems"):
                    keep_logs(bridge, self.args.logs_dir / self.workdir.name)
                    self.result["logs_kept_in"] = str(self.args.logs_dir / self.workdir.name)
            finally:
                bridge.close()

    def after_heal(self, bridge: Any) -> None:
        """After SIGCONT / link up: when do the three boxes agree again, and when is the worker's stale copy gone."""
        if self.t_undo is None:
            return
        try:
            netns.wait_until(lambda: agreed(bridge.boxes), 30, "the three boxes to agree again", interval=0.1)
            self.fault["boxes_agree_again_after_undo_s"] = rel(time.monotonic(), self.t_undo)
            self.fault["coordinator_after"] = next(f"box{b.index}" for b in bridge.boxes
                                                   if view(b)["self"]["id"] == agreed(bridge.boxes))
        except AssertionError as exc:
            self.fault["boxes_agree_again_after_undo_s"] = None
            self.fault["agree_error"] = str(exc)[:300]
        if getattr(self, "worker_view_during", None):
            self.fault["worker_view_during_partition"] = self.worker_view_during
        # The stale copies on the worker's node: until none of the moved tasks is QUEUED/RUNNING there.
        deadline = time.monotonic() + 15
        uuids = set(self.affected_uuids)
        while time.monotonic() < deadline:
            rounds = self.nodes.active_on(self.worker.index, uuids, self.t_undo) if self.nodes else []
            if any(active is not None and not active for _, active in rounds):
                break
            time.sleep(0.5)
        rounds = self.nodes.active_on(self.worker.index, uuids, self.t_undo) if self.nodes else []
        running_after = [rel(t, self.t_undo) for t, active in rounds if active]
        cleared = next((t for t, active in rounds if active is not None and not active), None)
        self.fault["stale_copies_running_on_worker_after_undo"] = bool(running_after)
        self.fault["stale_copies_gone_after_undo_s"] = rel(cleared, self.t_undo)

    def measure(self) -> None:
        r, t0 = self.result, self.t0
        if t0 is None:
            return
        r["fault_detail"] = self.fault
        final = {s.name: s.uuid for s in self.subs}
        if self.kind in ("a", "b", "b2"):
            probe = self.probe
            info_at = probe.served_at if probe else None
            backs = []
            for sub in self.affected:  # through the uuid that finally completed it (not one the client gave up)
                hit = self.tasks.first(t0, [final[sub.name]], self.going) if final.get(sub.name) else None
                backs.append({"submodel": sub.name, "back_s": rel(hit[0] if hit else None, t0), "uuids": list(sub.history)})
            got = [b["back_s"] for b in backs if b["back_s"] is not None]
            info_s = rel(info_at, t0)
            r["recovery"] = {
                "definition": "max(entry /info served under a new coordinator, first affected submodel RUNNING/COMPLETED)",
                "new_coordinator_named_s": rel(probe.named_at if probe else None, t0),
                "info_served_s": info_s, "info_outcomes_meanwhile": dict(probe.info_outcomes) if probe else {},
                "affected": backs,
                "first_affected_back_s": min(got) if got else None,
                "all_affected_back_s": max(got) if got and len(got) == len(backs) else None}
            if info_s is not None and got:
                r["time_to_recover_s"] = round(max(info_s, min(got)), 3)
                r["time_to_recover_all_s"] = round(max(info_s, max(got)), 3) if len(got) == len(backs) else None
        else:
            moved = []
            for uuid in self.affected_uuids:  # the task itself moved by Passel, or the client's resubmission of it
                sub = self.sub_of(uuid)
                hit = self.tasks.first(t0, list(sub.history) if sub else [uuid], self.elsewhere)
                moved.append({"uuid": uuid, "submodel": sub.name if sub else None,
                              "moved_s": rel(hit[0] if hit else None, t0), "as_uuid": hit[1] if hit else None,
                              "to": hit[2] if hit else None, "final_uuid": sub.uuid if sub else None,
                              "resubmitted_by_client": bool(sub and sub.uuid != uuid)})
            got = [m["moved_s"] for m in moved if m["moved_s"] is not None]
            r["recovery"] = {"definition": "every task RUNNING on the worker at the fault RUNNING/COMPLETED on another node",
                             "tasks": moved, "first_moved_s": min(got) if got else None,
                             "all_moved_s": max(got) if got and len(got) == len(moved) else None}
            r["time_to_recover_s"] = r["recovery"]["all_moved_s"]
            if not got:
                r.setdefault("problems", []).append("no task moved off the worker before it came back")
            lost_after_move = [m["uuid"] for m in moved if m["moved_s"] is not None and m["as_uuid"] == m["uuid"]
                               and m["resubmitted_by_client"]]
            if lost_after_move:
                r["moved_then_resubmitted_by_client"] = lost_after_move
                r.setdefault("problems", []).append(
                    f"task(s) {lost_after_move} were moved off the worker, then answered not-found and sent again by "
                    "the client")
        r["job_start_to_fault_s"] = rel(t0, self.t_start)

    def client_saw(self, client: Any) -> None:
        t0 = self.t0 if self.t0 is not None else self.t_start
        kinds = Counter(e["kind"] for e in client.log)
        errors = {k: v for k, v in kinds.items() if not k.startswith("retry")}
        self.result["client"] = {
            "resubmissions": sum(max(0, len(s.history) - 1) for s in self.subs),
            "retries": sum(max(0, s.attempts - 1) for s in self.subs),
            "retries_task_limit": kinds.get("retry: task limit", 0),
            "retries_other": kinds.get("retry: other", 0),
            "attempts": [s.attempts for s in self.subs],
            "errors": errors,
            "error_replies": sum(errors.values()),
            "not_found": kinds.get("not-found", 0),
            "failed_submodels": [f"{s.name}: {s.status}" for s in self.subs if s.status != "completed"],
            "events": [{**e, "t": rel(e["t"], t0)} for e in client.log[:40]],
            "slow_requests": [{**e, "t": rel(e["t"], t0)} for e in client.slow[:20]],
            "slowest_request_s": max((e["took_s"] for e in client.slow), default=None),
            "events_relative_to": "fault" if self.t0 is not None else "job start",
        }

    def check(self, bridge: Any, finished: bool) -> None:
        """What the tests check, recorded instead of asserted."""
        problems = self.result.setdefault("problems", [])
        for e in self.result.get("client", {}).get("events", []):
            if e["kind"] == "retry: other" and "download" in e["what"]:
                problems.append(f"{e['sub']}: the client was told COMPLETED but all.zip could not be downloaded "
                                f"({e['what']}, {e['t']} s after the {self.result['client']['events_relative_to']}); "
                                "it sent the work again")
        bad = [(s.name, s.status, s.history) for s in self.subs if s.status != "completed"]
        if bad:
            problems.append(f"submodels not completed: {bad}")
        for sub in self.subs:
            if sub.status == "completed":
                missing = [w for w in ("opensfm/reconstruction.json", "opensfm/tracks.csv", "cameras.json")
                           if w not in sub.zip_names]
                if missing or not any(n.startswith("opensfm/features/") for n in sub.zip_names):
                    problems.append(f"{sub.name}: all.zip lacks {missing or 'opensfm/features/'}")
        if self.tasks is not None:
            self.result["tasks_poll"] = {"samples": len(self.tasks.samples), "failures": dict(self.tasks.failures),
                                         "slowest_s": round(self.tasks.slowest, 2)}
            self.result["task_transitions_from_fault"] = self.tasks.transitions(self.t0 or self.t_start)
        if self.nodes is not None:
            dups = self.nodes.duplicates(self.t0 or self.t_start)
            self.result["concurrent_copies"] = dups
            self.result["superseded_copies_on_nodes"] = self.nodes.superseded(self.subs, self.t0 or self.t_start)
        if not finished:
            return
        listed = [t["uuid"] for t in get_json(self.entry.api + "/task/list", 10)]
        finals = [s.uuid for s in self.subs]
        if sorted(listed) != sorted(finals):
            problems.append(f"/task/list is not each final task exactly once: extra {sorted(set(listed) - set(finals))}, "
                            f"missing {sorted(set(finals) - set(listed))}, listed {len(listed)}")
        if self.kind in ("a", "b", "b2"):
            self.leader.start_agent("--priority", str(self.leader.index), "--grace-seconds", f"{self.args.grace_seconds:g}")
        for uuid in listed:
            reply = requests_post(self.entry.api + "/task/remove", {"uuid": uuid})
            if reply != {"success": True}:
                problems.append(f"remove {uuid}: {reply}")
        t_removed = time.monotonic()

        def leftovers() -> list[str]:
            return [f"box{b.index}/{p.name}" for b in bridge.boxes for p in (b.workdir / "state" / "staging").glob("*")
                    if not p.name.startswith(".new-")]
        try:
            netns.wait_until(lambda: not leftovers(), 45, "no staged upload left on any box", interval=0.5)
            self.result["staging_empty_after_remove_s"] = round(time.monotonic() - t_removed, 1)
        except AssertionError:
            problems.append(f"staged uploads left 45 s after removal: {leftovers()}")
        ours = {u for s in self.subs for u in s.history}

        def on_nodes() -> dict[str, list[str]]:
            found = {}
            for box in bridge.boxes:
                try:
                    left = [t["uuid"] for t in get_json(f"http://{box.address}:3001/task/list", 3) if t["uuid"] in ours]
                except Exception as exc:  # noqa: BLE001
                    left = [f"unreachable: {exc}"]
                if left:
                    found[f"box{box.index}"] = left
            return found
        try:  # every copy of this job's tasks, final or given up, should leave the nodes once removed
            netns.wait_until(lambda: not on_nodes(), 20, "no copy of the job's tasks left on the nodes", interval=1.0)
            self.result["nodes_clean_after_remove_s"] = round(time.monotonic() - t_removed, 1)
        except AssertionError:
            left = on_nodes()
            self.result["left_on_nodes_20s_after_remove"] = left
            finals_left = sorted(u for us in left.values() for u in us if u in set(finals))
            if finals_left:
                problems.append(f"removed tasks still on nodes 20 s later: {finals_left}")


def requests_post(url: str, data: dict[str, str]) -> Any:
    import urllib.parse  # noqa: PLC0415
    body = urllib.parse.urlencode(data).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with _opener.open(request, timeout=15) as reply:
        return json.loads(reply.read())


# -- summary ------------------------------------------------------------------------------------

def stats(values: list[float | None]) -> dict[str, Any]:
    got = [v for v in values if v is not None]
    if not got:
        return {"median": None, "min": None, "max": None, "n": 0, "all": values}
    return {"median": round(statistics.median(got), 2), "min": min(got), "max": max(got), "n": len(got), "all": values}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    base = stats([r.get("job_s") for r in runs.get("none", []) if "error" not in r])
    out: dict[str, Any] = {}
    for kind, rs in runs.items():
        job = stats([r.get("job_s") for r in rs])
        client = [r.get("client", {}) for r in rs]
        s: dict[str, Any] = {
            "fault": KINDS[kind], "runs": len(rs),
            "failed_runs": sum(1 for r in rs if "error" in r),
            "runs_with_problems": sum(1 for r in rs if r.get("problems")),
            "job_s": job,
            "job_vs_no_fault": (round(job["median"] / base["median"], 2)
                                if job["median"] and base["median"] and kind != "none" else None),
            "resubmissions": [c.get("resubmissions") for c in client],
            "retries_task_limit": [c.get("retries_task_limit") for c in client],
            "retries_other": [c.get("retries_other") for c in client],
            "error_replies": [c.get("error_replies") for c in client],
            "not_found": [c.get("not_found") for c in client],
            "client_slowest_request_s": [c.get("slowest_request_s") for c in client],
            "error_kinds": dict(sum((Counter(c.get("errors", {})) for c in client), Counter())),
            "failed_submodels": sum(len(c.get("failed_submodels", [])) for c in client),
            "concurrent_copies": [len(r.get("concurrent_copies", [])) for r in rs],
            "superseded_copies_run_on_nodes": [len(r.get("superseded_copies_on_nodes", [])) for r in rs],
            "coordinator_after": [r.get("fault_detail", {}).get("coordinator_after") for r in rs],
        }
        if kind != "none":
            s["time_to_recover_s"] = stats([r.get("time_to_recover_s") for r in rs])
        if kind in ("a", "b", "b2"):
            s["info_served_s"] = stats([r.get("recovery", {}).get("info_served_s") for r in rs])
            s["all_affected_back_s"] = stats([r.get("time_to_recover_all_s") for r in rs])
        if kind in ("c", "d"):
            s["first_moved_s"] = stats([r.get("recovery", {}).get("first_moved_s") for r in rs])
            s["held_s"] = stats([r.get("fault_detail", {}).get("held_s") for r in rs])
            s["boxes_agree_again_after_undo_s"] = stats([r.get("fault_detail", {}).get("boxes_agree_again_after_undo_s")
                                                         for r in rs])
        out[kind] = s
    return out


def fmt(s: dict[str, Any] | None) -> str:
    if not s or s.get("median") is None:
        return "n/a"
    return f"{s['median']:.1f} s [{s['min']:.1f}-{s['max']:.1f}]"


def saw(s: dict[str, Any]) -> str:
    def seq(values: list[Any]) -> str:
        return "/".join("?" if v is None else str(v) for v in values)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(s["error_kinds"].items(), key=lambda kv: -kv[1])[:3])
    text = (f"resubmits {seq(s['resubmissions'])} (task limit {seq(s['retries_task_limit'])}, other "
            f"{seq(s['retries_other'])}); error replies {seq(s['error_replies'])}")
    if kinds:
        text += f" ({kinds})"
    slowest = "/".join(f"<{SLOW_REQUEST_S:g}" if v is None else f"{v:.1f}" for v in s["client_slowest_request_s"])
    text += f"; slowest request {slowest} s; {s['failed_submodels']} failed"
    return text


def table(summary: dict[str, Any], grace: float) -> str:
    rows = []
    for kind in ("none", "a", "b", "b2", "c", "d"):
        s = summary.get(kind)
        if s is None:
            continue
        job = s["job_s"]
        ratio = "1.00 (reference)" if kind == "none" else (f"{s['job_vs_no_fault']:.2f}x" if s["job_vs_no_fault"] else "n/a")
        jobtxt = f"{job['median']:.1f} s -> {ratio}" if job["median"] is not None else "n/a"
        rows.append((f"{kind}: {s['fault']}", saw(s), "-" if kind == "none" else fmt(s.get("time_to_recover_s")), jobtxt))
    head = ("fault", "what the client saw (per run)", "time to recover, median [min-max]", "job time (median) vs no-fault")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    out = [line(head), "-+-".join("-" * w for w in widths), *(line(r) for r in rows), ""]
    out.append(f"grace: --grace-seconds {grace:g} is a TEST setting (the product default is {PRODUCT_GRACE:.0f} s).")
    out.append(f"expected from the code: a, b: lease ({LEASE_SECONDS:.0f} s) + election tick (<= 1 s) + the new "
               "coordinator's node poll => /info again after ~5-6 s; every committed submodel is known to the new "
               "coordinator (a commit is answered once the replicas hold it), but one whose images were still only "
               "on the killed box is answered not-found after the grace period, and waits for the client's retry "
               "back-off.")
    out.append(f"  c, d: a node is offline after 2 failed health polls (5 s timeout each) ~ 11 s; its tasks move within "
               f"a second once it is offline and silent >= grace (the check needs no network; the {RECONCILE_SECONDS:.0f} s "
               f"compare pass waits at most 2 s on a node) => ~11-13 s with grace {grace:g} (grace is not the limit); "
               f"with the product grace: ~ {PRODUCT_GRACE:.0f}-{PRODUCT_GRACE + 1:.0f} s + dispatch.")
    for kind in ("a", "b", "b2"):
        s = summary.get(kind)
        if s:
            out.append(f"{kind}: /info served under the new coordinator after {fmt(s['info_served_s'])}; "
                       f"every affected submodel back after {fmt(s['all_affected_back_s'])}")
    for kind in ("c", "d"):
        s = summary.get(kind)
        if s:
            out.append(f"{kind}: first task moved after {fmt(s['first_moved_s'])}; fault held {fmt(s['held_s'])}; "
                       f"boxes agree again {fmt(s['boxes_agree_again_after_undo_s'])} after the fault ends; coordinator "
                       f"afterwards {'/'.join(str(c) for c in s['coordinator_after'])} (worker = the box faulted)")
    for kind in ("a", "b", "b2", "c", "d"):
        s = summary.get(kind)
        if s and any(s["superseded_copies_run_on_nodes"]):
            out.append(f"{kind}: copies of given-up uuids that nodes ran anyway (work done twice), per run: "
                       f"{s['superseded_copies_run_on_nodes']}")
    bad = {k: (s["failed_runs"], s["runs_with_problems"]) for k, s in summary.items()
           if s["failed_runs"] or s["runs_with_problems"] or any(s["concurrent_copies"])}
    for kind, (failed, problems) in bad.items():
        out.append(f"ATTENTION {kind}: {failed} failed run(s), {problems} run(s) with problems, concurrent copies per run "
                   f"{summary[kind]['concurrent_copies']} (see the JSON)")
    return "\n".join(out)


# -- main ---------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each fault and of the no-fault job (default 3)")
    parser.add_argument("--extra", action="store_true",
                        help=f"also run b2: the kill {B2_DELAY:g} s after the 6th commit, once the replicas hold the tasks")
    parser.add_argument("--only", choices=("a", "b", "b2", "c", "d", "none"),
                        help="one fault (the no-fault baseline runs too, for the ratio); 'none': baseline only")
    parser.add_argument("--grace-seconds", type=float, default=6.0, help="the agents' grace (default 6, as the tests)")
    parser.add_argument("--hold-cap", type=float, default=60.0,
                        help="c, d: longest the fault is held while waiting for the tasks to move (default 60 s)")
    parser.add_argument("--commit", help="measure a clean copy of this commit (git archive) instead of the working tree")
    parser.add_argument("--budget-minutes", type=float, default=30.0, help="skip the remaining runs after this long")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--keep", action="store_true", help="keep every run's logs (failed runs' logs are always kept)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("cannot run: network namespaces need root", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` tears the namespaces down
    scratch = Path(tempfile.mkdtemp(prefix="passel-faults-"))
    args.logs_dir = scratch / "logs"
    started = time.monotonic()
    code_dir = REPO
    code: dict[str, Any] = {"source": "working tree", "commit": git("rev-parse", "HEAD")}
    if args.commit:
        code_dir = scratch / "code"
        code = {"source": f"git archive {args.commit}", "commit": snapshot(args.commit, code_dir)}
    else:
        code["modified_files"] = [line[3:] for line in git("status", "--porcelain").splitlines() if line.strip()]
    load_harness(code_dir)
    reason = netns.netns_available()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    code["sources_sha256_before"] = appliance_digest(code_dir)
    say(f"measuring {code['source']} at {code['commit'][:10]}; --grace-seconds {args.grace_seconds:g} is a test "
        f"setting (product default {PRODUCT_GRACE:.0f} s); scratch {scratch}")
    kinds = ["none", "a", "b", *(["b2"] if args.extra else []), "c", "d"] if args.only is None else \
        (["none"] if args.only == "none" else ["none", args.only])
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    skipped = 0
    try:
        for i in range(args.runs):
            for kind in kinds:  # interleaved, so drift in the machine affects every kind alike
                if time.monotonic() - started > args.budget_minutes * 60:
                    skipped += 1
                    continue
                digest = appliance_digest(code_dir)
                say(f"run {i + 1}/{args.runs} {kind}: {KINDS[kind]}")
                t = time.monotonic()
                r = Run(kind, scratch / f"{kind}{i + 1}", args).execute()
                r["run"], r["wall_s"] = i + 1, round(time.monotonic() - t, 1)
                r["code_changed_during_run"] = appliance_digest(code_dir) != digest
                runs[kind].append(r)
                say("   ", {k: r.get(k) for k in ("job_s", "time_to_recover_s", "error", "problems") if r.get(k) is not None},
                    "client:", {k: r.get("client", {}).get(k) for k in ("resubmissions", "retries_task_limit",
                                                                         "retries_other", "errors", "failed_submodels")})
    finally:
        code["sources_sha256_after"] = appliance_digest(code_dir) if code_dir.exists() else None
        if not (args.keep or any("error" in r or r.get("problems") for rs in runs.values() for r in rs)):
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            for sub in scratch.iterdir() if scratch.exists() else []:
                if sub.name != "logs":
                    shutil.rmtree(sub, ignore_errors=True)
            say(f"logs kept in {args.logs_dir}")
    if skipped:
        say(f"WARNING: {skipped} run(s) skipped: the {args.budget_minutes:g} min budget ran out")
    code["changed_during_benchmark"] = any(r.get("code_changed_during_run") for rs in runs.values() for r in rs)
    if code["changed_during_benchmark"]:
        say("WARNING: the code measured changed while the benchmark ran; runs measured different code")
    summary = summarize(runs)
    data = {"benchmark": "faults", "runs_per_kind": args.runs, "skipped_runs": skipped, "machine": machine(code),
            "settings": {"grace_seconds": args.grace_seconds, "grace_is_test_setting": True,
                         "product_grace_seconds": PRODUCT_GRACE, "lease_seconds": LEASE_SECONDS,
                         "reconcile_seconds": RECONCILE_SECONDS, "agent_poll_seconds": 0.5,
                         "agent_task_poll_seconds": 0.5, "submodels": SUBMODELS, "images_per_submodel": IMAGES,
                         "seconds_per_image": SECONDS_PER_IMAGE, "slots_per_node": SLOTS, "boxes": 3,
                         "client_poll_s": CLIENT_POLL, "client_retry_wait_s": CLIENT_RETRY_WAIT,
                         "tasks_poll_s": TASKS_POLL, "nodes_poll_s": NODES_POLL, "hold_cap_s": args.hold_cap,
                         "min_hold_s": args.grace_seconds + 6},
            "definitions": {
                "a,b": "time to recover = from the SIGKILL until the entry's /info is answered under a new coordinator "
                       "AND the first affected submodel (a: the one being uploaded; b: committed, not completed) is "
                       "RUNNING on a node or COMPLETED in the new coordinator's /-/tasks (its final uuid)",
                "c,d": "time to recover = from SIGSTOP / link down until every task RUNNING on the worker's node at the "
                       "fault is RUNNING (phase on_node) or COMPLETED on another node in /-/tasks on the entry",
                "job_vs_no_fault": "median job time with the fault / median job time without"},
            "summary": summary, "runs": runs, "wall_s": round(time.monotonic() - started, 1)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(data, default=str))
    else:
        print(table(summary, args.grace_seconds))
        print(f"\nresults: {RESULTS.relative_to(REPO)}")
    return 1 if any(s["failed_runs"] or s["runs_with_problems"] for s in summary.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
