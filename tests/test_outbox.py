"""Results out (appliance/cluster/outbox.py, outbox_s3.py): finished products pushed to a real S3
server (moto in server mode) and a real HTTP PUT endpoint, through a TCP proxy that stands for the
field team's uplink, which a test cuts in the middle of an upload and brings back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
import urllib.request
import uuid as uuidlib
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiobotocore.session import get_session
from aiohttp import web
from moto.server import ThreadedMotoServer

from appliance.cluster.outbox import (
    PART_BYTES,
    STATE_FILE,
    Destination,
    LinkDown,
    Outbox,
    load_state,
    push_status,
)
from appliance.cluster.outbox_s3 import HttpPutTransport, S3Transport, open_transport
from appliance.cluster.results_copies import ResultsStore

ORTHO = "odm_orthophoto/odm_orthophoto.tif"
KEY_ID, SECRET = "passel-test-key", "passel-test-secret"
TASK = "4f1c2a9e-8b7d-4e3a-9c51-2d6f0e8a7b13"
MiB = 1024 * 1024


# ------------------------------------------------------------------ the task's all.zip

@pytest.fixture(scope="module")
def results_zip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A real all.zip: a 20 MiB orthophoto of random bytes (deflated, as ODM's zips are), two small
    elevation models, and things that are not products."""
    members = {
        ORTHO: os.urandom(20 * MiB),
        "odm_dem/dsm.tif": os.urandom(300 * 1024),
        "odm_dem/dtm.tif": os.urandom(200 * 1024),
        "odm_report/report.pdf": os.urandom(50 * 1024),
        "odm_georeferencing/odm_georeferenced_model.laz": os.urandom(100 * 1024),
    }
    path = tmp_path_factory.mktemp("zip") / "all.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, data in members.items():
            archive.writestr(name, data, zipfile.ZIP_STORED if name.endswith(".pdf") else zipfile.ZIP_DEFLATED)
    return path, members


@pytest.fixture
def store(tmp_path: Path, results_zip: tuple[Path, dict[str, bytes]]) -> ResultsStore:
    """This box's results folder, holding the copy of one completed task's all.zip."""
    results = ResultsStore(tmp_path / "results", 0)
    results.path(TASK).parent.mkdir(parents=True)
    shutil.copyfile(results_zip[0], results.path(TASK))
    return results


# ------------------------------------------------------------------ the uplink

class RequestLog:
    """Reads the HTTP/1.1 requests going out on one connection: each request line, as its headers go."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self._head = b""
        self._body_left = 0

    def feed(self, data: bytes) -> None:
        while data:
            if self._body_left:
                taken = min(len(data), self._body_left)
                self._body_left -= taken
                data = data[taken:]
                continue
            self._head += data
            data = b""
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data, self._head = self._head[:end].decode("latin-1"), self._head[end + 4:], b""
            first, *rest = head.split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in rest)}
            self.lines.append(first if "chunked" not in headers.get("transfer-encoding", "") else f"CHUNKED {first}")
            self._body_left = int(headers.get("content-length", "0"))


class Uplink:
    """A TCP proxy on 127.0.0.1 in front of the destination. `cut()` closes every connection (after
    a number of bytes more going out, if given) and closes each new one at once until `restore()`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.requests: list[str] = []
        self.refused = 0
        self._up = True
        self._budget: int | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    def cut(self, after_bytes: int = 0) -> None:
        if after_bytes:
            self._budget = after_bytes
        else:
            self._drop()

    def restore(self) -> None:
        self._up, self._budget = True, None

    def _drop(self) -> None:
        self._up, self._budget = False, None
        for transport in list(self._transports):
            transport.abort()

    def count(self, method: str, path_part: str = "", **query: str) -> int:
        """Requests with this method whose path holds `path_part` and whose query has these values."""
        found = 0
        for line in self.requests:
            verb, _, rest = line.partition(" ")
            url = urlsplit(rest.rpartition(" ")[0])
            asked = parse_qs(url.query, keep_blank_values=True)
            if verb == method and path_part in url.path and all(asked.get(k) == [v] for k, v in query.items()):
                found += 1
        return found

    def parts_sent(self, name: str) -> list[int]:
        return sorted(int(parse_qs(urlsplit(line.split(" ")[1]).query)["partNumber"][0]) for line in self.requests
                      if line.startswith("PUT ") and name in line and "partNumber=" in line)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if not self._up:
                self.refused += 1
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                writer.transport.abort()
                return
            self._transports |= {writer.transport, up_writer.transport}
            requests = RequestLog(self.requests)

            async def outward() -> None:
                while data := await reader.read(64 * 1024):
                    if self._budget is not None:
                        if len(data) >= self._budget:
                            data = data[:self._budget]
                            requests.feed(data)
                            up_writer.write(data)
                            self._drop()
                            return
                        self._budget -= len(data)
                    requests.feed(data)
                    up_writer.write(data)
                    await up_writer.drain()

            async def inward() -> None:
                while data := await up_reader.read(64 * 1024):
                    writer.write(data)
                    await writer.drain()

            pipes = [asyncio.create_task(outward()), asyncio.create_task(inward())]
            with contextlib.suppress(ConnectionError, OSError):
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for transport in (writer.transport, up_writer.transport):
                transport.abort()
                self._transports.discard(transport)
        finally:
            self._handlers.discard(task)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        self._drop()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()


