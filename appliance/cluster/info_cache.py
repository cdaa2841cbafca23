"""What `GET /task/{uuid}/info` and `/task/{uuid}/output` answer from: the live view of each task,
and its console, whose lines only ever grow.

Info without a round trip. The tracker asks each running task's node what is new every
`task_poll_seconds` and keeps the reply and every output line here, so client polls are answered
from memory (with a real NodeODM, a round trip per poll made Passel twice as slow as the node). A
reply is trusted for `keep_for` (two tracker rounds); after that, a client's request asks the node
itself, and requests that arrive together share that one request. What Passel changes itself
(cancel, restart, move) is in the task row, which the reply is merged with, so it shows at once. A
finished run does not change on its node once asked again after its end (`Run.settled`: the first
finished reply may miss the last lines), so it is kept until Passel acts on the task; beyond
MAX_FINISHED_RUNS, the lines of the oldest are let go (and fetched again if asked for).

Lines only grow. WebODM keeps the console lines it has and asks for the rest with `with_output=N`,
so a line once served must stay where it is. A task's console is its head (the row's `notes`, which
is persisted: Passel's own lines, and the lines clients were served of earlier runs) followed by the
current run's lines: node line i is console line len(head) + i. When a run ends (the task moves, is
failed by Passel, or its node starts it over), the lines clients may have seen are frozen into the
head, with a line saying why, and the next run's lines follow. Passel's line for a task still waiting
(`waiting_line`) stays in the head once served. A restart through the API starts a new console, as
NodeODM's does (and WebODM clears its own then).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.store.models import Phase, Task

Ask = Callable[[int], Awaitable[dict[str, Any]]]  # the node's info with output from line N
FINISHED_CODES = (30, 40, 50)
MAX_FINISHED_RUNS = 32  # finished runs whose lines stay in memory; a real ODM log is thousands of lines


class OutputRestarted(Exception):
    """The node's output no longer continues what it printed before: it ran the task again from the
    start (NodeODM does after its own restart, and does not keep the output)."""


@dataclass
class Run:
    """One run of a task on one node: the node's latest info reply, and every line it printed so far."""

    node_id: int
    reply: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    good_until: float = -math.inf  # time.monotonic() after which the reply is too old to answer from
    settled: bool = False  # finished, and asked once more after that: its output is whole

    @property
    def final(self) -> bool:
        return (self.reply.get("status") or {}).get("code") in FINISHED_CODES


@dataclass
class Console:
    """What this process knows of a task's console beyond the row: the current run, and how many
    console lines clients may have seen (None: unknown, so all of them)."""

    served: int | None
    run: Run | None = None


