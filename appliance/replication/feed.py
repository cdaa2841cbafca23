"""Every box keeps a replica of the coordinator's task table, so a new coordinator starts from it.

Versioned sync: the coordinator bumps a row's `rev` on every write; followers pull the rows newer
than the last version they saw. A follower of a new coordinator starts over with a full copy
(versions from different coordinators do not compare). Node rows travel with the tasks, tokens
included (sealed with the passel key), because the next coordinator must be able to talk to the
nodes; the feed answers only calls signed with the passel key.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from aiohttp import web

from appliance.cluster.coordinator import Coordinator
from appliance.cluster.lifecycle import done_with
from appliance.cluster.task_merge import Verdict, Version, merge
from appliance.cluster.tasks import GONE_PHASES, forwarded, set_forwarded
from appliance.discovery.passel import AGENT_API, Peer
from appliance.discovery.peer_client import PeerClient
from appliance.discovery.trust import Trust
from appliance.store.models import Phase, Task, row_values, task_from_row

log = logging.getLogger("passel.replica")
SYNC_TIMEOUT = aiohttp.ClientTimeout(total=15)  # above the long poll's wait, with room for a full copy


def export_since(coordinator: Coordinator, since: int, trust: Trust) -> dict[str, Any]:
    """What a follower needs to catch up from version `since` (everything when `since` is 0)."""
    registry = coordinator.registry
    book = coordinator.book
    full = since <= 0 or since > book.rev
    rows = []
    for task in (book.tasks.values() if full else book.changed_since(since)):
        values: dict[str, Any] = row_values(task) | {"owner": book.self_id}  # all of it is this coordinator's truth
        node = registry.get(task.node_id)
        fwd_node = registry.get(forwarded(task)[0])
        values["node_url"] = node.row.url if node else None
        values["forwarded_node_url"] = fwd_node.row.url if fwd_node else None
        rows.append(values)
    nodes = [{"url": s.row.url, "sealed_token": trust.seal(s.row.token), "source": s.row.source, "locked": s.row.locked,
              "label": s.row.label, "agent_url": s.row.agent_url, "box": s.row.box} for s in registry.nodes.values()]
    return {"rev": book.rev, "full": full, "tasks": rows, "nodes": nodes}


class ReplicaFollower:
    """Pulls the coordinator's changes into this box's own table."""

    def __init__(self, coordinator: Coordinator, peers: PeerClient) -> None:
        self.coordinator = coordinator
        self.peers = peers
        self.synced_from: str | None = None
        self.synced_rev = 0
        self.leader_password = ""  # the coordinator's admin password record, sealed (password_sync.py)

    async def pull(self, leader: Peer, wait: float = 0.0) -> int | None:
        """One round of catching up; how many rows changed here, or None when the leader refused.

        With `wait`, an up-to-date follower's request is held until the next change (a long poll), so
        replicas trail the coordinator by a round trip, and the next request confirms what it applied."""
        synced = {"since": self.synced_rev} if self.synced_from == leader.id else {}  # none: a full copy
        status, data = await self.peers.call("GET", f"{leader.url}{AGENT_API}/tasks",
                                             params={**synced, "wait": wait}, timeout=SYNC_TIMEOUT)
        if status != 200 or not isinstance(data, dict):
            return None
        self.leader_password = data.get("admin_password") or ""
        await self._apply_nodes(data.get("nodes", []))
        changed = await self._apply_tasks(data.get("tasks", []), full=bool(data.get("full")))
        self.synced_from, self.synced_rev = leader.id, int(data.get("rev", 0))
        return changed

    async def _apply_nodes(self, nodes: list[dict[str, Any]]) -> None:
        registry = self.coordinator.registry
        for node in nodes:
            token = self.peers.trust.unseal(node.get("sealed_token", ""))
            url = node["url"] + (f"?token={token}" if token else "")
            state = await registry.ensure(url, source=node.get("source", "manual"), agent_url=node.get("agent_url", ""),
                                          box=node.get("box", ""))
            if state.row.locked != bool(node.get("locked")):
                state.row.locked = bool(node.get("locked"))
                await registry.store.save(state.row)

    async def _apply_tasks(self, rows: list[dict[str, Any]], full: bool) -> int:
        book, registry = self.coordinator.book, self.coordinator.registry
        seen = set()
        for values in rows:
            node_url, fwd_url = values.pop("node_url", None), values.pop("forwarded_node_url", None)
            task = task_from_row(values)
            local_node = registry.find_url(node_url) if node_url else None
            local_fwd = registry.find_url(fwd_url) if fwd_url else None
            task.node_id = local_node.id if local_node else None
            set_forwarded(task, local_fwd.id if local_fwd else None, forwarded(task)[1])
            mine = book.tasks.get(task.uuid)
            if mine is not None and mine.owner == book.self_id and mine.owner != task.owner:
                # this box's own version is still to be handed over: the coordinator merges it by the
                # same rule (Coordinator.adopt, with the images staged here). Only a tombstone of the
                # coordinator's that wins is taken now, so this box never shows a removal undone
                verdict = merge(Version.of(mine, mine.node_id), Version.of(task, task.node_id))
                if verdict is not Verdict.TAKE_THEIR_TOMBSTONE:
                    continue
                log.info("Task %s: the coordinator has it %s, which wins over this box's own version; "
                         "its staged images here are released", task.uuid, task.phase)
                self.coordinator.staging.remove(task.uuid)
            elif mine is not None and mine.phase == Phase.REMOVED and task.phase != Phase.REMOVED \
                    and merge(Version.of(mine, mine.node_id), Version.of(task, task.node_id)).mine_wins:
                await self._offer_removal(mine)
                continue
            seen.add(task.uuid)
            await book.save_replica(task)
            # this box took the upload in (or took in one the coordinator never heard of, now removed): release it
            if task.staged_on in ("", book.self_id) and done_with(task):
                self.coordinator.receiver.done(task.uuid)
                self.coordinator.staging.remove(task.uuid)
            if task.phase in GONE_PHASES:  # removed or lost: a copy of its results kept here goes too
                self.coordinator.results.release(task.uuid)
        dropped = 0
        if full:
            for uuid, task in list(book.tasks.items()):
                if uuid not in seen and task.owner != book.self_id:
                    await book.purge(uuid)
                    dropped += 1
        return len(seen) + dropped

    async def _offer_removal(self, mine: Task) -> None:
        """Its client removed it on a side of a partition that this coordinator was not on (nemesis
        seed 48): the removal is never undone here. It becomes a row of this box's to hand over
        (`hand_over_all`), and the coordinator takes the removal by the same rule (`Coordinator.adopt`)."""
        book = self.coordinator.book
        if mine.owner != book.self_id:
            log.info("Task %s: its client removed it, which the coordinator has not heard of; telling it",
                     mine.uuid)
            mine.owner = book.self_id
            await book.save_replica(mine)


REPLICA_KEY: web.AppKey[ReplicaFollower] = web.AppKey("replica")  # where the app holds it
