"""A task's console through Passel only ever grows, and its info is answered from the live view.

WebODM keeps the console lines it has and asks for the rest with `with_output=<lines it has>`, so a
line Passel has served must never be removed or moved later: not the line it shows while a task
waits, not the note it adds when a task moves to another node, not the lines of the node the task
left. The reader below polls the way WebODM does; after every poll the whole console (`/output`)
must still begin with what it holds, and at the end it must hold exactly that console, with the
node's own output in it as one ordered, unbroken run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from appliance.agent import create_app
from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.cluster.info_cache import InfoCache, OutputRestarted, _slice
from appliance.cluster.tracker import TaskTracker
from appliance.config import load_config
from appliance.simnode.app import ENGINE
from appliance.store.models import Phase, Task
from tests.nodeodm_helpers import Api, committed, jcall, wait_for
from tests.support import ServerThread

TOKEN = "node-secret"
FINISHED = (30, 40, 50)


class ConsoleReader:
    """A client that builds its console as WebODM does: `with_output` = the lines it has, then append."""

    def __init__(self, api: Any, uuid: str) -> None:
        self.api, self.uuid = api, uuid
        self.lines: list[str] = []
        self.statuses: list[int] = []

    def poll(self) -> dict[str, Any]:
        info = jcall(self.api, "GET", f"/task/{self.uuid}/info", params={"with_output": len(self.lines)})
        self.lines += info["output"]
        self.statuses.append(info["status"]["code"])
        whole = jcall(self.api, "GET", f"/task/{self.uuid}/output")
        assert whole[:len(self.lines)] == self.lines, "a line already served was removed or moved"
        return info

    def read_until_finished(self, timeout: float = 60) -> None:
        wait_for(lambda: self.poll()["status"]["code"] in FINISHED, timeout,
                 f"task {self.uuid} to finish")


def node_output(node: Any, uuid: str, token: str = TOKEN) -> list[str]:
    return requests.get(f"{node.url}/task/{uuid}/output", params={"token": token}, timeout=10).json()


def contains_run(lines: list[str], run: list[str]) -> bool:
    """`run` appears in `lines` as one contiguous, ordered stretch."""
    return any(lines[i:i + len(run)] == run for i in range(len(lines) - len(run) + 1))


def phase_of(api: Any, uuid: str) -> str:
    return next(t["phase"] for t in jcall(api, "GET", "/-/tasks") if t["uuid"] == uuid)


def check_final(reader: ConsoleReader, node: Any, token: str = TOKEN) -> list[str]:
    """The reader's console is exactly Passel's, and holds the node's whole output unbroken."""
    console = jcall(reader.api, "GET", f"/task/{reader.uuid}/output")
    assert reader.lines == console
    ours = node_output(node, reader.uuid, token)
    assert len(ours) >= 3 and contains_run(console, ours), (console, ours)
    assert jcall(reader.api, "GET", f"/task/{reader.uuid}/output", params={"line": -2}) == console[-2:]
    assert jcall(reader.api, "GET", f"/task/{reader.uuid}/info", params={"with_output": -3})["output"] == console[-3:]
    assert jcall(reader.api, "GET", f"/task/{reader.uuid}/output", params={"line": 2}) == console[2:]
    return console


@pytest.fixture
def passel_at(tmp_path: Path) -> Iterator[Any]:
    """Start a coordinator on a given state directory; stopping it by hand lets the next one reopen it."""
    running: list[ServerThread] = []

    def start(state_dir: Path, nodes: list[str]) -> ServerThread:
        flags = {"host": "127.0.0.1", "port": 3000, "state_dir": str(state_dir), "discovery": False,
                 "poll_seconds": 0.3, "task_poll_seconds": 0.2, "min_free_disk_mb": 0,
                 "public_url": "http://127.0.0.1:3000", "node": nodes}
        config = load_config(environ={}, flags=flags)
        server = ServerThread(lambda: create_app(config)).start()
        running.append(server)
        return server

    yield start
    for server in running:
        if server.loop.is_running():
            server.stop()


