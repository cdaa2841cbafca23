"""Packaging for the field: systemd units, scripts/install.sh, first boot, readiness, and dist/passel.

The binary tests build dist/passel with packaging/build.sh (about half a minute) and run it with
nothing of this virtualenv around: `env -i PATH=/usr/bin:/bin`, from a directory outside the
repository. `PASSEL_SKIP_BINARY=1` skips them on a developer's machine; under CI they always run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tomllib
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from alembic.script import ScriptDirectory
from pyodm import Node
from pyodm.types import TaskStatus

from appliance import __version__, firstboot
from appliance.agent import create_app
from appliance.cli import main as cli_main
from appliance.config import SETTINGS, load_config
from appliance.firstboot import default_config_text, first_boot
from appliance.store.database import MIGRATIONS_DIR
from tests.nodeodm_helpers import make_images
from tests.support import ServerThread

REPO = Path(__file__).resolve().parent.parent
UNITS = sorted((REPO / "systemd").glob("*.service"))
BINARY = REPO / "dist" / "passel"
IN_CI = bool(os.environ.get("CI"))
CLEAN_PATH = "/usr/bin:/bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unit(path: Path) -> dict[str, list[str]]:
    """A unit's `Section.Key` -> values (keys such as Environment= may repeat)."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values.setdefault(f"{section}.{key}", []).append(value)
    return values


# --- systemd units ---------------------------------------------------------------------------

def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if IN_CI:
            pytest.fail("systemd-analyze is missing: scripts/ci-deps.sh installs it")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # verify insists that ExecStart's program exists: point the units at a stand-in, as install.sh
    # points them at the installed binary.
    stand_in = tmp_path / "bin" / "passel"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/local/bin/passel", str(stand_in)))
    result = subprocess.run([tool, "verify", *(str(tmp_path / u.name) for u in UNITS)],
                            capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values, so its output must be empty too.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    assert {u.name for u in UNITS} == {"passel.service", "passel-nodeodm.service", "passel-sleep.service"}


def test_the_passel_unit_is_what_a_field_box_needs() -> None:
    unit = _unit(REPO / "systemd" / "passel.service")
    assert unit["Service.Type"] == ["notify"] and unit["Service.NotifyAccess"] == ["all"]
    assert unit["Service.Restart"] == ["always"] and unit["Unit.StartLimitIntervalSec"] == ["0"]
    assert unit["Service.StateDirectory"] == ["passel"]
    assert not any("PASSEL_STATE_DIR" in line for line in unit["Service.Environment"])  # the settings file names it
    assert unit["Service.RestartPreventExitStatus"] == ["78"]  # bad settings: one sentence, not a restart loop
    assert unit["Service.ExecStart"] == ["/usr/local/bin/passel run --first-boot"]
    assert unit["Unit.After"] == ["network.target"]  # not network-online: boxes boot without a network
    assert unit["Service.KillSignal"] == ["SIGTERM"] and unit["Service.KillMode"] == ["mixed"]
    assert unit["Service.StandardError"] == ["journal"]
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def test_the_nodeodm_and_sleep_units() -> None:
    nodeodm = _unit(REPO / "systemd" / "passel-nodeodm.service")
    assert "-p 3001:3000" in nodeodm["Service.ExecStart"][0]
    assert "NODEODM_IMAGE=opendronemap/nodeodm" in nodeodm["Service.Environment"]
    assert nodeodm["Service.Restart"] == ["always"]
    sleep = _unit(REPO / "systemd" / "passel-sleep.service")
    assert sleep["Unit.Before"] == ["sleep.target"] and sleep["Install.WantedBy"] == ["sleep.target"]
    assert sleep["Unit.StopWhenUnneeded"] == ["yes"] and sleep["Service.RemainAfterExit"] == ["yes"]
    assert sleep["Service.ExecStart"] == ["-/usr/local/bin/passel sleep"]
    assert sleep["Service.ExecStop"] == ["-/usr/local/bin/passel wake"]


# --- scripts/install.sh ------------------------------------------------------------------------

def _install(root: Path, *args: str, path: str = CLEAN_PATH) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), "--destdir", str(root), *args],
                            capture_output=True, text=True, timeout=60, env={"PATH": path})
    assert result.returncode == 0, result.stderr + result.stdout
    return result


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_install_twice_then_uninstall_then_purge(tmp_path: Path) -> None:
    binary = tmp_path / "passel-build"
    binary.write_bytes(b"#!/bin/sh\necho passel\n")
    root = tmp_path / "root"
    installed = {"opt/passel/bin/passel", "etc/systemd/system/passel.service", "etc/passel/passel.toml",
                 "etc/systemd/system/passel-nodeodm.service", "etc/systemd/system/passel-sleep.service"}

    first = _install(root, "--binary", str(binary), "--prefix", "/opt/passel")
    assert _tree(root) == installed
    assert (root / "opt/passel/bin/passel").read_bytes() == binary.read_bytes()
    assert os.access(root / "opt/passel/bin/passel", os.X_OK)
    unit = (root / "etc/systemd/system/passel.service").read_text()
    assert "ExecStart=/opt/passel/bin/passel run --first-boot" in unit and "/usr/local/bin" not in unit
    assert "installed into" in first.stdout  # nothing enabled in a staging root
    # One place for the box's settings, read by the service and every command: the state directory is in it.
    assert load_config(root / "etc/passel/passel.toml", environ={}).state_dir == Path("/var/lib/passel")

    again = _install(root, "--binary", str(binary), "--prefix", "/opt/passel")
    assert "already installed and up to date" in again.stdout
    assert _tree(root) == installed

    # An older box's settings, from before they named the state directory, gain it; edits are kept.
    (root / "etc/passel/passel.toml").write_text("port = 3100\n")
    upgraded = _install(root, "--binary", str(binary), "--prefix", "/opt/passel")
    assert "added state_dir" in upgraded.stdout
    assert load_config(root / "etc/passel/passel.toml", environ={}).port == 3100
    assert load_config(root / "etc/passel/passel.toml", environ={}).state_dir == Path("/var/lib/passel")

    # What the box made while running: settings and data stay through an uninstall.
    (root / "var/lib/passel").mkdir(parents=True)
    (root / "var/lib/passel/passel.sqlite3").write_bytes(b"tasks")
    kept = {"etc/passel/passel.toml", "var/lib/passel/passel.sqlite3"}

    removed = _install(root, "--uninstall", "--prefix", "/opt/passel")
    assert _tree(root) == kept
    assert "kept /var/lib/passel" in removed.stdout
    _install(root, "--uninstall", "--prefix", "/opt/passel")  # twice is harmless too
    _install(root, "--uninstall", "--purge", "--prefix", "/opt/passel")
    assert _tree(root) == set()


