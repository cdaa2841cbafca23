"""How big dist/passel is and how long it takes from launch to an API that answers.

"Ready" is systemd's own signal: the benchmark listens on a NOTIFY_SOCKET, as systemd does for
passel.service (Type=notify), and stops the clock at READY=1, which Passel sends once the API
accepts connections; each run then checks that /info answers. Two cases, median of --runs each:

* first start: an empty state directory (the database is created and migrated);
* restart: the state directory of a previous run (the usual boot of a box).

Timed with discovery off and, when run as root, with discovery on (as on a box) inside a private
network namespace that has only loopback, so no mDNS leaves the machine. `--python` adds
`python -m appliance run` from this virtualenv, to show what the one-file bundle costs (it unpacks
itself into /tmp on every start). Run from the repository root after packaging/build.sh:
    python bench/startup.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, background_load, free_port, machine, median, write_results  # noqa: E402

BINARY = REPO / "dist" / "passel"
READY_TIMEOUT = 60.0
NO_DISCOVERY = ["--no-discovery", "--host", "127.0.0.1"]
INFO_CHECK = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5).read()"


@dataclass(frozen=True)
class Case:
    """One way of starting Passel: the program, its options, and where it runs."""

    program: list[str]
    options: list[str]
    namespace: str | None = None  # a network namespace to run in (discovery on, loopback only)
    env: dict[str, str] = field(default_factory=dict)

    def in_namespace(self, command: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *command] if self.namespace else command


def time_to_ready(case: Case, state_dir: Path, scratch: Path) -> float:
    """Seconds from launch to READY=1 for one start; the process is stopped with SIGTERM after."""
    port = free_port()
    notify_path = scratch / f"notify-{port}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))  # a path, not an abstract name, so it reaches into a namespace
        sock.settimeout(READY_TIMEOUT)
        env = {"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": str(notify_path)} | case.env
        args = case.in_namespace([*case.program, "run", *case.options, "--port", str(port),
                                  "--state-dir", str(state_dir), "--log-level", "warning"])
        started = time.perf_counter()
        proc = subprocess.Popen(args, env=env, cwd=scratch, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            while b"READY=1" not in sock.recv(4096).split(b"\n"):
                pass
            elapsed = time.perf_counter() - started
            # READY must mean the API answers, seen from the same network namespace.
            subprocess.run(case.in_namespace([sys.executable, "-c", INFO_CHECK, f"http://127.0.0.1:{port}/info"]),
                           check=True, timeout=30)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        notify_path.unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode} after SIGTERM")
    return elapsed


def measure(case: Case, runs: int) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="passel-startup-"))
    try:
        first = [time_to_ready(case, scratch / f"state-{i}", scratch) for i in range(runs)]
        restart = [time_to_ready(case, scratch / "state-0", scratch) for _ in range(runs)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"first_start_s": [round(t, 3) for t in first], "first_start_median_s": round(median(first), 3),
            "restart_s": [round(t, 3) for t in restart], "restart_median_s": round(median(restart), 3)}


@contextlib.contextmanager
def loopback_namespace() -> Iterator[str]:
    """A network namespace with only `lo` up, removed afterwards."""
    name = f"passel-startup-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="starts per case (default 5)")
    parser.add_argument("--python", action="store_true", help="also time `python -m appliance` from this virtualenv")
    args = parser.parse_args()
    if not os.access(BINARY, os.X_OK):
        raise SystemExit(f"{BINARY} is missing: build it first with packaging/build.sh")
    load = background_load()
    size = BINARY.stat().st_size
    results: dict[str, Any] = {
        "binary": str(BINARY.relative_to(REPO)), "size_bytes": size, "size_mb": round(size / 1e6, 1),
        "runs": args.runs, "ready_means": "READY=1 on NOTIFY_SOCKET (sent once the API listens), then /info answered",
        "onefile": measure(Case([str(BINARY)], NO_DISCOVERY), args.runs)}
    if os.geteuid() == 0 and shutil.which("ip"):
        with loopback_namespace() as namespace:
            results["onefile_discovery"] = measure(Case([str(BINARY)], [], namespace), args.runs)
    if args.python:
        results["python_venv"] = measure(Case([sys.executable, "-m", "appliance"], NO_DISCOVERY,
                                              env={"PYTHONPATH": str(REPO)}), args.runs)
    results |= {"load_before": load, "machine": machine()}
    path = write_results("startup", results)
    print(f"dist/passel is {results['size_mb']} MB. Ready after (median of {args.runs}):")
    for case in ("onefile", "onefile_discovery", "python_venv"):
        if case in results:
            print(f"  {case:<18} {results[case]['first_start_median_s']} s first start, "
                  f"{results[case]['restart_median_s']} s restart")
    print(f"written to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