def test_a_task_that_waits_keeps_the_waiting_line_and_the_node_lines_follow(simnode_factory, passel_factory):
    node = simnode_factory(token=TOKEN, slots=1, seconds_per_image=0.05)
    api = Api(passel_factory([f"{node.url}?token={TOKEN}"]))
    blocker = committed(api, images=60)
    uuid = committed(api, images=10)
    reader = ConsoleReader(api, uuid)
    wait_for(lambda: reader.poll()["output"] or reader.lines, what="the waiting line")
    assert reader.lines == ["Passel: waiting for a free node"] and reader.statuses[-1] == 10
    reader.poll()
    assert reader.lines == ["Passel: waiting for a free node"], "the same line is not served twice"
    jcall(api, "POST", "/task/cancel", data={"uuid": blocker})
    reader.read_until_finished()
    console = check_final(reader, node)
    on_node = node_output(node, uuid)
    assert console[-len(on_node):] == on_node, "the node's lines come last, all of them"
    ours = console[:-len(on_node)]  # waiting, then perhaps sending
    assert ours[0] == "Passel: waiting for a free node" and all(line.startswith("Passel: ") for line in ours)


def test_a_task_that_waits_in_front_of_a_real_nodeodm_reads_the_same_as_it_is_served(realnode_factory,
                                                                                      passel_factory):
    node = realnode_factory("--test_seconds", "3")
    api = Api(passel_factory([node.url]))
    wait_for(lambda: jcall(api, "GET", "/info")["maxParallelTasks"] >= 1, what="the node online")
    blocker = committed(api, images=3, skipPostProcessing="true")
    uuid = committed(api, images=3, skipPostProcessing="true")
    reader = ConsoleReader(api, uuid)
    wait_for(lambda: reader.poll()["output"] or reader.lines, what="the waiting line")
    wait_for(lambda: jcall(api, "GET", f"/task/{blocker}/info")["status"]["code"] == 40, what="the first task")
    wait_for(lambda: reader.poll()["status"]["code"] == 20 and len(reader.lines) > 3,
             what="the node's lines while it runs")
    reader.read_until_finished()
    assert 20 in reader.statuses and reader.statuses[-1] == 40
    console = check_final(reader, node, token="")
    on_node = node_output(node, uuid, token="")
    assert console[-len(on_node):] == on_node, "the node's lines come last, all of them"
    ours = console[:-len(on_node)]  # waiting, then perhaps sending
    assert ours[0] == "Passel: waiting for a free node" and all(line.startswith("Passel: ") for line in ours)


@pytest.fixture(params=["simnode", "nodeodm"])
def slow_and_fast(request: pytest.FixtureRequest, simnode_factory) -> tuple[Any, Any, str]:
    """Two nodes, the first slow enough to move a task off while it runs; and their shared token."""
    if request.param == "simnode":
        slow = simnode_factory(token=TOKEN, seconds_per_image=0.1)
        return slow, simnode_factory(token=TOKEN, seconds_per_image=0.01), TOKEN
    realnode_factory = request.getfixturevalue("realnode_factory")
    return realnode_factory("--test_seconds", "30"), realnode_factory("--test_seconds", "1"), ""


