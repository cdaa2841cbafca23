"""A nemesis: random, overlapping faults on a passel in network namespaces while an ODM-like
split-merge job runs through a follower, with everything recorded as a history for the checker
(tests/history_check.py).

The schedule comes from a seed alone (`make_schedule`), so a failing seed is replayed by running it
again: `bench/nemesis.py --seed N`. Each fault starts at a moment after the job's start and is
undone after its hold:

- `kill`:  `kill -9` of a box's agent, restarted on the same state directory;
- `stop`:  SIGSTOP of every process of a box (agent and node), then SIGCONT;
- `cut`:   one box cut off from the other boxes;
- `split`: the passel split into two halves;
- `node`:  a box's NodeODM killed (`kill -9`, or stopped as a reboot does) and restarted;
- `disk`:  a box's state directory (its own tmpfs) filled up;
- `clock`: a box's wall clock jumps (libfaketime; its boot clock, which leases use, does not).

Partitions drop packets between the boxes' ports on the bridge (`tc` filters in the hub namespace),
never between a box and this process, which plays the client and the observer: it reaches every box
throughout, as ODM on the entry box's own network and a technician's screen would.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

from appliance.discovery.membership import LEASE_SECONDS
from tests.netns import Box, Bridge, wait_until
from tests.odm_executor import SplitMergeClient, make_submodels

KINDS = ("kill", "stop", "cut", "split", "node", "disk", "clock")
BOXES = 4
ENTRY = 1        # the box ODM talks to: the lowest priority, so a follower from the start
REAL_NODE = 2    # the box whose node is a real NodeODM; the others run the simulated node
GRACE_SECONDS = 6
SUBMODELS, IMAGES = 4, 3
SECONDS_PER_IMAGE = 0.6
STATE_MB = 256   # each box's state directory is a tmpfs this large, so one box's disk can fill up
JOB_LIMIT_SECONDS = 240
RETRY_WAIT = 3.0  # ODM waits 10 s x n between its 5 retries; a third of that keeps runs short
SETTLE_SECONDS = 30  # after the job: time for removals and releases to reach every box
FINAL_ANSWER_SECONDS = 5.0  # the final snapshot waits this long for each answer: slow is not divergent


def has_outputs(names: list[str]) -> bool:
    """Whether a submodel's all.zip holds its reconstruction outputs. Real NodeODM in test mode zips a
    fixed folder whose opensfm/ has features and matches but no reconstruction.json (the simulated node
    writes one), so the folders both write are what counts (nemesis seed 76 ran one on the real node)."""
    return "cameras.json" in names and any(n.startswith("opensfm/features/") for n in names) \
        and any(n.startswith("opensfm/matches/") for n in names)


@dataclass(frozen=True)
class Fault:
    kind: str
    box: int             # 1-based; for a split, the box whose half is {box, its partner}
    at: float            # seconds after the job starts
    hold: float          # seconds until it is undone
    detail: str = ""     # split: the other box of the first half; node: "kill" or "reboot"; clock: the jump

    @property
    def until(self) -> float:
        return self.at + self.hold


SEEDS_FILE = Path(__file__).parent / "nemesis_seeds.txt"


def recorded_seeds() -> list[int]:
    """The seeds in tests/nemesis_seeds.txt: one per line, each with an optional `# what it found`."""
    if not SEEDS_FILE.exists():
        return []
    lines = (line.split("#", 1)[0].strip() for line in SEEDS_FILE.read_text().splitlines())
    return sorted({int(line) for line in lines if line.isdigit()})


def make_schedule(seed: int, boxes: int = BOXES) -> list[Fault]:
    """2 to 4 overlapping faults, all undone by about 35 s into the job."""
    rng = random.Random(seed)
    faults = []
    for _ in range(rng.randint(2, 4)):
        kind = rng.choice(KINDS)
        box = rng.randint(1, boxes)
        at, hold = round(rng.uniform(1.0, 20.0), 1), round(rng.uniform(3.0, 14.0), 1)
        detail = ""
        if kind == "split":
            detail = str(rng.choice([b for b in range(1, boxes + 1) if b != box]))
        elif kind == "node":
            detail = rng.choice(["kill", "reboot"])
        elif kind == "clock":
            detail = rng.choice(["+1h", "-1h", "+1d", "-10m"])
        faults.append(Fault(kind, box, at, hold, detail))
    return sorted(faults, key=lambda f: f.at)


def faketime_library() -> str | None:
    """libfaketime's shared library (from the `libfaketime` package), or None where it is missing."""
    try:
        import libfaketime
    except ImportError:
        return None
    path = Path(libfaketime.__file__).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
    return str(path) if path.is_file() else None


