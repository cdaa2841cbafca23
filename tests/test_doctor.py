"""`passel doctor`: what it checks on a running box, and that every fix it prints is a command that works
on the kind of box it runs on (an installed one names its systemd units; a developer's names `passel run`)."""

from __future__ import annotations

import re
import shlex
import shutil
import time

import pytest

from appliance import cli, doctor
from tests.test_coordinator import Api
from tests.ui_support import free_port

INSTALLED_COMMANDS = {"systemctl", "journalctl", "ss", "ufw", "timedatectl", "docker", "passel", "scripts/install.sh"}


def _fixes(out: str) -> list[str]:
    """Every command a fix line quotes in backticks."""
    return [command for line in out.splitlines() if "fix:" in line for command in re.findall(r"`([^`]+)`", line)]


def _runnable(command: str) -> str:
    """The program a printed command runs (after sudo); it must parse as a shell command."""
    words = shlex.split(command)
    return words[1] if words[0] == "sudo" else words[0]


def test_a_running_box_passes_and_names_its_state(simnode_factory, passel_factory, tmp_path, capsys) -> None:
    node = simnode_factory()
    api = Api(passel_factory([node.url], state_dir=tmp_path))
    code = cli.main(["doctor", "--port", str(api.port), "--state-dir", str(tmp_path), "--nodeodm", node.url])
    out = capsys.readouterr().out
    assert f"ok    port {api.port} Passel answers" in out and "ok    NodeODM" in out and "ok    disk" in out
    assert f"ok    state     {tmp_path} (from --state-dir) holds the task database" in out
    assert "clock" in out and ("All checks passed." in out or "problem(s) found" in out)
    assert code == (0 if "All checks passed." in out else 1)


def test_a_developer_box_is_told_to_run_passel_by_hand(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(doctor, "UNIT_DIR", tmp_path / "no-units")
    silent = free_port()
    assert cli.main(["doctor", "--port", str(silent), "--state-dir", str(tmp_path / "nothing"),
                     "--nodeodm", f"http://127.0.0.1:{free_port()}"]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  port {silent} Passel is not running on this port" in out and "fix: start it: `passel run`" in out
    assert f"FAIL  state     {tmp_path / 'nothing'} (from --state-dir) does not exist" in out
    assert "FAIL  NodeODM" in out and "`docker run -d -p 3001:3000 opendronemap/nodeodm`" in out
    assert {_runnable(c) for c in _fixes(out)} <= INSTALLED_COMMANDS


def test_an_installed_box_is_told_its_units(tmp_path, monkeypatch, capsys) -> None:
    units = tmp_path / "units"
    units.mkdir()
    for unit in ("passel.service", "passel-nodeodm.service"):
        (units / unit).write_text("[Unit]\n")
    monkeypatch.setattr(doctor, "UNIT_DIR", units)
    cli.main(["doctor", "--port", str(free_port()), "--state-dir", str(tmp_path), "--nodeodm",
              f"http://127.0.0.1:{free_port()}"])
    out = capsys.readouterr().out
    fixes = _fixes(out)
    assert "sudo systemctl start passel" in fixes and "journalctl -u passel -n 30" in fixes
    assert "sudo systemctl start passel-nodeodm" in fixes and "nodeodm`" not in out.replace("passel-nodeodm`", "")
    assert {_runnable(c) for c in fixes} <= INSTALLED_COMMANDS
    for command in fixes:
        program = _runnable(command)
        if program in ("systemctl", "journalctl", "ss") and shutil.which(program):
            assert shutil.which(program)  # the tool the fix names is the one this kind of box has


def test_doctor_compares_clocks_with_the_other_boxes() -> None:
    now = time.time()
    replies = {"/-/passel.json": {"boxes": [{"self": True}, {"id": "b", "name": "laptop", "alive": True,
                                                             "address": "10.0.0.2", "port": 3000}]},
               "/-/box.json": {"time": now + 3600}}
    finding = doctor.check_clock(3000, fetch=lambda url: replies["/-/" + url.split("/-/")[1]])
    assert not finding.ok and "laptop +3600 s" in finding.detail
    # The fix is a command that works as printed: the other box's time, not a pattern to fill in.
    command = re.findall(r"`([^`]+)`", finding.fix)[0]
    shown = time.strftime("%Y-%m-%d %H:%M", time.localtime(now + 3600))
    assert command.startswith("sudo timedatectl set-time '" + shown)


@pytest.mark.parametrize("held", [True, False])
def test_the_port_finding_tells_a_stranger_from_a_stopped_passel(held: bool) -> None:
    import socket
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        port = holder.getsockname()[1]
        if held:
            holder.listen(1)
            finding = doctor.check_port(port)
            assert not finding.ok and "something other than Passel holds it" in finding.detail
            assert f"`ss -ltnp 'sport = :{port}'`" in finding.fix
    if not held:
        finding = doctor.check_port(free_port())
        assert not finding.ok and finding.detail == "Passel is not running on this port"
