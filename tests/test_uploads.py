"""The upload fast path: MultipartScanner on its own, and receive_form behind a real aiohttp server."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator, Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from appliance.nodeodm import uploads
from appliance.nodeodm.multipart_scan import MAX_HEADER_BYTES, MultipartError, MultipartScanner, PartStart, boundary_of
from appliance.nodeodm.uploads import MAX_FIELD_BYTES, UploadError, receive_form

B = "passelBoundary42"
DELIM = b"\r\n--" + B.encode()


def part(name: str, data: bytes, filename: str | None = None, extra: bytes = b"") -> bytes:
    disposition = f'form-data; name="{name}"'.encode()
    if filename is not None:
        disposition += b'; filename="' + filename.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'
    return b"--" + B.encode() + b"\r\nContent-Disposition: " + disposition + b"\r\n" + extra + b"\r\n" + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + B.encode() + b"--\r\n"


def scan(raw: bytes, cuts: list[int] | None = None, boundary: str = B) -> list[tuple[PartStart, bytes]]:
    """Feed `raw` cut at `cuts` (or in one piece) and return each part with its data joined."""
    scanner, parts = MultipartScanner(boundary.encode()), []
    for start, end in pairwise([0, *(cuts or []), len(raw)]):
        for event in scanner.feed(raw[start:end]):
            if isinstance(event, PartStart):
                parts.append((event, bytearray()))
            elif event is not None:
                parts[-1][1].extend(event)
    scanner.close()
    return [(head, bytes(data)) for head, data in parts]


# Data that looks like the start of a delimiter at the end of a read, or a delimiter with a different ending.
TRICKY = [b"", b"\r", b"\r\n", b"\r\n-", b"\r\n--", DELIM[:-1], b"x\r\n--" + B.encode()[:5] + b"y", b"\r\r\n\r\n",
          b"--" + B.encode(), b"\n--" + B.encode() + b"--"]


@pytest.mark.parametrize("data", TRICKY)
def test_every_split_point_gives_the_same_parts(data):
    raw = body(part("images", data, "a.jpg"), part("name", b"n"))
    whole = scan(raw)
    assert [(p.name, p.filename, d) for p, d in whole] == [("images", "a.jpg", data), ("name", None, b"n")]
    for cut in range(1, len(raw)):
        assert scan(raw, [cut]) == whole, cut


def test_one_byte_reads():
    raw = body(part("images", b"\r\n--x" * 50, "a.jpg"), part("options", b"[]"))
    assert scan(raw, list(range(1, len(raw)))) == scan(raw)


def test_several_files_fields_after_files_preamble_and_epilogue():
    raw = b"preamble\r\n" + body(part("images", b"1" * 1000, "a.jpg"), part("images", b"2", "b.jpg"),
                                 part("name", b"late field")) + b"epilogue, ignored"
    assert [(p.name, p.filename, len(d)) for p, d in scan(raw, [7, 500, 1200])] == [
        ("images", "a.jpg", 1000), ("images", "b.jpg", 1), ("name", None, 10)]


def test_part_without_headers_padding_after_boundary_and_empty_form():
    raw = b"--" + B.encode() + b" \t\r\n\r\nraw\r\n--" + B.encode() + b"--"
    assert scan(raw) == [(PartStart(None, None, "text/plain"), b"raw")]
    assert scan(b"--" + B.encode() + b"--\r\n") == []


def test_big_data_passes_through_without_copies():
    scanner = MultipartScanner(B.encode())
    list(scanner.feed(b"--" + B.encode() + b'\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\n'))
    chunk = os.urandom(256 * 1024).replace(b"\r", b"r")
    assert [e for e in scanner.feed(chunk)] == [chunk] and next(iter(scanner.feed(chunk))) is chunk


@pytest.mark.parametrize("disposition, name, filename", [
    (rb'form-data; name="images"; filename="a\"b.jpg"', "images", 'a"b.jpg'),
    (rb'form-data; name="images"; filename="back\\slash.jpg"', "images", "back\\slash.jpg"),
    (b"form-data; name=images; filename=plain.jpg", "images", "plain.jpg"),
    (b"form-data; name=\"images\"; filename*=UTF-8''%C3%A9t%C3%A9.jpg", "images", "\u00e9t\u00e9.jpg"),
    ('form-data; name="images"; filename="\u00e9t\u00e9.jpg"'.encode(), "images", "\u00e9t\u00e9.jpg"),
    (b'form-data; name="options"', "options", None),
])
def test_names_decoded_like_aiohttp(disposition, name, filename):
    raw = b"--" + B.encode() + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\nx\r\n--" + B.encode() + b"--"
    (head, data), = scan(raw)
    assert (head.name, head.filename, data) == (name, filename, b"x")


def test_part_content_type_and_charset():
    (head, _), = scan(body(part("f", b"x", extra=b"Content-Type: text/plain; charset=latin-1\r\n")))
    assert head.content_type.startswith("text/plain") and head.charset == "latin-1"
    assert PartStart("f", None, "text/plain").charset == "utf-8"


@pytest.mark.parametrize("raw, message", [
    (body(part("images", b"abc", "a.jpg"))[:-len(DELIM) - 4], "truncated"),
    (body(part("images", b"abc", "a.jpg"))[:-3], "truncated"),
    (b"--" + B.encode() + b"\r\nContent-Disposition: form-data; name=\"x\"\r\n", "truncated"),
    (b"this is not multipart at all", "no boundary"),
    (b"", "no boundary"),
    (b"--" + B.encode() + b"junk\r\n\r\nx\r\n--" + B.encode() + b"--", "unexpected bytes"),
    (body(part("a", b"x")).replace(b"x\r\n--" + B.encode() + b"--", b"x\r\n--" + B.encode() + b"zz\r\n"), "unexpected"),
    (b"--" + B.encode() + b"\r\nno colon here\r\n\r\nx\r\n--" + B.encode() + b"--", "bad part header"),
    (body(part("a", b"x")).replace(b'name="a"', b'name="\xff"'), "UTF-8"),
    (b"--" + B.encode() + b"\r\nX: " + b"y" * MAX_HEADER_BYTES, "headers longer"),
    (b"z" * (MAX_HEADER_BYTES + 10), "no boundary in the first"),
])
def test_malformed_bodies(raw, message):
    with pytest.raises(MultipartError, match=message):
        scan(raw, [len(raw) // 2])


def test_boundary_of():
    assert boundary_of(f"multipart/form-data; boundary={B}") == B.encode()
    assert boundary_of('multipart/form-data; boundary="quoted"; charset=utf-8') == b"quoted"
    for bad in ("multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=\u00e9"):
        with pytest.raises(MultipartError):
            boundary_of(bad)


# receive_form behind a real server ---------------------------------------------------------------

Result = dict[str, Any]


@pytest.fixture
async def server(aiohttp_client: Callable[..., Any], tmp_path: Path) -> AsyncIterator[tuple[Any, Path, list[Result]]]:
    """POST /up/{field} receives into tmp_path/staged; each outcome is recorded once the handler ends."""
    staged = tmp_path / "staged"
    staged.mkdir()
    outcomes: list[Result] = []

    async def up(request: web.Request) -> web.Response:
        outcome: Result = {}
        try:
            directory = None if request.query.get("nodir") else staged
            form = await receive_form(request, directory, file_field=request.match_info["field"])
            outcome.update(fields=form.fields, files=form.files, bytes=form.bytes_written)
        except UploadError as exc:
            outcome.update(error=str(exc), no_retry=exc.no_retry)
        except BaseException as exc:
            outcome.update(raised=type(exc).__name__)
            raise
        finally:
            outcomes.append(outcome)
        return web.json_response(outcome)

    app = web.Application()
    app.router.add_post("/up/{field}", up)
    client = await aiohttp_client(app)
    yield client, staged, outcomes


async def post(client: Any, raw: bytes, path: str = "/up/images") -> Result:
    async with client.post(path, data=raw, headers={"Content-Type": f"multipart/form-data; boundary={B}"}) as reply:
        return await reply.json()


async def test_files_and_fields_land_whole(server):
    client, staged, _ = server
    one, two = os.urandom(300_000), os.urandom(5)
    reply = await post(client, body(part("options", b'[{"name":"x"}]'), part("images", one, "IMG.JPG"),
                                    part("images", two, "IMG.JPG"), part("other", b"ignored", "o.txt"),
                                    part("name", "\u00e9".encode())))
    assert reply == {"fields": {"options": '[{"name":"x"}]', "name": "\u00e9"}, "files": ["IMG.JPG", "IMG_.JPG"],
                     "bytes": 300_005}
    assert (staged / "IMG.JPG").read_bytes() == one and (staged / "IMG_.JPG").read_bytes() == two
    assert sorted(p.name for p in staged.iterdir()) == ["IMG.JPG", "IMG_.JPG"]


async def test_chunked_request_body(server):
    client, staged, _ = server
    raw = body(part("images", os.urandom(100_000), "a.jpg"))

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(raw), 7000):
            yield raw[i:i + 7000]

    headers = {"Content-Type": f"multipart/form-data; boundary={B}"}
    async with client.post("/up/images", data=pieces(), headers=headers) as reply:
        assert (await reply.json())["files"] == ["a.jpg"]
    assert (staged / "a.jpg").read_bytes() == raw[raw.index(b"\r\n\r\n") + 4:-len(DELIM) - 4]


async def test_chunk_end_arriving_after_its_data_is_not_the_end_of_the_body(server):
    """aiohttp reports the end of an HTTP chunk that arrives after its data as an empty read."""
    client, staged, outcomes = server
    raw = body(part("images", b"first half|", "a.jpg"))
    cut = raw.index(b"|") + 1
    _, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"POST /up/images HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={B}\r\n"
                 f"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{cut:x}\r\n".encode() + raw[:cut])
    await writer.drain()
    await asyncio.sleep(0.2)  # the server has read the chunk's data; its CRLF comes later
    writer.write(f"\r\n{len(raw) - cut:x}\r\n".encode() + raw[cut:] + b"\r\n0\r\n\r\n")
    await writer.drain()
    for _ in range(200):
        if outcomes:
            break
        await asyncio.sleep(0.01)
    writer.close()
    assert outcomes == [{"fields": {}, "files": ["a.jpg"], "bytes": 11}]


async def test_without_directory_files_are_skipped(server):
    client, staged, _ = server
    reply = await post(client, body(part("images", b"x", "a.jpg"), part("name", b"n")), "/up/images?nodir=1")
    assert reply == {"fields": {"name": "n"}, "files": [], "bytes": 0} and not list(staged.iterdir())


@pytest.mark.parametrize("raw, error", [
    (body(part("images", b"whole", "a.jpg"), part("images", b"cut", "b.jpg"))[:-30], "Malformed multipart body"),
    (body(part("images", b"whole", "a.jpg"), part("options", b"x" * (MAX_FIELD_BYTES + 1))), "larger than"),
    (body(part("images", b"whole", "a.jpg"), part("images", b"x", "../evil.jpg")), "Invalid file name"),
    (body(part("images", b"whole", "a.jpg"), part("images", b"x", "a\u202egpj.exe")), "Invalid file name"),
    (body(part("images", b"whole", "a.jpg"), part("images", b"x", "x.jpg.part")), "Invalid file name"),
    (body(part("images", b"x", "a.jpg", extra=b"Content-Type: multipart/mixed; boundary=z\r\n")), "Nested"),
    (body(part("name", b"\xff\xfe")), "not valid text"),
    (b"not multipart", "Malformed multipart body"),
])
async def test_a_failed_body_leaves_nothing(server, raw, error):
    client, staged, _ = server
    reply = await post(client, raw)
    assert error in reply["error"] and reply["no_retry"] is True
    assert not list(staged.iterdir())


async def test_bodies_that_are_not_multipart_carry_nothing(server):
    """NodeODM's multer reads multipart only: a JSON or urlencoded body brings no field and no file."""
    client, _, _ = server
    nothing = {"fields": {}, "files": [], "bytes": 0}
    async with client.post("/up/images", data=b'{"name": "json"}', headers={"Content-Type": "application/json"}) as reply:
        assert await reply.json() == nothing
    async with client.post("/up/images", data={"name": "urlencoded"}) as reply:
        assert await reply.json() == nothing
    async with client.post("/up/images", data=b"x", headers={"Content-Type": "multipart/form-data"}) as reply:
        assert "boundary" in (await reply.json())["error"]


