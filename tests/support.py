"""Run real aiohttp servers on loopback in a background thread, for synchronous clients like PyODM."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from appliance.cluster.coordinator import Coordinator
from appliance.cluster.registry import NodeRegistry
from appliance.cluster.staging import Staging
from appliance.role import Role
from appliance.store.database import Store

T = TypeVar("T")


class StubElection:
    """The passel's answer about roles (appliance.role.RoleSource), fixed by a test."""

    def __init__(self, is_coordinator: bool = True, followers: list[str] | None = None) -> None:
        self.is_coordinator = is_coordinator
        self.known = followers or []

    def followers(self) -> list[str]:
        return self.known

    def handovers_pending(self) -> bool:
        return False

    def box_alive(self, box_id: str) -> bool:
        return True


@contextlib.asynccontextmanager
async def coordinator_in(tmp_path: Path, box: str = "me", passel: StubElection | None = None) -> AsyncIterator[Coordinator]:
    """A coordinator built as agent.py builds one, in process, with its store and staging under
    `tmp_path`, recovered; alone, or in the roles `passel` gives."""
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    try:
        async with aiohttp.ClientSession() as session:
            role = Role(box)
            if passel is not None:
                role.attach(passel)  # type: ignore[arg-type]
            c = Coordinator(store, NodeRegistry(store, session, 1.0, role), Staging(tmp_path / "staging", 0), "", 3,
                            role)
            await c.recover()
            yield c
    finally:
        await store.close()


class ServerThread:
    """An event loop in a thread serving one aiohttp app on 127.0.0.1 at an ephemeral port."""

    def __init__(self, app_factory: Callable[[], web.Application | Awaitable[web.Application]]) -> None:
        self._factory = app_factory
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)
        self._runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro: Awaitable[T], timeout: float = 60) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return future.result(timeout)

    async def _start(self) -> None:
        app = self._factory()
        self.app = await app if asyncio.iscoroutine(app) else app  # type: ignore[assignment]
        self._runner = web.AppRunner(self.app, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> "ServerThread":
        self._thread.start()
        self.call(self._start())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            try:
                self.call(self._runner.cleanup(), timeout=30)
            except TimeoutError:
                self._dump_tasks()
                raise
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def _dump_tasks(self) -> None:
        """Show what the server's loop is stuck on, to make a hang at shutdown diagnosable."""
        import sys
        for task in asyncio.all_tasks(self.loop):
            print(f"--- {task.get_name()}: {task.get_coro()}", file=sys.stderr)
            task.print_stack(limit=8, file=sys.stderr)
        for thread_id, frame in sys._current_frames().items():
            if thread_id == self._thread.ident:
                import traceback
                print("--- server thread:", "".join(traceback.format_stack(frame, limit=12)), file=sys.stderr)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
