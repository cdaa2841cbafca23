"""This box's own addresses, and which of another box's addresses to call it on.

A bare switch with no DHCP server leaves a box only a link-local address (169.254.0.0/16), so
link-local addresses count like any other: they are announced, resolved and used. A routable
address is preferred when a box has both, because it also reaches boxes behind a router.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import ifaddr  # what python-zeroconf itself uses to list interfaces


def own_interfaces() -> list[ipaddress.IPv4Interface]:
    """Every IPv4 address of this box with its network, loopback left out. (Passel uses no IPv6:
    docs/field-networks.md says why.)"""
    found = {ipaddress.IPv4Interface(f"{ip.ip}/{ip.network_prefix}")
             for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4}
    return [i for i in found if not i.ip.is_loopback]


def local_ipv4_addresses() -> list[str]:
    """This box's IPv4 addresses to announce, loopback left out: routable ones first, then link-local."""
    return [str(ip) for ip in sorted((i.ip for i in own_interfaces()), key=lambda ip: (ip.is_link_local, ip))]


def primary_ipv4() -> str:
    """The address to give out for this box: a routable one if it has one, else a link-local one
    (a bare switch), else 127.0.0.1 (no network at all)."""
    return next(iter(local_ipv4_addresses()), "127.0.0.1")


def best_first(addresses: Iterable[str], ours: list[ipaddress.IPv4Interface] | None = None) -> list[str]:
    """Another box's addresses, the one most likely to answer from here first.

    An address on one of this box's own networks comes before one behind a router, and a routable
    one before a link-local one. An address that this box holds itself comes last: two boxes can
    carry the same private bridge (Docker's 172.17.0.1), and calling it would reach this box.
    For this box's own announcements every address is its own, so the other rules decide.
    """
    ours = own_interfaces() if ours is None else ours
    held = {i.ip for i in ours}

    def rank(text: str) -> tuple[bool, bool, bool]:
        ip = ipaddress.ip_address(text)
        on_link = any(ip in i.network for i in ours)
        return ip in held, not on_link, ip.is_link_local

    return sorted(dict.fromkeys(addresses), key=rank)  # stable: zeroconf lists the newest first


def default_public_url(host: str, port: int) -> str:
    """`http://<address>:<port>`, with the box's own address when listening on every interface."""
    if host in ("", "0.0.0.0", "::"):
        host = primary_ipv4()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