def test_a_moved_task_keeps_what_was_read_then_says_why_then_the_new_nodes_lines(slow_and_fast, passel_at, tmp_path):
    a, b, token = slow_and_fast
    nodes = [f"{n.url}?token={token}" if token else n.url for n in (a, b)]
    server = passel_at(tmp_path / "state", nodes)
    api = Api(server)
    jcall(api, "POST", "/-/nodes/2/lock")  # it starts on a
    uuid = committed(api, images=40)
    reader = ConsoleReader(api, uuid)
    wait_for(lambda: reader.poll() and phase_of(api, uuid) == "on_node" and len(reader.lines) >= 5,
             what="some of a's lines read")
    read_on_a = list(reader.lines)
    jcall(api, "POST", "/-/nodes/2/unlock")
    assert jcall(api, "POST", f"/-/tasks/{uuid}/move", json={"node": "2"})["success"]
    reader.read_until_finished()
    console = check_final(reader, b, token)
    note = f"Passel: moved by hand from {a.url} to {b.url}"
    assert console[:len(read_on_a)] == read_on_a, "what was read of a's run stays where it was"
    on_b = node_output(b, uuid, token)
    between = console[console.index(note) + 1:len(console) - len(on_b)]
    assert console.index(note) >= len(read_on_a)
    assert console[-len(on_b):] == on_b, "then b's whole output, from its line 0"
    assert all(line.startswith("Passel: ") for line in between), between  # waiting for b, sending to b

    server.stop()  # what was served is still served by the next process on the same state
    again = Api(passel_at(tmp_path / "state", nodes))
    wait_for(lambda: all(n["online"] for n in jcall(again, "GET", "/-/nodes")), what="the nodes polled again")
    assert jcall(again, "GET", f"/task/{uuid}/output") == console


def test_a_real_nodeodm_restarted_mid_task_leaves_the_console_growing(realnode_factory, passel_factory):
    """NodeODM does not keep a task's output across its own restart, and runs the task again from
    line 0: what the client has stays, and the new run's lines follow."""
    node = realnode_factory("--test_seconds", "4")
    api = Api(passel_factory([node.url]))
    uuid = committed(api, images=3, skipPostProcessing="true")
    reader = ConsoleReader(api, uuid)
    wait_for(lambda: reader.poll()["status"]["code"] == 20 and len(reader.lines) > 3,
             what="the node's lines while it runs")
    read_before = list(reader.lines)
    node.restart()
    reader.read_until_finished(timeout=90)
    console = check_final(reader, node, token="")
    assert console[:len(read_before)] == read_before


def test_a_node_that_starts_a_task_over_leaves_the_console_growing(simnode_factory, passel_factory):
    node = simnode_factory(token=TOKEN, seconds_per_image=0.1)
    api = Api(passel_factory([f"{node.url}?token={TOKEN}"]))
    uuid = committed(api, images=20)
    engine = node.app[ENGINE]
    at_start = wait_for(lambda: len(engine.tasks[uuid].output) if uuid in engine.tasks else 0, what="the run")
    reader = ConsoleReader(api, uuid)
    wait_for(lambda: reader.poll() and len(reader.lines) > at_start + 2,
             what="lines beyond the first ones")
    read_before = list(reader.lines)

    async def run_again() -> None:  # what a node rebooting mid-task does: the run and its output start over
        engine.faults.stall_at = 0.0  # and the new run holds at its first lines until Passel has seen it
        engine._start(engine.tasks[uuid], time.monotonic())
    node.call(run_again())
    note = f"Passel: {node.url} started this task over; its new output follows"
    wait_for(lambda: note in reader.poll()["output"] or note in reader.lines, what="Passel to see the new run")
    engine.faults.stall_at = None
    reader.read_until_finished()
    console = check_final(reader, node)
    assert console[:len(read_before)] == read_before and note in console[len(read_before):]
    assert console[-len(node_output(node, uuid)):] == node_output(node, uuid)


def test_a_finished_tasks_console_survives_a_restart_of_passel(simnode_factory, passel_at, tmp_path):
    node = simnode_factory(token=TOKEN)
    server = passel_at(tmp_path / "state", [f"{node.url}?token={TOKEN}"])
    api = Api(server)
    uuid = committed(api, images=5)
    reader = ConsoleReader(api, uuid)
    reader.read_until_finished()
    console = check_final(reader, node)
    server.stop()
    again = Api(passel_at(tmp_path / "state", [f"{node.url}?token={TOKEN}"]))
    wait_for(lambda: jcall(again, "GET", "/-/nodes")[0]["online"], what="the node polled by the new process")
    assert jcall(again, "GET", f"/task/{uuid}/output") == console
    assert jcall(again, "GET", f"/task/{uuid}/info", params={"with_output": 3})["output"] == console[3:]


