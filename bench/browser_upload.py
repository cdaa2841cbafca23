"""Browser upload: does the New job page start a job as quickly as PyODM does?

Chromium (Playwright) uploads a dataset (default 200 files x 5 MB = 1000 MB) through Passel's
`/ui/new` page to a passel in front of a real NodeODM (test mode, from ../shared/nodeodm); the
baseline is PyODM's `Node.create_task` uploading the same files with the same options to a passel
in front of a fresh real NodeODM, in the same run. The clock runs from the click on "Upload and
start" (or the call to `create_task`) until the node itself reports the task RUNNING or COMPLETED
(its own `/task/list` and `/task/{uuid}/info`, polled every 50 ms). Kinds alternate across repeats.

    cd /work/main && .venv/bin/python bench/browser_upload.py [--images 200 --size-mb 5 --repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from pyodm import Node

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common

from tests.realnode import RealNode, unavailable_reason

MB = 1024 * 1024
POLL_SECONDS = 0.05
TARGET_RATIO = 1.2
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
JPEG_HEAD = bytes.fromhex("ffd8ffe000104a46494600010100000100010000")
JPEG_TAIL = bytes.fromhex("ffd9")
OPTIONS: dict[str, Any] = {}  # the page's "Standard" preset: ODM's defaults, sent as no options


def say(*parts: Any) -> None:
    print("[browser_upload]", *parts, file=sys.stderr, flush=True)


def make_dataset(directory: Path, files: int, size: int) -> list[str]:
    """Random bytes framed as JPEGs; random so nothing on the path can compress them."""
    directory.mkdir(parents=True)
    paths = []
    for i in range(1, files + 1):
        path = directory / f"DJI_{i:04d}.JPG"
        path.write_bytes(JPEG_HEAD + os.urandom(size - len(JPEG_HEAD) - len(JPEG_TAIL)) + JPEG_TAIL)
        paths.append(str(path))
    return paths


class NodeWatcher(threading.Thread):
    """Polls the node itself until a task there is RUNNING (20) or COMPLETED (40)."""

    def __init__(self, node_url: str, deadline: float) -> None:
        super().__init__(name="node-watcher", daemon=True)
        self.url, self.deadline = node_url, deadline
        self.seen_at: float | None = None
        self.status: int | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        with requests.Session() as http:
            while not self.stop_event.is_set() and time.monotonic() < self.deadline:
                try:
                    for task in http.get(self.url + "/task/list", timeout=5).json():
                        code = (http.get(f"{self.url}/task/{task['uuid']}/info", timeout=5).json().get("status")
                                or {}).get("code")
                        if code in (20, 40):
                            self.seen_at, self.status = time.perf_counter(), code
                            return
                except (requests.RequestException, ValueError, TypeError, KeyError):
                    pass
                self.stop_event.wait(POLL_SECONDS)


def upload_with_pyodm(passel: common.Server, paths: list[str]) -> None:
    Node(common.LOOPBACK, passel.port, timeout=30).create_task(paths, OPTIONS)


def upload_with_browser(browser: Any, passel: common.Server, paths: list[str], started: list[float]) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(passel.url + "/ui/new")
        page.locator("#pick-files").set_input_files(paths)
        page.wait_for_function("!document.getElementById('start').disabled", timeout=60_000)
        started.append(time.perf_counter())
        page.click("#start")
        page.wait_for_url("**/ui/tasks/*", timeout=3_600_000)
    finally:
        context.close()


def one_run(kind: str, paths: list[str], scratch: Path, browser: Any, label: str) -> dict[str, Any]:
    """Fresh node and passel; upload; time until the node runs the task; stop everything."""
    run_dir = scratch / label
    run_dir.mkdir()
    node = RealNode(run_dir / "nodeodm").start()
    passel: common.Server | None = None
    try:
        passel = common.start_passel(run_dir, run_dir / "state", node)  # type: ignore[arg-type]
        size_mb = sum(os.path.getsize(p) for p in paths) / MB
        deadline = time.monotonic() + max(120.0, size_mb / 5)
        watcher = NodeWatcher(node.url, deadline)
        started: list[float] = []
        watcher.start()
        if kind == "pyodm":
            started.append(time.perf_counter())
            upload_with_pyodm(passel, paths)
        else:
            upload_with_browser(browser, passel, paths, started)
        returned = time.perf_counter()
        watcher.join(max(0.0, deadline - time.monotonic()))
        watcher.stop_event.set()
        if watcher.seen_at is None:
            raise RuntimeError(f"{kind} run {label}: the task never ran on the node\n{passel.log_tail(40)}")
        took = watcher.seen_at - started[0]
        return {"client": kind, "run": label, "files": len(paths), "dataset_mb": round(size_mb, 1),
                "to_running_s": round(took, 3), "client_returned_s": round(returned - started[0], 3),
                "node_status_seen": watcher.status, "throughput_mb_s": round(size_mb / took, 1)}
    finally:
        if passel is not None:
            passel.stop()
        node.stop(graceful=False)
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="number of images (default 200)")
    parser.add_argument("--size-mb", type=float, default=5, help="size of each image in MB (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each client (default 3)")
    parser.add_argument("--tmp-dir", default=None, help="where the dataset and the servers' data go (default /tmp)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    if args.images < 1 or args.size_mb <= 0 or not 1 <= args.repeat <= 20:
        parser.error("need --images >= 1, --size-mb > 0 and 1 <= --repeat <= 20")
    reason = unavailable_reason()
    if reason is not None:
        say(f"cannot run: {reason}")
        return 2
    from playwright.sync_api import sync_playwright

    common.exit_on_sigterm()
    load_before = common.background_load()
    scratch = common.Scratch("passel-bench-browser-", args.tmp_dir)
    try:
        say(f"writing {args.images} x {args.size_mb} MB to {scratch.path} ...")
        paths = make_dataset(scratch.path / "DCIM", args.images, int(args.size_mb * MB))
        runs: list[dict[str, Any]] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for rep in range(args.repeat):
                for kind in (("pyodm", "browser") if rep % 2 == 0 else ("browser", "pyodm")):
                    result = one_run(kind, paths, scratch.path, browser, f"{kind}-{rep}")
                    say(f"repeat {rep} {kind:7}: RUNNING on the node after {result['to_running_s']:.2f} s "
                        f"({result['throughput_mb_s']} MB/s)")
                    runs.append(result)
            browser.close()
        pyodm_s = common.median([r["to_running_s"] for r in runs if r["client"] == "pyodm"])
        browser_s = common.median([r["to_running_s"] for r in runs if r["client"] == "browser"])
        ratio = browser_s / pyodm_s
        data = {
            "benchmark": "browser_upload",
            "machine": common.machine() | {"load_before": load_before},
            "params": {"images": args.images, "size_mb": args.size_mb, "repeat": args.repeat,
                       "browser_parallel_uploads": 5, "pyodm_parallel_uploads": 10, "options": OPTIONS},
            "pyodm": {"median_to_running_s": round(pyodm_s, 3)},
            "browser": {"median_to_running_s": round(browser_s, 3)},
            "ratio_browser_over_pyodm": round(ratio, 3),
            "target_ratio": TARGET_RATIO,
            "meets_ratio_target": ratio <= TARGET_RATIO,
            "runs": runs,
        }
        path = common.write_results("browser_upload", data)
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print(f"{'client':8}{'to RUNNING (s)':>16}")
            print(f"{'pyodm':8}{pyodm_s:>16.2f}")
            print(f"{'browser':8}{browser_s:>16.2f}")
            print(f"ratio browser/pyodm {ratio:.2f}   target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'}")
            print(f"written to {path}")
        return 0
    finally:
        scratch.close()


if __name__ == "__main__":
    sys.exit(main())