# ------------------------------------------------------------------ the S3 server

@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def no_outside_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only 127.0.0.1, and no AWS settings of this machine's user."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "AWS_PROFILE", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@contextlib.asynccontextmanager
async def s3_client(endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client("s3", region_name="us-east-1", endpoint_url=endpoint,
                                           aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET) as s3:
        yield s3


@pytest.fixture
async def bucket(moto_endpoint: str) -> AsyncIterator[str]:
    """A new empty bucket; the server forgets everything afterwards."""
    name = f"field-{uuidlib.uuid4().hex[:12]}"
    async with s3_client(moto_endpoint) as s3:
        await s3.create_bucket(Bucket=name)
    yield name
    request = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=10).close())


@pytest.fixture
async def uplink(moto_endpoint: str) -> AsyncIterator[Uplink]:
    link = Uplink(int(moto_endpoint.rpartition(":")[2]))
    await link.start()
    yield link
    await link.stop()


@pytest.fixture
async def outboxes(store: ResultsStore) -> AsyncIterator[Callable[..., Outbox]]:
    """Outboxes for this box's store, each with its own transport (as after a restart), closed after."""
    made: list[Outbox] = []

    def make(url: str, key_id: str = KEY_ID, secret: str = SECRET, **options: Any) -> Outbox:
        transport = open_transport(Destination.parse(url), key_id, secret, connect_timeout=2, read_timeout=10)
        outbox = Outbox(store, transport, lambda: [TASK], **options)
        made.append(outbox)
        return outbox

    yield make
    for outbox in made:
        await outbox.aclose()


def via(uplink: Uplink, bucket: str, prefix: str = "field/site-3") -> str:
    port = uplink._server.sockets[0].getsockname()[1] if uplink._server else 0
    return f"s3://{bucket}/{prefix}?endpoint=http://127.0.0.1:{port}&region=us-east-1"


async def objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    async with s3_client(endpoint) as s3:
        listed = await s3.list_objects_v2(Bucket=bucket)
        found = {}
        for item in listed.get("Contents", []):
            reply = await s3.get_object(Bucket=bucket, Key=item["Key"])
            async with reply["Body"] as body:
                found[item["Key"]] = await body.read()
        return found


def pushed_products(members: dict[str, bytes], prefix: str = "field/site-3") -> dict[str, bytes]:
    return {f"{prefix}/{TASK}/{name.rpartition('/')[2]}": members[name]
            for name in (ORTHO, "odm_dem/dsm.tif", "odm_dem/dtm.tif")}


# ------------------------------------------------------------------ destinations