def test_info_comes_from_the_live_view_and_passels_own_changes_show_at_once(simnode_factory, passel_factory):
    node = simnode_factory(token=TOKEN, seconds_per_image=1.0)
    server = passel_factory([f"{node.url}?token={TOKEN}"], task_poll_seconds=600)  # no round of its own here
    api = Api(server)
    uuid = committed(api, images=30)
    wait_for(lambda: phase_of(api, uuid) == "on_node", what="the task on its node")
    coordinator = server.app[COORDINATOR_KEY]
    task = coordinator.book.tasks[uuid]
    client = coordinator.registry.get(task.node_id).client
    asked: list[int | None] = []
    original = client.task_info

    async def counted(task_uuid: str, with_output: int | None = None) -> dict[str, Any]:
        asked.append(with_output)
        return await original(task_uuid, with_output)

    client.task_info = counted
    wait_for(lambda: node_output(node, uuid), what="the node's first lines")
    tracker = TaskTracker(coordinator, 600, 3600)
    server.call(tracker.refresh(task))  # one tracker round
    known = len(coordinator.info_cache.run(task).lines)
    server.call(tracker.refresh(task))
    assert asked == [0, known - 1], "the first round asks for all lines, the next from the last one known"
    asked.clear()
    for with_output in (None, 0, 2, -1, None):
        params = {} if with_output is None else {"with_output": with_output}
        info = jcall(api, "GET", f"/task/{uuid}/info", params=params)
        assert info["status"]["code"] == 20 and info["uuid"] == uuid and info["imagesCount"] == 30
    lines = coordinator.info_cache.run(task).lines
    assert jcall(api, "GET", f"/task/{uuid}/output") == lines and len(lines) >= known
    assert asked == [], "no client request went to the node"
    jcall(api, "POST", "/task/cancel", data={"uuid": uuid})
    assert jcall(api, "GET", f"/task/{uuid}/info")["status"]["code"] == 50, "Passel's own change shows at once"


def test_a_stale_view_is_not_served_the_node_is_asked(simnode_factory, passel_factory):
    node = simnode_factory(token=TOKEN, seconds_per_image=1.0)
    server = passel_factory([f"{node.url}?token={TOKEN}"], task_poll_seconds=600)
    api = Api(server)
    uuid = committed(api, images=30)
    wait_for(lambda: phase_of(api, uuid) == "on_node", what="the task on its node")
    coordinator = server.app[COORDINATOR_KEY]
    coordinator.info_cache.keep_for = 0.0  # every reply is old at once
    task = coordinator.book.tasks[uuid]
    jcall(api, "GET", f"/task/{uuid}/info")
    before = coordinator.info_cache.run(task).reply["processingTime"]
    wait_for(lambda: requests.get(f"{node.url}/task/{uuid}/info", params={"token": TOKEN}, timeout=5)
             .json()["processingTime"] > before, what="the node's clock to move")
    assert jcall(api, "GET", f"/task/{uuid}/info")["processingTime"] > before
    jcall(api, "POST", "/task/cancel", data={"uuid": uuid})


# -- the live view on its own, without servers ------------------------------------------------------

def _task(**values: Any) -> Task:
    """A task accepted after the cache was made: nothing of it was served by an earlier process."""
    defaults: dict[str, Any] = {"uuid": "1b4e28ba-2fa1-41d2-883f-0016d3cca427", "phase": Phase.ON_NODE,
                                "node_id": 1, "committed_at": time.time() + 1}
    return Task(**defaults | values)


def _asker(outputs: list[list[str]], status: int = 20) -> Any:
    """A node whose output is, on each call, the next list; answers with_output like NodeODM."""
    calls: list[int] = []

    async def ask(start: int) -> dict[str, Any]:
        calls.append(start)
        lines = outputs[min(len(calls), len(outputs)) - 1]
        return {"status": {"code": status}, "progress": 1, "output": lines[start:]}

    ask.calls = calls  # type: ignore[attr-defined]
    return ask


