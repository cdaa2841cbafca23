"""Wires discovery into the app: mDNS, the election loop, role changes and hand-overs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from appliance.background import background
from appliance.admin_password import ADMIN_PASSWORD_KEY
from appliance.cluster.coordinator import COORDINATOR_KEY, Coordinator
from appliance.cluster.reconciler import RECONCILER_KEY
from appliance.cluster.tasks import GONE_PHASES
from appliance.config import Config
from appliance.discovery.election import COORDINATOR
from appliance.discovery.identity import IDENTITY_KEY
from appliance.discovery.mdns import ALIAS_TYPE, NODEODM_TYPE, PASSEL_TYPE, PROTOCOL_VERSION, Mdns, Sighting
from appliance.discovery.passel import PASSEL_KEY, Passel
from appliance.discovery.trust import Trust, Untrusted, load_or_create_key
from appliance.nodeodm.client import NodeClient, NodeError, NodeUnreachable
from appliance.relay import RELAY_SESSION_KEY
from appliance.replication.feed import REPLICA_KEY, ReplicaFollower
from appliance.replication.handover import hand_over_all, own_rows
from appliance.replication.password import agree
from appliance.replication.rounds import CoordinatorRounds
from appliance.store.models import Phase

log = logging.getLogger("passel.discovery")
DEFAULT_SHARE = "http://127.0.0.1:3001"
SYNC_SECONDS = 1.0
LONG_POLL_SECONDS = 3.0  # see replication.LIVE_SECONDS
SHARE_RECHECK_SECONDS = 60.0
LISTEN_WAIT_SECONDS = 15.0
TAKEOVER_POLL_TIMEOUT = aiohttp.ClientTimeout(total=1.5)


async def _answers(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        await NodeClient(session, url).info()
        return True
    except (NodeError, NodeUnreachable, ValueError):
        return False


async def _wait_listening(host: str, port: int) -> None:
    """Advertise only once the API accepts connections (Home Assistant's 'advertise late')."""
    target = "127.0.0.1" if host in ("", "0.0.0.0") else host
    deadline = asyncio.get_running_loop().time() + LISTEN_WAIT_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        try:
            _, writer = await asyncio.open_connection(target, port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)


def unfinished_tasks(coordinator: Coordinator) -> int:
    """Tasks in this box's table not finished, removed or lost: the work in hand that decides, with the
    number of boxes, which coordinator keeps the role when two meet (discovery/election.py)."""
    return sum(t.phase not in (Phase.FINISHED, *GONE_PHASES) for t in coordinator.book.tasks.values())


def discovery_ctx(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        coordinator = app[COORDINATOR_KEY]
        registry = coordinator.registry
        session = registry.session
        identity = app[IDENTITY_KEY]
        trust = Trust(load_or_create_key(config.key, config.state_dir), identity.id)
        passel = Passel(identity, config.state_dir, config.priority, config.port, session, trust,
                        holds_rows_to_hand_over=lambda: next(own_rows(coordinator), None) is not None,
                        unfinished_tasks=lambda: unfinished_tasks(coordinator))
        app[PASSEL_KEY] = passel
        app[RELAY_SESSION_KEY] = relay_session = aiohttp.ClientSession(auto_decompress=False)
        coordinator.role.attach(passel)
        pending: set[asyncio.Task[None]] = set()

        def spawn(coro) -> None:
            job = asyncio.ensure_future(coro)
            pending.add(job)
            job.add_done_callback(pending.discard)

        offered: dict[str, set[tuple[str, str]]] = {}  # box id -> NodeODMs it advertises (url, its agent)

        def sighted(s: Sighting) -> None:
            if s.kind == "passel":
                peer = passel.membership.sighted(s.txt.get("id", ""), s.addresses[0], s.port, s.txt.get("name", ""))
                if peer is not None:
                    spawn(passel.greet(peer))  # a heartbeat now, not at the next tick: joining takes one round trip
            elif s.txt.get("box"):
                agent = f"http://{s.addresses[0]}:{s.txt.get('agent', config.port)}"
                offered.setdefault(s.txt["box"], set()).add((f"http://{s.addresses[0]}:{s.port}", agent))
                spawn(adopt_trusted_nodes())

        async def adopt_trusted_nodes() -> None:
            """Use a NodeODM only once the box sharing it has proved it holds the passel key."""
            trusted = {p.id for p in passel.membership.alive()} | {identity.id}
            for box in trusted & offered.keys():
                for url, agent in offered.pop(box, set()):
                    await registry.ensure(url, source="mdns", agent_url=agent, box=box)

        mdns = Mdns(identity, config.host, sighted, lambda kind, name: None)
        await mdns.start()

        async def publish_self() -> None:
            await mdns.publish("self", PASSEL_TYPE, identity.instance, config.port, {
                "id": identity.id, "v": PROTOCOL_VERSION, "name": identity.name, "port": str(config.port),
                "role": passel.state.role, "term": str(passel.state.term), "priority": str(config.priority)})

        async def on_role(before: str, after: str) -> None:
            await publish_self()
            if after == COORDINATOR:
                await mdns.publish("alias", ALIAS_TYPE, "Passel", config.port, {"path": "/"},
                                   server=config.alias.rstrip(".") + ".")
                coordinator.dispatcher.wake()
            else:
                await mdns.withdraw("alias")
                if before == COORDINATOR:
                    await coordinator.dispatcher.pause()
        passel.listeners.append(on_role)
        # Know which nodes answer before answering clients as coordinator (a dead box's node times out fast).
        async def take_over_nodes() -> None:
            registry.start_watching()
            await registry.poll_all(timeout=TAKEOVER_POLL_TIMEOUT)
        passel.before_leading.append(take_over_nodes)
        passel.before_leading.append(coordinator.book.take_ownership)

        async def reconcile_on_win(before: str, after: str) -> None:
            if after == COORDINATOR:
                spawn(app[RECONCILER_KEY].reconcile())
        passel.listeners.append(reconcile_on_win)

        async def publish_shares() -> list[str]:
            """Advertise this box's NodeODMs; the default one only once it answers (at boot the
            NodeODM container often starts after Passel, so this is tried again every minute)."""
            shares = list(config.share) or ([DEFAULT_SHARE] if await _answers(session, DEFAULT_SHARE) else [])
            ports = [urlsplit(url).port or 3001 for url in shares]
            await asyncio.gather(*(mdns.publish(f"node-{port}", NODEODM_TYPE, f"{identity.name} NodeODM {port}", port,
                                                {"box": identity.id, "agent": str(config.port)}) for port in ports))
            return shares

        async def advertise() -> None:
            await _wait_listening(config.host, config.port)
            # Each registration probes for about 1.2 s; doing them together keeps joining fast.
            shares, _ = await asyncio.gather(publish_shares(), publish_self())
            log.info("Box %s (id %s) is on the network; sharing %s", identity.name, identity.id,
                     ", ".join(shares) or "no NodeODM yet")
            while not shares and not config.share:
                await asyncio.sleep(SHARE_RECHECK_SECONDS)
                if not passel.sleeping and (shares := await publish_shares()):
                    log.info("This box's NodeODM at %s answers now; sharing it", ", ".join(shares))

        async def goodbye() -> None:
            for key in list(mdns.registered_keys()):
                await mdns.withdraw(key)

        async def rejoin() -> None:
            await asyncio.gather(publish_shares(), publish_self())
        passel.on_sleep.append(goodbye)
        passel.on_wake.append(rejoin)

        follower = app[REPLICA_KEY] = ReplicaFollower(coordinator, passel.peers)

        rounds = CoordinatorRounds()  # the hand-over and the long poll in flight

        async def end_rounds(before: str, after: str) -> None:
            """A box that steps down at a heal, or whose coordinator was cut off mid-request, turns to
            the new coordinator at once (the winner waits only HANDOVER_WAIT_SECONDS for its tasks
            before answering their clients not-found)."""
            leader = passel.coordinator()
            rounds.end(keep=leader.id if leader is not None else None)
        passel.listeners.append(end_rounds)

        async def follow_forever() -> None:
            """As a follower: hand over what this box accepted as coordinator, then catch up, again and
            again, in a long poll. A failed round, or a caught-up one that the coordinator did not hold
            (an older version), lasts at least SYNC_SECONDS."""
            while True:
                started = asyncio.get_running_loop().time()
                if offered:
                    await adopt_trusted_nodes()
                leader = passel.coordinator()
                changed, caught_up = None, False
                if leader is not None and not passel.is_coordinator:
                    try:
                        if await rounds.run(hand_over_all(coordinator, passel), leader.id):
                            follower.synced_from = None  # the next pull is a full copy: rows handed over
                            # are then the coordinator's version, not this box's idea of what it became
                        caught_up = follower.synced_from == leader.id
                        # rows still to hand over (the winner of a heal may not have fenced its term above
                        # this box's yet, and refused them): no long poll, so they are offered again soon
                        wait = 0.0 if passel.holds_rows_to_hand_over() else LONG_POLL_SECONDS
                        now = passel.coordinator()  # none, or another, if a new one ended the hand-over
                        if now is not None and now.id == leader.id:
                            changed = await rounds.run(follower.pull(leader, wait=wait), leader.id)
                        if changed is not None:
                            await agree(app[ADMIN_PASSWORD_KEY], passel.trust, passel.peers, leader,
                                        follower.leader_password)
                    except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, Untrusted) as exc:
                        log.debug("Replica sync with %s failed: %s", leader.name, exc)
                if changed is None or (caught_up and not changed):
                    await asyncio.sleep(max(0.0, started + SYNC_SECONDS - asyncio.get_running_loop().time()))

        jobs = [background("mdns-advertise", advertise), background("election", passel.run_forever),
                background("replica", follow_forever)]
        yield
        for job in [*jobs, *pending]:
            job.cancel()
        for job in [*jobs, *pending]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
        await mdns.stop()
        await relay_session.close()
    return ctx