def test_install_sets_podman_on_a_box_without_docker(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "podman").write_text("#!/bin/sh\n")
    (tools / "podman").chmod(0o755)
    binary = tmp_path / "passel-build"
    binary.write_bytes(b"binary")
    root = tmp_path / "root"
    _install(root, "--binary", str(binary), path=f"{tools}:{CLEAN_PATH}")
    dropin = root / "etc/systemd/system/passel-nodeodm.service.d/engine.conf"
    assert "Environment=CONTAINER_ENGINE=podman" in dropin.read_text()
    _install(root, "--uninstall")
    assert _tree(root) == {"etc/passel/passel.toml"}  # settings are kept unless --purge


def test_install_refuses_a_missing_binary(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), "--destdir", str(tmp_path),
                             "--binary", str(tmp_path / "nope")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "packaging/build.sh" in result.stderr


# --- first boot --------------------------------------------------------------------------------

@pytest.fixture
def default_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "etc" / "passel" / "passel.toml"
    monkeypatch.setattr(firstboot, "DEFAULT_CONFIG_PATHS", (path,))
    return path


def test_first_boot_writes_every_setting_commented_and_keeps_edits(tmp_path: Path, default_config_path: Path) -> None:
    environ = {"PASSEL_STATE_DIR": str(tmp_path / "state")}
    config = load_config(environ=environ)
    first_boot(config, None, environ)
    text = default_config_text(environ, {"state_dir": str(tmp_path / "state")})
    assert default_config_path.read_text() == text
    assert (tmp_path / "state").is_dir()
    # Only the state directory is set, so a command run later from a shell finds the box's own.
    assert load_config(default_config_path, environ={}) == load_config(environ={}, flags={
        "state_dir": str(tmp_path / "state")})
    prose = " ".join(text.replace("\n# ", " ").split())
    for setting in SETTINGS:
        assert (f"# {setting.name} = " in text or setting.name == "state_dir") and setting.help[1:] in prose
    assert f"Set to '{tmp_path / 'state'}' by PASSEL_STATE_DIR for this service" in text
    # Uncommented, every line is valid TOML holding the default.
    uncommented = "\n".join(line[2:] for line in text.splitlines() if any(
        line.startswith(f"# {s.name} = ") for s in SETTINGS))
    assert tomllib.loads(uncommented) == {s.name: list(s.default) if s.repeated else s.default for s in SETTINGS
                                          if s.name != "state_dir"}

    default_config_path.write_text("port = 3100\n")  # the technician's edit survives the next start
    first_boot(config, None, environ)
    assert default_config_path.read_text() == "port = 3100\n"