@pytest.mark.parametrize(("url", "said"), [
    ("", "no results destination is given"),
    ("ftp://host/path", "must start with s3://, http:// or https://"),
    ("bucket/prefix", "has no scheme"),
    ("s3://", "names no bucket"),
    ("s3://My_Bucket/x", "is not a bucket name"),
    ("s3://key:secret@bucket/x", "carries credentials"),
    ("https://user:pw@host/x", "carries credentials"),
    ("s3://bucket/a//b", "has an empty, '.' or '..' folder"),
    ("s3://bucket/a/../b", "has an empty, '.' or '..' folder"),
    ("s3://bucket/x?endpiont=http://127.0.0.1:9000", "unknown option 'endpiont'"),
    ("s3://bucket/x?endpoint=127.0.0.1:9000", "is not a URL such as http://192.168.1.10:9000"),
    ("s3://bucket/x?endpoint=http://127.0.0.1:9000/minio", "must be only scheme, host and port"),
    ("s3://bucket/x?endpoint=http://a:1&endpoint=http://b:2", "gives 'endpoint' twice"),
    ("s3://bucket/x?region=us east", "is not a region name"),
    ("http:///path", "names no host"),
    ("https://host/path?token=1", "takes none"),
    ("https://host:99999/path", "is not a URL"),
    ("https://host/path#x", "#fragment"),
])
def test_a_bad_destination_says_what_is_wrong_and_how_to_write_it(url: str, said: str) -> None:
    with pytest.raises(ValueError) as raised:
        Destination.parse(url)
    assert said in str(raised.value)
    assert "s3://" in str(raised.value) or "http" in str(raised.value) or "results_out" in str(raised.value)


def test_destinations_are_read() -> None:
    d = Destination.parse(" s3://field-data/odm/site-3/?endpoint=http://127.0.0.1:9000&region=eu-west-1 ")
    assert (d.kind, d.bucket, d.prefix, d.endpoint, d.region) == ("s3", "field-data", "odm/site-3",
                                                                   "http://127.0.0.1:9000", "eu-west-1")
    assert d.location(TASK, "dsm.tif") == f"odm/site-3/{TASK}/dsm.tif"
    assert Destination.parse(str(d)) == d
    aws = Destination.parse("s3://field-data")
    assert (aws.endpoint, aws.region, aws.location(TASK, "all.zip")) == ("", "us-east-1", f"{TASK}/all.zip")
    web_ = Destination.parse("https://archive.example/drop/")
    assert web_.location(TASK, "odm_orthophoto.tif") == f"https://archive.example/drop/{TASK}/odm_orthophoto.tif"
    assert isinstance(open_transport(d), S3Transport) and isinstance(open_transport(web_), HttpPutTransport)


# ------------------------------------------------------------------ pushing to S3

async def test_products_go_to_the_bucket_under_their_keys_with_identical_bytes(
        outboxes: Callable[..., Outbox], uplink: Uplink, bucket: str, moto_endpoint: str,
        results_zip: tuple[Path, dict[str, bytes]], store: ResultsStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "passel.results")
    outbox = outboxes(via(uplink, bucket))
    assert outbox.status(TASK) == "queued"
    state = await outbox.push_task(TASK)
    assert state.pushed and not state.error
    assert await objects(moto_endpoint, bucket) == pushed_products(results_zip[1])
    assert uplink.parts_sent("odm_orthophoto.tif") == [1, 2, 3]  # 20 MiB in 8 MiB parts
    assert uplink.count("PUT", "dsm.tif") == 1 and uplink.count("PUT", "dtm.tif") == 1  # small: one PutObject each
    assert outbox.status(TASK).startswith("pushed at 20")
    assert load_state(store, TASK) == state
    said = [r.getMessage() for r in caplog.records if r.name == "passel.results"]
    assert said == [f"Task {TASK[:8]}: pushed its products (3 files, 21.5 MB) to {outbox.destination}"]
    assert not any(r.exc_info for r in caplog.records)

    before = len(uplink.requests)
    assert (await outbox.push_task(TASK)).pushed
    assert await outbox.round()
    assert len(uplink.requests) == before  # pushed is pushed: not even a look


async def test_all_means_the_whole_zip(outboxes: Callable[..., Outbox], uplink: Uplink, bucket: str,
                                       moto_endpoint: str, results_zip: tuple[Path, dict[str, bytes]]) -> None:
    outbox = outboxes(via(uplink, bucket, "everything"), choice="all")
    assert (await outbox.push_task(TASK)).pushed
    assert await objects(moto_endpoint, bucket) == {f"everything/{TASK}/all.zip": results_zip[0].read_bytes()}


