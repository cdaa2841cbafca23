"""An installed box, as a technician meets it: scripts/install.sh onto the real paths (/etc/passel,
/var/lib/passel), then `passel key` from a shell in any directory, a running agent, a restart.

Each test runs in private mount and network namespaces (`unshare -m -n`): /etc and /var/lib are
overlays whose writes land in the test's temporary directory, so the host's own files are never
touched, and the only network is a veth pair inside the namespace.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appliance.discovery.trust import Trust, normalize_code

REPO = Path(__file__).parent.parent
FIRST_KEY = "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF"
SECOND_KEY = "GGGG-HHHH-IIII-JJJJ-KKKK-LLLL"
PORT = 3077

pytestmark = pytest.mark.netns


@pytest.fixture
def box(tmp_path: Path, netns_required: None) -> Path:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing")
    for name in ("etc-up", "etc-work", "lib-up", "lib-work", "prefix", "a", "b", "c"):
        (tmp_path / name).mkdir()
    wrapper = tmp_path / "passel-build"  # the binary, as far as install.sh and a shell can tell
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m appliance \"$@\"\n")
    wrapper.chmod(0o755)
    return tmp_path


def _in_the_box(box: Path, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    prologue = textwrap.dedent(f"""\
        set -euo pipefail
        trap 'kill $(jobs -p) 2>/dev/null || true' EXIT  # no agent outlives the test, whatever fails
        mount -t overlay overlay -o lowerdir=/etc,upperdir={box}/etc-up,workdir={box}/etc-work /etc
        mount -t overlay overlay -o lowerdir=/var/lib,upperdir={box}/lib-up,workdir={box}/lib-work /var/lib
        ip link set lo up
        ip link add field0 type veth peer name field1 && ip link set field1 up && ip link set field0 up
        ip addr add 10.99.0.1/24 dev field0
        unset PASSEL_CONFIG PASSEL_STATE_DIR STATE_DIRECTORY
        export PASSEL_PORT={PORT}
        passel={box}/prefix/bin/passel
        wait_up() {{
          for _ in $(seq 100); do
            curl -s -o /dev/null http://127.0.0.1:{PORT}/info && return 0; sleep 0.2
          done
          echo "the agent did not come up"; return 1
        }}
        fingerprint() {{ curl -s http://127.0.0.1:{PORT}/-/passel.json | {sys.executable} -c \\
          'import json,sys; print("running:", json.load(sys.stdin)["key_fingerprint"])'; }}
        """)
    return subprocess.run(["unshare", "-m", "-n", "--propagation", "private", "bash", "-c", prologue + script],
                          capture_output=True, text=True, timeout=timeout)


def _fingerprint(code: str) -> str:
    return Trust(normalize_code(code), "test").fingerprint()


def test_the_key_is_the_same_everywhere_and_survives_a_restart(box: Path) -> None:
    result = _in_the_box(box, textwrap.dedent(f"""\
        bash {REPO}/scripts/install.sh --destdir / --binary {box}/passel-build --prefix {box}/prefix --key {FIRST_KEY}
        cd {box}/a && $passel key show
        $passel run --first-boot > {box}/agent1.log 2>&1 & agent=$!
        wait_up && fingerprint
        cd {box}/b && $passel key set {SECOND_KEY}
        fingerprint
        kill -TERM $agent && wait $agent || true
        $passel run --first-boot > {box}/agent2.log 2>&1 & agent=$!
        wait_up && fingerprint
        cd {box}/c && $passel key show
        kill -TERM $agent && wait $agent || true
        """))
    out = result.stdout + result.stderr
    logs = "".join(p.read_text() for p in box.glob("agent*.log"))
    assert result.returncode == 0, out + logs
    lines = out.splitlines()
    shown = [line for line in lines if line.startswith("Passel key:")]
    running = [line.removeprefix("running: ") for line in lines if line.startswith("running: ")]
    assert shown == [f"Passel key: {FIRST_KEY}", f"Passel key: {SECOND_KEY}"], out
    assert running == [_fingerprint(FIRST_KEY), _fingerprint(SECOND_KEY), _fingerprint(SECOND_KEY)], out
    assert "The running agent uses it now." in out
    # Everything landed in the box's own state directory; nothing in the directories the commands ran in.
    assert (box / "lib-up/passel/passel.key").read_text().strip() == SECOND_KEY
    assert not any((box / d / "passel-state").exists() for d in ("a", "b", "c"))
    assert "Traceback" not in out + logs


def test_without_settings_a_command_says_where_it_looked_and_makes_no_key(box: Path) -> None:
    result = _in_the_box(box, f"set +e; cd {box}/a && {sys.executable} -m appliance key show; echo exit=$?")
    assert "exit=1" in result.stdout, result.stdout + result.stderr
    assert "No passel key at passel-state/passel.key (the default state directory, as no settings file" in result.stderr
    assert not (box / "a/passel-state").exists()


def test_a_bad_key_stops_the_service_with_one_sentence_and_exit_78(box: Path) -> None:
    result = _in_the_box(box, textwrap.dedent(f"""\
        bash {REPO}/scripts/install.sh --destdir / --binary {box}/passel-build --prefix {box}/prefix
        mkdir -p /var/lib/passel && echo THE-PASSEL-KEY > /var/lib/passel/passel.key
        set +e; $passel run --first-boot; echo exit=$?
        """))
    assert "exit=78" in result.stdout, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "the passel key from /var/lib/passel/passel.key cannot be used" in errors[0]
    assert not (box / "lib-up/passel/passel.sqlite3").exists()  # refused before start-up touched anything