class InfoCache:
    """The live view and console state of every task this process has answered for."""

    def __init__(self, secret: str = "") -> None:
        self.secret = secret  # the API token: a split task's node prints its sm-cluster URL, which carries it
        self.started = time.time()
        self.keep_for = 0.0  # seconds a node's reply answers clients; the tracker makes it two of its rounds
        self._consoles: dict[str, Console] = {}
        self._flights: dict[tuple[str, int], asyncio.Future[Run | None]] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()  # finished runs holding lines, oldest first
        self._unsettled: set[str] = set()

    def _console(self, task: Task) -> Console:
        console = self._consoles.get(task.uuid)
        if console is None:
            # a task accepted before this process started may have been served lines by the last one
            console = Console(served=0 if (task.committed_at or 0) >= self.started else None)
            self._consoles[task.uuid] = console
        return console

    def run(self, task: Task) -> Run | None:
        """The task's run on its current node, as last heard, however old."""
        console = self._consoles.get(task.uuid)
        run = console.run if console is not None else None
        if run is None or run.node_id != task.node_id or task.phase not in (Phase.ON_NODE, Phase.FINISHED):
            return None
        return run

    def fresh(self, task: Task) -> Run | None:
        """The task's run, if its node's reply is recent enough to answer a client without asking."""
        run = self.run(task)
        return run if run is not None and time.monotonic() < run.good_until else None

    async def refresh(self, task: Task, node_id: int, ask: Ask) -> Run | None:
        """Ask the node what is new since the lines we have; None when Passel ended the run meanwhile.
        Raises OutputRestarted when the node's output starts over."""
        key = (task.uuid, node_id)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._fetch(task, node_id, ask))
            self._flights[key] = flight
            flight.add_done_callback(lambda _: self._flights.pop(key, None))
        return await asyncio.shield(flight)

    async def _fetch(self, task: Task, node_id: int, ask: Ask) -> Run | None:
        console = self._console(task)
        known = console.run if console.run is not None and console.run.node_id == node_id else None
        run = known or Run(node_id)
        reply = dict(await ask(max(len(run.lines) - 1, 0)))  # one line of overlap shows a restart
        if self._consoles.get(task.uuid) is not console:
            return None  # moved, failed or restarted while we asked: the reply is about a run that is over
        added = _append(run, _hidden(reply.pop("output", None), self.secret))
        was_final, run.reply = run.final, reply
        # A node may print its last lines just after it reports the end (NodeODM reads the process's
        # output after the exit), so the first finished reply is not trusted to hold them all: the
        # tracker asks once more, and the run settles when a finished reply brings nothing new.
        run.settled = run.final and was_final and not added
        run.good_until = math.inf if run.final else time.monotonic() + self.keep_for
        console.run = run
        if run.final and not run.settled:
            self._unsettled.add(task.uuid)
        else:
            self._unsettled.discard(task.uuid)
        self._hold_lines(task.uuid, run)
        return run

    def unsettled(self) -> list[str]:
        """Tasks whose node reported the end once, whose output is to be asked for once more."""
        return list(self._unsettled)

    def _hold_lines(self, uuid: str, run: Run) -> None:
        if not run.final:
            self._finished.pop(uuid, None)
            return
        self._finished[uuid] = None
        self._finished.move_to_end(uuid)
        while len(self._finished) > MAX_FINISHED_RUNS:
            oldest, _ = self._finished.popitem(last=False)
            console = self._consoles.get(oldest)
            if console is not None:
                console.run = None

    def serve(self, task: Task, run: Run | None, waiting: str | None, start: int) -> tuple[list[str], bool]:
        """The console from line `start` (negative: the last lines), and whether the waiting line
        was served for the first time: it is then in the head, and the caller saves the row."""
        head = _head(task)
        tail = _tail(task) if run is None else []
        offered = [waiting] if run is None and not tail and waiting is not None and head[-1:] != [waiting] else []
        body = run.lines if run is not None else offered or tail
        lines = _slice(head, body, start)
        if not lines:
            return lines, False
        console = self._console(task)
        if console.served is not None:
            console.served = max(console.served, len(head) + len(body))
        if offered:
            task.notes = [*head, *offered]
        return lines, bool(offered)

    def end_run(self, task: Task, note: str, keep_all: bool = False) -> None:
        """The task's run is over: the lines clients may have seen (`keep_all`: every line known)
        stay where they are, then `note` says why, and the next run's lines follow. The caller saves."""
        console = self._consoles.get(task.uuid)
        head = _head(task)
        # without the run in memory (out of reach since a restart), its last lines are all we have
        known = console.run.lines if console is not None and console.run is not None else _tail(task)
        served = None if keep_all or console is None else console.served
        kept = known if served is None else known[:max(0, served - len(head))]
        task.notes, task.output_tail = [*head, *kept, note], []
        self._consoles[task.uuid] = Console(served=0)
        self._finished.pop(task.uuid, None)
        self._unsettled.discard(task.uuid)

    def start_over(self, task: Task) -> None:
        """A restart through the API: a new, empty console, as on NodeODM. The caller saves."""
        task.notes, task.output_tail = [], []
        self._consoles[task.uuid] = Console(served=0)
        self._finished.pop(task.uuid, None)
        self._unsettled.discard(task.uuid)

    def forget(self, uuid: str) -> None:
        """Drop what this process holds on the task (canceled, restarted, removed or lost): the next
        client request asks its node again."""
        self._consoles.pop(uuid, None)
        self._finished.pop(uuid, None)
        self._unsettled.discard(uuid)


def waiting_line(task: Task, node_url: str | None) -> str | None:
    """Passel's line for a task that is not on a node yet; once served, the node's lines follow it."""
    if task.phase == Phase.WAITING:
        return "Passel: waiting for a free node"
    if task.phase == Phase.FORWARDING and node_url:
        return f"Passel: sending the task to {node_url}"
    return None


def _hidden(lines: Any, secret: str) -> Any:
    """The node's lines with the secret blanked out (consistently, so the overlap check still holds)."""
    if not secret or not isinstance(lines, list):
        return lines
    return [line.replace(secret, "***") if isinstance(line, str) else line for line in lines]


def _append(run: Run, lines: Any) -> int:
    """Add what the node printed after our last line (it was asked from that line on); how many."""
    if not isinstance(lines, list):
        return 0  # a node that sends no output keeps the lines we have
    before = len(run.lines)
    if not run.lines or lines[:1] == run.lines[-1:]:
        run.lines.extend(lines[1:] if run.lines else lines)
    elif lines[:len(run.lines)] == run.lines:
        run.lines = list(lines)  # a node that ignores with_output sends all of it
    else:
        raise OutputRestarted
    return len(run.lines) - before


def _head(task: Task) -> list[str]:
    return task.notes


def _tail(task: Task) -> list[str]:
    """The last lines seen of a run that is out of reach, or Passel's reason for failing a send."""
    return task.output_tail


def _slice(head: list[str], body: list[str], start: int) -> list[str]:
    """(head + body)[start:], NodeODM's slice, without building the whole console."""
    total = len(head) + len(body)
    begin = max(total + start, 0) if start < 0 else min(start, total)
    return head[begin:] + body[max(begin - len(head), 0):]