def test_first_boot_leaves_a_named_config_file_alone(tmp_path: Path, default_config_path: Path) -> None:
    named = tmp_path / "mine.toml"
    named.write_text("")
    first_boot(load_config(named, environ={}, flags={"state_dir": str(tmp_path / "s")}), str(named), {})
    assert not default_config_path.exists() and (tmp_path / "s").is_dir()


def test_first_boot_carries_on_when_etc_is_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setattr(firstboot, "DEFAULT_CONFIG_PATHS", (blocker / "passel.toml",))
    first_boot(load_config(environ={}, flags={"state_dir": str(tmp_path / "s")}), None, {})
    assert "running on defaults" in caplog.text and (tmp_path / "s").is_dir()


# --- readiness for systemd ---------------------------------------------------------------------

@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """What systemd listens on for a Type=notify service (an abstract socket, as systemd uses)."""
    name = f"passel-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield sock


async def _datagram(sock: socket.socket, timeout: float) -> list[str]:
    data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), timeout)
    return data.decode().split("\n")


async def test_ready_is_sent_only_once_the_api_listens(tmp_path: Path, notify_socket: socket.socket) -> None:
    port = _free_port()
    config = load_config(environ={}, flags={"host": "127.0.0.1", "port": port, "state_dir": str(tmp_path),
                                            "discovery": False, "min_free_disk_mb": 0})
    runner = web.AppRunner(create_app(config), shutdown_timeout=1)
    await runner.setup()  # start-up done, not listening yet: systemd must not hear READY
    try:
        with pytest.raises(TimeoutError):
            await _datagram(notify_socket, 0.3)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        message = await _datagram(notify_socket, 10)
        assert "READY=1" in message and f"STATUS=Serving the passel API on port {port}" in message
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/info") as reply:
            assert reply.status == 200
    finally:
        await runner.cleanup()
    assert "STOPPING=1" in await _datagram(notify_socket, 5)


# --- sleep and wake ----------------------------------------------------------------------------