async def test_disk_full_is_a_clear_retryable_error(server, monkeypatch):
    client, staged, _ = server

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(uploads.os, "write", full)
    reply = await post(client, body(part("images", b"x" * 1000, "a.jpg")))
    assert reply["error"].startswith("Disk full") and reply["no_retry"] is False
    assert not list(staged.iterdir())


async def test_client_gone_mid_upload_leaves_nothing(server):
    client, staged, outcomes = server
    head = body(part("images", b"done", "a.jpg")).removesuffix(b"--" + B.encode() + b"--\r\n")
    head += b"--" + B.encode() + b'\r\nContent-Disposition: form-data; name="images"; filename="b.jpg"\r\n\r\n'
    head += b"y" * 200_000
    _, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"POST /up/images HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={B}\r\n"
                 f"Content-Length: {len(head) + 10_000_000}\r\n\r\n".encode() + head)
    await writer.drain()
    for _ in range(500):  # until the server is writing b.jpg
        if (staged / "b.jpg.part").exists():
            break
        await asyncio.sleep(0.01)
    assert sorted(p.name for p in staged.iterdir()) == ["a.jpg.part", "b.jpg.part"]  # nothing looks whole yet
    writer.close()
    for _ in range(500):
        if outcomes:
            break
        await asyncio.sleep(0.01)
    assert outcomes and "raised" in outcomes[0], outcomes
    assert not list(staged.iterdir())