def test_slice_is_nodeodms_slice_of_the_whole_console():
    head, body = ["p1", "p2"], ["n0", "n1", "n2"]
    for start in range(-8, 9):
        assert _slice(head, body, start) == (head + body)[start:], start
    assert _slice([], [], -3) == [] and _slice(["x"], [], 0) == ["x"]


def _cache(keep_for: float = 60) -> InfoCache:
    cache = InfoCache()
    cache.keep_for = keep_for
    return cache


def test_the_node_is_asked_only_for_what_is_new_and_a_restart_of_its_output_is_seen():
    cache, task = _cache(), _task()
    ask = _asker([["a", "b"], ["a", "b", "c", "d"], ["a", "b", "c", "d"], ["x"]])
    run = asyncio.run(cache.refresh(task, 1, ask))
    assert run is not None and run.lines == ["a", "b"] and "output" not in run.reply
    asyncio.run(cache.refresh(task, 1, ask))
    asyncio.run(cache.refresh(task, 1, ask))
    assert ask.calls == [0, 1, 3] and cache.run(task).lines == ["a", "b", "c", "d"]
    with pytest.raises(OutputRestarted):
        asyncio.run(cache.refresh(task, 1, ask))
    assert cache.fresh(task) is not None
    whole = _asker([["a", "b"], ["a", "b", "c"]])

    async def ignores_with_output(start: int) -> dict[str, Any]:
        return await whole(0)
    cache.forget(task.uuid)
    asyncio.run(cache.refresh(task, 1, ignores_with_output))
    asyncio.run(cache.refresh(task, 1, ignores_with_output))
    assert cache.run(task).lines == ["a", "b", "c"], "a node that sends everything is not a restart"


def test_a_run_that_ends_keeps_only_the_lines_served_then_the_reason():
    cache, task = _cache(), _task(notes=["Passel: waiting for a free node"])
    asyncio.run(cache.refresh(task, 1, _asker([["n0", "n1", "n2", "n3"]])))
    lines, pinned = cache.serve(task, cache.run(task), None, 0)
    assert lines[:3] == ["Passel: waiting for a free node", "n0", "n1"] and not pinned
    asyncio.run(cache.refresh(task, 1, _asker([["n0", "n1", "n2", "n3", "n4", "n5"]])))
    cache.end_run(task, "Passel: moved")
    assert task.notes == ["Passel: waiting for a free node", "n0", "n1", "n2", "n3", "Passel: moved"]
    assert cache.run(task) is None and task.output_tail == []
    asyncio.run(cache.refresh(task, 1, _asker([["m0"]])))
    cache.end_run(task, "Passel: moved again")  # nothing of m's run was served: it is not kept
    assert task.notes[-2:] == ["Passel: moved", "Passel: moved again"]
    asyncio.run(cache.refresh(task, 1, _asker([["k0", "k1"]])))
    cache.end_run(task, "Passel: Stopped", keep_all=True)
    assert task.notes[-3:] == ["k0", "k1", "Passel: Stopped"]
    cache.start_over(task)
    assert task.notes == [] and cache.serve(task, None, None, 0) == ([], False)


def test_the_waiting_line_is_kept_once_served_and_a_finished_run_stays_until_passel_acts():
    cache, task = _cache(keep_for=0), _task(phase=Phase.WAITING, node_id=None)
    assert cache.serve(task, None, "Passel: waiting for a free node", 5) == ([], False), "nothing served, nothing kept"
    assert task.notes == []
    assert cache.serve(task, None, "Passel: waiting for a free node", 0) == (["Passel: waiting for a free node"], True)
    assert cache.serve(task, None, "Passel: waiting for a free node", 0) == (["Passel: waiting for a free node"], False)
    task.phase, task.node_id = Phase.FINISHED, 1
    asyncio.run(cache.refresh(task, 1, _asker([["n0"]], status=40)))
    assert cache.fresh(task) is not None, "a finished run does not go stale"
    assert cache.serve(task, cache.fresh(task), None, 0)[0] == ["Passel: waiting for a free node", "n0"]
    cache.forget(task.uuid)
    assert cache.run(task) is None