class History:
    """Everything that happened, in order, with times in seconds since the job started."""

    def __init__(self, seed: int, schedule: list[Fault]) -> None:
        self.t0 = time.monotonic()
        self.seed, self.schedule = seed, schedule
        self.events: list[dict[str, Any]] = []
        self.notes: dict[str, Any] = {}
        self._lock = threading.Lock()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def add(self, kind: str, **fields: Any) -> None:
        with self._lock:
            self.events.append({"t": self.now(), "kind": kind, **fields})

    def reply(self, exchange: dict[str, Any]) -> None:
        """One client request and what it got (tests/odm_executor.py's `on_reply`)."""
        sent = round(exchange.pop("sent") - self.t0, 3)
        with self._lock:
            self.events.append({"t": self.now(), "kind": "reply", "sent": sent, **exchange})

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"seed": self.seed, "schedule": [asdict(f) for f in self.schedule], "events": list(self.events),
                    "notes": self.notes}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), indent=0))


class Network:
    """Which boxes can reach which: on each of the hub's bridge ports, packets from a box on the other
    side are classified into a class whose queue holds nothing (this kernel has no drop action and
    no netem); the filters are rebuilt on each change."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.blocks: dict[int, set[frozenset[int]]] = {}  # fault id -> the pairs of boxes it separates
        for box in bridge.boxes:
            self._tc("qdisc", "add", "dev", box.veth, "root", "handle", "1:", "htb", "default", "1", "r2q", "100000")
            self._tc("class", "add", "dev", box.veth, "parent", "1:", "classid", "1:1", "htb", "rate", "10gbit")
            self._tc("class", "add", "dev", box.veth, "parent", "1:", "classid", "1:2", "htb", "rate", "1mbit")
            self._tc("qdisc", "add", "dev", box.veth, "parent", "1:2", "handle", "20:", "pfifo", "limit", "0")

    def _tc(self, *args: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.bridge.hub, "tc", *args], check=True, capture_output=True)

    def separate(self, fault_id: int, side: set[int]) -> None:
        others = {b.index for b in self.bridge.boxes} - side
        self.blocks[fault_id] = {frozenset((a, b)) for a in side for b in others}
        self._apply()

    def heal(self, fault_id: int) -> None:
        self.blocks.pop(fault_id, None)
        self._apply()

    def _apply(self) -> None:
        pairs = set().union(*self.blocks.values()) if self.blocks else set()
        boxes = {b.index: b for b in self.bridge.boxes}
        for box in self.bridge.boxes:
            subprocess.run(["ip", "netns", "exec", self.bridge.hub, "tc", "filter", "del", "dev", box.veth,
                            "parent", "1:", "prio", "1"], capture_output=True)
            for pair in pairs:
                if box.index in pair:
                    (other,) = pair - {box.index}
                    self._tc("filter", "add", "dev", box.veth, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                             "match", "ip", "src", f"{boxes[other].address}/32", "flowid", "1:2")


class Passel:
    """The boxes under test: a tmpfs state directory each, a node each, an agent each."""

    def __init__(self, bridge: Bridge, workdir: Path) -> None:
        self.bridge, self.workdir = bridge, workdir
        self.faketime = faketime_library()
        self.mounts: list[Path] = []

    def box(self, index: int) -> Box:
        return self.bridge.boxes[index - 1]

    def state_dir(self, box: Box) -> Path:
        return box.workdir / "state"

    def clock_file(self, box: Box) -> Path:
        return box.workdir / "faketime"

    def start(self) -> None:
        for box in self.bridge.boxes:
            state = self.state_dir(box)
            state.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={STATE_MB}m", "tmpfs", str(state)], check=True)
            self.mounts.append(state)
            self.clock_file(box).write_text("+0\n")
            self.start_node(box)
        for box in self.bridge.boxes:
            self.start_agent(box)

    def start_node(self, box: Box) -> None:
        if box.index == REAL_NODE:
            if box.realnode is None:
                box.start_realnode("--test_seconds", "3")
            else:
                box.realnode.start()
                box.realnode.wait_ready()
        else:
            box.start_simnode(seconds_per_image=SECONDS_PER_IMAGE, slots=2)
            wait_until(lambda: requests.get(f"http://{box.address}:3001/info", timeout=1).ok, 20,
                       f"the simulated node of box{box.index}", interval=0.1)

    def node_url(self, box: Box) -> str:
        return f"http://{box.address}:3001"

    def start_agent(self, box: Box) -> None:
        share = ("--share", box.realnode.url) if box.index == REAL_NODE and box.realnode else ()
        env = {}
        if self.faketime:  # the wall clock only: leases run on the boot clock, which a jump never moves
            env = {"LD_PRELOAD": self.faketime, "FAKETIME_TIMESTAMP_FILE": str(self.clock_file(box)),
                   "FAKETIME_CACHE_DURATION": "1", "DONT_FAKE_MONOTONIC": "1"}  # read once a second: cheap
        box.start_agent("--priority", str(box.index), "--grace-seconds", str(GRACE_SECONDS), *share, env=env)

    def kill_node(self, box: Box, how: str) -> None:
        if box.realnode is not None:
            box.realnode.stop(graceful=how == "reboot")
        else:
            box.signal("simnode", signal.SIGKILL)

    def processes(self, box: Box) -> list[int]:
        pids = [p.pid for p in box.processes.values() if p.poll() is None]
        if box.realnode is not None and box.realnode.process is not None:
            pids.append(box.realnode.process.pid)
        return pids

    def close(self) -> None:
        for mount in self.mounts:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill_disk(state: Path, tries: int = 5) -> None:
    """Fill the tmpfs under `state` to within 16 KiB. The box may write between the reading of the free
    space and the allocation (seed 245: a results copy), and fallocate then fails with no space left
    and gives it all back, so the disk was full for a moment only: read the free space again."""
    error = ""
    for _ in range(tries):
        free = shutil.disk_usage(state).free
        done = subprocess.run(["fallocate", "-l", str(max(free - 16 * 1024, 4096)), str(state / "nemesis-fill")],
                              capture_output=True, text=True)
        if done.returncode == 0:
            return
        error = done.stderr.strip()
    raise RuntimeError(f"could not fill {state} in {tries} tries: {error}")


class Nemesis:
    """Applies a schedule's faults at their moments and undoes each after its hold."""

    def __init__(self, passel: Passel, network: Network, history: History) -> None:
        self.passel, self.network, self.history = passel, network, history

    def run(self, schedule: list[Fault]) -> None:
        actions = sorted([(f.at, 0, i, f) for i, f in enumerate(schedule)]
                         + [(f.until, 1, i, f) for i, f in enumerate(schedule)])
        for moment, undo, fault_id, fault in actions:
            delay = moment - self.history.now()
            if delay > 0:
                time.sleep(delay)
            try:
                (self.undo if undo else self.apply)(fault_id, fault)
                self.history.add("heal" if undo else "fault", id=fault_id, fault=fault.kind, box=fault.box,
                                 detail=fault.detail)
            except Exception as exc:  # noqa: BLE001 - a fault that could not be made is recorded, not fatal
                self.history.add("nemesis-error", id=fault_id, fault=fault.kind, error=repr(exc))

    def apply(self, fault_id: int, fault: Fault) -> None:
        box = self.passel.box(fault.box)
        if fault.kind == "kill":
            box.signal("agent", signal.SIGKILL)
        elif fault.kind == "stop":
            for pid in self.passel.processes(box):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGSTOP)
        elif fault.kind == "cut":
            self.network.separate(fault_id, {fault.box})
        elif fault.kind == "split":
            self.network.separate(fault_id, {fault.box, int(fault.detail)})
        elif fault.kind == "node":
            self.passel.kill_node(box, fault.detail)
        elif fault.kind == "disk":
            fill_disk(self.passel.state_dir(box))
        elif fault.kind == "clock":
            self.passel.clock_file(box).write_text(fault.detail + "\n")

    def undo(self, fault_id: int, fault: Fault) -> None:
        box = self.passel.box(fault.box)
        if fault.kind == "kill":
            if box.processes["agent"].poll() is not None:
                self.passel.start_agent(box)
        elif fault.kind == "stop":
            for pid in self.passel.processes(box):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGCONT)
        elif fault.kind in ("cut", "split"):
            self.network.heal(fault_id)
        elif fault.kind == "node":
            self.passel.start_node(box)
        elif fault.kind == "disk":
            (self.passel.state_dir(box) / "nemesis-fill").unlink(missing_ok=True)
        # a clock jump is not undone: a box whose clock was set wrong keeps running on it