async def test_a_dropped_link_resumes_without_sending_acknowledged_parts_again(
        outboxes: Callable[..., Outbox], uplink: Uplink, bucket: str, moto_endpoint: str,
        results_zip: tuple[Path, dict[str, bytes]], store: ResultsStore) -> None:
    outbox = outboxes(via(uplink, bucket))
    uplink.cut(after_bytes=PART_BYTES + 3 * MiB)  # part 1 acknowledged, part 2 broken off midway
    with pytest.raises(LinkDown):
        await outbox.push_task(TASK)
    assert outbox.status(TASK) == "waiting for the link"
    before = load_state(store, TASK)
    assert before is not None
    ortho = before.files[0]
    assert (ortho.name, ortho.done, sorted(ortho.parts), bool(ortho.upload_id)) == ("odm_orthophoto.tif", False, [1], True)
    assert uplink.parts_sent("odm_orthophoto.tif") == [1, 2]

    with pytest.raises(LinkDown):  # still down: a try changes nothing
        await outbox.push_task(TASK)
    assert load_state(store, TASK) == before

    uplink.restore()
    state = await outbox.push_task(TASK)
    assert state.pushed
    assert await objects(moto_endpoint, bucket) == pushed_products(results_zip[1])
    assert uplink.parts_sent("odm_orthophoto.tif") == [1, 2, 2, 3]  # part 1 once; the broken part 2 again
    assert uplink.count("POST", "odm_orthophoto.tif", uploads="") == 1  # one upload, resumed
    assert uplink.count("GET", "odm_orthophoto.tif", uploadId=ortho.upload_id) >= 1  # ListParts asked


async def test_a_restart_goes_on_and_a_pushed_file_is_never_pushed_again(
        outboxes: Callable[..., Outbox], uplink: Uplink, bucket: str, moto_endpoint: str,
        results_zip: tuple[Path, dict[str, bytes]], store: ResultsStore) -> None:
    uplink.cut(after_bytes=PART_BYTES + MiB)
    with pytest.raises(LinkDown):
        await outboxes(via(uplink, bucket)).push_task(TASK)
    uplink.restore()

    assert outboxes(via(uplink, bucket)).status(TASK) == "pushing 39%"  # part 1 (8.4 of 21.5 MB) acknowledged
    # the crash came after part 1 was acknowledged and before the state said so; and the state claims a
    # part 2 the bucket never got: ListParts is the truth (part 1's bytes are checked against its ETag)
    path = store.path(TASK).with_name(STATE_FILE)
    written = json.loads(path.read_text())
    written["files"][0]["parts"] = [[2, '"d41d8cd98f00b204e9800998ecf8427e"']]
    path.write_text(json.dumps(written))

    after_restart = outboxes(via(uplink, bucket))  # a new process: only the state file is left
    assert (await after_restart.push_task(TASK)).pushed
    assert await objects(moto_endpoint, bucket) == pushed_products(results_zip[1])
    assert uplink.parts_sent("odm_orthophoto.tif") == [1, 2, 2, 3]
    assert uplink.count("POST", "odm_orthophoto.tif", uploads="") == 1

    sent = len(uplink.requests)
    assert (await outboxes(via(uplink, bucket)).push_task(TASK)).pushed
    assert uplink.requests[sent:] == []

    # a crash after the last CompleteMultipartUpload and before the state said so: the upload is gone
    written = json.loads(path.read_text())
    written["pushed_at"] = None
    for entry in written["files"]:
        entry["done"] = False
    written["files"][0] |= {"upload_id": "completed-before-the-crash", "parts": [[1, '"x"']], "part_bytes": PART_BYTES}
    path.write_text(json.dumps(written))
    assert (await outboxes(via(uplink, bucket)).push_task(TASK)).pushed
    assert [line.split(" ")[0] for line in uplink.requests[sent:]] == ["GET", "HEAD", "HEAD", "HEAD"]  # ListParts, HEADs

    # no state at all: the HEADs still see the same objects (size and content fingerprint)
    path.unlink()
    sent = len(uplink.requests)
    assert (await outboxes(via(uplink, bucket)).push_task(TASK)).pushed
    assert [line.split(" ")[0] for line in uplink.requests[sent:]] == ["HEAD", "HEAD", "HEAD"]
    assert await objects(moto_endpoint, bucket) == pushed_products(results_zip[1])


