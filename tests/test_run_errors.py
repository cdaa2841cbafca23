"""`passel run` with settings it cannot use: one sentence, a distinct exit code, and nothing started.

Exit code 78 (bad settings) is what passel.service does not restart (RestartPreventExitStatus=78); a
port in use is 1, restarted, as its holder may be an old instance on its way out."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.nodeodm_helpers import wait_for
from tests.ui_support import free_port


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "run", "--no-discovery", "--host", "127.0.0.1",
                           "--state-dir", str(tmp_path / "state"), *args], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)


@pytest.mark.parametrize(("args", "sentence"), [
    (["--key", "THE-PASSEL-KEY"], "the passel key from --key cannot be used"),
    (["--node", "ftp://10.0.0.5"], "node from --node: 'ftp://10.0.0.5' is not a node address"),
    (["--node", "localhost:99999"], "has no valid port"),
    (["--port", "70000"], "port 70000 is outside 1-65535"),
    (["--poll-seconds", "often"], "poll_seconds from --poll-seconds: 'often' is not a valid float"),
    (["--config", "/nonexistent/passel.toml"], "config file /nonexistent/passel.toml does not exist"),
])
def test_bad_settings_are_one_sentence_and_exit_78(tmp_path: Path, args: list[str], sentence: str) -> None:
    result = _run(tmp_path, "--port", str(free_port()), *args)
    assert result.returncode == 78, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and sentence in lines[0] and "Passel did not start" in lines[0], lines
    assert not (tmp_path / "state").exists()  # refused before start-up touched the state directory


def test_a_damaged_key_file_is_refused_before_start_up(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "passel.key").write_text("not a key\n")
    result = _run(tmp_path, "--port", str(free_port()))
    assert result.returncode == 78 and f"the passel key from {tmp_path / 'state' / 'passel.key'}" in result.stderr
    assert not (tmp_path / "state" / "passel.sqlite3").exists()


def test_a_port_in_use_is_one_sentence_before_start_up(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        result = _run(tmp_path, "--port", str(holder.getsockname()[1]))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Address already in use" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "passel.sqlite3").exists()  # no migrations ran against the state directory


def test_a_node_without_a_scheme_is_used(tmp_path: Path, simnode_factory) -> None:
    node = simnode_factory()
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--no-discovery", "--host", "127.0.0.1",
                                "--port", str(port), "--state-dir", str(tmp_path / "state"),
                                "--node", f"127.0.0.1:{node.port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        nodes = wait_for(lambda: _nodes(port), timeout=30, what="the agent up with its node")
        assert [n["url"] for n in nodes] == [f"http://127.0.0.1:{node.port}"]
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert "ERROR" not in out and "Traceback" not in out
    assert "stopped cleanly" in out


def _nodes(port: int) -> list[dict[str, object]] | None:
    try:
        nodes = requests.get(f"http://127.0.0.1:{port}/-/nodes", timeout=2).json()
    except requests.RequestException:
        return None
    return nodes or None
