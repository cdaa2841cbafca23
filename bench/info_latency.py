"""Info latency: how fast does Passel answer `GET /task/{uuid}/info` for a RUNNING task, compared with
the node behind it?

Clients poll info all the time (ODM every 3 s per submodel, WebODM with `with_output=<lines it has>`),
and a running task's info is what they poll. Passel answers it from the live view the tracker keeps
(appliance/cluster/info_cache.py), so it should be at least as fast as the node itself (target: p50
ratio <= 1.0).

Two set-ups, each with its own node and coordinator, each in its own process:
  (a) a real NodeODM 2.2.4 in test mode (tests/realnode.py), its task kept RUNNING by `--test_seconds`;
  (b) the simulated node, its task kept RUNNING by a slow pace per image.
One task is created through Passel (PyODM) and left running. Then an aiohttp client in this process
sends GETs at concurrency 1 and 50, with a keep-alive pool as large as the concurrency, to the node
directly and through Passel, for two requests:
  - `info`: plain `/task/{uuid}/info`, as ODM's split-merge executor polls;
  - `info?with_output=N`: N = the lines the client already has, as WebODM polls.
Each measurement is warmed up first; direct and Passel alternate, `--repeat` times, and medians of the
per-run percentiles are reported. Everything listens on 127.0.0.1 only.

    cd /work/main && .venv/bin/python bench/info_latency.py [--requests 1000 --repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from pyodm import Node

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
from tests.realnode import RealNode, unavailable_reason  # noqa: E402

LEVELS = (1, 50)
TARGET_P50_RATIO = 1.0
RUNNING = 20
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000") + b"\0" * 1000 + bytes.fromhex("ffd9")


def say(*parts: Any) -> None:
    print("[info_latency]", *parts, file=sys.stderr, flush=True)


async def measure(url: str, concurrency: int, requests: int, duration: float, warmup: int) -> dict[str, Any]:
    """Latency of GETs of a running task's info (common.measure_info)."""
    return await common.measure_info(url, RUNNING, concurrency, requests, duration, warmup)


def start_passel(scratch: common.Scratch, node_url: str, task_poll_seconds: float) -> common.Server:
    """A coordinator in front of one node, with the product's task poll unless told otherwise."""
    port = common.free_port()
    args = ["run", "--host", common.LOOPBACK, "--port", str(port), "--state-dir", str(scratch.path / "state"),
            "--node", node_url, "--no-discovery", "--min-free-disk-mb", "0", "--poll-seconds", "1",
            "--task-poll-seconds", str(task_poll_seconds)]
    server = scratch.track(common.Server("passel", args, port, scratch.path))
    server.wait_ready(lambda info: int(info.get("maxParallelTasks") or 0) >= 1)
    return server


