"""Run a simulated NodeODM: in-process for tests and benchmarks (SimNode), or until stopped (CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from appliance.simnode.app import create_simnode_app
from appliance.simnode.settings import SimnodeSettings

log = logging.getLogger("passel.simnode")


class SimNode:
    """A simulated NodeODM served on its own port; `port=0` picks a free one."""

    def __init__(self, settings: SimnodeSettings | None = None) -> None:
        self.settings = settings or SimnodeSettings()
        self.app = create_simnode_app(self.settings)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def start(self) -> int:
        """Bind and serve; return the port actually bound."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.host, self.settings.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        """Stop serving and release the engine's folders."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _own_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> list[signal.Signals]:
    """Stop on SIGTERM/SIGINT unless the caller (e.g. the CLI) already handles them."""
    owned = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                owned.append(sig)
    return owned


async def serve_simnode(settings: SimnodeSettings) -> None:
    """Serve until cancelled or sent SIGTERM/SIGINT."""
    node = SimNode(settings)
    await node.start()
    log.info("Simulated NodeODM '%s' listening on %s (%d slot%s, %g s/image)", settings.name, node.url,
             settings.slots, "" if settings.slots == 1 else "s", settings.seconds_per_image)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    owned = _own_signals(loop, stop)
    try:
        await stop.wait()
    finally:
        for sig in owned:
            loop.remove_signal_handler(sig)
        await node.stop()
        log.info("Simulated NodeODM '%s' stopped", settings.name)
