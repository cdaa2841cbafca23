"""Upload path: how much later does a task start on the node when it goes through Passel?

PyODM uploads a dataset (default 200 files x 5 MB = 1000 MB, 10 parallel uploads) (a) straight to a
simulated NodeODM and (b) through a Passel coordinator in front of a fresh simulated NodeODM. The
clock runs from the call to `create_task` until the node itself reports the task RUNNING (its own
`GET /task/{uuid}/info`, polled every 50 ms from a background thread). Orders alternate across
repeats, after one uncounted warm-up run. The coordinator's RSS is sampled every 100 ms; one extra
Passel run with half the data shows whether the peak grows with the dataset.

    cd /work/main && /tmp/venv/bin/python bench/upload_path.py [--files 200 --size-mb 5 --repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

import requests
from pyodm import Node

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MB = 1024 * 1024
POLL_SECONDS = 0.05
RSS_SECONDS = 0.1
TARGET_RATIO = 1.25
TARGET_RSS_MB = 150
MIN_FREE_BYTES = 5 * 1024 ** 3
JPEG_HEAD = bytes.fromhex("ffd8ffe000104a46494600010100000100010000")
JPEG_TAIL = bytes.fromhex("ffd9")


def say(*parts: Any) -> None:
    print("[upload_path]", *parts, file=sys.stderr, flush=True)


def make_dataset(directory: Path, files: int, size: int) -> list[str]:
    """Random bytes framed as JPEGs; random so nothing on the path can compress them."""
    directory.mkdir(parents=True)
    paths = []
    body = size - len(JPEG_HEAD) - len(JPEG_TAIL)
    for i in range(1, files + 1):
        path = directory / f"IMG_{i:04d}.JPG"
        with open(path, "wb") as out:
            out.write(JPEG_HEAD)
            out.write(os.urandom(body))
            out.write(JPEG_TAIL)
        paths.append(str(path))
    return paths


class NodeWatcher(threading.Thread):
    """Polls the node's own /task/{uuid}/info until it says RUNNING (20) or COMPLETED (40)."""

    def __init__(self, node_url: str, uuid: str, deadline: float) -> None:
        super().__init__(name="node-watcher", daemon=True)
        self.url = f"{node_url}/task/{uuid}/info"
        self.deadline = deadline
        self.seen_at: float | None = None
        self.status: int | None = None
        self.polls = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        with requests.Session() as http:
            next_poll = time.perf_counter()
            while not self.stop_event.is_set() and time.monotonic() < self.deadline:
                try:
                    reply = http.get(self.url, timeout=5).json()
                    self.polls += 1
                    code = (reply.get("status") or {}).get("code") if isinstance(reply, dict) else None
                    if code in (20, 40):
                        self.seen_at, self.status = time.perf_counter(), code
                        return
                except (requests.RequestException, ValueError):
                    pass
                next_poll += POLL_SECONDS
                self.stop_event.wait(max(0.0, next_poll - time.perf_counter()))


class RssSampler(threading.Thread):
    """Peak resident memory of some processes, sampled every 100 ms."""

    def __init__(self, servers: dict[str, common.Server]) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.servers = servers
        self.peak = {k: 0 for k in servers}
        self.samples = 0
        self.stop_event = threading.Event()

    def sample(self) -> None:
        for key, server in self.servers.items():
            try:
                self.peak[key] = max(self.peak[key], server.rss())
            except Exception:  # noqa: BLE001 - a process that just exited has no RSS
                pass
        self.samples += 1

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(RSS_SECONDS)