def running_task(scratch: Path, passel: common.Server, node_url: str) -> str:
    """A task created through Passel and RUNNING on the node, as both of them say (bounded wait)."""
    images = scratch / "images"
    images.mkdir()
    files = []
    for i in range(10):
        (images / f"IMG_{i:04d}.JPG").write_bytes(JPEG)
        files.append(str(images / f"IMG_{i:04d}.JPG"))
    task = Node(common.LOOPBACK, passel.port, timeout=30).create_task(files, skip_post_processing=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        both = [common.get_json(f"{url}/task/{task.uuid}/info") for url in (node_url, passel.url)]
        if all((i.get("status") or {}).get("code") == RUNNING for i in both):
            return task.uuid
        time.sleep(0.2)
    raise RuntimeError(f"task {task.uuid} is not RUNNING on both sides after 60 s:\n{passel.log_tail()}")


def urls(base: str, uuid: str) -> dict[str, str]:
    """The two polls: ODM's plain info, and WebODM's, which asks only for lines it does not have."""
    have = len(common.get_json(f"{base}/task/{uuid}/output"))
    return {"info": f"{base}/task/{uuid}/info", "info?with_output=N": f"{base}/task/{uuid}/info?with_output={have}"}


def run_setup(name: str, node_url: str, passel: common.Server, uuid: str, args: argparse.Namespace,
              cpu: Callable[[], float]) -> list[dict[str, Any]]:
    targets = {"direct": urls(node_url, uuid), "passel": urls(passel.url, uuid)}
    warmup = min(200, max(20, args.requests // 10))
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeat):
        for i, (level, request) in enumerate(itertools.product(LEVELS, targets["direct"])):
            for kind in (("direct", "passel") if (rep + i) % 2 == 0 else ("passel", "direct")):
                node_cpu, passel_cpu = cpu(), passel.cpu_seconds()
                result = asyncio.run(measure(targets[kind][request], level, args.requests, args.duration, warmup))
                if result["errors"]:
                    raise RuntimeError(f"{result['errors']} failed requests to {kind} ({name}):\n{passel.log_tail()}")
                per_request = 1000 / (result["requests"] + warmup + 1)
                used = {"node": cpu() - node_cpu, "passel": passel.cpu_seconds() - passel_cpu}
                result |= {"setup": name, "request": request, "target": kind, "concurrency": level, "repeat": rep,
                           "cpu_ms_per_request": {k: round(v * per_request, 3) for k, v in used.items()}}
                say(f"{name:8} rep {rep} c={level:<3} {request:19} {kind:6}: p50 {result['p50_ms']:.2f} ms, "
                    f"p90 {result['p90_ms']:.2f} ms, {result['rps']:.0f} req/s")
                runs.append(result)
    return runs


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setup in dict.fromkeys(r["setup"] for r in runs):
        for request in dict.fromkeys(r["request"] for r in runs):
            for level in LEVELS:
                row: dict[str, Any] = {}
                for kind in ("direct", "passel"):
                    mine = [r for r in runs if (r["setup"], r["request"], r["concurrency"], r["target"]) ==
                            (setup, request, level, kind)]
                    row[kind] = {k: round(common.median([r[k] for r in mine]), 3)
                                 for k in ("p50_ms", "p90_ms", "p99_ms", "rps")}
                    row[kind]["requests"] = sum(r["requests"] for r in mine)
                    row[kind]["node_cpu_ms_per_request"] = round(common.median(
                        [r["cpu_ms_per_request"]["node"] for r in mine]), 3)
                    row[kind]["passel_cpu_ms_per_request"] = round(common.median(
                        [r["cpu_ms_per_request"]["passel"] for r in mine]), 3)
                d, p = row["direct"], row["passel"]
                row["ratio_p50"] = round(p["p50_ms"] / d["p50_ms"], 3)
                row["ratio_p90"] = round(p["p90_ms"] / d["p90_ms"], 3)
                row["ratio_rps"] = round(p["rps"] / d["rps"], 3)
                row["meets_p50_target"] = row["ratio_p50"] <= TARGET_P50_RATIO
                out[f"{setup} {request} c{level}"] = row
    return out


def realnode_setup(args: argparse.Namespace) -> list[dict[str, Any]]:
    reason = unavailable_reason()
    if reason is not None:
        say(f"skipping the real NodeODM: {reason}")
        return []
    scratch = common.Scratch("passel-bench-info-real-")
    node = RealNode(scratch.path / "nodeodm", "--test_seconds", "1800")
    try:
        node.start()
        tree = psutil.Process(node.process.pid) if node.process else None

        def node_cpu() -> float:  # run.sh and the node process under it
            procs = [tree, *tree.children(recursive=True)] if tree else []
            return sum(p.cpu_times().user + p.cpu_times().system for p in procs)

        passel = start_passel(scratch, node.url, args.task_poll_seconds)
        uuid = running_task(scratch.path, passel, node.url)
        return run_setup("nodeodm", node.url, passel, uuid, args, node_cpu)
    finally:
        node.stop(graceful=False)
        scratch.close()


def simnode_setup(args: argparse.Namespace) -> list[dict[str, Any]]:
    scratch = common.Scratch("passel-bench-info-sim-")
    try:
        node = scratch.track(common.start_simnode(scratch.path, scratch.path / "node", 180.0))  # 30 min for 10 images
        passel = start_passel(scratch, node.url, args.task_poll_seconds)
        uuid = running_task(scratch.path, passel, node.url)
        return run_setup("simnode", node.url, passel, uuid, args, node.cpu_seconds)
    finally:
        scratch.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="requests per measurement (default 1000)")
    parser.add_argument("--duration", type=float, default=60, help="cap in seconds per measurement (default 60)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats (default 3)")
    parser.add_argument("--task-poll-seconds", type=float, default=2.0,
                        help="the coordinator's task poll (default 2, the product's default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    if not 1 <= args.requests <= 1_000_000 or not 0 < args.duration <= 3600 or not 1 <= args.repeat <= 20 \
            or not 0.1 <= args.task_poll_seconds <= 60:
        parser.error("need 1 <= --requests <= 1e6, 0 < --duration <= 3600, 1 <= --repeat <= 20, "
                     "0.1 <= --task-poll-seconds <= 60")
    common.exit_on_sigterm()
    load_before = common.background_load()
    runs = realnode_setup(args) + simnode_setup(args)
    data = {
        "benchmark": "info_latency",
        "machine": common.machine() | {"load_before": load_before,
                                       "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "params": {"requests": args.requests, "duration_cap_s": args.duration, "repeat": args.repeat,
                   "levels": list(LEVELS), "task_poll_seconds": args.task_poll_seconds,
                   "endpoint": "GET /task/{uuid}/info of a RUNNING task, plain and with_output=<lines it has>",
                   "nodes": {"nodeodm": "NodeODM 2.2.4 test mode, --test_seconds 1800 (tests/realnode.py)",
                             "simnode": "python -m appliance simnode, 180 s per image"},
                   "client": f"aiohttp {aiohttp.__version__}, keep-alive pool = concurrency, in the benchmark process"},
        "target_p50_ratio": TARGET_P50_RATIO,
        **summarize(runs),
        "runs": runs,
    }
    path = common.write_results("info_latency", data)
    if args.json:
        print(json.dumps(data))
        return 0
    print(f"\nGET /task/{{uuid}}/info of a RUNNING task, {args.requests} requests per measurement, "
          f"{args.repeat} repeats (medians)")
    print(f"{'set-up and request':38} {'target':7}{'p50 ms':>9}{'p90 ms':>9}{'req/s':>9}")
    for key, row in data.items():
        if not isinstance(row, dict) or "ratio_p50" not in row:
            continue
        common.print_ratio_rows(f"{key:<38}", 38, row, "p90", TARGET_P50_RATIO)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
