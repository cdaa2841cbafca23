"""kill -9 of the coordinator mid-forward: after a restart the task resumes from staging and completes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.gate import Gate
from tests.nodeodm_helpers import init_task, jcall, upload
from tests.support import ServerThread

TOKEN = "node-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Coordinator:
    """`python -m appliance run` as a real process, so it can be killed for real."""

    def __init__(self, state: Path, node_url: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.args = [sys.executable, "-m", "appliance", "run", "--host", "127.0.0.1", "--port", str(self.port),
                     "--state-dir", str(state), "--node", node_url, "--no-discovery",
                     "--poll-seconds", "0.3", "--task-poll-seconds", "0.2", "--min-free-disk-mb", "0"]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=Path(__file__).parent.parent)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/info", timeout=1).json().get("maxParallelTasks"):
                    return
            except requests.RequestException:
                pass
            assert self.process.poll() is None, self.log.read_text()
            time.sleep(0.1)
        raise AssertionError("coordinator did not start:\n" + self.log.read_text())

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def gated_node(simnode_factory):
    node = simnode_factory(token=TOKEN, seconds_per_image=0.02)
    holder: dict[str, Gate] = {}

    def factory():
        holder["gate"] = Gate(node.url)
        return holder["gate"].app()

    with ServerThread(factory) as relay:
        yield node, relay, holder["gate"]


def _wait(predicate, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("kill_after", ["commit", "upload"])
def test_kill9_mid_forward_then_restart_completes(tmp_path, gated_node, kill_after):
    node, relay, gate = gated_node
    coordinator = Coordinator(tmp_path / "state", f"{relay.url}?token={TOKEN}", tmp_path / "coordinator.log")
    coordinator.start()
    try:
        relay.call(_close(gate))
        uuid = init_task(coordinator, name="survivor")
        for i in range(12):
            upload(coordinator, uuid, f"IMG_{i:03d}.JPG")
        if kill_after == "commit":
            assert jcall(coordinator, "POST", f"/task/new/commit/{uuid}") == {"uuid": uuid}
            assert jcall(coordinator, "GET", f"/task/{uuid}/info")["status"]["code"] == 20
        _wait(lambda: gate.held > 0, what="forward to reach the node")
        coordinator.kill9()
        relay.call(_open(gate))

        coordinator.start()
        if kill_after == "upload":  # the client carries on where it was
            upload(coordinator, uuid, "IMG_999.JPG")
            assert jcall(coordinator, "POST", f"/task/new/commit/{uuid}") == {"uuid": uuid}
        _wait(lambda: jcall(coordinator, "GET", f"/task/{uuid}/info")["status"]["code"] == 40, what="completion")
        info = jcall(coordinator, "GET", f"/task/{uuid}/info")
        expected = 12 if kill_after == "commit" else 13
        assert info["imagesCount"] == expected and info["name"] == "survivor"
        on_node = requests.get(f"{node.url}/task/{uuid}/info", params={"token": TOKEN}, timeout=5).json()
        assert on_node["imagesCount"] == expected, "the node got each file exactly once"
        listed = requests.get(f"{node.url}/task/list", params={"token": TOKEN}, timeout=5).json()
        assert listed == [{"uuid": uuid}], "exactly one copy of the task on the node"
        assert jcall(coordinator, "GET", "/task/list") == [{"uuid": uuid}]
    finally:
        relay.call(_open(gate))
        coordinator.stop()


async def _close(gate: Gate) -> None:
    gate.open.clear()


async def _open(gate: Gate) -> None:
    gate.open.set()


def test_sigterm_exits_cleanly(tmp_path, simnode_factory):
    node = simnode_factory()
    coordinator = Coordinator(tmp_path / "state", node.url, tmp_path / "c.log")
    coordinator.start()
    coordinator.process.send_signal(signal.SIGTERM)
    assert coordinator.process.wait(15) == 0, (tmp_path / "c.log").read_text()


async def test_a_background_loop_that_hits_a_full_disk_says_so_in_one_line_and_goes_on(monkeypatch, caplog):
    """The replica loop used to end for good when SQLite found the disk full: the box's copy of the
    table then stayed stale after the disk had room again (nemesis seed 12)."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from appliance import background
    monkeypatch.setattr(background, "RESTART_DELAY_SECONDS", 0.0)
    rounds: list[int] = []

    async def replica_loop() -> None:
        rounds.append(1)
        if len(rounds) == 1:
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
        await asyncio.sleep(3600)

    job = background.background("replica", replica_loop)
    for _ in range(100):
        if len(rounds) == 2:
            break
        await asyncio.sleep(0.01)
    job.cancel()
    assert len(rounds) == 2, "started again"

    async def announce_once() -> None:
        rounds.append(1)
    await background.background("mdns-advertise", announce_once)
    assert len(rounds) == 3, "a job that ends by itself is not started again"
    warned = [r for r in caplog.records if "could not write to this box's disk" in r.getMessage()]
    assert len(warned) == 1 and warned[0].exc_info is None and "database or disk is full" in warned[0].getMessage()


async def test_a_row_the_disk_refused_is_written_once_there_is_room(tmp_path, monkeypatch, caplog):
    """The row changed in memory (and replicas may have copied it) while the disk was full: the file
    must follow, or a restart would load the older version (nemesis seed 38). The save does not raise:
    its caller goes on (a task set FORWARDING whose send never started waited for ever)."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from appliance.cluster import tasks
    from appliance.store.models import Phase, Task
    from tests.support import coordinator_in
    monkeypatch.setattr(tasks, "UNSAVED_RETRY_SECONDS", 0.01)
    async with coordinator_in(tmp_path) as c:
        task = Task(uuid="00000000-0000-4000-8000-0000000000a9", phase=Phase.WAITING)
        await c.book.save(task)
        real_save = c.store.save

        async def full(*rows):
            refusal = sqlite3.OperationalError("database or disk is full")
            refusal.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise OperationalError("INSERT", {}, refusal)
        monkeypatch.setattr(c.store, "save", full)
        task.phase = Phase.FORWARDING
        await c.book.save(task)
        task.phase = Phase.REMOVED
        await c.book.save(task)
        assert c.book.tasks[task.uuid].phase == Phase.REMOVED
        assert len([r for r in caplog.records if "The disk is full" in r.getMessage()]) == 1, "said once"

        async def broken(*rows):
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("no such table: tasks"))
        monkeypatch.setattr(c.store, "save", broken)
        with pytest.raises(OperationalError):  # any other error is a bug, and says so
            await c.book.save(task)
        monkeypatch.setattr(c.store, "save", real_save)
        writer = asyncio.create_task(c.book.keep_written())
        for _ in range(200):
            if {t.uuid: t.phase for t in await c.store.load(Task)}[task.uuid] == Phase.REMOVED:
                break
            await asyncio.sleep(0.01)
        writer.cancel()
        assert {t.uuid: t.phase for t in await c.store.load(Task)}[task.uuid] == Phase.REMOVED
