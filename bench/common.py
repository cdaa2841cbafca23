"""Shared helpers for the benchmarks: start a simnode and a coordinator as separate processes,
wait for them, stop them, and write results with a description of the machine.

Everything listens on 127.0.0.1 only. Each server runs in its own process (not in the benchmark's
process), so the client, the node and the coordinator never share an event loop or a GIL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def background_load(seconds: float = 1.0) -> dict[str, Any]:
    """How busy the machine is before we start: other work on a small box distorts every figure."""
    busy = psutil.cpu_percent(interval=seconds)
    if busy > 20:
        print(f"[bench] WARNING: the machine is already {busy:.0f}% busy; results will be noisy", file=sys.stderr)
    return {"cpu_percent_before_start": busy, "loadavg": [round(x, 2) for x in os.getloadavg()]}


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cpu_model": model,
        "memory_mb": psutil.virtual_memory().total // (1024 * 1024),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code": code_version(),
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and which tracked files differed from it (work in progress shows up here)."""
    def git(*args: str) -> str:
        try:  # rstrip only: a porcelain line starts with a space
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""
    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "HEAD"), "modified_files": dirty, "appliance_sources_sha256": sources_digest()}


def sources_digest(root: Path = REPO, parts: tuple[str, ...] = ("appliance",)) -> str:
    """A hash of the code under test. Benchmarks that start fresh processes in every run compare it
    before and after: an edit while they run would mix two versions into one median."""
    digest = hashlib.sha256()
    for part in parts:
        for path in sorted((root / part).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def package_version(name: str) -> str | None:
    """The installed version of a package the figures depend on (None when it is not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


async def measure_info(url: str, status: int, concurrency: int, requests: int, duration: float,
                       warmup: int) -> dict[str, Any]:
    """Latency of `requests` GETs of a task's info (fewer if `duration` runs out) from `concurrency`
    workers on one keep-alive pool, after `warmup` of them; the task must show `status` first."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        first = await (await session.get(url)).json()
        if not isinstance(first, dict) or first.get("error") or (first.get("status") or {}).get("code") != status:
            raise RuntimeError(f"{url} did not answer the info of a task with status {status}: {str(first)[:300]}")

        async def run(count: int) -> tuple[list[float], int, float]:
            latencies: list[float] = []
            errors = issued = 0
            deadline = time.perf_counter() + duration

            async def worker() -> None:
                nonlocal issued, errors
                while issued < count and time.perf_counter() < deadline:
                    issued += 1
                    start = time.perf_counter()
                    try:
                        async with session.get(url) as reply:
                            body = await reply.read()
                        ok = reply.status == 200 and b'"error"' not in body
                    except (aiohttp.ClientError, TimeoutError):
                        ok = False
                    latencies.append(time.perf_counter() - start)
                    errors += not ok

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return latencies, errors, time.perf_counter() - began

        await run(warmup)
        latencies, errors, elapsed = await run(requests)
    latencies.sort()
    return {
        "requests": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        **{f"p{q}_ms": round(percentile(latencies, q) * 1000, 3) for q in (50, 90, 99)},
        "mean_ms": round(sum(latencies) / len(latencies) * 1000, 3),
        "max_ms": round(latencies[-1] * 1000, 3),
    }


def print_ratio_rows(label: str, width: int, row: dict[str, Any], tail: str, target: float) -> None:
    """One measurement's direct and passel lines and their ratio: p50, `tail` (p90 or p99), req/s."""
    for kind in ("direct", "passel"):
        r = row[kind]
        print(f"{label:>{width}} {kind:7}{r['p50_ms']:>9.2f}{r[f'{tail}_ms']:>9.2f}{r['rps']:>9.0f}")
    print(f"{'':{width}} ratio  {row['ratio_p50']:>9.2f}{row[f'ratio_{tail}']:>9.2f}{row['ratio_rps']:>9.2f}"
          f"   p50 target <= {target}: {'met' if row['meets_p50_target'] else 'NOT met'}")


def get_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read())


class Server:
    """One `python -m appliance ...` subprocess, its log in a file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, label: str, args: list[str], port: int, log_dir: Path) -> None:
        self.label, self.port = label, port
        self.url = f"http://{LOOPBACK}:{port}"
        self.log_path = log_dir / f"{label}-{port}.log"
        self._log = open(self.log_path, "wb")
        # A new session: a Ctrl-C in the terminal reaches only the benchmark, which then stops us cleanly.
        self.proc = subprocess.Popen([sys.executable, "-m", "appliance", *args], cwd=REPO, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.ps = psutil.Process(self.proc.pid)

    def wait_ready(self, ready: Callable[[dict[str, Any]], bool] = lambda info: True, timeout: float = 30) -> None:
        """Poll /info until `ready(info)` (bounded); raise with the log tail if it never is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if ready(get_json(self.url + "/info", timeout=2)):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.label} not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def cpu_split(self) -> tuple[float, float]:
        t = self.ps.cpu_times()
        return t.user, t.system

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def start_simnode(log_dir: Path, data_dir: Path, seconds_per_image: float, token: str | None = None) -> Server:
    port = free_port()
    args = ["simnode", "--port", str(port), "--seconds-per-image", str(seconds_per_image),
            "--data-dir", str(data_dir)]
    if token:
        args += ["--token", token]
    server = Server("simnode", args, port, log_dir)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def start_passel(log_dir: Path, state_dir: Path, node: Server, node_token: str | None = None) -> Server:
    port = free_port()
    node_url = node.url + (f"?token={node_token}" if node_token else "")
    args = ["run", "--host", LOOPBACK, "--port", str(port), "--state-dir", str(state_dir), "--node", node_url,
            "--no-discovery", "--min-free-disk-mb", "0", "--poll-seconds", "1", "--task-poll-seconds", "1"]
    server = Server("passel", args, port, log_dir)
    try:  # ready once the node is online behind it (its capacity shows in /info)
        server.wait_ready(lambda info: int(info.get("maxParallelTasks") or 0) >= 1)
    except BaseException:
        server.stop()
        raise
    return server


class Scratch:
    """A temporary directory for one benchmark, removed at the end (servers are stopped first)."""

    def __init__(self, prefix: str, parent: str | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self.servers: list[Server] = []

    def track(self, server: Server) -> Server:
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        while self.servers:
            self.servers.pop().stop()

    def close(self) -> None:
        import shutil
        self.stop_all()
        shutil.rmtree(self.path, ignore_errors=True)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally` blocks stop the servers and remove temp dirs."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
