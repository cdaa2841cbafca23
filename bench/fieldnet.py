"""Field network: what does each entry point of a passel cost on a slow, shaped network? (issue #15)

A client and `--boxes` (3..5) boxes, each in its own network namespace on one hub (tests/netns.py's
`Bridge`); each box runs a simulated NodeODM on :3001 and an agent on :3000 (`--priority` = its
index, as tests/test_multihost.py starts them), and they elect a coordinator. The client is this
process, in the root namespace, on the hub at `.254`. One more box, with no agent, runs a real NodeODM
(test mode, tests/realnode.py) when the kit is available.

Links are shaped with `tc` token-bucket filters (bench/netshape.py has the details):
  - `switch`: every port (each box's and the client's) is a full-duplex link of `--rate`, both
    directions shaped (hub-side veth egress and host-side veth egress); ports do not share capacity.
  - `shared`: one channel of `--rate` that every frame on the hub crosses, whoever sends it (each
    port's ingress is redirected into one ifb device that carries the one tbf), as one Wi-Fi channel.

Entry points, each a PyODM `create_task(files, parallel_uploads=10, skip_post_processing=True,
task_uuid=...)` of the same random-byte "JPEGs" (default 40 x 5 MiB):
  - `direct`: straight to the simulated node of the follower box used below (all ports are shaped
    alike, so any box's node would do);
  - `coordinator`: the coordinator's :3000;
  - `follower`: a follower's :3000;
  - `follower-away`: the same, with the follower's own node locked, so the task must run on another
    box (the images then cross two links: client to follower, follower to that node);
  - `splitmerge`: ODM's split-merge pattern (tests/odm_executor.py, which reproduces opendm/remote.py:
    init without set-uuid, one plain `requests` POST per image, 10 at a time, plus a seed.zip; commit;
    RUNNING-or-COMPLETED check) through the same follower, for one submodel;
  - `realnode`: straight to the real NodeODM, on a link shaped like every other.

Per run: the clock runs from the client's first request until *the node itself* says RUNNING (or
COMPLETED): a thread inside each candidate box's namespace polls its node's `/task/{uuid}/info` every
50 ms (on the box's own loopback/local address, so polling puts no byte on the shaped links). The
hub's byte counters (`tx_bytes` of every hub-side port: each frame delivered onto a link counts once)
are read before the client starts and once it has returned and the node runs the task; divided by
the bytes uploaded. CPU (user+system) of every agent, every simulated node and the real NodeODM's
process tree is read before and after, per GB (10^9 bytes) uploaded. Where the task ran comes from
the node that reported it and the coordinator's `/-/tasks/{uuid}`. Each task is removed afterwards
and the run waits until every node's task list is empty again.

Entry points are interleaved (the order rotates each repeat), after one uncounted direct warm-up;
medians over `--repeat` runs are reported, with ratios to `direct` and the issue's targets
(informational): the entry box's own node: bytes <= 1.05x and time <= 1.05x direct; another box's
node: bytes <= 2.05x, time <= 1.10x; shared medium: through a follower, time <= 1.10x direct.

Needs root (namespaces, tc). Only addresses inside the namespaces it creates are contacted.

    cd /work/main && .venv/bin/python bench/fieldnet.py [--mode switch|shared ...] [--rate 100mbit ...]
        [--all] [--boxes 3] [--files 40 --size-mb 5 --repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid as uuidlib
import zipfile
from pathlib import Path
from typing import Any

import psutil
import requests
from pyodm import Node

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
import common  # noqa: E402
import netshape  # noqa: E402
from upload_path import make_dataset  # noqa: E402

from tests.netns import Box, Bridge, netns_available, wait_until  # noqa: E402
from tests.odm_executor import Aborted, Retry, SplitMergeClient, Submodel  # noqa: E402
from tests.realnode import unavailable_reason  # noqa: E402

MIB = 1024 * 1024
GB = 1e9
POLL_SECONDS = 0.05
RUNNING, COMPLETED = 20, 40
PASSEL_ENTRIES = ("coordinator", "follower", "follower-away", "splitmerge")
ALL_SCENARIOS = (("switch", "100mbit"), ("switch", "1gbit"), ("shared", "100mbit"))
TARGETS = {"own": {"time": 1.05, "bytes": 1.05}, "other": {"time": 1.10, "bytes": 2.05}}
SHARED_FOLLOWER_TIME = 1.10
REALNODE_TEST_SECONDS = "3600"  # keeps the real node's task RUNNING until we remove it


def say(*parts: Any) -> None:
    print("[fieldnet]", *parts, file=sys.stderr, flush=True)


def view(box: Box, timeout: float = 3) -> dict[str, Any]:
    return requests.get(box.api + "/-/passel.json", timeout=timeout).json()


def settled_on_one(boxes: list[Box]) -> str | None:
    seen = {(view(box)["coordinator"] or {}).get("id") for box in boxes}
    return seen.pop() if len(seen) == 1 and None not in seen else None


def cpu_of(proc: psutil.Process, tree: bool = False) -> float:
    """User+system seconds of a process (and, with `tree`, its reaped and live descendants)."""
    procs = [proc] + (proc.children(recursive=True) if tree else [])
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + ((t.children_user + t.children_system) if tree else 0.0)
    return total


class NodeWatch:
    """Polls `/task/{uuid}/info` of each candidate node from inside its box's namespace, every 50 ms,
    until one says RUNNING or COMPLETED; remembers when and which box."""

    def __init__(self, boxes: list[Box], deadline: float) -> None:
        self.boxes, self.deadline = boxes, deadline
        self.seen_at: float | None = None
        self.box: Box | None = None
        self.status: int | None = None
        self.polls = 0
        self.done = threading.Event()
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, uuid: str) -> None:
        for box in self.boxes:
            thread = threading.Thread(target=self._poll, args=(box, uuid), name=f"watch-{box.index}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _poll(self, box: Box, uuid: str) -> None:
        netshape.enter_netns(box.ns)  # this thread only; its sockets stay inside the box
        url = f"http://{box.address}:3001/task/{uuid}/info"
        with requests.Session() as http:
            next_poll = time.perf_counter()
            while not self.done.is_set() and time.monotonic() < self.deadline:
                try:
                    reply = http.get(url, timeout=5).json()
                    code = (reply.get("status") or {}).get("code") if isinstance(reply, dict) else None
                    with self._lock:
                        self.polls += 1
                        if code in (RUNNING, COMPLETED) and self.seen_at is None:
                            self.seen_at, self.box, self.status = time.perf_counter(), box, code
                            self.done.set()
                            return
                except (requests.RequestException, ValueError):
                    pass
                next_poll += POLL_SECONDS
                self.done.wait(max(0.0, next_poll - time.perf_counter()))

    def wait(self) -> None:
        self.done.wait(max(0.0, self.deadline - time.monotonic()))

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(10)


class Field:
    """One shaped field network with its passel, started and torn down by `with`."""

    def __init__(self, args: argparse.Namespace, mode: str, rate: str, workdir: Path, real: bool) -> None:
        self.args, self.mode, self.rate, self.workdir, self.real = args, mode, rate, workdir, real
        self.bridge: Bridge | None = None
        self.shaper: netshape.Shaper | None = None

    def __enter__(self) -> Field:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        n = self.args.boxes
        self.bridge = Bridge(n + (1 if self.real else 0), self.workdir)
        ports = [(box.ns, "eth0", box.veth) for box in self.bridge.boxes]
        ports.append((None, self.bridge.root_veth, self.bridge.root_veth[:-1] + "q"))  # the client's port
        self.shaper = netshape.Shaper(self.bridge.hub, ports, self.mode, self.rate)
        self.shaper.apply()
        self.boxes = self.bridge.boxes[:n]
        self.real_box = self.bridge.boxes[n] if self.real else None
        for box in self.boxes:
            box.start_simnode(seconds_per_image=self.args.seconds_per_image, slots=2)
            box.start_agent("--priority", str(box.index))
        if self.real_box is not None:  # a box with a real NodeODM and no agent: Passel never sees it
            self.real_box.start_realnode("--test_seconds", REALNODE_TEST_SECONDS)
        wait_until(lambda: all(sum(b["alive"] for b in view(box)["boxes"]) == n for box in self.boxes), 60,
                   "every box to see every box")
        leader = wait_until(lambda: settled_on_one(self.boxes), 60, "one coordinator")
        ids = {view(box)["self"]["id"]: box for box in self.boxes}
        self.coordinator = ids[leader]
        self.follower = next(box for box in self.boxes if box is not self.coordinator)
        wait_until(lambda: sum(bool(x.get("online")) for x in
                               requests.get(self.coordinator.api + "/-/nodes", timeout=5).json()) == n,
                   60, "every box's node online at the coordinator")
        self.procs = {f"agent{box.index}": psutil.Process(box.processes["agent"].pid) for box in self.boxes}
        self.procs |= {f"simnode{box.index}": psutil.Process(box.processes["simnode"].pid) for box in self.boxes}
        if self.real_box is not None and self.real_box.realnode and self.real_box.realnode.process:
            self.procs["realnode"] = psutil.Process(self.real_box.realnode.process.pid)

    def __exit__(self, *exc: object) -> None:
        if self.shaper is not None:
            try:
                self.tc_stats = self.shaper.describe()
            except Exception:  # noqa: BLE001 - statistics only
                self.tc_stats = {}
            self.shaper.clear()
        if self.bridge is not None:
            self.bridge.close()

    def lock_own_node(self, box: Box) -> int:
        """Lock the node on `box` (through the coordinator's admin API), so a task must run elsewhere."""
        nodes = requests.get(f"{self.coordinator.api}/-/nodes", timeout=10).json()
        node_id = next(n["id"] for n in nodes if n["url"] == f"http://{box.address}:3001")
        requests.post(f"{self.coordinator.api}/-/nodes/{node_id}/lock", timeout=10).raise_for_status()
        return int(node_id)

    def unlock(self, node_id: int) -> None:
        requests.post(f"{self.coordinator.api}/-/nodes/{node_id}/unlock", timeout=10).raise_for_status()

    def box_of_url(self, url: str | None) -> str | None:
        for box in self.bridge.boxes if self.bridge else []:
            if url and f"//{box.address}:" in url:
                return f"box{box.index}"
        return None

    def cpu(self) -> dict[str, float]:
        out = {}
        for name, proc in self.procs.items():
            try:
                out[name] = cpu_of(proc, tree=name == "realnode")
            except psutil.Error:
                out[name] = float("nan")
        return out

    def idle_bytes_per_second(self, seconds: float = 5.0) -> float:
        before = self.shaper.counters()
        time.sleep(seconds)
        moved = netshape.delta(before, self.shaper.counters())
        return sum(d["tx"] for d in moved.values()) / seconds

    def wait_nodes_empty(self, timeout: float = 60) -> bool:
        nodes = [f"http://{box.address}:3001" for box in self.boxes]
        if self.real_box is not None:
            nodes.append(f"http://{self.real_box.address}:3001")
        try:
            wait_until(lambda: all(requests.get(u + "/task/list", timeout=5).json() == [] for u in nodes), timeout,
                       "every node's task list to be empty", interval=0.5)
            return True
        except AssertionError as exc:
            say(f"WARNING: {exc}")
            return False


def seed_zip(directory: Path) -> Path:
    """The seed.zip ODM sends with every submodel (as tests/odm_executor.make_submodels builds it)."""
    path = directory / "seed.zip"
    if not path.exists():
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("opensfm/split_merge_stop_at_reconstruction.txt", "")
    return path


def one_run(field: Field, entry: str, files: list[str], seed: Path, label: str) -> dict[str, Any]:
    """Upload through `entry`, time until a node runs the task, count bytes and CPU, then remove it."""
    args = field.args
    payload = sum(os.path.getsize(f) for f in files) + (seed.stat().st_size if entry == "splitmerge" else 0)
    rate_bytes = netshape.parse_rate(field.rate) / 8
    deadline = time.monotonic() + 120 + 8 * payload / rate_bytes  # a stalled run ends here
    if entry == "direct":
        host, port, watched = field.follower.address, 3001, [field.follower]
    elif entry == "realnode":
        host, port, watched = field.real_box.address, 3001, [field.real_box]
    else:
        entry_box = field.coordinator if entry == "coordinator" else field.follower
        host, port, watched = entry_box.address, 3000, field.boxes
    locked = field.lock_own_node(field.follower) if entry == "follower-away" else None
    watch = NodeWatch(watched, deadline)
    task_uuid = str(uuidlib.uuid4())
    cpu_before = field.cpu()
    net_before = field.shaper.counters()
    t0 = time.perf_counter()
    task = None
    error = None
    try:
        if entry == "splitmerge":
            client = SplitMergeClient(f"http://{host}:{port}",
                                      on_stage=lambda s, stage: stage == "uploading" and watch.start(s.uuid))
            sub = Submodel(name="submodel_0000", files=[Path(f) for f in files] + [seed])
            try:
                client._submit(sub)  # one submodel: init, uploads, commit, the RUNNING-or-COMPLETED check
            except (Retry, Aborted) as exc:
                error = f"split-merge client gave up: {exc}"
            task_uuid = sub.uuid or task_uuid
        else:
            watch.start(task_uuid)
            task = Node(host, port, timeout=60).create_task(files, skip_post_processing=True,
                                                            parallel_uploads=args.parallel_uploads,
                                                            task_uuid=task_uuid)
        t_returned = time.perf_counter()
        if error is None:
            watch.wait()
    finally:
        watch.stop()
        if locked is not None:
            field.unlock(locked)
    net_after = field.shaper.counters()
    cpu_after = field.cpu()
    if watch.seen_at is None:
        logs = "\n".join(f"--- box{b.index} agent ---\n" + "\n".join(b.log("agent").splitlines()[-30:])
                         for b in field.boxes)
        raise RuntimeError(f"{entry} run {label}: task {task_uuid} never RUNNING on a node ({error or 'timeout'}; "
                           f"client returned after {t_returned - t0:.1f} s, {watch.polls} polls)\n{logs}")
    moved = netshape.delta(net_before, net_after)
    wire = sum(d["tx"] for d in moved.values())
    ran_on = f"box{watch.box.index}" if watch.box is not None else None
    admin_node = None
    if entry in PASSEL_ENTRIES:
        try:
            admin_node = field.box_of_url(requests.get(f"{field.coordinator.api}/-/tasks/{task_uuid}",
                                                       timeout=10).json().get("node_url"))
        except (requests.RequestException, ValueError):
            pass
    # remove the task where it was sent, and wait until no node holds a task any more
    try:
        if task is not None:
            task.remove()
        else:
            requests.post(f"http://{host}:{port}/task/remove", data={"uuid": task_uuid}, timeout=30)
    except Exception as exc:  # noqa: BLE001 - the wait below reports what is left
        say(f"WARNING: removing {task_uuid} via {entry}: {exc}")
    clean = field.wait_nodes_empty()
    entry_box = {"coordinator": field.coordinator, "follower": field.follower, "follower-away": field.follower,
                 "splitmerge": field.follower}.get(entry)
    placement = None
    if entry_box is not None and ran_on is not None:
        placement = "own" if ran_on == f"box{entry_box.index}" else "other"
    seconds = watch.seen_at - t0
    cpu = {k: round(cpu_after[k] - cpu_before[k], 3) for k in cpu_after}
    return {
        "entry": entry, "run": label, "uuid": task_uuid, "payload_bytes": payload,
        "to_running_s": round(seconds, 3), "client_returned_s": round(t_returned - t0, 3),
        "node_status_seen": watch.status, "throughput_mb_s": round(payload / MIB / seconds, 2),
        "wire_bytes": wire, "wire_per_byte": round(wire / payload, 4),
        "port_bytes": moved,
        "ran_on": ran_on, "coordinator_says": admin_node,
        "entry_box": f"box{entry_box.index}" if entry_box is not None else None, "placement": placement,
        "cpu_seconds": cpu, "cpu_s_per_gb": {k: round(v / (payload / GB), 3) for k, v in cpu.items()},
        "nodes_clean_after": clean,
    }


def summarize(field: Field, runs: list[dict[str, Any]], entries: list[str]) -> dict[str, Any]:
    by = {e: [r for r in runs if r["entry"] == e] for e in entries}
    med = {e: {"to_running_s": common.median([r["to_running_s"] for r in rs]),
               "wire_per_byte": common.median([r["wire_per_byte"] for r in rs]),
               "throughput_mb_s": common.median([r["throughput_mb_s"] for r in rs])} for e, rs in by.items()}
    d = med["direct"]
    out: dict[str, Any] = {}
    for entry, rs in by.items():
        m = med[entry]
        cpu_keys = sorted({k for r in rs for k in r["cpu_s_per_gb"]})
        row: dict[str, Any] = {
            "runs": len(rs),
            "median_to_running_s": round(m["to_running_s"], 3),
            "median_wire_per_byte": round(m["wire_per_byte"], 4),
            "median_throughput_mb_s": round(m["throughput_mb_s"], 2),
            "time_ratio": round(m["to_running_s"] / d["to_running_s"], 3),
            "bytes_ratio": round(m["wire_per_byte"] / d["wire_per_byte"], 3),
            "median_cpu_s_per_gb": {k: round(common.median([r["cpu_s_per_gb"][k] for r in rs]), 3)
                                    for k in cpu_keys},
            "ran_on": [r["ran_on"] for r in rs],
            "placements": [r["placement"] for r in rs],
        }
        if entry in PASSEL_ENTRIES:
            own = sum(p == "own" for p in row["placements"])
            placement = "own" if own * 2 > len(rs) else "other"
            target = dict(TARGETS[placement])
            if field.mode == "shared" and entry in ("follower", "follower-away", "splitmerge"):
                target["time"] = SHARED_FOLLOWER_TIME
            row |= {"placement": placement, "target_time_ratio": target["time"],
                    "target_bytes_ratio": target["bytes"],
                    "meets_time_target": row["time_ratio"] <= target["time"],
                    "meets_bytes_target": row["bytes_ratio"] <= target["bytes"]}
        out[entry] = row
    return out


def run_scenario(args: argparse.Namespace, mode: str, rate: str, files: list[str], seed: Path, workdir: Path,
                 real_reason: str | None) -> dict[str, Any]:
    entries = ["direct", "coordinator", "follower", "follower-away", "splitmerge"] + ([] if real_reason else ["realnode"])
    say(f"=== {mode} {rate}: starting {args.boxes} boxes{'' if real_reason else ' + a real NodeODM box'} ...")
    began = time.monotonic()
    with Field(args, mode, rate, workdir, real=real_reason is None) as field:
        say(f"coordinator box{field.coordinator.index}, follower entry box{field.follower.index}; "
            f"settled after {time.monotonic() - began:.1f} s")
        idle = field.idle_bytes_per_second()
        say(f"idle traffic on the hub: {idle / 1024:.1f} KiB/s")
        warm = None
        if args.warmup:
            warm = one_run(field, "direct", files, seed, "warmup")
            say(f"warm-up direct (not counted): RUNNING after {warm['to_running_s']:.2f} s")
        runs: list[dict[str, Any]] = []
        for rep in range(args.repeat):
            order = entries[rep % len(entries):] + entries[:rep % len(entries)]
            for entry in order:
                r = one_run(field, entry, files, seed, f"{entry}-{rep}")
                agents = " ".join(f"{k}={v:.1f}" for k, v in r["cpu_s_per_gb"].items() if k.startswith("agent"))
                say(f"{mode} {rate} rep {rep} {entry:11}: RUNNING on {r['ran_on']} after {r['to_running_s']:6.2f} s, "
                    f"wire {r['wire_per_byte']:.3f} B/B, agent CPU s/GB {agents}")
                runs.append(r)
        summary = summarize(field, runs, entries)
        info = {"coordinator": f"box{field.coordinator.index}", "follower_entry": f"box{field.follower.index}",
                "direct_to": f"box{field.follower.index}",
                "real_nodeodm_box": f"box{field.real_box.index}" if field.real_box else None}
    return {"mode": mode, "rate": rate, "boxes": args.boxes, **info,
            "idle_hub_bytes_per_s": round(idle), "realnode_skipped": real_reason,
            "summary": summary, "tc": getattr(field, "tc_stats", {}), "runs": runs, "warmup_run": warm}


def print_scenario(sc: dict[str, Any], params: dict[str, Any]) -> None:
    s = sc["summary"]
    d = s["direct"]
    print(f"\nField network, {sc['mode']} at {sc['rate']}: {sc['boxes']} boxes, coordinator {sc['coordinator']}, "
          f"follower entry {sc['follower_entry']}, direct to {sc['direct_to']}'s node; "
          f"{params['files']} x {params['size_mb']} MiB, {params['repeat']} repeats, medians")
    print(f"{'':12} {'':7}{'s to RUN':>9}{'wire B/B':>9}{'MB/s':>9}   (the 'p50' target is on s to RUNNING)")
    for entry in PASSEL_ENTRIES:
        if entry not in s:
            continue
        r = s[entry]
        row = {"direct": {"p50_ms": d["median_to_running_s"], "bytes_ms": d["median_wire_per_byte"],
                          "rps": d["median_throughput_mb_s"]},
               "passel": {"p50_ms": r["median_to_running_s"], "bytes_ms": r["median_wire_per_byte"],
                          "rps": r["median_throughput_mb_s"]},
               "ratio_p50": r["time_ratio"], "ratio_bytes": r["bytes_ratio"],
               "ratio_rps": r["median_throughput_mb_s"] / d["median_throughput_mb_s"],
               "meets_p50_target": r["meets_time_target"]}
        common.print_ratio_rows(entry, 12, row, "bytes", r["target_time_ratio"])
    agents = sorted(k for k in d["median_cpu_s_per_gb"] if k.startswith("agent"))
    print(f"\n{'entry':12}{'ran on':>16}{'time x':>8}{'bytes x':>8}{'targets (time/bytes)':>28}"
          + "".join(f"{a:>9}" for a in agents) + f"{'node':>9}   (CPU s per GB)")
    for entry, r in s.items():
        ran = sorted(set(r["ran_on"]))
        where = ",".join(x or "?" for x in ran) + (f" {r['placement']}" if "placement" in r else "")
        if "placement" in r:
            tgt = (f"{r['target_time_ratio']:.2f} {'ok' if r['meets_time_target'] else 'FAIL'} / "
                   f"{r['target_bytes_ratio']:.2f} {'ok' if r['meets_bytes_target'] else 'FAIL'}")
        else:
            tgt = "-"
        cpu = r["median_cpu_s_per_gb"]
        node_key = "realnode" if entry == "realnode" else (f"simnode{ran[0][3:]}" if len(ran) == 1 and ran[0] else "")
        node = f"{cpu[node_key]:>9.2f}" if node_key in cpu else f"{'?':>9}"
        print(f"{entry:12}{where:>16}{r['time_ratio']:>8.2f}{r['bytes_ratio']:>8.2f}{tgt:>28}"
              + "".join(f"{cpu.get(a, float('nan')):>9.2f}" for a in agents) + node)
    if sc["realnode_skipped"]:
        print(f"real NodeODM row skipped: {sc['realnode_skipped']}")
    print(f"idle traffic on the hub: {sc['idle_hub_bytes_per_s'] / 1024:.1f} KiB/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boxes", type=int, default=3, help="boxes running a passel, 3..5 (default 3)")
    parser.add_argument("--mode", nargs="+", choices=("switch", "shared"), default=["switch"],
                        help="switch: a full-duplex link per port; shared: one channel for all (default switch)")
    parser.add_argument("--rate", nargs="+", default=["100mbit"], help="tc rate(s), e.g. 100mbit 1gbit")
    parser.add_argument("--all", action="store_true",
                        help="run switch 100mbit, switch 1gbit and shared 100mbit (overrides --mode/--rate)")
    parser.add_argument("--files", type=int, default=40, help="number of images (default 40)")
    parser.add_argument("--size-mb", type=float, default=5, help="size of each image in MiB (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each entry point (default 3)")
    parser.add_argument("--parallel-uploads", type=int, default=10, help="PyODM parallel_uploads (default 10)")
    parser.add_argument("--seconds-per-image", type=float, default=5, help="simnode pace; slow keeps it RUNNING")
    parser.add_argument("--warmup", type=int, default=1, choices=(0, 1), help="one uncounted direct run first")
    parser.add_argument("--no-realnode", action="store_true", help="skip the real NodeODM row")
    parser.add_argument("--tmp-dir", default=None, help="where the dataset and the boxes' files go")
    parser.add_argument("--label", default="", help="save as results/fieldnet-LABEL.json instead")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = parser.parse_args()
    if not 3 <= args.boxes <= 5 or args.files < 1 or args.size_mb <= 0 or not 1 <= args.repeat <= 20:
        parser.error("need 3 <= --boxes <= 5, --files >= 1, --size-mb > 0 and 1 <= --repeat <= 20")
    scenarios = list(ALL_SCENARIOS) if args.all else [(m, r) for m in args.mode for r in args.rate]
    for _, rate in scenarios:
        try:
            netshape.parse_rate(rate)
        except ValueError as exc:
            parser.error(str(exc))
    reason = netns_available()
    if reason:
        say(f"cannot run: {reason}")
        return 2
    real_reason = "--no-realnode" if args.no_realnode else unavailable_reason()
    if real_reason:
        say(f"skipping the real NodeODM row: {real_reason}")
    common.exit_on_sigterm()
    load_before = common.background_load()
    code_before = common.code_version()

    scratch = common.Scratch("passel-bench-fieldnet-", args.tmp_dir)
    results: list[dict[str, Any]] = []
    try:
        size = int(args.size_mb * MIB)
        say(f"writing {args.files} x {args.size_mb} MiB to {scratch.path} ...")
        files = make_dataset(scratch.path / "images", args.files, size)
        seed = seed_zip(scratch.path)
        for i, (mode, rate) in enumerate(scenarios):
            results.append(run_scenario(args, mode, rate, files, seed, scratch.path / f"field{i}", real_reason))
    finally:
        scratch.close()
    digest_after = common.sources_digest()
    changed = digest_after != code_before["appliance_sources_sha256"]
    if changed:
        say("WARNING: appliance/ changed while the benchmark ran; runs may mix two versions of the code")
    params = {"files": args.files, "size_mb": args.size_mb, "dataset_mib": round(args.files * args.size_mb, 1),
              "repeat": args.repeat, "parallel_uploads": args.parallel_uploads, "boxes": args.boxes,
              "seconds_per_image": args.seconds_per_image, "poll_interval_s": POLL_SECONDS,
              "scenarios": [f"{m}:{r}" for m, r in scenarios],
              "shaping": {"switch": "tbf on both ends of every port's veth (hub egress, host egress)",
                          "shared": "every hub port's ingress redirected into one ifb with one tbf",
                          "tbf": {rate: " ".join(netshape.tbf_args(rate)) for _, rate in scenarios}},
              "wire_bytes": "sum of tx_bytes of the hub-side ports (each frame delivered onto a link, once)",
              "targets": {"own_node": TARGETS["own"], "other_node": TARGETS["other"],
                          "shared_follower_time": SHARED_FOLLOWER_TIME}}
    data = {
        "benchmark": "fieldnet",
        "machine": common.machine() | {"load_before": load_before,
                                       "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                                       "appliance_sources_sha256_before": code_before["appliance_sources_sha256"],
                                       "appliance_sources_sha256_after": digest_after,
                                       "appliance_changed_during_run": changed},
        "versions": {"pyodm": common.package_version("pyodm")},
        "params": params,
        "scenarios": results,
    }
    path = common.write_results("fieldnet" + (f"-{args.label}" if args.label else ""), data)
    if args.json:
        print(json.dumps(data))
    else:
        for sc in results:
            print_scenario(sc, params)
        print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
