"""Proxy overhead: what does `GET /task/{uuid}/info` cost through Passel compared with the node itself?

One completed task is created through Passel (so the coordinator and the node both know it). Then an
aiohttp client in this process sends `GET /task/{uuid}/info` at concurrency 1 and 50, through Passel
and straight to the node, with a keep-alive pool as large as the concurrency. Each measurement is
warmed up first; direct and Passel alternate, 3 repeats, and medians are reported.

    cd /work/main && /tmp/venv/bin/python bench/proxy_overhead.py [--requests 2000 --duration 60] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from pyodm import Node

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

LEVELS = (1, 50)
TARGET_P50_RATIO = 1.5
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000") + b"\0" * 1000 + bytes.fromhex("ffd9")


def say(*parts: Any) -> None:
    print("[proxy_overhead]", *parts, file=sys.stderr, flush=True)


async def measure(url: str, concurrency: int, requests: int, duration: float, warmup: int) -> dict[str, Any]:
    """Latency of GETs of a completed task's info (common.measure_info)."""
    return await common.measure_info(url, 40, concurrency, requests, duration, warmup)


def completed_task(scratch: Path, passel: common.Server) -> str:
    """Create a small task through Passel and wait (bounded) until it is COMPLETED on both sides."""
    images = scratch / "images"
    images.mkdir()
    files = []
    for i in range(1, 4):
        (images / f"IMG_{i:04d}.JPG").write_bytes(JPEG)
        files.append(str(images / f"IMG_{i:04d}.JPG"))
    task = Node(common.LOOPBACK, passel.port, timeout=30).create_task(files, skip_post_processing=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if task.info().status.value == 40:
            break
        time.sleep(0.2)
    else:
        raise RuntimeError(f"task {task.uuid} did not complete within 60 s:\n{passel.log_tail()}")
    time.sleep(2.5)  # let the coordinator's own tracker see the finish too (task_poll_seconds is 1)
    return task.uuid


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for level in LEVELS:
        row: dict[str, Any] = {}
        for kind in ("direct", "passel"):
            mine = [r for r in runs if r["target"] == kind and r["concurrency"] == level]
            row[kind] = {k: round(common.median([r[k] for r in mine]), 3) for k in ("p50_ms", "p99_ms", "rps", "mean_ms")}
            row[kind]["errors"] = sum(r["errors"] for r in mine)
            row[kind]["requests"] = sum(r["requests"] for r in mine)
            row[kind]["coordinator_cpu_ms_per_request"] = (
                round(common.median([r["cpu_ms_per_request"]["passel"] for r in mine]), 3) if kind == "passel" else None)
            row[kind]["node_cpu_ms_per_request"] = round(common.median([r["cpu_ms_per_request"]["node"] for r in mine]), 3)
        d, p = row["direct"], row["passel"]
        row["ratio_p50"] = round(p["p50_ms"] / d["p50_ms"], 3)
        row["ratio_p99"] = round(p["p99_ms"] / d["p99_ms"], 3)
        row["ratio_rps"] = round(p["rps"] / d["rps"], 3)
        row["meets_p50_target"] = row["ratio_p50"] <= TARGET_P50_RATIO
        out[f"c{level}"] = row
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement (default 2000)")
    parser.add_argument("--duration", type=float, default=60, help="cap in seconds per measurement (default 60)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    if not 1 <= args.requests <= 1_000_000 or not 0 < args.duration <= 3600 or not 1 <= args.repeat <= 20:
        parser.error("need 1 <= --requests <= 1e6, 0 < --duration <= 3600, 1 <= --repeat <= 20")
    common.exit_on_sigterm()
    load_before = common.background_load()
    warmup = min(500, max(50, args.requests // 10))

    scratch = common.Scratch("passel-bench-proxy-")
    try:
        node = scratch.track(common.start_simnode(scratch.path, scratch.path / "node", 0.01))
        passel = scratch.track(common.start_passel(scratch.path, scratch.path / "state", node))
        uuid = completed_task(scratch.path, passel)
        servers = {"node": node, "passel": passel}
        urls = {"direct": f"{node.url}/task/{uuid}/info", "passel": f"{passel.url}/task/{uuid}/info"}
        runs: list[dict[str, Any]] = []
        for rep in range(args.repeat):
            for i, level in enumerate(LEVELS):
                order = ("direct", "passel") if (rep + i) % 2 == 0 else ("passel", "direct")
                for kind in order:
                    before = {k: s.cpu_seconds() for k, s in servers.items()}
                    result = asyncio.run(measure(urls[kind], level, args.requests, args.duration, warmup))
                    used = {k: s.cpu_seconds() - before[k] for k, s in servers.items()}
                    total = result["requests"] + warmup + 1
                    result |= {"target": kind, "concurrency": level, "repeat": rep,
                               "cpu_ms_per_request": {k: round(v * 1000 / total, 3) for k, v in used.items()}}
                    if result["errors"]:
                        raise RuntimeError(f"{result['errors']} failed requests to {kind} at concurrency {level}:\n"
                                           f"{passel.log_tail() if kind == 'passel' else node.log_tail()}")
                    say(f"repeat {rep} c={level:<3} {kind:6}: p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                        f"{result['rps']:.0f} req/s ({result['requests']} requests)")
                    runs.append(result)
        data = {
            "benchmark": "proxy_overhead",
            "machine": common.machine() | {"load_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
            "params": {"requests": args.requests, "duration_cap_s": args.duration, "repeat": args.repeat,
                       "warmup": warmup, "levels": list(LEVELS), "endpoint": "GET /task/{uuid}/info (COMPLETED task)",
                       "client": f"aiohttp {aiohttp.__version__}, keep-alive pool = concurrency, in the benchmark process"},
            "target_p50_ratio": TARGET_P50_RATIO,
            **summarize(runs),
            "runs": runs,
        }
    finally:
        scratch.close()
    path = common.write_results("proxy_overhead", data)
    if args.json:
        print(json.dumps(data))
    else:
        print(f"\nGET /task/{{uuid}}/info, {args.requests} requests per measurement, {args.repeat} repeats (medians)")
        print(f"{'conc':>4} {'target':7}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}")
        for level in LEVELS:
            common.print_ratio_rows(str(level), 4, data[f"c{level}"], "p99", TARGET_P50_RATIO)
        print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
