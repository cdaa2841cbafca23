"""Passel shields the nodes behind it: hostile input that would crash a real NodeODM stops at Passel.

The node here is a simulated NodeODM in `--fragile` mode: like NodeODM 2.2.x, its whole server
dies on a NUL byte in an upload's file name. First we show that it really does; then every hostile
input goes through Passel, and the node must still be up, with the other tasks intact.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.nodeodm_helpers import JPEG, init_task, jcall, raw_multipart, upload
from tests.test_persistence import free_port

HOSTILE_NAMES = ["a\x00b.jpg", "../../etc/x.jpg", "/etc/abs.jpg", "..", "a\u202egpj.exe", "x" * 300 + ".jpg",
                 "nul\x00/../../etc/passwd"]
BAD_OPTIONS = ["[{not json", '[{"name": "pc-quality", "value": "X"}]', '[{"name": "max-concurrency", "value": "NaN"}]',
               '[{"name": "split", "value": {"nested": true}}]', json.dumps([{"name": "dsm", "value": "maybe"}]),
               "x" * 2_000_000]


def start_fragile_node() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "appliance", "simnode", "--port", str(port), "--fragile",
                                "--seconds-per-image", "0.05"], cwd=Path(__file__).parent.parent,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/info", timeout=1).ok:
                return process, url
        except requests.RequestException:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("fragile node did not start")


class Direct:
    def __init__(self, url: str) -> None:
        self.url, self.token = url, ""


def test_the_fragile_node_really_crashes_on_a_nul_file_name():
    process, url = start_fragile_node()
    try:
        node = Direct(url)
        uuid = init_task(node)
        body, content_type = raw_multipart([("images", "a\x00b.jpg", JPEG)])
        with pytest.raises(requests.RequestException):
            requests.post(f"{url}/task/new/upload/{uuid}", data=body, headers={"Content-Type": content_type}, timeout=5)
        assert process.wait(5) != 0, "the whole node went down"
    finally:
        process.kill()


def test_passel_keeps_hostile_input_away_from_the_node(passel_factory):
    process, url = start_fragile_node()
    try:
        api = passel_factory([url])
        api.token = ""
        keeper = init_task(api, name="keeper")
        upload(api, keeper, "IMG_1.JPG")
        for name in HOSTILE_NAMES:
            uuid = init_task(api)
            body, content_type = raw_multipart([("images", name, JPEG)])
            reply = jcall(api, "POST", f"/task/new/upload/{uuid}", data=body, headers={"Content-Type": content_type})
            assert "error" in reply, (name, reply)
        for options in BAD_OPTIONS:
            reply = jcall(api, "POST", "/task/new/init", files={"options": (None, options)})
            assert "error" in reply, (options[:40], reply)
        truncated = b'--b\r\nContent-Disposition: form-data; name="images"; filename="a\x00.jpg"\r\n\r\nabc'
        reply = jcall(api, "POST", f"/task/new/upload/{keeper}", data=truncated,
                      headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert "error" in reply
        assert process.poll() is None and requests.get(url + "/info", timeout=3).ok, "the node is still up"
        assert jcall(api, "POST", f"/task/new/commit/{keeper}") == {"uuid": keeper}
        deadline = time.monotonic() + 30
        while jcall(api, "GET", f"/task/{keeper}/info")["status"]["code"] != 40:
            assert time.monotonic() < deadline, "the good task did not complete"
            time.sleep(0.1)
    finally:
        process.kill()


def test_a_slow_client_that_trickles_bytes_is_cut_off_and_cleaned_up(passel_factory, simnode_factory, monkeypatch,
                                                                      tmp_path):
    import socket

    from appliance.nodeodm import uploads
    monkeypatch.setattr(uploads, "IDLE_UPLOAD_SECONDS", 1.0)
    node = simnode_factory()
    api = passel_factory([node.url], state_dir=str(tmp_path / "state"))
    api.token = ""
    uuid = init_task(api)
    head = (f"POST /task/new/upload/{uuid} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            "Content-Length: 100000\r\n\r\n").encode()
    part = b'--b\r\nContent-Disposition: form-data; name="images"; filename="slow.jpg"\r\n\r\n' + b"x" * 1000
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(head + part)
        time.sleep(2.5)  # then nothing more: the server must give up on its own
        reply = sock.recv(65536).decode(errors="replace")
    assert "The upload stalled" in reply, reply
    staged = tmp_path / "state" / "staging" / uuid
    assert not any(staged.iterdir()), "the partial file is gone"
    upload(api, uuid, "IMG_ok.JPG")  # the task and the server are fine
