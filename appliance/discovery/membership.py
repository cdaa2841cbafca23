"""Who is in the passel, as this box knows it: sightings from mDNS, liveness from heartbeats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.clock import boottime
from appliance.discovery.election import FOLLOWER, Member

HEARTBEAT_SECONDS = 1.0
LEASE_SECONDS = 5.0  # no heartbeat for this long: the peer is gone (and a coordinator loses its role)


@dataclass
class Peer:
    id: str
    address: str
    port: int
    name: str = ""
    priority: int = 0
    term: int = 0
    role: str = FOLLOWER
    coordinator_id: str | None = None
    version: str = ""
    handover: bool = False  # it holds task rows it wrote as coordinator, to hand over once it follows another
    followers: int = 0  # live boxes following it, as it counts them
    unfinished: int = 0  # tasks in its table not yet finished
    succeeds: str | None = None  # the coordinator that handed it the role by hand
    last_heard: float | None = None  # boottime of the last heartbeat exchanged with it
    said: tuple[str, int] = ("", 0)  # (its process, its count) of the newest heartbeat taken in
    foreign: str = ""  # why its calls are refused: it does not hold this passel's key

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def alive(self, now: float) -> bool:
        return not self.foreign and self.last_heard is not None and now - self.last_heard < LEASE_SECONDS

    def member(self) -> Member:
        return Member(id=self.id, priority=self.priority, term=self.term, role=self.role,
                      coordinator=self.coordinator_id, followers=self.followers, unfinished=self.unfinished,
                      succeeds=self.succeeds)


def _count(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class Membership:
    """Peers by id; never includes this box itself."""

    def __init__(self, self_id: str) -> None:
        self.self_id = self_id
        self.peers: dict[str, Peer] = {}

    def sighted(self, peer_id: str, address: str, port: int, name: str = "") -> Peer | None:
        """mDNS says a box exists here; it is not alive until it answers a heartbeat. A live box
        announced at a new address is followed there at once: its old address may be gone (DHCP
        replaced its link-local one), and if both boxes moved no heartbeat would ever arrive."""
        if peer_id == self.self_id or not peer_id:
            return None
        peer = self.peers.setdefault(peer_id, Peer(id=peer_id, address=address, port=port, name=name))
        peer.address, peer.port = address, port
        return peer

    def heard(self, payload: dict[str, Any], address: str) -> Peer | None:
        """Record a heartbeat (sent to us, or a reply to ours)."""
        peer_id = str(payload.get("id", ""))
        if not peer_id or peer_id == self.self_id:
            return None
        peer = self.peers.setdefault(peer_id, Peer(id=peer_id, address=address, port=int(payload.get("port", 0))))
        said = (str(payload.get("boot", "")), _count(payload.get("seq")))
        if said[0] and said[0] == peer.said[0] and said[1] <= peer.said[1]:
            return peer  # older than what it last said: held up in a cut link, and delivered once it healed
        peer.said = said
        peer.address = address
        peer.port = int(payload.get("port") or peer.port)
        peer.name = str(payload.get("name", peer.name))
        peer.priority = int(payload.get("priority", 0))
        peer.term = int(payload.get("term", 0))
        peer.role = str(payload.get("role", FOLLOWER))
        peer.coordinator_id = payload.get("coordinator") or None
        peer.version = str(payload.get("version", ""))
        peer.handover = bool(payload.get("handover"))
        peer.followers = int(payload.get("followers") or 0)  # absent from an older box: counted as none
        peer.unfinished = int(payload.get("unfinished") or 0)
        peer.succeeds = payload.get("succeeds") or None
        peer.last_heard = boottime()
        peer.foreign = ""
        return peer

    def mark_foreign(self, peer: Peer, reason: str) -> None:
        """Seen on the network but not in the passel; shown as such, never elected, never given work."""
        peer.foreign, peer.last_heard = reason, None

    def alive(self) -> list[Peer]:
        now = boottime()
        return [p for p in self.peers.values() if p.alive(now)]