def one_run(kind: str, files: list[str], scratch: Path, seconds_per_image: float, parallel: int,
            label: str) -> dict[str, Any]:
    """Start fresh servers, upload, time until RUNNING on the node, remove the task, stop everything."""
    run_dir = scratch / label
    run_dir.mkdir()
    servers: list[common.Server] = []
    try:
        node = common.start_simnode(run_dir, run_dir / "node", seconds_per_image)
        servers.append(node)
        target = node
        if kind == "passel":
            target = common.start_passel(run_dir, run_dir / "state", node)
            servers.append(target)
        watched = {"node": node} | ({"passel": target} if kind == "passel" else {})
        idle_rss = {k: s.rss() for k, s in watched.items()}
        cpu_before = {k: s.cpu_split() for k, s in watched.items()}
        size_mb = sum(os.path.getsize(f) for f in files) / MB
        deadline = time.monotonic() + max(120.0, size_mb / 5)  # stalls end the run, at >= 5 MB/s
        task_uuid = str(uuidlib.uuid4())  # passed as set-uuid so the watcher knows what to poll from the start
        watcher = NodeWatcher(node.url, task_uuid, deadline)
        sampler = RssSampler(watched)
        sampler.sample()
        client = Node(common.LOOPBACK, target.port, timeout=30)
        t0 = time.perf_counter()
        watcher.start()
        sampler.start()
        try:
            task = client.create_task(files, skip_post_processing=True, parallel_uploads=parallel, task_uuid=task_uuid)
            t_created = time.perf_counter()
            watcher.join(max(0.0, deadline - time.monotonic()))
        finally:
            watcher.stop_event.set()
            watcher.join(10)
            sampler.sample()
            sampler.stop_event.set()
            sampler.join(5)
        if watcher.seen_at is None:
            logs = "\n".join(f"--- {s.label} log ---\n{s.log_tail(40)}" for s in servers)
            raise RuntimeError(f"{kind} run {label}: task {task_uuid} never became RUNNING on the node "
                               f"(create_task returned after {t_created - t0:.1f} s; {watcher.polls} polls)\n{logs}")
        cpu_after = {k: s.cpu_split() for k, s in watched.items()}
        cpu_used = {k: round(sum(cpu_after[k]) - sum(cpu_before[k]), 2) for k in watched}
        cpu_sys = {k: round(cpu_after[k][1] - cpu_before[k][1], 2) for k in watched}
        task.remove()
        return {
            "target": kind, "run": label, "files": len(files), "dataset_mb": round(size_mb, 1),
            "to_running_s": round(watcher.seen_at - t0, 3),
            "create_task_returned_s": round(t_created - t0, 3),
            "node_status_seen": watcher.status,
            "throughput_mb_s": round(size_mb / (watcher.seen_at - t0), 1),
            "idle_rss_mb": {k: round(v / MB, 1) for k, v in idle_rss.items()},
            "peak_rss_mb": {k: round(v / MB, 1) for k, v in sampler.peak.items()},
            "rss_samples": sampler.samples,
            "cpu_seconds": cpu_used,
            "cpu_system_seconds": cpu_sys,
        }
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def filesystem_of(path: Path) -> str:
    """The type of the file system holding `path` (tmpfs, ext4, ...), from /proc/mounts."""
    best, kind = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            if str(path).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except OSError:
        pass
    return kind


