"""A follower holds a client's request no longer than it takes to declare the coordinator gone: then the
request is cut and answered (or sent to the next coordinator when asking again does nothing twice), and
a commit it gave up on never runs from the images it holds. A long download from a live coordinator
is never cut. Real servers on 127.0.0.1; the lease is shortened so the tests stay quick."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from appliance.agent_api import deliver
from appliance.clock import boottime
from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.cluster.receiving import CommitAbandoned, CoordinatorUnreachable, Receiver, Upload
from appliance.cluster.registry import NodeRegistry
from appliance.cluster.staging import Staging
from appliance.cluster.tasks import TaskBook
from appliance.discovery import membership
from appliance.discovery.identity import BoxIdentity
from appliance.discovery.passel import PASSEL_KEY, PEER_KEY, Passel
from appliance.discovery.trust import Trust, new_key_code
from appliance.relay import RELAY_SESSION_KEY, relay_to_coordinator
from appliance.role import BoxUnreachable, Role
from appliance.store.database import Store
from appliance.store.models import Task, row_values
from tests.support import StubElection

LEASE = 1.5  # seconds: short, so a test waits for it; the bounds below are generous multiples
FOLLOWER, OLD, NEW = "aaaaaaaaaaaa", "cccccccccccc", "dddddddddddd"
UUID = "00000000-0000-4000-8000-0000000000d1"


@pytest.fixture(autouse=True)
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(membership, "LEASE_SECONDS", LEASE)


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A coordinator cut off mid-request: it accepts the connection, takes the request, never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()


def follower_passel(tmp_path: Path, session: aiohttp.ClientSession) -> Passel:
    return Passel(BoxIdentity(FOLLOWER, "follower"), tmp_path, 0, 0, session, Trust(new_key_code(), FOLLOWER),
                  lambda: False, lambda: 0)


def follow(passel: Passel, box_id: str, port: int) -> membership.Peer:
    """This box follows `box_id`, just heard from (a test's heartbeat)."""
    peer = passel.membership.sighted(box_id, "127.0.0.1", port, f"box {box_id[:1]}")
    assert peer is not None
    peer.last_heard = boottime()
    passel.state.coordinator_id = box_id
    return peer


@contextlib.asynccontextmanager
async def follower_serving(passel: Passel) -> AsyncIterator[str]:
    """A follower's front door: every request relayed to the coordinator (http_rules.gate_middleware)."""
    async def answered_here(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "answered by the follower"})

    async def gate(request: web.Request) -> web.StreamResponse:
        return await relay_to_coordinator(request, answered_here, passel)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", gate)
    async with aiohttp.ClientSession(auto_decompress=False) as relay_session:
        app[RELAY_SESSION_KEY] = relay_session
        async with serving(app) as url:
            yield url