class Observer(threading.Thread):
    """Every half second: each box's own task table (its SQLite file, read-only), its view of the
    passel, and each node's task list."""

    def __init__(self, passel: Passel, history: History) -> None:
        super().__init__(daemon=True)
        self.passel, self.history = passel, history
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.5):
            began = self.history.now()  # `t` is when it was recorded, after every box was read
            self.history.add("snapshot", boxes=self.snapshot(), began=began)

    def snapshot(self, timeout: float = 0.5) -> dict[str, Any]:
        """Each box's table, view and node. The watch asks briefly, so a stopped box does not slow it;
        the final snapshot waits longer, because a box that is slow to answer under load has not
        disagreed (seed 231, run beside another campaign: the coordinator took over 0.5 s)."""
        seen: dict[str, Any] = {}
        for box in self.passel.bridge.boxes:
            view, unanswered = ask_view(box, timeout)
            seen[str(box.index)] = {"table": table_of(self.passel.state_dir(box)), "view": view,
                                    "node": node_tasks(self.passel.node_url(box), timeout)}
            if unanswered:
                seen[str(box.index)]["unanswered"] = unanswered
        return seen


def table_of(state_dir: Path) -> dict[str, list[Any]] | None:
    """uuid -> [phase, status, owner, staged_on] from a box's own database, or None when unreadable."""
    import sqlite3

    path = state_dir / "passel.sqlite3"
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)) as db:
            rows = db.execute("SELECT uuid, phase, status, owner, staged_on FROM tasks").fetchall()
    except sqlite3.Error:
        return None
    return {uuid: [phase, status, owner, staged_on] for uuid, phase, status, owner, staged_on in rows}


