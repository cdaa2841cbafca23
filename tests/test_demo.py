"""The README's first command, as a newcomer runs it: scripts/demo.sh, with a fast job. It must set
itself up, finish the sample split-merge job, name the nodes and print the UI's address, with no
traceback and no error line anywhere in its output."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.ui_support import free_port

REPO = Path(__file__).parent.parent


def test_the_demo_runs_its_job_without_a_traceback() -> None:
    port = free_port()
    result = subprocess.run([str(REPO / "scripts" / "demo.sh"), "--exit-when-done", "--port", str(port),
                             "--seconds-per-image", "0.05"], capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert f"Open http://127.0.0.1:{port}/ in a browser" in out
    assert "Nodes: small-laptop http://127.0.0.1:" in out and ", workstation http://" in out
    assert "Node workstation (http://127.0.0.1:" in out  # the log names the nodes too
    assert "Sample job finished: 6 of 6 submodels completed" in out
    assert "Traceback" not in out
    assert not [line for line in out.splitlines() if " ERROR " in line or line.startswith("ERROR")], out
