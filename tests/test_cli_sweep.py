"""Every `passel` command, fed bad input, ends with one sentence on stderr and a non-zero exit code,
never a traceback; and the client commands read as sentences and tables, ride out a network blip,
and say how to pick a task up again. Traffic goes to 127.0.0.1 only.

The commands come from the parser itself, so a new command fails test_every_command_is_swept until it
has cases here. Each command runs once as a real process (`python -m appliance`, which also shows what
happens at exit: a stuck thread, a write to a closed pipe); the whole matrix of bad input runs through
cli.main in this process, as a process start costs a second on a busy box. `run`, `simnode` and `demo`
get only --help and a bad flag value here: their own errors (bad settings, a port in use, --node without
a scheme) are in tests/test_run_errors.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from pyodm import Node

from appliance import cli
from appliance.admin_client import network_reason
from appliance.agent import create_app
from appliance.config import load_config
from appliance.simnode import SimnodeSettings, create_simnode_app
from tests.nodeodm_helpers import make_images
from tests.support import ServerThread
from tests.ui_support import free_port

BAD_APIS = {"no server": "{silent}", "not a url": "not a url", "plain NodeODM": "{plain}"}
# Per command that talks to a box: arguments that would be harmless on a working passel, tried with every BAD_API
NETWORK_ARGS: dict[str, list[str]] = {
    "status": [], "transfer": ["no-such-box"], "tasks": ["show", "zzzz"], "nodes": ["remove", "99"],
    "submit": ["{images}", "--option", "no-such-option=1"], "download": ["zzzz"], "password": ["--stdin"],
    "priority": ["3"],
}
# Bad uuids, missing arguments, bad values and settings: (arguments, exit code); 2 is argparse's
CASES: dict[str, list[tuple[list[str], int]]] = {
    "run": [(["--first-boot=yes"], 2)],
    "simnode": [(["--port", "not-a-port"], 2)],
    "demo": [(["--submodels", "many"], 2)],
    "status": [(["--api", "http://127.0.0.1:notaport"], 1), (["--api", "{passel}", "--verbose"], 2)],
    "transfer": [([], 2), (["no-such-box", "--api", "{passel}"], 1)],
    "key": [([], 2), (["show", "--state-dir", "{missing}"], 1), (["set", "--state-dir", "{missing}"], 1),
            (["set", "ABCD", "--state-dir", "{missing}"], 1), (["show", "--config", "{missing}"], 1)],
    "tasks": [([], 2), (["show"], 1), (["move", "zzzz"], 1), (["show", "zzzz", "--api", "{passel}"], 1),
              (["cancel", "zzzz", "--api", "{passel}"], 1)],
    "nodes": [([], 2), (["remove"], 1), (["best", "many"], 1), (["remove", "99", "--api", "{passel}"], 1),
              (["lock", "99", "--api", "{passel}"], 1), (["add", "not a url", "--api", "{passel}"], 1)],
    "sleep": [(["--config", "{missing}"], 1)],
    "wake": [(["--config", "{missing}"], 1)],
    "submit": [([], 1), (["{missing}"], 1), (["{images}", "--option", "dsm"], 1), (["{images}", "--split", "x"], 2),
               (["{images}", "--follow", "zzzz"], 1), (["--follow", "zzzz", "--api", "{passel}"], 1),
               (["{images}", "--option", "orthophoto-res=5", "--api", "{passel}"], 1),
               (["{images}", "--api", "http://127.0.0.1:notaport"], 1)],
    "download": [([], 2), (["zzzz", "--api", "{passel}"], 1)],
    "doctor": [(["--config", "{missing}"], 1), (["--port", "not-a-port"], 2)],
    "password": [(["--stdin", "--api", "{passel}"], 1)],
    "priority": [([], 2), (["high"], 2), (["3", "--api", "{passel}"], 1)],
}
SWEEP = [[command, *args] for command, cases in CASES.items() for args, _ in cases] + [
    [command, *args, "--api", api] for command, args in NETWORK_ARGS.items() for api in BAD_APIS.values()]
EXIT_CODES = {" ".join([command, *args]): code for command, cases in CASES.items() for args, code in cases}
# The case each command runs as a real process
IN_A_PROCESS = [["run", "--first-boot=yes"], ["simnode", "--port", "not-a-port"], ["demo", "--submodels", "many"],
                ["status", "--api", "{plain}"], ["transfer", "no-such-box", "--api", "{passel}"],
                ["key", "show", "--state-dir", "{missing}"], ["tasks", "show", "zzzz", "--api", "{silent}"],
                ["nodes", "remove", "99", "--api", "{plain}"], ["sleep", "--config", "{missing}"],
                ["wake", "--config", "{missing}"],
                ["submit", "{images}", "--option", "no-such-option=1", "--api", "{silent}"],
                ["download", "zzzz", "--api", "{passel}"], ["doctor", "--config", "{missing}"],
                ["password", "--stdin", "--api", "{silent}"], ["priority", "3", "--api", "{plain}"]]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@dataclass
class Passel:
    """A passel without discovery in front of one simulated node, and a plain simulated node beside it."""

    passel: ServerThread
    node: ServerThread
    plain: ServerThread
    images: Path

    @property
    def url(self) -> str:
        return self.passel.url


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Passel]:
    root = tmp_path_factory.mktemp("sweep")
    node = ServerThread(lambda: create_simnode_app(SimnodeSettings(seconds_per_image=0.02, slots=2))).start()
    plain = ServerThread(lambda: create_simnode_app(SimnodeSettings(seconds_per_image=0.02))).start()
    config = load_config(environ={}, flags={
        "host": "127.0.0.1", "port": 3000, "state_dir": str(root / "state"), "discovery": False, "poll_seconds": 0.3,
        "task_poll_seconds": 0.1, "min_free_disk_mb": 0, "public_url": "http://127.0.0.1:3000", "node": [node.url]})
    passel = ServerThread(lambda: create_app(config)).start()
    make_images(root / "flight", 3)
    yield Passel(passel, node, plain, root / "flight")
    for server in (passel, plain, node):
        server.stop()


def passel_env(silent_port: int) -> dict[str, str]:
    """This environment without PASSEL_* settings, and a default --api where nothing listens: no case can
    reach a real box on this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSEL_")}
    return env | {"PASSEL_API": f"http://127.0.0.1:{silent_port}"}