def view_of(box: Box, timeout: float = 0.5) -> dict[str, Any] | None:
    """Whom the box follows and whom it sees alive, or None when it does not answer."""
    return ask_view(box, timeout)[0]


def ask_view(box: Box, timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    """The box's view, or None and why it gave none (a timeout, a refused connection, an error page)."""
    try:
        answer = requests.get(box.api + "/-/passel.json", timeout=timeout)
        answer.raise_for_status()
        seen = answer.json()
    except (requests.RequestException, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:200]
    return {"coordinator": (seen.get("coordinator") or {}).get("id"), "self": seen["self"]["id"],
            "alive": sorted(b["id"] for b in seen.get("boxes", []) if b.get("alive") and not b.get("self"))}, None


def node_tasks(url: str, timeout: float = 0.5) -> dict[str, int] | None:
    """uuid -> status code of every task a node holds, or None when it does not answer."""
    try:
        listed = requests.get(url + "/task/list", timeout=timeout).json()
        infos = {t["uuid"]: requests.get(f"{url}/task/{t['uuid']}/info", timeout=timeout).json() for t in listed}
        return {uuid: int((info.get("status") or {}).get("code", 0)) for uuid, info in infos.items()}
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None


def leftovers(passel: Passel) -> dict[str, list[str]]:
    """Staged uploads and results copies still on each box's disk."""
    found = {}
    for box in passel.bridge.boxes:
        state = passel.state_dir(box)
        kept = [str(p.relative_to(state)) for sub in ("staging", "results") if (state / sub).is_dir()
                for p in (state / sub).iterdir() if not p.name.startswith(".")]
        if kept:
            found[str(box.index)] = kept
    return found


@contextlib.contextmanager
def field_passel(workdir: Path) -> Iterator[Passel]:
    bridge = Bridge(BOXES, workdir)
    passel = Passel(bridge, workdir)
    try:
        passel.start()
        yield passel
    finally:
        for box in bridge.boxes:  # SIGCONT first: a stopped process cannot be terminated
            for pid in passel.processes(box):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGCONT)
        bridge.close()
        passel.close()