async def heartbeats(peer: membership.Peer, seconds: float) -> None:
    """The coordinator answers heartbeats for `seconds`, then goes silent."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        peer.last_heard = boottime()
        await asyncio.sleep(0.1)


async def test_a_relayed_init_to_a_cut_off_coordinator_is_answered_within_a_lease(tmp_path):
    async with aiohttp.ClientSession() as session, silent_server() as port:
        passel = follower_passel(tmp_path, session)
        follow(passel, OLD, port)
        async with follower_serving(passel) as url, aiohttp.ClientSession() as client:
            started = time.monotonic()
            form = aiohttp.FormData({"name": "part 3", "options": "[]"})
            async with client.post(f"{url}/task/new/init", data=form, timeout=aiohttp.ClientTimeout(total=60)) as reply:
                body = await reply.json()
            took = time.monotonic() - started
    assert reply.status == 200 and "declared gone" in body["error"], body  # NodeODM's shape: ODM sends it again
    assert took < LEASE + 10, f"held {took:.1f} s although the coordinator was declared gone after {LEASE} s"


async def test_a_relayed_get_waits_for_the_next_coordinator(tmp_path):
    async def info(request: web.Request) -> web.Response:
        return web.json_response({"answered_by": "new"})

    new = web.Application()
    new.router.add_get("/info", info)
    async with aiohttp.ClientSession() as session, silent_server() as port, serving(new) as new_url:
        passel = follower_passel(tmp_path, session)
        follow(passel, OLD, port)

        async def elected() -> None:  # the election names the next coordinator once the old one is gone
            while passel.coordinator() is not None:
                await asyncio.sleep(0.1)
            follow(passel, NEW, int(new_url.rsplit(":", 1)[1]))
            passel._wake()

        election = asyncio.create_task(elected())
        async with follower_serving(passel) as url, aiohttp.ClientSession() as client:
            async with client.get(f"{url}/info", timeout=aiohttp.ClientTimeout(total=60)) as reply:
                body = await reply.json()
        await election
    assert body == {"answered_by": "new"}


async def test_a_long_download_from_a_live_coordinator_is_not_cut(tmp_path):
    seconds, chunks = LEASE * 3, 30

    async def zip_file(request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse()
        reply.content_length = chunks * 1024
        await reply.prepare(request)
        for _ in range(chunks):
            await asyncio.sleep(seconds / chunks)
            await reply.write(b"z" * 1024)
        return reply

    coordinator = web.Application()
    coordinator.router.add_get("/task/{uuid}/download/all.zip", zip_file)
    async with aiohttp.ClientSession() as session, serving(coordinator) as coordinator_url:
        passel = follower_passel(tmp_path, session)
        peer = follow(passel, OLD, int(coordinator_url.rsplit(":", 1)[1]))
        beating = asyncio.create_task(heartbeats(peer, seconds + 5))
        async with follower_serving(passel) as url, aiohttp.ClientSession() as client:
            async with client.get(f"{url}/task/{UUID}/download/all.zip") as reply:
                body = await reply.read()
        beating.cancel()
    assert len(body) == chunks * 1024


async def test_a_download_is_broken_off_when_its_coordinator_is_declared_gone(tmp_path):
    async def zip_file(request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse()
        reply.content_length = 1024 * 1024
        await reply.prepare(request)
        await reply.write(b"z" * 1024)
        await asyncio.sleep(120)  # the coordinator is cut off part-way
        return reply

    coordinator = web.Application()
    coordinator.router.add_get("/task/{uuid}/download/all.zip", zip_file)
    async with aiohttp.ClientSession() as session, serving(coordinator) as coordinator_url:
        passel = follower_passel(tmp_path, session)
        follow(passel, OLD, int(coordinator_url.rsplit(":", 1)[1]))
        async with follower_serving(passel) as url, aiohttp.ClientSession() as client:
            started = time.monotonic()
            async with client.get(f"{url}/task/{UUID}/download/all.zip",
                                  timeout=aiohttp.ClientTimeout(total=60)) as reply:
                assert reply.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):  # broken off, never taken for a whole file
                    await reply.read()
            took = time.monotonic() - started
    assert took < LEASE + 10


async def test_a_call_to_a_cut_off_coordinator_gives_up_within_a_lease(tmp_path):
    async with aiohttp.ClientSession() as session, silent_server() as port:
        passel = follower_passel(tmp_path, session)
        follow(passel, OLD, port)
        started = time.monotonic()
        with pytest.raises(BoxUnreachable, match="declared gone"):
            await passel.call(None, "/intake/commit", {"uuid": UUID}, timeout=30.0)
    assert time.monotonic() - started < LEASE + 10


class CommitUnanswered(StubElection):
    """A follower's view whose coordinator takes the init, then is cut off before answering the commit."""

    def __init__(self) -> None:
        super().__init__(is_coordinator=False)
        self.answer_commit = False

    async def call(self, box_id: str | None, path: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        if path == "/intake/init":
            return {"task": row_values(Task(uuid=UUID, name="part 3", staged_on="me")), "node_url": None}
        if path == "/intake/commit" and self.answer_commit:
            return {"uuid": UUID}
        raise BoxUnreachable("the coordinator was declared gone while it had the request")


@contextlib.asynccontextmanager
async def receiving_box(tmp_path: Path, source: StubElection) -> AsyncIterator[Receiver]:
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    try:
        async with aiohttp.ClientSession() as session:
            role = Role("me")
            role.attach(source)  # type: ignore[arg-type]
            staging = Staging(tmp_path / "staging", 0)
            staging.open()
            yield Receiver(TaskBook(store, "me"), staging, NodeRegistry(store, session, 1.0, role), role, "")
    finally:
        await store.close()


async def test_a_commit_given_up_on_is_never_delivered_even_after_a_restart(tmp_path):
    source = CommitUnanswered()
    async with receiving_box(tmp_path, source) as receiver:
        await receiver.init({"name": "part 3"}, UUID)
        (receiver.staging.path(UUID) / "IMG_1.JPG").write_bytes(b"jpeg")
        with pytest.raises(CoordinatorUnreachable):
            await receiver.commit(UUID)
        row = row_values(Task(uuid=UUID, staged_on="me"))
        with pytest.raises(CommitAbandoned, match="must not run"):
            await receiver.deliver(row, "http://127.0.0.1:1", [])
    async with receiving_box(tmp_path, source) as restarted:
        with pytest.raises(CommitAbandoned):
            await restarted.deliver(row, "http://127.0.0.1:1", [])
        restarted.uploads[UUID] = Upload(Task(uuid=UUID, staged_on="me"), early=None)  # its replica row says so
        source.answer_commit = True  # its client commits it again, and this time hears the answer
        assert await restarted.commit(UUID) == {"uuid": UUID}
        assert UUID not in restarted.abandoned


async def test_the_deliver_call_refuses_a_commit_given_up_on_and_a_box_it_does_not_follow(tmp_path):
    async with receiving_box(tmp_path, CommitUnanswered()) as receiver:
        receiver.abandoned.add(UUID)

        @web.middleware
        async def signed_by(request: web.Request, handler: Any) -> web.StreamResponse:
            request[PEER_KEY] = request.headers["X-Test-Box"]  # what agent_auth_middleware proves
            return await handler(request)

        app = web.Application(middlewares=[signed_by])
        app[PASSEL_KEY] = SimpleNamespace(state=SimpleNamespace(coordinator_id=NEW))  # type: ignore[assignment]
        app[COORDINATOR_KEY] = SimpleNamespace(receiver=receiver)  # type: ignore[assignment]
        app.router.add_post("/deliver", deliver)
        body = {"task": row_values(Task(uuid=UUID, staged_on="me")), "node_url": "http://127.0.0.1:1", "on_node": []}
        async with serving(app) as url, aiohttp.ClientSession() as client:
            async with client.post(f"{url}/deliver", json=body, headers={"X-Test-Box": NEW}) as reply:
                assert reply.status == 200 and "must not run" in (await reply.json())["error"]
            async with client.post(f"{url}/deliver", json=body, headers={"X-Test-Box": OLD}) as reply:
                assert reply.status == 409 and "follows another coordinator" in (await reply.json())["error"]
