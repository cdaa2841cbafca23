"""The passel as one box takes part in it: heartbeats out and in, the election, and role changes."""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from appliance import __version__
from appliance.clock import JumpDetector, boottime
from appliance.discovery.election import COORDINATOR, FOLLOWER, Decision, Member, elect, rivals
from appliance.discovery.identity import BoxIdentity
from appliance.discovery.membership import HEARTBEAT_SECONDS, LEASE_SECONDS, Membership, Peer
from appliance.discovery.peer_client import PeerClient
from appliance.discovery.state import RoleState, load_term, save_term
from appliance.discovery.trust import Trust, Untrusted
from appliance.role import BoxUnreachable

log = logging.getLogger("passel.election")
AGENT_API = "/-/agent/v1"
HEARTBEAT_TIMEOUT = aiohttp.ClientTimeout(total=HEARTBEAT_SECONDS)
SETTLE_SECONDS = LEASE_SECONDS  # listen this long after a start or a wake-up before claiming

RoleListener = Callable[[str, str], Awaitable[None]]
T = TypeVar("T")


class TransferRefused(Exception):
    """The role cannot be handed to that box now; the message says why."""


class Passel:
    """This box's membership and role, driven by a one-second tick."""

    def __init__(self, identity: BoxIdentity, state_dir: Path, priority: int, api_port: int,
                 session: aiohttp.ClientSession, trust: Trust, holds_rows_to_hand_over: Callable[[], bool],
                 unfinished_tasks: Callable[[], int]) -> None:
        self.identity = identity
        self.state_dir = state_dir
        self.priority = priority
        self.api_port = api_port
        self.trust = trust
        self.peers = PeerClient(session, trust, lambda: self.state.term)
        self.membership = Membership(identity.id)
        self.state = RoleState(term=load_term(state_dir))
        self.listeners: list[RoleListener] = []
        self.before_leading: list[Callable[[], Awaitable[None]]] = []  # run before the role is visible
        self._settle_from = boottime()
        self._jumps = JumpDetector()
        self.sleeping = False
        self.on_sleep: list[Callable[[], Awaitable[None]]] = []
        self.on_wake: list[Callable[[], Awaitable[None]]] = []
        self._changed = asyncio.Event()
        # each heartbeat says which process sent it and when, in order: TCP delivers one held up in a
        # cut link once the link heals, and its stale news (a follower, nothing to hand over) must not
        # overwrite what the box said since (membership.heard)
        self._boot, self._said = uuid.uuid4().hex[:12], itertools.count(1)
        # whether this box holds task rows it wrote as coordinator, still to hand over (handover.py)
        self.holds_rows_to_hand_over = holds_rows_to_hand_over
        # how many tasks in this box's table are not finished: what its side did, when two coordinators meet
        self.unfinished_tasks = unfinished_tasks
        self._rivals: set[str] = set()  # the other coordinators heard at the last tick
        self._succeeds: str | None = None  # the coordinator that handed this box the role by hand, while it holds it

    # -- what others see -------------------------------------------------------------------
    @property
    def is_coordinator(self) -> bool:
        return self.state.role == COORDINATOR

    def followers(self) -> list[str]:
        """The live boxes that follow this one (appliance.role.RoleSource)."""
        return [p.id for p in self.membership.alive() if p.coordinator_id == self.identity.id]

    def handovers_pending(self) -> bool:
        """A live box says it still holds tasks it accepted as coordinator."""
        return any(p.handover for p in self.membership.alive())

    def box_alive(self, box_id: str) -> bool:
        peer = self.membership.peers.get(box_id)
        return peer is not None and peer.alive(boottime())

    async def call(self, box_id: str | None, path: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        """A signed JSON call to a box's agent API: `box_id`, or the coordinator when None, waiting out
        an election as a relayed request does (a box that is gone is tried once more after it). A call to
        the coordinator is cut when the coordinator is declared gone while it is in flight: the caller
        hears it then, not after `timeout`, since the call may have been acted on (BoxUnreachable)."""
        failed: str | None = None
        for _ in range(2 if box_id is None else 1):
            if box_id is None and not await self.wait_for_coordinator(LEASE_SECONDS + 2, not_id=failed):
                raise BoxUnreachable("the passel is choosing its coordinator")
            if box_id is None and self.is_coordinator:
                raise BoxUnreachable("this box has just become the coordinator")
            peer = self.coordinator() if box_id is None else self.membership.peers.get(box_id)
            if peer is None or not peer.alive(boottime()):
                raise BoxUnreachable("no coordinator is known" if box_id is None else f"box {box_id} is not heard from")
            request = self.peers.call("POST", f"{peer.url}{AGENT_API}{path}", json_body=body,
                                      timeout=aiohttp.ClientTimeout(total=timeout, connect=5))
            try:
                status, data = await (request if box_id is not None else while_alive(peer, request))
            except aiohttp.ClientConnectorError as exc:
                failed = peer.id  # nothing was sent: its process is gone; the next coordinator gets it
                error = f"{peer.name or peer.id} at {peer.url} did not answer: {exc}"
                continue
            except (aiohttp.ClientError, TimeoutError, Untrusted) as exc:
                raise BoxUnreachable(f"{peer.name or peer.id} at {peer.url} did not answer: {exc or 'timeout'}") from None
            if status != 200 or not isinstance(data, dict):
                refusal = data.get("error") if isinstance(data, dict) else None
                raise BoxUnreachable(f"{peer.name or peer.id} refused: {refusal or f'HTTP {status}'}")
            return data
        raise BoxUnreachable(error)

    def me(self) -> Member:
        return Member(id=self.identity.id, priority=self.priority, term=self.state.term, role=self.state.role,
                      coordinator=self.state.coordinator_id, followers=len(self.followers()),
                      unfinished=self.unfinished_tasks(), succeeds=self._succeeds)

    def payload(self) -> dict[str, Any]:
        return {"v": 1, "id": self.identity.id, "name": self.identity.name, "term": self.state.term,
                "role": self.state.role, "priority": self.priority, "coordinator": self.state.coordinator_id,
                "port": self.api_port, "version": __version__, "handover": self.holds_rows_to_hand_over(),
                "followers": len(self.followers()), "unfinished": self.unfinished_tasks(), "succeeds": self._succeeds,
                "boot": self._boot, "seq": next(self._said)}

    def coordinator(self) -> Peer | None:
        """The live coordinator, when it is another box."""
        peer = self.membership.peers.get(self.state.coordinator_id or "")
        return peer if peer is not None and peer.alive(boottime()) else None

    async def wait_for_coordinator(self, timeout: float, not_id: str | None = None) -> bool:
        """Wait (bounded) until some box, other than `not_id`, is coordinator; True when one is."""
        deadline = boottime() + timeout

        def ready() -> bool:
            peer = self.coordinator()
            return self.is_coordinator or (peer is not None and peer.id != not_id)

        while not ready():
            remaining = deadline - boottime()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                return False
        return True

    # -- heartbeats ------------------------------------------------------------------------
    def receive(self, payload: dict[str, Any], address: str) -> dict[str, Any]:
        """A (verified) heartbeat arrived; note the sender and any newer term, and answer with ours."""
        peer = self.membership.heard(payload, address)
        if peer is not None and peer.term > self.state.term and peer.role == COORDINATOR:
            self._wake()
        return self.payload()

    async def greet(self, peer: Peer) -> None:
        """Heartbeat a newly seen box at once."""
        await self._beat(peer)

    async def _beat(self, peer: Peer) -> None:
        try:
            status, reply = await self.peers.call("POST", f"{peer.url}{AGENT_API}/heartbeat", json_body=self.payload(),
                                                  timeout=HEARTBEAT_TIMEOUT)
        except Untrusted as exc:
            self.membership.mark_foreign(peer, str(exc))
            return
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return  # silence is the signal: the lease runs out
        if status == 200 and isinstance(reply, dict) and reply.get("id") == peer.id:
            self.membership.heard(reply, peer.address)

    # -- the election ----------------------------------------------------------------------
    async def tick(self) -> None:
        if self.sleeping:
            return
        if self._jumps.jumped():
            log.info("This box was asleep; listening for the passel before taking any role")
            self._settle_from = boottime()
        await asyncio.gather(*(self._beat(p) for p in list(self.membership.peers.values())))
        settled = boottime() - self._settle_from >= SETTLE_SECONDS
        me, alive = self.me(), self.membership.alive()
        members = [p.member() for p in alive]
        decision = elect(me, members, settled)
        contested = {m.id for m in rivals(me, members)}
        self._report_meeting(me, decision, [p for p in alive if p.id in contested])
        await self.apply(decision)

    def _report_meeting(self, me: Member, decision: Decision, contested: list[Peer]) -> None:
        """Say once, in words a technician can follow, which coordinator kept the role when two met."""
        new = [p for p in contested if p.id not in self._rivals]
        self._rivals = {p.id for p in contested}
        if me.role != COORDINATOR:
            return

        def side(m: Member | Peer) -> str:
            return f"{m.followers + 1} box(es), {m.unfinished} unfinished task(s), term {m.term}"
        if decision.role == COORDINATOR:
            for peer in new:
                log.info("Met coordinator %s (%s); this box (%s) keeps the role at term %d, and %s steps down",
                         peer.name or peer.id, side(peer), side(me), decision.term, peer.name or peer.id)
            return
        winner = next(p for p in contested if p.id == decision.coordinator_id)  # a coordinator loses only to one it hears
        if winner.succeeds == self.identity.id:
            log.info("Box %s took over the coordinator role from this box; following it", winner.name or winner.id)
            return
        log.info("Coordinator %s (%s) keeps the role; this box (%s) steps down and hands its tasks over",
                 winner.name or winner.id, side(winner), side(me))

    async def apply(self, decision: Decision) -> None:
        before = (self.state.role, self.state.coordinator_id)
        giver = self.coordinator()  # alive and coordinator as this box takes the role only in a hand-over by hand
        if decision.role == COORDINATOR and self.state.role != COORDINATOR:
            for prepare in self.before_leading:
                await prepare()
        if decision.term > self.state.term:
            save_term(self.state_dir, decision.term)
        self.state.term = max(self.state.term, decision.term)
        self.state.role, self.state.coordinator_id = decision.role, decision.coordinator_id
        if self.state.role != before[0]:
            handed = giver if self.is_coordinator and giver is not None and giver.role == COORDINATOR else None
            self._succeeds = handed.id if handed is not None else None
        if (self.state.role, self.state.coordinator_id) == before:
            return
        old_leader = self.membership.peers.get(before[1] or "")
        if old_leader is not None and not old_leader.alive(boottime()):
            log.info("Coordinator %s has not answered heartbeats for %.0f s; it is considered gone",
                     old_leader.name, LEASE_SECONDS)
        if self.state.role == COORDINATOR:
            log.info("This box (%s) is now the coordinator, term %d", self.identity.name, self.state.term)
        elif self.state.coordinator_id:
            peer = self.membership.peers.get(self.state.coordinator_id)
            log.info("Following coordinator %s at %s, term %d", peer.name if peer else "?",
                     peer.url if peer else "?", self.state.term)
        else:
            log.info("No live coordinator; waiting for the best-placed box to claim the role")
        self._wake()
        if before[0] == COORDINATOR and (leader := self.coordinator()) is not None:
            # at once, not at the next tick: the winner may not have heard this box yet, and must know
            # it holds tasks to hand over, to wait for them rather than answer a client not-found
            await self._beat(leader)
        for listener in self.listeners:
            await listener(before[0], self.state.role)

    def _wake(self) -> None:
        self._changed.set()

    async def run_forever(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("Election tick failed")
            await asyncio.sleep(HEARTBEAT_SECONDS)

    # -- suspend and resume ------------------------------------------------------------------
    async def sleep(self) -> None:
        """Leave the passel before a suspend: hand the role to the best live box, then go quiet."""
        if self.is_coordinator:
            heirs = sorted(self.membership.alive(), key=lambda p: (p.priority, p.id), reverse=True)
            for heir in heirs:
                try:
                    await self.transfer(heir.id)
                    break
                except TransferRefused as exc:
                    log.info("Could not hand the role to %s before sleeping: %s", heir.name, exc)
        self.sleeping = True
        for hook in self.on_sleep:
            await hook()
        log.info("This box is going to sleep; it said goodbye to the passel")

    async def wake(self) -> None:
        """Rejoin after a resume: listen first (like a fresh start), then take part again."""
        self.sleeping = False
        self._settle_from = boottime()
        for hook in self.on_wake:
            await hook()
        log.info("This box woke up and is rejoining the passel")

    # -- handing the role over by hand -----------------------------------------------------
    async def transfer(self, target_id: str) -> None:
        """Give the role to a live box: it takes term + 1, and we follow it."""
        if not self.is_coordinator:
            raise TransferRefused("Only the coordinator can hand over its role")
        if target_id == self.identity.id:
            return
        peer = self.membership.peers.get(target_id)
        if peer is None or not peer.alive(boottime()):
            raise TransferRefused(f"Box {target_id} is not alive in this passel")
        term = self.state.term + 1
        try:
            _, answer = await self.peers.call("POST", f"{peer.url}{AGENT_API}/takeover",
                                              json_body={"term": term, "from": self.identity.id},
                                              timeout=aiohttp.ClientTimeout(total=10))
        except (aiohttp.ClientError, TimeoutError, ValueError, Untrusted) as exc:
            raise TransferRefused(f"Box {peer.name} did not answer: {exc}") from None
        if not isinstance(answer, dict) or not answer.get("accepted"):
            raise TransferRefused(str(answer.get("error", "refused")))
        peer.role, peer.term = COORDINATOR, term
        await self.apply(Decision(FOLLOWER, target_id, term))

    async def take_over(self, term: int, sender: str) -> None:
        """Accept the role from the coordinator; a stale term is refused (the fence)."""
        if term <= self.state.term:
            raise TransferRefused(f"Term {term} is not newer than {self.state.term}")
        await self.apply(Decision(COORDINATOR, self.identity.id, term))
        log.info("Took over the coordinator role from %s by hand", sender)


async def while_alive(peer: Peer, request: Awaitable[T]) -> T:
    """Await a request to the coordinator `peer`, cut as soon as this box declares it gone (its lease
    ran out): a client is then answered within a lease, not after the request's own timeout. While it
    answers heartbeats it is left to answer, even once it handed the role on (a transfer is answered
    after that), and a long download from it runs on. Raises BoxUnreachable."""
    work = asyncio.ensure_future(request)
    try:
        while True:
            done, _ = await asyncio.wait({work}, timeout=HEARTBEAT_SECONDS / 4)
            if done:
                return work.result()
            if not peer.alive(boottime()):
                break
    finally:
        if not work.done():
            work.cancel()
            await asyncio.wait({work})
    log.info("Coordinator %s at %s was declared gone while a request to it was in flight; the request was cut",
             peer.name or peer.id, peer.url)
    raise BoxUnreachable(f"the coordinator {peer.name or peer.id} at {peer.url} was declared gone while it had "
                         "the request")


PASSEL_KEY: web.AppKey[Passel] = web.AppKey("passel")  # where the app holds it
PEER_KEY: web.RequestKey[str] = web.RequestKey("peer")  # the box id a signed box-to-box request proved