def run_passel(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


@dataclass
class Said:
    """How a command ended: its exit code and what it printed."""

    code: int
    out: str
    err: str


def check_one_sentence(said: Said, code: int) -> None:
    """No traceback or exception name, the exit code, and a sentence last on stderr (the only line, but for
    argparse's usage)."""
    both = said.out + said.err
    assert "Traceback" not in both and not re.search(r"\b[A-Z]\w*(Error|Exception)\b", both), both
    assert said.code == code, both
    lines = [line for line in said.err.splitlines() if line.strip()]
    assert lines and re.match(r"[A-Za-z-]", lines[-1]) and len(lines[-1].split()) >= 4, both
    if code == 1:
        assert len(lines) == 1, both


@pytest.fixture(scope="module")
def values(box: Passel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the cases' {placeholders} stand for."""
    return {"passel": box.url, "plain": box.plain.url, "silent": f"127.0.0.1:{free_port()}",
            "images": str(box.images), "missing": str(tmp_path_factory.mktemp("nothing") / "missing")}


@pytest.fixture(scope="module")
def processes(values: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Said]:
    """The cases of IN_A_PROCESS, run four at a time."""
    cwd = tmp_path_factory.mktemp("processes")
    env = passel_env(int(values["silent"].rsplit(":", 1)[1]))

    def one(argv: list[str]) -> Said:
        done = run_passel([a.format(**values) for a in argv], cwd, env)
        return Said(done.returncode, done.stdout, done.stderr)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return {" ".join(argv): said for argv, said in zip(IN_A_PROCESS, pool.map(one, IN_A_PROCESS))}


def _expected_code(argv: list[str]) -> int:
    return EXIT_CODES.get(" ".join(argv), 1)


def test_every_command_is_swept() -> None:
    commands = _subcommands()
    assert set(commands) == set(CASES) == {argv[0] for argv in IN_A_PROCESS}, "give every command its cases"
    talking = {name for name, parser in commands.items() if "--api" in parser._option_string_actions}
    assert talking == set(NETWORK_ARGS), "give every command with --api its harmless arguments in NETWORK_ARGS"
    assert all(" ".join(argv) in {" ".join(a) for a in SWEEP} for argv in IN_A_PROCESS)


@pytest.mark.parametrize("argv", IN_A_PROCESS, ids=" ".join)
def test_each_command_as_a_real_process(processes: dict[str, Said], argv: list[str]) -> None:
    check_one_sentence(processes[" ".join(argv)], _expected_code(argv))


@pytest.mark.parametrize("argv", SWEEP, ids=" ".join)
def test_bad_input_is_one_sentence_and_an_exit_code(values: dict[str, str], argv: list[str], capsys, monkeypatch,
                                                    tmp_path: Path) -> None:
    """As `python -m appliance` would end: SystemExit's text on stderr; any other exception fails the test."""
    for name in [k for k in os.environ if k.startswith("PASSEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PASSEL_API", f"http://{values['silent']}")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main([a.format(**values) for a in argv])
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = 1 if isinstance(exc.code, str) else int(exc.code or 0)
    out, err = capsys.readouterr()
    check_one_sentence(Said(code, out, err), _expected_code(argv))


def test_every_command_has_help_that_prints(capsys) -> None:
    for name in _subcommands():
        with pytest.raises(SystemExit) as done:
            cli.main([name, "--help"])
        assert done.value.code == 0 and f"usage: passel {name}" in capsys.readouterr().out


def test_a_reader_that_leaves_early_is_no_error(box: Passel, tmp_path: Path) -> None:
    """`passel tasks list | head -1`: the reader goes before Passel writes."""
    process = subprocess.Popen([sys.executable, "-m", "appliance", "tasks", "list", "--api", box.url], cwd=tmp_path,
                               env=passel_env(free_port()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(30) == 1 and err == ""


def test_the_reason_a_name_does_not_resolve_is_said_in_words() -> None:
    """`--api notaurl` on a real network (the sweep stays off DNS): the OS error under urllib3's, in words."""
    try:
        raise ConnectionError("HTTPConnectionPool(host='notaurl'): Max retries exceeded") from socket.gaierror(
            -2, "Name or service not known")
    except ConnectionError as exc:
        assert network_reason(exc).startswith("no machine by that name can be found")


def test_status_of_a_box_without_discovery(box: Passel, capsys) -> None:
    assert cli.main(["status", "--api", box.url]) == 0
    out = capsys.readouterr().out
    assert "discovery is off, so it works alone with the nodes below" in out
    assert box.node.url in out and "\nTasks: " in out
    assert cli.main(["status", "--api", box.url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["discovery"] is False and shown["nodes"][0]["url"] == box.node.url and "tasks" in shown


@pytest.fixture(scope="module")
def finished(box: Passel) -> str:
    """A task that has completed on the module's passel."""
    port = int(box.url.rsplit(":", 1)[1])
    task = Node("127.0.0.1", port).create_task([str(p) for p in sorted(box.images.iterdir())], name="finished")
    task.wait_for_completion(interval=0.1)
    return task.uuid


def test_tasks_show_reads_as_the_task_page(box: Passel, finished: str, capsys) -> None:
    assert cli.main(["tasks", "show", finished[:8], "--api", box.url]) == 0
    out = capsys.readouterr().out
    assert f"Task:        {finished}  'finished'" in out and "Status:      COMPLETED, 100%" in out
    assert f"Node:        {box.node.url}" in out and "Images:      3" in out and "Options:     the defaults" in out
    assert "Events, oldest first:" in out and " accepted " in out
    assert not re.search(r"\b1\d{9}\b", out) and '"status"' not in out  # no epoch seconds, no raw JSON
    assert cli.main(["tasks", "show", finished[:8], "--api", box.url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == 40


def test_nodes_best_and_remove_are_sentences(box: Passel, simnode_factory, capsys) -> None:
    assert cli.main(["nodes", "best", "3", "--api", box.url]) == 0
    out = capsys.readouterr().out
    assert f"A task of 3 images would go to node 1 ({box.node.url}) now." in out
    assert "Nodes that can take it, best first:" in out and "4 cores, 8.6 GB, 0/2 slots busy" in out
    assert cli.main(["nodes", "best", "3", "--api", box.url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["best"] == 1

    for json_flag in ([], ["--json"]):
        extra = simnode_factory()
        assert cli.main(["nodes", "add", extra.url, "--api", box.url]) == 0
        added = max(n["id"] for n in requests.get(f"{box.url}/-/nodes", timeout=5).json())
        capsys.readouterr()
        assert cli.main(["nodes", "remove", str(added), "--api", box.url, *json_flag]) == 0
        out = capsys.readouterr().out
        assert (json.loads(out) == {"success": True, "id": added} if json_flag
                else out == f"Removed node {added} ({extra.url}).\n")


def test_download_unpacks_the_results_of_a_completed_task(box: Passel, finished: str, tmp_path: Path, capsys) -> None:
    output = tmp_path / "results"
    assert cli.main(["download", finished[:8], "--api", box.url, "--output", str(output)]) == 0
    assert f"Done: results of task {finished} are in {output}/" in capsys.readouterr().out
    unpacked = [p for p in output.rglob("*") if p.is_file()]
    assert unpacked and not list(output.glob(".download-*")), "the results are unpacked, the scratch folder gone"


def test_an_unknown_option_is_refused_with_the_close_names(box: Passel, capsys) -> None:
    before = len(requests.get(f"{box.url}/task/list", timeout=5).json())
    with pytest.raises(SystemExit) as refused:
        cli.main(["submit", str(box.images), "--api", box.url, "--option", "orthophoto-res=5",
                  "--option", "dsm=maybe", "--option", "mesh-octree-depth=99"])
    message = str(refused.value.code)
    assert message.startswith("Nothing was sent: there is no option 'orthophoto-res' "
                              "(did you mean orthophoto-resolution")
    assert "dsm=maybe is not accepted, as it takes true or false" in message
    assert "mesh-octree-depth=99 is not accepted, as it takes a whole number (integer: 1 <= x <= 14)" in message
    assert len(requests.get(f"{box.url}/task/list", timeout=5).json()) == before


def test_submit_no_wait_then_follow(box: Passel, tmp_path: Path, capsys) -> None:
    assert cli.main(["submit", str(box.images), "--api", box.url, "--name", "later", "--no-wait",
                     "--option", "orthophoto-resolution=2.5"]) == 0
    uuid = re.search(r"Task (\S+) accepted", capsys.readouterr().out).group(1)
    sent = requests.get(f"{box.url}/-/tasks/{uuid}", timeout=5).json()["options"]
    assert {"name": "orthophoto-resolution", "value": 2.5} in sent, "typed as the node declares it"
    assert cli.main(["submit", "--follow", uuid[:8], "--api", box.url, "--output", str(tmp_path / "out"),
                     "--poll-seconds", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "Status: COMPLETED" in out and f"Done: results are in {tmp_path / 'out'}/" in out


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class FlakyProxy:
    """A field network in front of the passel, on 127.0.0.1: the first request whose first line matches a
    trigger is cut ("cut"), or delivered with its answer lost ("lost"); every connection is then cut for
    that trigger's seconds, as a Wi-Fi link that drops out does."""

    def __init__(self, target: str, triggers: list[tuple[str, str, float]]) -> None:
        self.target = ("127.0.0.1", int(target.rsplit(":", 1)[1]))
        self.triggers = list(triggers)
        self.fired: list[str] = []
        self.dark_until = 0.0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.running = True
        self.thread = threading.Thread(target=self._accept, name="flaky-proxy", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(client,), name="flaky-proxy-conn", daemon=True).start()

    def _trigger(self, line: str) -> str | None:
        """The mode of the trigger this request line sets off, "dark" while the link is down, else None."""
        with self.lock:
            if time.monotonic() < self.dark_until:
                return "dark"
            for index, (pattern, mode, seconds) in enumerate(self.triggers):
                if re.search(pattern, line):
                    del self.triggers[index]
                    self.fired.append(pattern)
                    self.dark_until = time.monotonic() + seconds
                    return mode
        return None

    def _serve(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.target, timeout=30) as upstream:
            client.settimeout(30)
            head = client.recv(65536)
            mode = self._trigger(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            if mode == "lost":
                upstream.sendall(head)
                upstream.recv(1)  # the passel has answered: the answer goes nowhere
            if mode:
                return
            upstream.sendall(head)
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join(30)

    def stop(self) -> None:
        self.running = False
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def flaky(box: Passel) -> Iterator[list[FlakyProxy]]:
    proxies: list[FlakyProxy] = []
    yield proxies
    for proxy in proxies:
        proxy.stop()


def test_submit_rides_out_blips_in_commit_polling_and_download(box: Passel, flaky, tmp_path: Path, capsys) -> None:
    proxy = FlakyProxy(box.url, [(r"^POST /task/new/commit/", "lost", 1.0), (r"^GET /task/[^/]+/info", "cut", 1.5),
                                 (r"^GET /task/[^/]+/download/all\.zip", "cut", 1.0)])
    flaky.append(proxy)
    assert cli.main(["submit", str(box.images), "--api", proxy.url, "--name", "blips", "--output",
                     str(tmp_path / "out"), "--poll-seconds", "0.1", "--patience", "20"]) == 0
    out, err = capsys.readouterr()
    assert len(proxy.fired) == 3 and "Done: results are in" in out
    assert "No answer from the passel while sending (the connection was cut); trying again in 0.5 s" in err
    assert any((tmp_path / "out").rglob("*"))
    named = [t for t in requests.get(f"{box.url}/-/tasks", timeout=5).json() if t["name"] == "blips"]
    assert len(named) == 1, "the commit whose answer was lost made one task, not two"


def test_submit_that_gives_up_says_how_to_pick_the_task_up(box: Passel, flaky, tmp_path: Path, capsys) -> None:
    proxy = FlakyProxy(box.url, [(r"^GET /task/[^/]+/info", "cut", 60)])
    flaky.append(proxy)
    with pytest.raises(SystemExit) as gave_up:
        cli.main(["submit", str(box.images), "--api", proxy.url, "--poll-seconds", "0.1", "--patience", "2"])
    uuid = re.search(r"Task (\S+) accepted", capsys.readouterr().out).group(1)
    assert str(gave_up.value.code) == (
        f"The passel at {proxy.url} stopped answering for 2 s (the connection was cut); task {uuid} goes on on the "
        f"passel: pick it up again with `passel submit --follow {uuid} --api {proxy.url}`, or fetch its results once "
        f"done with `passel download {uuid} --api {proxy.url}`.")
    assert cli.main(["submit", "--follow", uuid, "--api", box.url, "--output", str(tmp_path / "out"),
                     "--poll-seconds", "0.1"]) == 0


def _read_until(process: subprocess.Popen, pattern: str, seconds: float) -> re.Match[str]:
    """The first line of the process's output that matches, within `seconds`."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        with contextlib.suppress(queue.Empty):
            if found := re.search(pattern, lines.get(timeout=left)):
                return found
    raise AssertionError(f"no line matching {pattern!r} in {seconds} s")


def test_ctrl_c_after_acceptance_says_how_to_follow_and_download(simnode_factory, passel_factory,
                                                                tmp_path: Path) -> None:
    slow = passel_factory([simnode_factory(seconds_per_image=1.0).url])
    make_images(tmp_path / "flight", 3)
    env = passel_env(free_port())
    with open(tmp_path / "stderr", "w+") as stderr:
        # as from a terminal: a suite started as a background job (`.ci/run &`) has SIGINT ignored, a
        # child inherits that, and Python then never turns Ctrl-C into KeyboardInterrupt; a signal
        # handled here is reset to its default at exec
        ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            process = subprocess.Popen([sys.executable, "-m", "appliance", "submit", str(tmp_path / "flight"),
                                        "--api", slow.url, "--poll-seconds", "0.1"], cwd=tmp_path, env=env,
                                       stdout=subprocess.PIPE, stderr=stderr, text=True)
        finally:
            signal.signal(signal.SIGINT, ignored)
        try:
            uuid = _read_until(process, r"Task (\S+) accepted", 30).group(1)
            process.send_signal(signal.SIGINT)
            assert process.wait(15) == 130
        finally:
            process.kill()
            process.stdout.close()
        stderr.seek(0)
        err = stderr.read()
    assert "Traceback" not in err
    assert f"Stopped following; task {uuid} goes on on the passel: pick it up again with " \
           f"`passel submit --follow {uuid} --api {slow.url}`" in err

    early = run_passel(["download", uuid[:8], "--api", slow.url], tmp_path, env)
    assert early.returncode == 1 and "has no results yet: follow it with `passel submit --follow" in early.stderr
    followed = run_passel(["submit", "--follow", uuid[:8], "--api", slow.url, "--output", "out",
                           "--poll-seconds", "0.1"], tmp_path, env)
    assert followed.returncode == 0 and "Done: results are in out/" in followed.stdout, followed.stderr
    assert any((tmp_path / "out").rglob("*"))