def test_sleep_and_wake_ask_the_agent_and_let_a_box_sleep_when_it_is_down(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        calls.append((request.path, request.query.get("token", "")))
        if request.path.endswith("/wake") and len(calls) > 2:
            return web.json_response({"error": "not ready"}, status=503)
        return web.json_response({"ok": True})

    def stub() -> web.Application:
        app = web.Application()
        app.router.add_post("/-/agent/v1/{action}", record)
        return app

    monkeypatch.delenv("PASSEL_CONFIG", raising=False)
    monkeypatch.setenv("PASSEL_HOST", "0.0.0.0")
    monkeypatch.setenv("PASSEL_TOKEN", "box-secret")
    with ServerThread(stub) as agent:
        monkeypatch.setenv("PASSEL_PORT", str(agent.port))
        assert cli_main(["sleep"]) == 0 and cli_main(["wake"]) == 0
        assert calls == [("/-/agent/v1/sleep", "box-secret"), ("/-/agent/v1/wake", "box-secret")]
        assert "said goodbye" in capsys.readouterr().out
        assert cli_main(["wake"]) == 1  # an agent that refuses is reported, and systemd logs it
        assert "refused to wake: not ready" in capsys.readouterr().out
    assert cli_main(["sleep"]) == 0  # nobody listening: nothing to say goodbye to, the box may sleep
    assert "not answering" in capsys.readouterr().out


# --- the one-file binary -----------------------------------------------------------------------

binary_test = pytest.mark.skipif(os.environ.get("PASSEL_SKIP_BINARY") == "1" and not IN_CI,
                                 reason="PASSEL_SKIP_BINARY=1: not building dist/passel")


@pytest.fixture(scope="module")
def binary() -> Path:
    """dist/passel, built once for this module from the current sources."""
    result = subprocess.run(["bash", str(REPO / "packaging" / "build.sh")], capture_output=True, text=True,
                            timeout=600, env=os.environ | {"PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return BINARY


class Process:
    """The binary alone: no virtualenv on PATH, a clean environment, a working directory outside the repo."""

    def __init__(self, binary: Path, args: list[str], cwd: Path, log: Path, **env: str) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([str(binary), *args], cwd=cwd, env={"PATH": CLEAN_PATH} | env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as systemd sends it; the exit code, or a failure with the log if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"still running {timeout} s after SIGTERM:\n{self.log.read_text(errors='replace')[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@binary_test
@pytest.mark.timeout(400)
def test_binary_runs_a_pyodm_task_behind_systemd_and_stops_cleanly(binary: Path, tmp_path: Path) -> None:
    work = tmp_path / "box"
    work.mkdir()
    version = subprocess.run([str(binary), "--version"], cwd=work, env={"PATH": CLEAN_PATH},
                             capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == f"passel {__version__}"

    node_port, port = _free_port(), _free_port()
    notify_path = work / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(60)
        simnode = Process(binary, ["simnode", "--port", str(node_port), "--seconds-per-image", "0.05"],
                          work, tmp_path / "simnode.log")
        agent = Process(binary, ["run", "--no-discovery", "--host", "127.0.0.1", "--port", str(port),
                                 "--state-dir", str(work / "state"), "--node", f"http://127.0.0.1:{node_port}",
                                 "--public-url", f"http://127.0.0.1:{port}", "--min-free-disk-mb", "0",
                                 "--poll-seconds", "0.5", "--task-poll-seconds", "0.3"],
                        work, tmp_path / "agent.log", NOTIFY_SOCKET=str(notify_path))
        try:
            assert "READY=1" in notify.recv(4096).decode().split("\n"), "systemd never heard READY=1"
            api = Node("127.0.0.1", port, timeout=30)
            assert api.info().engine == "odm"  # answers at once: READY came after the API listened
            for path in ("/", "/static/passel.css"):  # the templates and static files are in the bundle
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
                    assert reply.status == 200 and reply.read()

            images = make_images(tmp_path / "images", 4)
            task = api.create_task(images, {"fast-orthophoto": True}, name="from the binary")
            task.wait_for_completion(interval=0.3)
            assert task.info().status == TaskStatus.COMPLETED
            assets = Path(task.download_zip(str(tmp_path / "out")))
            assert zipfile.is_zipfile(assets)

            assert agent.stop() == 0, (tmp_path / "agent.log").read_text(errors="replace")[-3000:]
            assert "STOPPING=1" in notify.recv(4096).decode().split("\n")
            assert simnode.stop() == 0
        finally:
            agent.kill()
            simnode.kill()
    # The migrations shipped in the bundle brought the new database to the newest revision.
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    db = sqlite3.connect(work / "state" / "passel.sqlite3")
    try:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head
    finally:
        db.close()


@binary_test
@pytest.mark.timeout(400)
def test_binary_runs_the_demo(binary: Path, tmp_path: Path) -> None:
    result = subprocess.run([str(binary), "demo", "--exit-when-done", "--port", str(_free_port()),
                             "--submodels", "2", "--images", "3", "--seconds-per-image", "0.05"],
                            cwd=tmp_path, env={"PATH": CLEAN_PATH}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 of 2 submodels completed" in result.stdout + result.stderr


def test_the_installed_settings_template_is_the_generated_one() -> None:
    """packaging/passel.toml is what install.sh writes: every setting documented, the state directory set."""
    assert (REPO / "packaging" / "passel.toml").read_text() == default_config_text({}, {"state_dir": "/var/lib/passel"})


@pytest.mark.parametrize("key", ["THE-PASSEL-KEY", "ABCD-EFGH-IJKL-MNO1", "short"])
def test_install_refuses_a_key_that_cannot_be_used(tmp_path: Path, key: str) -> None:
    binary = tmp_path / "passel-build"
    binary.write_bytes(b"binary")
    result = subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), "--destdir", str(tmp_path / "root"),
                             "--binary", str(binary), "--key", key], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "is not a passel key" in result.stderr
    assert not (tmp_path / "root").exists()  # refused before anything was installed


def test_install_puts_a_good_key_in_the_state_directory(tmp_path: Path) -> None:
    binary = tmp_path / "passel-build"
    binary.write_bytes(b"binary")
    _install(tmp_path, "--binary", str(binary), "--key", "abcd-efgh-ijkl-mnop")
    assert (tmp_path / "var/lib/passel/passel.key").read_text() == "abcd-efgh-ijkl-mnop\n"
