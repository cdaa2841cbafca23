"""A box that is not coordinator gives its task rows and staged files to the one that is.

This is how nothing is lost when a partition heals (the losing coordinator hands over what it
accepted) and when an old coordinator comes back after a crash.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp

from appliance.cluster.coordinator import Coordinator
from appliance.cluster.task_states import Step
from appliance.cluster.tasks import GONE_PHASES
from appliance.discovery.passel import AGENT_API, Passel
from appliance.discovery.trust import UNSIGNED_BODY, Untrusted, body_digest
from appliance.store.models import Task, row_values

log = logging.getLogger("passel.handover")
HANDOVER_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_read=120)


def own_rows(coordinator: Coordinator) -> Iterator[Task]:
    """The rows this box wrote as coordinator: while it follows another box, they are to be handed over."""
    return (t for t in coordinator.book.tasks.values() if t.owner == coordinator.self_id)


async def hand_over_all(coordinator: Coordinator, passel: Passel) -> int:
    """Send the tasks this box wrote as coordinator, with their staged files, to the coordinator."""
    target = passel.coordinator()
    if target is None or passel.is_coordinator:
        return 0
    taken = 0
    own = list(own_rows(coordinator))  # a snapshot: handing over writes rows
    for task in own:
        await coordinator.dispatcher.settle(task.uuid)
        if task.uuid in coordinator.receiver.abandoned and task.phase not in GONE_PHASES:
            # its commit was given up here and its client told so (ODM sent the work again): whatever
            # the coordinator holds of it must not run, so it gets the removal, without the images
            coordinator.staging.remove(task.uuid)
            await coordinator.book.tombstone(task, Step.REMOVE)
        node = coordinator.registry.get(task.node_id)
        values: dict[str, Any] = row_values(task)
        row = json.dumps(values | {"node_url": node.row.url if node else None})
        with aiohttp.MultipartWriter("form-data") as body:
            part = body.append(row, {"Content-Type": "application/json"})
            part.set_content_disposition("form-data", name="task")
            handles = []
            try:
                for path in coordinator.staging.files(task.uuid):
                    handle = open(path, "rb")
                    handles.append(handle)
                    body.append(handle).set_content_disposition("form-data", name="images", filename=path.name)
                _, answer = await passel.peers.call(
                    "POST", f"{target.url}{AGENT_API}/adopt", data=body, digest=UNSIGNED_BODY, timeout=HANDOVER_TIMEOUT,
                    params={"term": passel.state.term, "from": passel.identity.id, "digest": body_digest(row.encode())})
            except (aiohttp.ClientError, TimeoutError, ValueError, Untrusted) as exc:
                log.info("Could not hand task %s to %s yet: %s", task.uuid, target.name, exc)
                return taken
            finally:
                for handle in handles:
                    handle.close()
        if not isinstance(answer, dict) or "error" in answer:
            log.info("Coordinator %s refused task %s: %s", target.name, task.uuid, answer)
            return taken
        await coordinator.handed_over(task, target.id)
        taken += 1
    if taken:
        await coordinator.store.record("handed-over", f"Handed {taken} task(s) to coordinator {target.name}")
    return taken


def parse_task(raw: str) -> tuple[dict[str, Any], str | None]:
    data = json.loads(raw)
    if not isinstance(data, dict) or "uuid" not in data:
        raise ValueError("not a task row")
    node_url = data.pop("node_url", None)
    return data, node_url
