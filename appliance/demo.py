"""`passel demo`: a whole passel on one machine, processing a sample split-merge job.

Three simulated nodes of different sizes, one coordinator, and the sample job sent through PyODM
exactly as ODM's split-merge executor would (chunked uploads with outputs, then polling).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from pyodm import Node

from appliance.agent import create_app
from appliance.config import load_config
from appliance.sample import RECONSTRUCTION_OUTPUTS, SUBMODEL_OPTIONS, Submodel, write_sample_job
from appliance.simnode import SimNode, SimnodeSettings

log = logging.getLogger("passel.demo")
STATUS_NAMES = {10: "QUEUED", 20: "RUNNING", 30: "FAILED", 40: "COMPLETED", 50: "CANCELED"}
# (name, slots, cores, memory MB, speed factor, max images): a small laptop, a laptop and a workstation
DEMO_NODES = (("small-laptop", 1, 2, 4096, 2.0, 40), ("laptop", 2, 4, 8192, 1.0, None),
              ("workstation", 2, 8, 16384, 0.6, None))


# About a minute and a half for the default job (42 s at 2.0 here): long enough to open the UI and watch.
DEFAULT_SECONDS_PER_IMAGE = 4.0


@dataclass(frozen=True)
class DemoOptions:
    port: int = 3000
    submodels: int = 6
    images: int = 12
    seconds_per_image: float = DEFAULT_SECONDS_PER_IMAGE
    state_dir: str | None = None
    exit_when_done: bool = False


def _submit_and_follow(url_port: int, job: list[Submodel], report: dict[str, dict[str, Any]]) -> None:
    """The client side, in a thread because PyODM is synchronous; sequential uploads like ODM's."""
    node = Node("127.0.0.1", url_port, timeout=30)
    tasks = []
    for sub in job:
        task = node.create_task(sub.files, options=SUBMODEL_OPTIONS, name=sub.name, skip_post_processing=True,
                                outputs=RECONSTRUCTION_OUTPUTS, parallel_uploads=10)
        report[sub.name] = {"uuid": task.uuid, "status": "uploaded"}
        tasks.append((sub, task))
    pending = {sub.name: task for sub, task in tasks}
    while pending:
        for name, task in list(pending.items()):
            info = task.info()
            report[name].update(status=STATUS_NAMES.get(info.status.value, "?"), progress=info.progress)
            if info.status.value in (30, 40, 50):
                del pending[name]
        time.sleep(1)


async def _print_progress(report: dict[str, dict[str, Any]], coordinator_url: str, stop: asyncio.Event) -> None:
    while not stop.is_set():
        line = "  ".join(f"{name[-4:]}:{r['status'][:4]} {r.get('progress', 0):3.0f}%" for name, r in sorted(report.items()))
        if line:
            print(f"[demo] {line}", flush=True)
        try:
            async with asyncio.timeout(2):
                await stop.wait()
        except TimeoutError:
            pass


async def run_demo(options: DemoOptions, result: dict[str, Any]) -> None:
    """Start everything, run the sample job, and keep serving (unless told to exit) until interrupted."""
    with tempfile.TemporaryDirectory(prefix="passel-demo-") as scratch:
        root = Path(scratch)
        sims = []
        for name, slots, cores, memory, factor, max_images in DEMO_NODES:
            sim = SimNode(SimnodeSettings(port=0, slots=slots, cores=cores, memory_mb=memory, name=name,
                                          seconds_per_image=options.seconds_per_image * factor, max_images=max_images))
            await sim.start()
            sims.append(sim)
        state_dir = Path(options.state_dir) if options.state_dir else root / "state"
        config = load_config(environ={}, flags={"host": "127.0.0.1", "port": options.port, "state_dir": str(state_dir),
                                                "node": [f"{s.url}#{d[0]}" for d, s in zip(DEMO_NODES, sims)],
                                                "discovery": False,
                                                "poll_seconds": 1.0, "task_poll_seconds": 1.0})
        runner = web.AppRunner(create_app(config), shutdown_timeout=2)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", options.port).start()
        ui = f"http://127.0.0.1:{options.port}/"
        print(f"\n  Passel demo is running. Open {ui} in a browser to watch the passel.\n"
              f"  Nodes: {', '.join(f'{d[0]} {s.url}' for d, s in zip(DEMO_NODES, sims))}\n", flush=True)
        try:
            job = await asyncio.to_thread(write_sample_job, root / "images", options.submodels, options.images)
            report: dict[str, dict[str, Any]] = {}
            stop = asyncio.Event()
            printer = asyncio.create_task(_print_progress(report, ui, stop))
            started = time.monotonic()
            try:
                await asyncio.to_thread(_submit_and_follow, options.port, job, report)
            finally:
                stop.set()
                await printer
            done = sum(1 for r in report.values() if r["status"] == "COMPLETED")
            result["ok"] = done == len(job)
            print(f"\n  Sample job finished: {done} of {len(job)} submodels completed in "
                  f"{time.monotonic() - started:.1f} s. The passel is at {ui}\n", flush=True)
            if not options.exit_when_done:
                print("  Press Ctrl-C to stop the demo.", flush=True)
                await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            for sim in sims:
                await sim.stop()
