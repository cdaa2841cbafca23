"""mDNS with python-zeroconf: advertise this box and its nodes, browse for the others.

One AsyncZeroconf per process. Browsing starts at once; advertising waits until the API listens.
mDNS says who exists, not who is alive: a crashed peer stays cached for many minutes, so liveness
comes from heartbeats (passel.py), never from here.

Any field network works: link-local addresses (a bare switch, no DHCP server) are announced and used
like routable ones, and a box whose addresses change (DHCP arriving late, a second cable, Wi-Fi
joining) announces its new set within about a second, with no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from appliance.discovery.identity import BoxIdentity
from appliance.netaddr import best_first, local_ipv4_addresses

log = logging.getLogger("passel.mdns")
PASSEL_TYPE = "_passel._tcp.local."
NODEODM_TYPE = "_nodeodm._tcp.local."
ALIAS_TYPE = "_http._tcp.local."  # the friendly name rides on a web-UI service, which browsers also show
PROTOCOL_VERSION = "1"
ADDRESS_POLL_SECONDS = 1.0  # how soon a new or lost address is noticed; listing interfaces is cheap
RESOLVE_MS = 3000
EVERY_INTERFACE = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class Sighting:
    """A service seen on the network; `addresses` best first for reaching it from this box."""

    kind: str  # "passel" or "nodeodm"
    name: str
    addresses: tuple[str, ...]
    port: int
    txt: dict[str, str]


def _txt(info: AsyncServiceInfo) -> dict[str, str]:
    return {k.decode(errors="replace"): (v or b"").decode(errors="replace") for k, v in info.properties.items()}


class Mdns:
    """Owns the process's AsyncZeroconf, its registrations, browser and the watch on this box's addresses."""

    def __init__(self, identity: BoxIdentity, host: str, on_sighting: Callable[[Sighting], None],
                 on_gone: Callable[[str, str], None]) -> None:
        self.identity = identity
        self.host = host
        self.on_sighting = on_sighting
        self.on_gone = on_gone
        self.aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._registered: dict[str, AsyncServiceInfo] = {}
        self._told: dict[str, Sighting] = {}  # the last sighting passed on, by service name
        self._jobs: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._addresses: list[str] = []  # announced
        self._listening: list[str] = []  # zeroconf has sockets for

    def addresses(self) -> list[str]:
        """What this box announces: the one it listens on, or all of its IPv4 ones, link-local included."""
        return local_ipv4_addresses() if self.host in EVERY_INTERFACE else [self.host]

    async def start(self) -> None:
        """Join multicast on every IPv4 interface and start browsing; never InterfaceChoice.Default,
        which fails outright on a box with no multicast route."""
        everywhere = self.host in EVERY_INTERFACE
        self.aiozc = AsyncZeroconf(interfaces=InterfaceChoice.All if everywhere else [self.host],
                                   ip_version=IPVersion.V4Only)
        self._addresses = self._listening = self.addresses()
        log.info("This box's network addresses: %s", ", ".join(self._addresses) or "none yet")
        await self._browse()
        self._watch = asyncio.create_task(self._watch_addresses(), name="mdns-addresses")

    async def _browse(self) -> None:
        """(Re)start the browser: a fresh one asks the network at once, so boxes on a new interface
        are found now rather than at the old browser's next query, minutes later."""
        assert self.aiozc is not None
        if self._browser is not None:
            await self._browser.async_cancel()
        self._browser = AsyncServiceBrowser(self.aiozc.zeroconf, [PASSEL_TYPE, NODEODM_TYPE],
                                            handlers=[self._on_change])

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            self._told.pop(name.lower(), None)
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
        # This box's own services are where it is now; the cache may still hold an address it just lost.
        own = any(mine.name.lower() == name.lower() for mine in self._registered.values())
        addresses = tuple(best_first(self._addresses if own else info.parsed_addresses(IPVersion.V4Only)))
        if not addresses or info.port is None:
            return
        kind = "passel" if service_type == PASSEL_TYPE else "nodeodm"
        sighting = Sighting(kind, name, addresses, info.port, _txt(info))
        if self._told.get(name.lower()) != sighting:  # a restarted browser sees every service again
            self._told[name.lower()] = sighting
            self.on_sighting(sighting)

    def _info(self, service_type: str, name: str, port: int, txt: dict[str, str], server: str) -> AsyncServiceInfo:
        return AsyncServiceInfo(service_type, name, port=port, properties=txt, server=server,
                                parsed_addresses=self._addresses)

    async def publish(self, key: str, service_type: str, instance: str, port: int, txt: dict[str, str],
                      server: str | None = None) -> None:
        """Register a service, or update it in place (zeroconf has no TXT setter: a new info, same name)."""
        assert self.aiozc is not None
        old = self._registered.get(key)
        if old is not None:
            info = self._info(service_type, old.name, port, txt, old.server or self.identity.hostname)
            await self.aiozc.async_update_service(info)
        else:
            info = self._info(service_type, f"{instance}.{service_type}", port, txt, server or self.identity.hostname)
            await (await self.aiozc.async_register_service(info, allow_name_change=True))
        self._registered[key] = info

    def registered_keys(self) -> list[str]:
        return list(self._registered)

    async def withdraw(self, key: str) -> None:
        """Unregister one service, sending its goodbye."""
        info = self._registered.pop(key, None)
        if info is not None and self.aiozc is not None:
            await (await self.aiozc.async_unregister_service(info))

    async def _watch_addresses(self) -> None:
        """Follow this box's addresses: a field laptop often boots before its network is up, DHCP may
        answer after a link-local address was taken, and a cable or Wi-Fi may join or leave."""
        while True:
            await asyncio.sleep(ADDRESS_POLL_SECONDS)
            try:
                await self._follow(self.addresses())
            except Exception:  # keep watching: a box that stops following its addresses drops out
                log.exception("Could not announce this box's new network addresses; trying again in a second")

    async def _follow(self, addresses: list[str]) -> None:
        """Announce a new address set, then open zeroconf's sockets on the new interfaces (which
        re-announce every service, now with the new set) and look for boxes again."""
        assert self.aiozc is not None
        if addresses != self._addresses:
            log.info("This box's network addresses changed from %s to %s; telling the other boxes",
                     ", ".join(self._addresses) or "none", ", ".join(addresses) or "none")
            before, self._addresses = self._addresses, addresses
            try:
                for key, info in list(self._registered.items()):
                    await self.publish(key, info.type, "", info.port or 0, _txt(info))
            except BaseException:
                self._addresses = before  # so the next poll announces them again
                raise
        if addresses != self._listening:
            await self.aiozc.async_update_interfaces()
            self._listening = addresses
            await self._browse()

    async def stop(self) -> None:
        """Cancel our tasks, await the goodbyes, then close (python-zeroconf's lifecycle order)."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for job in list(self._jobs):
            job.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
        if self.aiozc is not None:
            for key in list(self._registered):
                await self.withdraw(key)
            await self.aiozc.async_close()
