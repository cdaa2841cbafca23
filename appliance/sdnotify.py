"""Tell systemd when the API is ready (`Type=notify`), so units ordered after Passel, and
`systemctl start passel`, wait for a box that answers rather than for a process that exists.

The protocol is one datagram on the AF_UNIX socket named by `$NOTIFY_SOCKET`; without that variable
(a terminal, the tests) nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from appliance.config import Config

log = logging.getLogger("passel.systemd")
LISTEN_POLL_SECONDS = 0.02


def notify(*fields: str) -> bool:
    """Send `KEY=value` fields to systemd; False when not under systemd or the socket is gone."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract-namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError as exc:
        log.warning("Could not tell systemd %s: %s", fields[0], exc)
        return False
    return True


async def _wait_listening(host: str, port: int) -> None:
    """aiohttp opens its sockets after every start-up hook has run, so readiness is checked from outside."""
    target = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    while True:
        try:
            _, writer = await asyncio.open_connection(target, port)
        except OSError:
            await asyncio.sleep(LISTEN_POLL_SECONDS)
            continue
        writer.close()
        return


def systemd_ctx(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: READY=1 once the API listens, STOPPING=1 when shutting down."""
    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        if not os.environ.get("NOTIFY_SOCKET"):
            yield
            return

        async def announce() -> None:
            await _wait_listening(config.host, config.port)
            notify("READY=1", f"STATUS=Serving the passel API on port {config.port}")
            log.info("Told systemd that Passel is ready on port %d", config.port)

        job = asyncio.create_task(announce(), name="systemd-ready")
        yield
        notify("STOPPING=1", "STATUS=Stopping: finishing requests and saving state")
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
    return ctx
