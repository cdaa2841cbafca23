"""How big dist/passel is and how long it takes from launch to an API that answers.

"Ready" is systemd's own signal: the benchmark listens on a NOTIFY_SOCKET, as systemd does for
passel.service (Type=notify), and stops the clock at READY=1, which Passel sends once the API
accepts connections; each run then checks that /info answers. Two cases, median of --runs each:

* first start: an empty state directory (the database is created and migrated);
* restart: the state directory of a previous run (the usual boot of a box).

`--python` adds the same two cases for `python -m appliance run` from this virtualenv, to show what
the one-file bundle costs (it unpacks itself into /tmp on every start).
Run from the repository root after packaging/build.sh:  python bench/startup.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, background_load, free_port, get_json, machine, median, write_results  # noqa: E402

BINARY = REPO / "dist" / "passel"
READY_TIMEOUT = 60.0


def time_to_ready(command: list[str], state_dir: Path, scratch: Path, extra_env: dict[str, str]) -> float:
    """Seconds from launch to READY=1, for one start of `command run ...`; the process is stopped after."""
    port = free_port()
    notify_path = scratch / f"notify-{port}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))
        sock.settimeout(READY_TIMEOUT)
        env = {"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": str(notify_path)} | extra_env
        args = [*command, "run", "--no-discovery", "--host", "127.0.0.1", "--port", str(port),
                "--state-dir", str(state_dir), "--log-level", "warning"]
        started = time.perf_counter()
        proc = subprocess.Popen(args, env=env, cwd=scratch, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            while b"READY=1" not in sock.recv(4096).split(b"\n"):
                pass
            elapsed = time.perf_counter() - started
            get_json(f"http://127.0.0.1:{port}/info")  # READY must mean the API answers
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        notify_path.unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} exited {proc.returncode} after SIGTERM")
    return elapsed


def measure(command: list[str], runs: int, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="passel-startup-"))
    try:
        first = [time_to_ready(command, scratch / f"state-{i}", scratch, extra_env or {}) for i in range(runs)]
        restart = [time_to_ready(command, scratch / "state-0", scratch, extra_env or {}) for _ in range(runs)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"first_start_s": [round(t, 3) for t in first], "first_start_median_s": round(median(first), 3),
            "restart_s": [round(t, 3) for t in restart], "restart_median_s": round(median(restart), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="starts per case (default 5)")
    parser.add_argument("--python", action="store_true", help="also time `python -m appliance` from this virtualenv")
    args = parser.parse_args()
    if not os.access(BINARY, os.X_OK):
        raise SystemExit(f"{BINARY} is missing: build it first with packaging/build.sh")
    load = background_load()
    results: dict[str, Any] = {"binary": str(BINARY.relative_to(REPO)), "size_bytes": BINARY.stat().st_size,
                               "size_mb": round(BINARY.stat().st_size / 1e6, 1), "runs": args.runs,
                               "ready_means": "READY=1 on NOTIFY_SOCKET (sent once the API listens), then /info checked",
                               "onefile": measure([str(BINARY)], args.runs)}
    if args.python:
        results["python_venv"] = measure([sys.executable, "-m", "appliance"], args.runs, {"PYTHONPATH": str(REPO)})
    results |= {"load_before": load, "machine": machine()}
    path = write_results("startup", results)
    print(f"dist/passel: {results['size_mb']} MB; ready after {results['onefile']['first_start_median_s']} s "
          f"(first start), {results['onefile']['restart_median_s']} s (restart); median of {args.runs}")
    if args.python:
        print(f"python -m appliance: {results['python_venv']['first_start_median_s']} s (first start), "
              f"{results['python_venv']['restart_median_s']} s (restart)")
    print(f"written to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
