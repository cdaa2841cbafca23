"""The CLI commands that match the UI: submit (with its progress bars), password and priority, and the
client they share (`passel doctor` has tests/test_doctor.py; every command's errors, tests/test_cli_sweep.py)."""

from __future__ import annotations

import io
import zipfile

import pytest
import requests

from appliance import cli
from appliance.admin_client import AdminClient, Refused, Unreachable
from tests.nodeodm_helpers import jcall, make_images
from tests.test_coordinator import Api
from tests.ui_support import free_port

PASSWORD = "field-admin-1"


def test_submit_uploads_follows_and_downloads(simnode_factory, passel_factory, tmp_path, capsys):
    node = simnode_factory(seconds_per_image=0.05)
    api = Api(passel_factory([node.url]))
    images = tmp_path / "flight-3"
    make_images(images, 6)
    (images / "notes.md").write_text("not an image: left out")
    output = tmp_path / "results"
    code = cli.main(["submit", str(images), "--api", api.url, "--split", "50", "--option", "pc-quality=lowest",
                     "--option", "dsm=true", "--output", str(output), "--poll-seconds", "0.2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Sending 6 files" in out and "split=50" in out and "Done: results are in" in out
    assert "Uploading" in err and "Processing" in err and "Downloading" in err and "100%" in err
    assert "Status: COMPLETED" in out
    task = jcall(api, "GET", "/-/tasks")[0]
    assert task["name"] == "flight-3" and task["images_count"] == 6
    assert {"name": "dsm", "value": True} in task["options"] and {"name": "split", "value": 50} in task["options"]
    assert any(output.rglob("*")), "the results were unpacked"


def test_submit_reports_a_failed_task(simnode_factory, passel_factory, tmp_path, capsys):
    node = simnode_factory(fail_rate=1.0)
    api = Api(passel_factory([node.url]))
    make_images(tmp_path / "imgs", 2)
    assert cli.main(["submit", str(tmp_path / "imgs"), "--api", api.url, "--poll-seconds", "0.2"]) == 1
    assert "ended FAILED" in capsys.readouterr().err


def test_submit_refuses_what_it_cannot_send(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="No images"):
        cli.main(["submit", str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        make_images(tmp_path / "some", 1)
        cli.main(["submit", str(tmp_path / "some"), "--option", "dsm"])


def test_password_and_priority_commands(simnode_factory, passel_factory, capsys, monkeypatch):
    api = Api(passel_factory([simnode_factory().url]))
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert cli.main(["password", "--api", api.url, "--stdin"]) == 0
    assert "this box: changed" in capsys.readouterr().out
    assert requests.get(f"{api.url}/-/password", timeout=5).json() == {"set": True}
    monkeypatch.setattr("sys.stdin", io.StringIO("another-one\n"))
    with pytest.raises(SystemExit, match="current password is wrong"):
        cli.main(["password", "--api", api.url, "--stdin", "--password", "not-it"])
    with pytest.raises(SystemExit, match="Discovery is off"):
        cli.main(["priority", "5", "--api", api.url, "--password", PASSWORD])


def test_submit_results_zip_is_complete(simnode_factory, passel_factory, tmp_path):
    """The results PyODM unpacked are what the node's all.zip held."""
    node = simnode_factory(seconds_per_image=0.01)
    api = Api(passel_factory([node.url]))
    make_images(tmp_path / "imgs", 3)
    assert cli.main(["submit", str(tmp_path / "imgs"), "--api", api.url, "--output", str(tmp_path / "out"),
                     "--poll-seconds", "0.1"]) == 0
    uuid = jcall(api, "GET", "/-/tasks")[0]["uuid"]
    archive = zipfile.ZipFile(io.BytesIO(requests.get(f"{node.url}/task/{uuid}/download/all.zip", timeout=10).content))
    unpacked = {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert {n for n in archive.namelist() if not n.endswith("/")} == unpacked


def test_a_box_that_does_not_answer_is_one_line_not_a_traceback():
    silent = f"127.0.0.1:{free_port()}"  # typed without http://, as a technician might
    with pytest.raises(SystemExit) as stopped:
        cli.main(["nodes", "list", "--api", silent])
    message = stopped.value.code
    assert isinstance(message, str) and "\n" not in message
    assert message.startswith(f"Cannot reach Passel at http://{silent}: ") and "Use --api" in message


def test_the_client_says_in_one_line_why_a_call_did_not_work(simnode_factory, passel_factory):
    api = Api(passel_factory([simnode_factory().url], token="field-token"))
    client = AdminClient(api.url, token="field-token")
    assert client.call("GET", "/-/nodes/best", params={"images": "3"})["best"] == 1  # a query and the token
    with pytest.raises(Refused, match="^Passel refused: Invalid authentication token"):
        AdminClient(api.url).call("GET", "/-/nodes")  # NodeODM's way: HTTP 200 and an error
    with pytest.raises(Refused, match="^Passel refused: .*zzz"):
        client.call("GET", "/-/tasks/zzz")  # an HTTP error with a JSON error
    with pytest.raises(Refused, match="^Passel refused: HTTP 404 Not Found$"):
        client.call("GET", "/-/no-such-thing")  # an HTTP error without one
    with pytest.raises(Unreachable, match="the answer is not JSON"):
        client.call("GET", "/")  # a page, not the API
