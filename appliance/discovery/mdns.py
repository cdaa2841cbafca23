"""mDNS with python-zeroconf: advertise this box and its nodes, browse for the others.

One AsyncZeroconf per process. Browsing starts at once; advertising waits until the API listens.
mDNS says who exists, not who is alive: a crashed peer stays cached for many minutes, so liveness
comes from heartbeats (heartbeat.py), never from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import psutil
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from appliance.discovery.identity import BoxIdentity

log = logging.getLogger("passel.mdns")
PASSEL_TYPE = "_passel._tcp.local."
NODEODM_TYPE = "_nodeodm._tcp.local."
ALIAS_TYPE = "_http._tcp.local."  # the friendly name rides on a web-UI service, which browsers also show
PROTOCOL_VERSION = "1"
RESCAN_SECONDS = 5.0  # a field laptop often boots before its network is up
RESOLVE_MS = 3000


@dataclass(frozen=True)
class Sighting:
    """A service seen on the network."""

    kind: str  # "passel" or "nodeodm"
    name: str
    addresses: tuple[str, ...]
    port: int
    txt: dict[str, str]


def local_ipv4_addresses() -> list[str]:
    """Addresses to announce: IPv4, not loopback, not link-local."""
    found = []
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET:
                ip = ipaddress.IPv4Address(a.address)
                if not ip.is_loopback and not ip.is_link_local:
                    found.append(str(ip))
    return sorted(set(found))


def _txt(info: AsyncServiceInfo) -> dict[str, str]:
    return {k.decode(errors="replace"): (v or b"").decode(errors="replace") for k, v in info.properties.items()}


class Mdns:
    """Owns the process's AsyncZeroconf, its registrations, browsers and interface re-scans."""

    def __init__(self, identity: BoxIdentity, host: str, on_sighting: Callable[[Sighting], None],
                 on_gone: Callable[[str, str], None]) -> None:
        self.identity = identity
        self.host = host
        self.on_sighting = on_sighting
        self.on_gone = on_gone
        self.aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._registered: dict[str, AsyncServiceInfo] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._rescan: asyncio.Task[None] | None = None
        self._addresses: list[str] = []

    def addresses(self) -> list[str]:
        if self.host not in ("", "0.0.0.0"):
            return [self.host]
        return local_ipv4_addresses()

    async def start(self) -> None:
        """Join multicast on every IPv4 interface and start browsing; never InterfaceChoice.Default,
        which fails outright on a box with no multicast route."""
        interfaces = [self.host] if self.host not in ("", "0.0.0.0") else "all"
        from zeroconf import InterfaceChoice
        self.aiozc = AsyncZeroconf(interfaces=InterfaceChoice.All if interfaces == "all" else interfaces,
                                   ip_version=IPVersion.V4Only)
        self._addresses = self.addresses()
        self._browser = AsyncServiceBrowser(self.aiozc.zeroconf, [PASSEL_TYPE, NODEODM_TYPE],
                                           handlers=[self._on_change])
        self._rescan = asyncio.create_task(self._rescan_forever(), name="mdns-rescan")

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            self.on_gone("passel" if service_type == PASSEL_TYPE else "nodeodm", name)
            return
        job = asyncio.ensure_future(self._resolve(service_type, name))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        assert self.aiozc is not None
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(self.aiozc.zeroconf, RESOLVE_MS):
            return
        addresses = tuple(a for a in info.parsed_addresses(IPVersion.V4Only) if not a.startswith("169.254."))
        if not addresses or info.port is None:
            return
        kind = "passel" if service_type == PASSEL_TYPE else "nodeodm"
        self.on_sighting(Sighting(kind, name, addresses, info.port, _txt(info)))

    def _info(self, service_type: str, instance: str, port: int, txt: dict[str, str],
              server: str | None = None) -> AsyncServiceInfo:
        return AsyncServiceInfo(service_type, f"{instance}.{service_type}", port=port, properties=txt,
                                server=server or self.identity.hostname,
                                addresses=[socket.inet_aton(a) for a in self._addresses])

    async def publish(self, key: str, service_type: str, instance: str, port: int, txt: dict[str, str],
                      server: str | None = None) -> None:
        """Register a service, or update it in place (zeroconf has no TXT setter: a new info, same name)."""
        assert self.aiozc is not None
        info = self._info(service_type, instance, port, txt, server)
        if key in self._registered:
            old = self._registered[key]
            info = AsyncServiceInfo(service_type, old.name, port=port, properties=txt, server=old.server,
                                    addresses=[socket.inet_aton(a) for a in self._addresses])
            await self.aiozc.async_update_service(info)
        else:
            await (await self.aiozc.async_register_service(info, allow_name_change=True))
        self._registered[key] = info

    def registered_keys(self) -> list[str]:
        return list(self._registered)

    async def withdraw(self, key: str) -> None:
        """Unregister one service, sending its goodbye."""
        info = self._registered.pop(key, None)
        if info is not None and self.aiozc is not None:
            await (await self.aiozc.async_unregister_service(info))

    async def _rescan_forever(self) -> None:
        while True:
            await asyncio.sleep(RESCAN_SECONDS)
            assert self.aiozc is not None
            try:
                await self.aiozc.async_update_interfaces()
            except OSError as exc:
                log.debug("Interface re-scan failed: %s", exc)
            addresses = self.addresses()
            if addresses != self._addresses:
                log.info("Network addresses changed: %s -> %s; announcing again", self._addresses or "none", addresses)
                self._addresses = addresses
                for key, info in list(self._registered.items()):
                    await self.publish(key, info.type, "", info.port or 0, _txt(info))

    async def stop(self) -> None:
        """Cancel our tasks, await the goodbyes, then close (python-zeroconf's lifecycle order)."""
        if self._rescan is not None:
            self._rescan.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rescan
        for job in list(self._jobs):
            job.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
        if self.aiozc is not None:
            for key in list(self._registered):
                await self.withdraw(key)
            await self.aiozc.async_close()
