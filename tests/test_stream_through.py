"""Each file goes on to the node while it is still arriving (issue 15, "overlap to the last byte"),
against the simulated node and the real NodeODM: the node holds part of a file before the client has
sent the rest; a client whose upload breaks mid-file leaves nothing on the node and sends it again;
the staged copy stays, so a re-dispatch still has every image."""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

from tests.nodeodm_helpers import JPEG, Api, init_task, jcall, wait_for
from tests.test_coordinator import status_of

FILE_BYTES = 4 * 1024 * 1024  # well over the forward's smallest piece (256 KiB) at the pause
HALF = FILE_BYTES // 2


def _image(seed: int) -> bytes:
    return JPEG[:4] + bytes([seed]) * (FILE_BYTES - 4)


def _paused_upload(url: str, name: str, content: bytes, pause_until: Callable[[], bool],
                   break_at_pause: bool = False) -> tuple[requests.Response | None, bool]:
    """Upload `content` in a chunked body that stops half-way until `pause_until()` (at most 20 s);
    returns the reply and whether the condition was met while the client still held the rest back.
    With `break_at_pause`, the body ends there instead, malformed, as a dropped link would leave it."""
    boundary = "streamtest" + uuidlib.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    seen = []

    def body() -> Iterator[bytes]:
        yield head + content[:HALF]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not pause_until():
            time.sleep(0.05)
        seen.append(pause_until())
        if break_at_pause:
            return  # no rest and no closing boundary: the server sees a truncated body
        yield content[HALF:] + f"\r\n--{boundary}--\r\n".encode()

    try:
        reply = requests.post(url, data=body(), timeout=60,
                              headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    except requests.ConnectionError:
        reply = None
    return reply, bool(seen and seen[0])


def _partials(node_dir: Path) -> list[Path]:
    return [p for p in node_dir.rglob("*.part") if p.stat().st_size > 0]


def _passel_and_node(simnode_factory, passel_factory, node_dir: Path) -> tuple[Api, Api]:
    """A passel in front of one simulated node whose files land in `node_dir`, the node online."""
    node = Api(simnode_factory(data_dir=node_dir))
    api = Api(passel_factory([node.url]))
    wait_for(lambda: jcall(api, "GET", "/info")["maxParallelTasks"] >= 1, what="the node online")
    return api, node


def test_the_node_holds_part_of_a_file_before_the_client_sends_the_rest(simnode_factory, passel_factory, tmp_path):
    node_dir = tmp_path / "node"
    api, node = _passel_and_node(simnode_factory, passel_factory, node_dir)
    uuid = init_task(api, name="streamed")
    reply, overlapped = _paused_upload(f"{api.url}/task/new/upload/{uuid}", "IMG_0.JPG", _image(1),
                                       lambda: bool(_partials(node_dir)))
    assert reply is not None and reply.json() == {"success": True}
    assert overlapped, "the node received nothing of the file until the client had sent all of it"
    assert jcall(api, "POST", f"/task/new/commit/{uuid}") == {"uuid": uuid}
    wait_for(lambda: status_of(api, uuid) == 40, what="COMPLETED")
    info = jcall(node, "GET", f"/task/{uuid}/info")
    assert info["imagesCount"] == 1
    # The staged copy stays on the box that took the upload, whole: it is what a re-dispatch sends.
    staged = next((tmp_path / "passel0" / "staging").rglob("IMG_0.JPG"), None)
    assert staged is not None and staged.stat().st_size == FILE_BYTES


def test_a_broken_upload_leaves_nothing_on_the_node_and_is_sent_again(simnode_factory, passel_factory, tmp_path):
    node_dir = tmp_path / "node"
    api, node = _passel_and_node(simnode_factory, passel_factory, node_dir)
    uuid = init_task(api, name="broken")
    reply, overlapped = _paused_upload(f"{api.url}/task/new/upload/{uuid}", "IMG_0.JPG", _image(2),
                                       lambda: bool(_partials(node_dir)), break_at_pause=True)
    assert overlapped
    assert reply is None or "error" in reply.json()
    wait_for(lambda: not _partials(node_dir), timeout=20, what="the node to drop the broken file")
    again, _ = _paused_upload(f"{api.url}/task/new/upload/{uuid}", "IMG_0.JPG", _image(2), lambda: True)
    assert again is not None and again.json() == {"success": True}
    assert jcall(api, "POST", f"/task/new/commit/{uuid}") == {"uuid": uuid}
    wait_for(lambda: status_of(api, uuid) == 40, what="COMPLETED")
    assert jcall(node, "GET", f"/task/{uuid}/info")["imagesCount"] == 1  # once: no IMG_0_.JPG


def test_the_real_nodeodm_takes_a_file_sent_on_while_it_arrives(realnode_factory, passel_factory, tmp_path):
    node = realnode_factory("--test_seconds", "1")
    api = Api(passel_factory([node.url]))
    wait_for(lambda: jcall(api, "GET", "/info")["maxParallelTasks"] >= 1, timeout=60, what="the node online")
    uuid = init_task(api, name="streamed to NodeODM")
    uploads = [threading.Thread(target=_paused_upload, args=(f"{api.url}/task/new/upload/{uuid}", f"IMG_{i}.JPG",
                                                              _image(i), lambda: True)) for i in range(3)]
    for thread in uploads:
        thread.start()
    for thread in uploads:
        thread.join(timeout=60)
    assert jcall(api, "POST", f"/task/new/commit/{uuid}") == {"uuid": uuid}
    wait_for(lambda: status_of(api, uuid) == 40, timeout=90, what="COMPLETED on NodeODM")
    received = {p.name: p.stat().st_size for p in (node.task_dir(uuid) / "images").iterdir()}
    assert received == {f"IMG_{i}.JPG": FILE_BYTES for i in range(3)}