def wait_for_passel(passel: Passel, timeout: float = 60) -> None:
    """Every box follows one coordinator, sees every other box, and the entry offers every node."""
    boxes = passel.bridge.boxes

    def agreed() -> bool:
        views = [view_of(b) for b in boxes]
        return all(v and v["coordinator"] and len(v["alive"]) == len(boxes) - 1 for v in views) \
            and len({v["coordinator"] for v in views if v}) == 1
    wait_until(agreed, timeout, "one coordinator that every box follows")
    entry = passel.box(ENTRY)
    wait_until(lambda: sum(n["online"] for n in requests.get(entry.api + "/-/nodes", timeout=3).json()) == len(boxes),
               30, "every node online")


def run_seed(seed: int, workdir: Path, schedule: list[Fault] | None = None) -> dict[str, Any]:
    """Run one seeded schedule (or the given one: [] is the no-fault baseline); returns the history."""
    schedule = make_schedule(seed) if schedule is None else schedule
    workdir.mkdir(parents=True, exist_ok=True)
    with field_passel(workdir) as passel:
        wait_for_passel(passel)
        history = History(seed, schedule)
        history.notes["clock_faults"] = "libfaketime" if passel.faketime else "skipped: libfaketime is missing"
        network = Network(passel.bridge)
        subs = make_submodels(workdir / "job", SUBMODELS, images=IMAGES)
        client = SplitMergeClient(passel.box(ENTRY).api, poll=0.5, retry_wait=RETRY_WAIT, keep=False,
                                  on_reply=history.reply)
        observer = Observer(passel, history)
        observer.start()
        job = threading.Thread(target=client.run, args=(subs, workdir / "out"), daemon=True)
        job.start()
        Nemesis(passel, network, history).run(schedule)
        job.join(max(JOB_LIMIT_SECONDS - history.now(), 1))
        history.add("job-end", finished=not job.is_alive(),
                    submodels=[{"name": s.name, "status": s.status, "uuids": s.history, "attempts": s.attempts,
                                "outputs": has_outputs(s.zip_names)} for s in subs])
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline and (leftovers(passel) or not settled(history)):
            time.sleep(1)
        observer.halt.set()
        observer.join(5)
        history.add("final", boxes=observer.snapshot(timeout=FINAL_ANSWER_SECONDS), leftovers=leftovers(passel))
        history.save(workdir / "history.json")
        for box in passel.bridge.boxes:
            (workdir / f"box{box.index}-agent.log").write_text(box.log("agent"))
        return history.as_dict()


def settled(history: History) -> bool:
    """The latest snapshot, begun a lease after the last heal and after the job's end (its last removal
    may still be on its way to the replicas), shows one coordinator and the same table on every box.
    A lease, because a cut shorter than one still ends in an election: the boxes agree at the heal, and
    one side declares the other gone a moment later (seed 100, where the watch ended in between)."""
    heals = [e["t"] + LEASE_SECONDS for e in history.events if e["kind"] == "heal"]
    since = max([*heals, *(e["t"] for e in history.events if e["kind"] == "job-end")], default=0.0)
    snaps = [e for e in history.events if e["kind"] == "snapshot" and e.get("began", e["t"]) > since]
    if not snaps:
        return False
    boxes = snaps[-1]["boxes"].values()
    views = [b["view"] for b in boxes]
    tables = [json.dumps(b["table"], sort_keys=True) for b in boxes]
    return all(views) and len({v["coordinator"] for v in views}) == 1 and len(set(tables)) == 1