async def test_a_dropped_connection_is_a_retryable_error_not_a_crash(tmp_path):
    """Without handler cancellation (as Passel serves), a sender gone mid-body surfaces as
    ConnectionResetError from the stream: it must become a clear error, never a logged traceback."""
    from aiohttp.test_utils import make_mocked_request

    class Dropping:
        async def iter_chunks(self) -> AsyncIterator[tuple[bytes, bool]]:
            yield body(part("images", b"x" * 1000, "a.jpg"))[:200], False
            raise ConnectionResetError("Connection lost")

    request = make_mocked_request("POST", "/", headers={"Content-Type": f"multipart/form-data; boundary={B}",
                                                        "Content-Length": "100000"})
    request._payload = Dropping()  # type: ignore[assignment]
    with pytest.raises(UploadError) as error:
        await receive_form(request, tmp_path)
    assert str(error.value) == "The connection dropped during the upload; send it again" and not error.value.no_retry
    assert not list(tmp_path.iterdir())


async def test_aiohttp_client_form_data(server):
    """What aiohttp's client sends: a Content-Type per part, and percent-encoded file names, which
    aiohttp's server reader did not decode either (the name is kept as sent)."""
    client, staged, _ = server
    form = aiohttp.FormData()
    form.add_field("options", "[]")
    form.add_field("images", b"\xff\xd8data", filename='we"ird name.jpg', content_type="image/jpeg")
    async with client.post("/up/images", data=form) as reply:
        assert await reply.json() == {"fields": {"options": "[]"}, "files": ["we%22ird%20name.jpg"], "bytes": 6}
    assert (staged / "we%22ird%20name.jpg").read_bytes() == b"\xff\xd8data"
