"""Send one file to a node's `/task/new/upload/{uuid}` with the kernel's sendfile.

Forwarding is the coordinator's hottest path: every byte a client uploads goes out again. aiohttp's
client reads files through a thread pool in 64 kB pieces; sendfile hands the page-cache pages to the
socket directly. Measured on the project machine (bench/upload_path.py, 2 cores): the same 300 MB
forward cost 0.27 s of coordinator CPU through aiohttp and 0.06 s this way, CPU that the receiving
side of the upload needs. It is one request shape only (a single multipart file over plain HTTP);
anything else goes through aiohttp. A file still arriving from a client is sent the same way, in HTTP
chunks as its bytes reach the disk (`post_growing_file`), so the forward ends with the file's arrival.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from appliance.nodeodm.growth import Growth

CONNECT_SECONDS = 5.0
MIN_BYTES_PER_SECOND = 1024 * 1024  # give up on a node slower than 1 MB/s for one file, plus slack
SLACK_SECONDS = 30.0
MIN_CHUNK_BYTES = 256 * 1024  # a file still arriving goes on in pieces of at least this, to keep syscalls few
ARRIVAL_IDLE_SECONDS = 90.0  # longer than the receiving side's own stall limit, which ends the arrival first


class UploadFailed(Exception):
    """The node could not be reached or did not answer in time."""


def _quote(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return bytes(out)


def parse_reply(raw: bytes) -> tuple[int, Any]:
    """Status and JSON body of a `Connection: close` HTTP/1.1 reply."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise UploadFailed(f"not an HTTP reply: {lines[0][:80]!r}") from None
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, None


@dataclass(frozen=True)
class _OneFileRequest:
    """The bytes around one file's multipart body, for a node at `host:port`."""

    host: str
    port: int
    head: bytes
    preamble: bytes
    epilogue: bytes

    def failed(self, name: str, exc: BaseException) -> UploadFailed:
        return UploadFailed(f"upload of {name} to {self.host}:{self.port} failed: {exc or 'timeout'}")


def _one_file_request(url: str, name: str, field: str, size: int | None) -> _OneFileRequest:
    """The request for one file: with its Content-Length when `size` is known, else chunked."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"sendfile uploads need a plain http URL, not {url!r}")
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    boundary = uuidlib.uuid4().hex
    preamble = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                f"filename=\"{_quote(name)}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    epilogue = f"\r\n--{boundary}--\r\n".encode()
    length = (f"Content-Length: {len(preamble) + size + len(epilogue)}" if size is not None
              else "Transfer-Encoding: chunked")
    head = (f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"{length}\r\nConnection: close\r\n\r\n").encode()
    return _OneFileRequest(parts.hostname, parts.port or 80, head, preamble, epilogue)


async def _connect(request: _OneFileRequest) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        async with asyncio.timeout(CONNECT_SECONDS):
            return await asyncio.open_connection(request.host, request.port)
    except (OSError, TimeoutError) as exc:
        raise UploadFailed(f"cannot connect to {request.host}:{request.port}: {exc or 'timeout'}") from None


async def post_file(url: str, path: Path, field: str = "images") -> tuple[int, Any]:
    """POST `path` as a one-file multipart body to `url` (http only); returns (status, JSON body)."""
    size = os.path.getsize(path)
    request = _one_file_request(url, path.name, field, size)
    reader, writer = await _connect(request)
    try:
        async with asyncio.timeout(size / MIN_BYTES_PER_SECOND + SLACK_SECONDS):
            writer.write(request.head + request.preamble)
            with open(path, "rb") as handle:
                await asyncio.get_running_loop().sendfile(writer.transport, handle)
            writer.write(request.epilogue)
            await writer.drain()
            raw = await reader.read()
    except (OSError, TimeoutError) as exc:
        raise request.failed(path.name, exc) from None
    finally:
        writer.close()
    return parse_reply(raw)


async def post_growing_file(url: str, handle: BinaryIO, name: str, growth: Growth,
                            field: str = "images") -> tuple[int, Any]:
    """POST a file that is still arriving (`handle`, opened when it started, so its renaming once whole
    does not matter) as a one-file multipart body, in HTTP chunks sent with sendfile as its bytes reach
    the disk; the body ends once the whole file was kept (`growth.done`). An arrival that breaks
    (`growth.failed`) aborts the request, so the node keeps nothing of it."""
    request = _one_file_request(url, name, field, None)
    reader, writer = await _connect(request)
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        writer.write(request.head + _chunk(request.preamble))
        while True:
            if growth.failed:
                raise UploadFailed(f"the upload of {name} to this box broke; it is sent again when it arrives")
            ready = growth.written - sent
            if ready >= MIN_CHUNK_BYTES or (growth.done and ready > 0):
                writer.write(f"{ready:x}\r\n".encode())
                async with asyncio.timeout(ready / MIN_BYTES_PER_SECOND + SLACK_SECONDS):
                    await loop.sendfile(writer.transport, handle, sent, ready)
                writer.write(b"\r\n")
                sent += ready
            elif growth.done:
                break
            else:
                async with asyncio.timeout(ARRIVAL_IDLE_SECONDS):
                    await growth.wait(until=sent + MIN_CHUNK_BYTES)
        writer.write(_chunk(request.epilogue) + b"0\r\n\r\n")
        async with asyncio.timeout(SLACK_SECONDS):
            await writer.drain()
            raw = await reader.read()
    except (OSError, TimeoutError) as exc:
        raise request.failed(name, exc) from None
    finally:
        writer.close()
    return parse_reply(raw)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"
