"""Small raw-HTTP helpers for contract tests, where PyODM would hide the wire format."""

from __future__ import annotations

import io
import uuid as uuidlib
import zipfile
from pathlib import Path
from typing import Any

import requests

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 2000


def call(target: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
    params = dict(kwargs.pop("params", {}))
    if target.token:
        params.setdefault("token", target.token)
    return requests.request(method, target.url + path, params=params, timeout=30, **kwargs)


def jcall(target: Any, method: str, path: str, **kwargs: Any) -> Any:
    reply = call(target, method, path, **kwargs)
    assert reply.status_code == 200, (reply.status_code, reply.text)
    assert reply.headers["Content-Type"].startswith("application/json"), reply.headers
    return reply.json()


def raw_multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """Build a multipart body by hand so tests can send what a normal client library would refuse."""
    boundary = "passeltestboundary" + uuidlib.uuid4().hex
    body = io.BytesIO()
    for name, filename, content in parts:
        body.write(f"--{boundary}\r\n".encode())
        disposition = f'form-data; name="{name}"'.encode()
        if filename is not None:  # quoted-string escaping, as a careful client would send it
            quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
            disposition += b'; filename="' + quoted.encode("utf-8", "surrogateescape") + b'"'
        body.write(b"Content-Disposition: " + disposition + b"\r\n")
        if filename is not None:
            body.write(b"Content-Type: application/octet-stream\r\n")
        body.write(b"\r\n" + content + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def init_task(target: Any, **fields: str) -> str:
    reply = jcall(target, "POST", "/task/new/init", files={k: (None, v) for k, v in fields.items()} or {"name": (None, "")})
    assert "uuid" in reply, reply
    return reply["uuid"]


def upload(target: Any, uuid: str, name: str, content: bytes = JPEG) -> Any:
    return jcall(target, "POST", f"/task/new/upload/{uuid}", files={"images": (name, content)})


def make_images(folder: Path, count: int, size: int = 4096) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"IMG_{i:04d}.JPG"
        path.write_bytes(JPEG[:4] + bytes([i % 256]) * size)
        paths.append(str(path))
    return paths


def seed_zip(folder: Path) -> str:
    path = folder / "seed.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("opensfm/split_merge_stop_at_reconstruction.txt", "")
    return str(path)


class Api:
    """A client of a running passel (a ServerThread), with its URL and token."""

    def __init__(self, server: Any, token: str = "") -> None:
        self.server, self.url, self.token, self.port = server, server.url, token, server.port


def committed(api: Any, images: int = 3, **fields: str) -> str:
    """A task made, filled with `images` small images and committed, as a client would."""
    uuid = init_task(api, **fields)
    for i in range(images):
        upload(api, uuid, f"IMG_{i}.JPG")
    assert jcall(api, "POST", f"/task/new/commit/{uuid}") == {"uuid": uuid}
    return uuid


def wait_for(predicate: Any, timeout: float = 30, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy (bounded); its value is returned."""
    import time
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last {value!r}")