async def test_changed_results_are_pushed_again(outboxes: Callable[..., Outbox], uplink: Uplink, bucket: str,
                                                moto_endpoint: str, store: ResultsStore) -> None:
    """A task restarted on its node has new results under the same uuid: same sizes, other bytes."""
    assert (await outboxes(via(uplink, bucket)).push_task(TASK)).pushed
    with zipfile.ZipFile(store.path(TASK)) as old:
        names = old.namelist()
        sizes = {n: old.getinfo(n).file_size for n in names}
    replaced = {n: os.urandom(sizes[n]) for n in names}
    with zipfile.ZipFile(store.path(TASK), "w", zipfile.ZIP_STORED) as new:
        for n, data in replaced.items():
            new.writestr(n, data)
    assert (await outboxes(via(uplink, bucket)).push_task(TASK)).pushed
    assert await objects(moto_endpoint, bucket) == pushed_products(replaced)


async def test_run_forever_backs_off_and_says_once_when_the_link_goes_and_comes_back(
        outboxes: Callable[..., Outbox], uplink: Uplink, bucket: str, moto_endpoint: str,
        results_zip: tuple[Path, dict[str, bytes]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "passel.results")
    backoff = (0.05, 0.1, 0.2)
    outbox = outboxes(via(uplink, bucket), backoff=backoff, idle_seconds=30)
    rounds: list[tuple[float, float, bool]] = []  # started, ended, answered
    one_round = outbox.round

    async def timed_round() -> bool:
        started = time.monotonic()
        answered = await one_round()
        rounds.append((started, time.monotonic(), answered))
        return answered

    outbox.round = timed_round  # type: ignore[method-assign]
    uplink.cut()
    runner = asyncio.create_task(outbox.run_forever())
    try:
        await wait_for(lambda: len(rounds) >= 5, "five rounds without a link")
        assert outbox.status(TASK) == "waiting for the link"
        waits = [after[0] - before[1] for before, after in zip(rounds, rounds[1:], strict=False)][:4]
        assert all(wait >= backoff[min(i, 2)] for i, wait in enumerate(waits)), waits
        uplink.restore()
        await wait_for(lambda: outbox.status(TASK).startswith("pushed at"), "the push after the link came back")
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert not any(answered for _, _, answered in rounds[:5])
    messages = [r.getMessage() for r in caplog.records if r.name == "passel.results"]
    assert len(messages) == 3, messages  # one line as the link goes, one as it comes back, one when pushed
    assert " is down (could not connect to http://127.0.0.1:" in messages[0]
    assert " is back; " in messages[1] and messages[2].startswith(f"Task {TASK[:8]}: pushed its products")
    assert not any(r.exc_info for r in caplog.records)
    assert await objects(moto_endpoint, bucket) == pushed_products(results_zip[1])


async def test_a_destination_that_refuses_gives_a_sentence_and_is_not_hammered(
        outboxes: Callable[..., Outbox], uplink: Uplink, bucket: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "passel.results")
    outbox = outboxes(via(uplink, "no-such-bucket-here"))
    state = await outbox.push_task(TASK)
    assert not state.pushed
    port = uplink._server.sockets[0].getsockname()[1] if uplink._server else 0
    assert state.error == f"the bucket no-such-bucket-here does not exist at http://127.0.0.1:{port}"
    assert outbox.status(TASK) == f"failed: {state.error}"
    assert outbox.link_up is True  # it answered
    sent = len(uplink.requests)
    assert await outbox.round()
    assert len(uplink.requests) == sent  # tried again only after an hour
    said = [r for r in caplog.records if r.name == "passel.results"]
    assert [r.levelname for r in said] == ["WARNING"] and not said[0].exc_info
    assert said[0].getMessage().endswith(f"failed: {state.error}")


# ------------------------------------------------------------------ pushing by HTTP PUT

async def test_an_http_endpoint_gets_a_put_of_each_file(
        aiohttp_server: Any, outboxes: Callable[..., Outbox], results_zip: tuple[Path, dict[str, bytes]],
        store: ResultsStore) -> None:
    received: dict[str, bytes] = {}
    puts: list[tuple[str, str | None, str | None]] = []

    async def put(request: web.Request) -> web.Response:
        puts.append((request.path, request.headers.get("Content-Length"), request.headers.get("Transfer-Encoding")))
        if request.headers.get("Authorization") != "Basic cGFzc2VsLXRlc3Qta2V5OnBhc3NlbC10ZXN0LXNlY3JldA==":
            return web.Response(status=401)
        received[request.path] = await request.read()
        return web.Response(status=201)

    async def get(request: web.Request) -> web.Response:
        if request.path not in received:
            raise web.HTTPNotFound()
        return web.Response(body=received[request.path])

    app = web.Application(client_max_size=64 * MiB)
    app.router.add_put("/drop/{tail:.*}", put)
    app.router.add_get("/drop/{tail:.*}", get)
    server = await aiohttp_server(app, host="127.0.0.1")
    url = f"http://127.0.0.1:{server.port}/drop/"

    assert (await outboxes(url).push_task(TASK)).pushed
    members = results_zip[1]
    assert received == {f"/drop/{TASK}/{name.rpartition('/')[2]}": members[name]
                        for name in (ORTHO, "odm_dem/dsm.tif", "odm_dem/dtm.tif")}
    assert all(length is not None and chunked is None for _, length, chunked in puts)  # a length, not chunks

    (store.path(TASK).with_name(STATE_FILE)).unlink()
    assert (await outboxes(url).push_task(TASK)).pushed  # HEAD says they are there, of the same size
    assert len(puts) == 3

    refused = await outboxes(url, key_id="someone-else", choice="all").push_task(TASK)
    assert refused.error == (f"http://127.0.0.1:{server.port}/drop refused the upload of all.zip (HTTP 401); "
                             "check results_out_key_id and results_out_secret")
    assert len(puts) == 4 and f"/drop/{TASK}/all.zip" not in received


# ------------------------------------------------------------------ the UI's words

async def test_the_ui_words(outboxes: Callable[..., Outbox], store: ResultsStore) -> None:
    assert push_status(None, TASK) == "not configured"
    outbox = outboxes("s3://field-data/x?endpoint=http://127.0.0.1:9")
    assert push_status(outbox, TASK) == "queued"
    assert push_status(outbox, str(uuidlib.uuid4())) == "no copy of its results on this box"
    outbox.link_up = False
    assert push_status(outbox, TASK) == "waiting for the link"


async def wait_for(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------ wired into a running box

async def test_a_box_pushes_the_results_it_completes_and_its_page_says_so(
        passel_factory: Callable[..., Any], simnode_factory: Callable[..., Any], moto_endpoint: str,
        bucket: str, tmp_path: Path) -> None:
    """A box with `results_out` set, a task sent by PyODM: once it completes, its all.zip is in the
    bucket, byte for byte, and the task's page says it was pushed."""
    from pyodm import Node

    from tests.nodeodm_helpers import make_images

    node = simnode_factory()
    passel = passel_factory([node.url], results_out=f"s3://{bucket}/site-3?endpoint={moto_endpoint}&region=us-east-1",
                            results_out_key_id=KEY_ID, results_out_secret=SECRET, results_out_products="all")
    images = make_images(tmp_path / "images", 3)
    task = await asyncio.to_thread(lambda: Node("127.0.0.1", passel.port).create_task(images, name="pushed"))
    key = f"site-3/{task.uuid}/all.zip"
    async with s3_client(moto_endpoint) as s3:
        for _ in range(120):
            listed = await s3.list_objects_v2(Bucket=bucket, Prefix=key)
            if listed.get("KeyCount"):
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail("the box did not push the task's all.zip within 60 s")
        pushed = await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read()
    served = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"{passel.url}/task/{task.uuid}/download/all.zip", timeout=30).read())
    assert pushed == served
    for _ in range(20):  # the state file is written just after the object
        page = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"{passel.url}/ui/tasks/{task.uuid}", timeout=10).read().decode())
        if "pushed at" in page:
            break
        await asyncio.sleep(0.5)
    assert "Results out" in page and "pushed at" in page and bucket in page
    assert SECRET not in page
