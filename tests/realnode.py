"""A real NodeODM 2.2.4 in test mode, from `../shared/nodeodm`, for tests that must meet the real node.

The simulated node is Passel's own reading of the NodeODM contract; this is the contract itself.
NodeODM's test mode fakes processing (no ODM needed) but parses requests, stores tasks and builds
`all.zip` exactly as the node that users run.

Where the kit or node and npm are missing, tests that need it skip with the reason; with
`PASSEL_REQUIRE_NODEODM=1` (set by `.ci/run`) they fail instead. Run `python -m tests.realnode`
to prepare the kit once (the first `npm ci` takes about 30 s).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).parent.parent
# `../shared/nodeodm` beside the checkout (or beside a folder that holds it), unless told otherwise
KIT = Path(os.environ.get("PASSEL_NODEODM_KIT") or next(
    (p / "shared" / "nodeodm" for p in REPO.parents if (p / "shared" / "nodeodm" / "run.sh").is_file()),
    REPO.parent / "shared" / "nodeodm"))
REQUIRED = os.environ.get("PASSEL_REQUIRE_NODEODM") == "1"
START_SECONDS = 30  # a cold start is under a second; npm's first install is done before this counts


class KitUnavailable(Exception):
    """The real NodeODM cannot run here; the message says why."""


@cache
def run_script() -> Path:
    """The kit's `run.sh`, ready to start nodes; raises KitUnavailable with the reason.

    The kit's `install.sh` runs `npm ci`, which needs `NodeODM/package-lock.json`. Where the kit
    was copied without it (NodeODM's `.gitignore` lists it), a private copy of the kit is given a
    lock resolved from NodeODM's own `package.json`; everything else is the kit's own, unchanged.
    """
    if not (KIT / "run.sh").is_file():
        raise KitUnavailable(f"no NodeODM test kit at {KIT} (set PASSEL_NODEODM_KIT to its folder)")
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise KitUnavailable(f"{tool} is not installed (apt-get install nodejs npm)")
    kit = KIT if (KIT / "NodeODM" / "package-lock.json").is_file() else _kit_with_lock()
    prepared = subprocess.run([str(kit / "install.sh")], capture_output=True, text=True, timeout=600)
    if prepared.returncode != 0:
        raise KitUnavailable(f"{kit}/install.sh failed: {prepared.stderr.strip()[-500:]}")
    return kit / "run.sh"


def _kit_with_lock() -> Path:
    digest = hashlib.sha256((KIT / "NodeODM" / "package.json").read_bytes()
                            + (KIT / "run.sh").read_bytes() + (KIT / "install.sh").read_bytes()).hexdigest()[:12]
    home = Path(os.environ.get("PASSEL_NODEODM_HOME", Path.home() / ".cache" / "passel-nodeodm"))
    home.mkdir(parents=True, exist_ok=True)
    kit = home / f"kit-{digest}"
    with open(home / ".kit-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (kit / "NodeODM" / "package-lock.json").is_file():
            staging = Path(tempfile.mkdtemp(prefix="kit-", dir=home))
            shutil.copytree(KIT, staging / "kit", symlinks=True)
            subprocess.run(["chmod", "-R", "u+w", str(staging)], check=True)
            locked = subprocess.run(["npm", "install", "--package-lock-only", "--omit=dev", "--no-audit", "--no-fund",
                                     "--loglevel=error"], cwd=staging / "kit" / "NodeODM", capture_output=True,
                                    text=True, timeout=600)
            if locked.returncode != 0:
                shutil.rmtree(staging, ignore_errors=True)
                raise KitUnavailable(f"npm could not resolve NodeODM's dependencies: {locked.stderr.strip()[-500:]}")
            shutil.rmtree(kit, ignore_errors=True)
            (staging / "kit").rename(kit)
            shutil.rmtree(staging, ignore_errors=True)
    return kit


def unavailable_reason() -> str | None:
    """None when a real NodeODM can start here, else why not."""
    try:
        run_script()
    except KitUnavailable as exc:
        return str(exc)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class RealNode:
    """One NodeODM process in test mode. `flags` are NodeODM's own (`--test_seconds 2`, `--token T`)."""

    def __init__(self, workdir: Path, *flags: str, port: int | None = None, host: str = "127.0.0.1",
                 prefix: tuple[str, ...] = ()) -> None:
        self.workdir, self.flags, self.host, self.prefix = workdir, flags, host, prefix
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None
        self.token = flags[flags.index("--token") + 1] if "--token" in flags else ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url_with_token(self) -> str:
        return self.url + (f"?token={self.token}" if self.token else "")

    @property
    def log_path(self) -> Path:
        return self.workdir / "nodeodm.log"

    def start(self) -> RealNode:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, str(run_script()), "--port", str(self.port), "--host", self.host,
                 "--workdir", str(self.workdir), *self.flags],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if not self.prefix:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"NodeODM on port {self.port} exited: {self.log()[-2000:]}")
            try:
                if requests.get(self.url + "/info", params={"token": self.token}, timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"NodeODM on port {self.port} did not answer within {timeout} s: {self.log()[-2000:]}")

    def stop(self, graceful: bool = True) -> None:
        """Stop the node: SIGTERM lets it save its task list (`tasks.json`), SIGKILL does not."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        except ProcessLookupError:
            pass
        self.process = None

    def restart(self) -> None:
        """A graceful restart, as after a reboot: NodeODM brings RUNNING tasks back as QUEUED."""
        self.stop()
        self.start()

    def stored_tasks(self) -> dict[str, dict[str, Any]]:
        """What the node itself holds for each task (its own `tasks.json`), read across a restart.

        NodeODM writes its task list only hourly and on shutdown, and its API does not show
        `outputs`, `skipPostProcessing` or `webhook`; a graceful restart is the only honest way in.
        """
        self.restart()
        dump = self.workdir / "tests" / "data" / "tasks.json"  # test mode keeps its data here
        return {task["uuid"]: task for task in json.loads(dump.read_text())}

    def task_dir(self, uuid: str) -> Path:
        return self.workdir / "tests" / "data" / uuid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def main() -> int:
    """Prepare the kit once (for CI, before the suite), and say whether it works."""
    reason = unavailable_reason()
    if reason:
        print(f"real NodeODM unavailable: {reason}; tests that need it will "
              + ("fail (PASSEL_REQUIRE_NODEODM=1)" if REQUIRED else "skip"), file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as workdir:
        node = RealNode(Path(workdir)).start()
        version = requests.get(node.url + "/info", timeout=5).json()["version"]
        node.stop()
    print(f"real NodeODM {version} ready ({run_script().parent})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