def summarize(runs: list[dict[str, Any]], half: dict[str, Any] | None) -> dict[str, Any]:
    direct = [r for r in runs if r["target"] == "direct"]
    passel = [r for r in runs if r["target"] == "passel"]
    d_t = common.median([r["to_running_s"] for r in direct])
    p_t = common.median([r["to_running_s"] for r in passel])
    peaks = [r["peak_rss_mb"]["passel"] for r in passel]
    summary: dict[str, Any] = {
        "direct": {"median_to_running_s": round(d_t, 3),
                   "median_create_task_returned_s": round(common.median([r["create_task_returned_s"] for r in direct]), 3),
                   "median_throughput_mb_s": round(common.median([r["throughput_mb_s"] for r in direct]), 1),
                   "median_node_peak_rss_mb": round(common.median([r["peak_rss_mb"]["node"] for r in direct]), 1)},
        "passel": {"median_to_running_s": round(p_t, 3),
                   "median_create_task_returned_s": round(common.median([r["create_task_returned_s"] for r in passel]), 3),
                   "median_throughput_mb_s": round(common.median([r["throughput_mb_s"] for r in passel]), 1),
                   "median_node_peak_rss_mb": round(common.median([r["peak_rss_mb"]["node"] for r in passel]), 1),
                   "coordinator_idle_rss_mb": round(common.median([r["idle_rss_mb"]["passel"] for r in passel]), 1),
                   "coordinator_peak_rss_mb_max": max(peaks),
                   "coordinator_peak_rss_mb_median": round(common.median(peaks), 1),
                   "median_coordinator_cpu_s": round(common.median([r["cpu_seconds"]["passel"] for r in passel]), 2)},
        "ratio_passel_over_direct": round(p_t / d_t, 3),
        "target_ratio": TARGET_RATIO,
        "meets_ratio_target": p_t / d_t <= TARGET_RATIO,
        "target_peak_rss_mb": TARGET_RSS_MB,
        "meets_rss_target": max(peaks) < TARGET_RSS_MB,
    }
    if half is not None:
        full_mb, half_mb = passel[0]["dataset_mb"], half["dataset_mb"]
        full_peak, half_peak = common.median(peaks), half["peak_rss_mb"]["passel"]
        slope = (full_peak - half_peak) / (full_mb - half_mb) if full_mb > half_mb else 0.0
        summary["rss_vs_dataset"] = {
            "half_dataset_mb": half_mb, "half_peak_rss_mb": half_peak,
            "full_dataset_mb": full_mb, "full_peak_rss_mb_median": round(full_peak, 1),
            "rss_mb_per_dataset_mb": round(slope, 4),
            # more than 10 MB and 2 % of the extra data retained counts as growing with the dataset
            "grows_with_dataset": (full_peak - half_peak) > 10 and slope > 0.02,
            "half_to_running_s": half["to_running_s"],
        }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200, help="number of images (default 200)")
    parser.add_argument("--size-mb", type=float, default=5, help="size of each image in MB (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind (default 3)")
    parser.add_argument("--parallel-uploads", type=int, default=10, help="PyODM parallel_uploads (default 10)")
    parser.add_argument("--seconds-per-image", type=float, default=5, help="simnode speed; slow keeps it RUNNING")
    parser.add_argument("--tmp-dir", default=None,
                        help="where the dataset, the node's data and Passel's staging go (default: $TMPDIR or /tmp); "
                             "e.g. /dev/shm takes the disk out of the measurement")
    parser.add_argument("--warmup", type=int, default=1, choices=(0, 1),
                        help="first do one uncounted direct run (default 1): the first upload after the dataset "
                             "is written is much slower on this kind of VM, whatever the target")
    parser.add_argument("--label", default="", help="save as results/upload_path-LABEL.json instead")
    parser.add_argument("--no-half", action="store_true", help="skip the extra half-dataset Passel run")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    if args.files < 2 or args.size_mb <= 0 or not 1 <= args.repeat <= 20:
        parser.error("need --files >= 2, --size-mb > 0 and 1 <= --repeat <= 20")
    common.exit_on_sigterm()
    load_before = common.background_load()

    scratch = common.Scratch("passel-bench-upload-", args.tmp_dir)
    try:
        size = int(args.size_mb * MB)
        files = args.files
        free = shutil.disk_usage(scratch.path).free
        if free < MIN_FREE_BYTES:  # a Passel run holds the dataset three times: source, staging, node
            files = max(2, min(files, int((free - 512 * MB) // (3 * size))))
            say(f"WARNING: only {free // MB} MB free in {scratch.path.parent}; shrinking the dataset to {files} files")
        say(f"writing {files} x {args.size_mb} MB to {scratch.path} ...")
        paths = make_dataset(scratch.path / "images", files, size)
        warm = None
        if args.warmup:
            warm = one_run("direct", paths, scratch.path, args.seconds_per_image, args.parallel_uploads, "warmup")
            say(f"warm-up direct (not counted): RUNNING on node after {warm['to_running_s']:.2f} s")
        runs: list[dict[str, Any]] = []
        for rep in range(args.repeat):
            order = ("direct", "passel") if rep % 2 == 0 else ("passel", "direct")
            for kind in order:
                result = one_run(kind, paths, scratch.path, args.seconds_per_image, args.parallel_uploads,
                                 f"{kind}-{rep}")
                say(f"repeat {rep} {kind:6}: RUNNING on node after {result['to_running_s']:.2f} s "
                    f"(create_task returned {result['create_task_returned_s']:.2f} s), peak RSS {result['peak_rss_mb']}")
                runs.append(result)
        half = None
        if not args.no_half:
            half = one_run("passel", paths[: max(1, files // 2)], scratch.path, args.seconds_per_image,
                           args.parallel_uploads, "passel-half")
            say(f"half dataset passel: RUNNING after {half['to_running_s']:.2f} s, peak RSS {half['peak_rss_mb']}")
        data = {
            "benchmark": "upload_path",
            "machine": common.machine() | {"load_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
            "params": {"files": files, "size_mb": args.size_mb, "dataset_mb": runs[0]["dataset_mb"],
                       "repeat": args.repeat, "parallel_uploads": args.parallel_uploads,
                       "seconds_per_image": args.seconds_per_image, "poll_interval_s": POLL_SECONDS,
                       "rss_interval_s": RSS_SECONDS, "tmp_dir": str(scratch.path.parent),
                       "tmp_filesystem": filesystem_of(scratch.path)},
            **summarize(runs, half),
            "runs": runs,
            "half_run": half,
            "warmup_run": warm,
        }
    finally:
        scratch.close()
    path = common.write_results("upload_path" + (f"-{args.label}" if args.label else ""), data)
    if args.json:
        print(json.dumps(data))
    else:
        d, p = data["direct"], data["passel"]
        print(f"\nUpload path: {files} x {args.size_mb} MB = {data['params']['dataset_mb']} MB, "
              f"{args.repeat} repeats, parallel_uploads={args.parallel_uploads}")
        print(f"{'':28}{'direct':>10}{'passel':>10}")
        print(f"{'median to RUNNING on node s':28}{d['median_to_running_s']:>10.2f}{p['median_to_running_s']:>10.2f}")
        print(f"{'median create_task return s':28}{d['median_create_task_returned_s']:>10.2f}"
              f"{p['median_create_task_returned_s']:>10.2f}")
        print(f"{'median MB/s to RUNNING':28}{d['median_throughput_mb_s']:>10.1f}{p['median_throughput_mb_s']:>10.1f}")
        print(f"ratio passel/direct: {data['ratio_passel_over_direct']:.3f} (target <= {TARGET_RATIO}: "
              f"{'met' if data['meets_ratio_target'] else 'NOT met'})")
        print(f"coordinator RSS: idle {p['coordinator_idle_rss_mb']} MB, peak max {p['coordinator_peak_rss_mb_max']} MB "
              f"(target < {TARGET_RSS_MB}: {'met' if data['meets_rss_target'] else 'NOT met'})")
        if "rss_vs_dataset" in data:
            r = data["rss_vs_dataset"]
            print(f"peak RSS vs dataset: {r['half_dataset_mb']} MB -> {r['half_peak_rss_mb']} MB; "
                  f"{r['full_dataset_mb']} MB -> {r['full_peak_rss_mb_median']} MB "
                  f"({'grows' if r['grows_with_dataset'] else 'flat'}, {r['rss_mb_per_dataset_mb']} MB per MB)")
        print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
