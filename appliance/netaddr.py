"""This box's own address, for the URL that nodes use to call the passel back."""

from __future__ import annotations

import ipaddress
import socket

import psutil


def primary_ipv4() -> str:
    """The first non-loopback, non-link-local IPv4 address, or 127.0.0.1 on a box with no network."""
    for name, addresses in sorted(psutil.net_if_addrs().items()):
        for address in addresses:
            if address.family != socket.AF_INET:
                continue
            ip = ipaddress.IPv4Address(address.address)
            if not ip.is_loopback and not ip.is_link_local:
                return str(ip)
    return "127.0.0.1"


def default_public_url(host: str, port: int) -> str:
    """`http://<address>:<port>`, with the box's own address when listening on every interface."""
    if host in ("", "0.0.0.0", "::"):
        host = primary_ipv4()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
