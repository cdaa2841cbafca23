"""The internal API between agents, versioned under `/-/agent/v1/`: heartbeats, take-over, hand-over,
the replica feed and the admin password, plus sleep, wake and a new key from this box's own systemd and CLI."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from appliance.admin_password import ADMIN_PASSWORD_KEY
from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.cluster.intake import NewTask, TaskRefused
from appliance.cluster.job_parts import parent_of
from appliance.cluster.proxy import DOWNLOAD_TIMEOUT
from appliance.cluster.receiving import CommitAbandoned
from appliance.cluster.results import AGENT_RESULTS
from appliance.discovery.passel import (
    AGENT_API,
    PASSEL_KEY,
    PEER_KEY,
    Passel,
    TransferRefused,
)
from appliance.discovery.trust import (
    H_BOX,
    H_SIG,
    UNSIGNED_BODY,
    Untrusted,
    body_digest,
)
from appliance.http_rules import Peer, rules_of
from appliance.nodeodm import replies
from appliance.nodeodm.client import NodeDown, NodeError, NodeUnreachable
from appliance.nodeodm.uploads import UploadError, receive_form
from appliance.passel_admin import use_key
from appliance.replication.feed import REPLICA_KEY, export_since
from appliance.replication.handover import parse_task
from appliance.replication.password import receive as receive_password
from appliance.replication.password import sealed
from appliance.role import BoxUnreachable
from appliance.store.models import Phase, row_values

log = logging.getLogger("passel.trust")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


MAX_LONG_POLL_SECONDS = 10.0


def not_coordinator() -> web.Response:
    """The reply of a call only the coordinator answers, when this box is not (any more) coordinator."""
    return web.json_response({"error": "this box is not the coordinator"}, status=409)


@web.middleware
async def agent_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The box-to-box calls (Peer.SIGNED in appliance/http_rules.py) must be signed with the passel
    key; replies are signed back. Sleep, wake and a new key come from this box's own systemd or CLI,
    so they are accepted from loopback only."""
    peer = rules_of(request).peer
    if peer is Peer.ANY:
        return await handler(request)
    if peer is Peer.LOOPBACK:
        if request.remote not in ("127.0.0.1", "::1"):
            return web.json_response({"error": "only this box itself may ask it to sleep or wake"}, status=403)
        return await handler(request)
    passel = request.app[PASSEL_KEY]
    digest = UNSIGNED_BODY if peer is Peer.SIGNED_STREAM else body_digest(await request.read())
    try:
        box, _ = passel.trust.verify_request(request.method, request.path_qs, digest, request.headers)
    except Untrusted as exc:
        claimed = passel.membership.peers.get(request.headers.get(H_BOX, ""))
        if claimed is not None:
            passel.membership.mark_foreign(claimed, str(exc))
        log.warning("Refused %s %s from %s: %s", request.method, request.path, request.remote, exc)
        return web.json_response({"error": f"refused: {exc}"}, status=401)
    request[PEER_KEY] = box
    reply = await handler(request)
    if isinstance(reply, web.Response) and reply.body is not None:
        reply.headers[H_SIG] = passel.trust.sign_reply(reply.body, request.headers)  # type: ignore[arg-type]
    return reply


async def heartbeat(request: web.Request) -> web.Response:
    try:
        payload = await request.json()
    except ValueError:
        return web.json_response({"error": "heartbeat must be JSON"}, status=400)
    if not isinstance(payload, dict) or payload.get("v") != 1:
        return web.json_response({"error": "unsupported heartbeat version"}, status=400)
    if payload.get("id") != request[PEER_KEY]:
        return web.json_response({"error": "a heartbeat must come from the box it describes"}, status=400)
    if request.app[PASSEL_KEY].sleeping:
        return web.json_response({"error": "this box is going to sleep"}, status=503)
    return web.json_response(request.app[PASSEL_KEY].receive(payload, request.remote or ""))


async def takeover(request: web.Request) -> web.Response:
    passel = request.app[PASSEL_KEY]
    try:
        body = await request.json()
        giver = passel.membership.peers.get(str(body.get("from", "")))
        if giver is not None:  # catch up with the giver's table first, so no task blinks out
            await request.app[REPLICA_KEY].pull(giver)
        await passel.take_over(int(body["term"]), str(body.get("from", "?")))
    except (ValueError, KeyError, TypeError):
        return web.json_response({"accepted": False, "error": "expected {term, from}"}, status=400)
    except TransferRefused as exc:
        return web.json_response({"accepted": False, "error": str(exc)})
    return web.json_response({"accepted": True, "term": passel.state.term})


async def adopt(request: web.Request) -> web.Response:
    """Take a task row and its staged files from a box that is no longer coordinator (fenced by term)."""
    passel, coordinator = request.app[PASSEL_KEY], request.app[COORDINATOR_KEY]
    try:
        term = int(request.query.get("term", "-1"))
    except ValueError:
        term = -1
    if not passel.is_coordinator or term > passel.state.term:
        return web.json_response({"adopted": False, "error": "this box is not the current coordinator"})
    scratch = coordinator.staging.scratch()
    try:
        form = await receive_form(request, scratch, file_field="images")
        raw = form.fields.get("task", "")
        if body_digest(raw.encode()) != request.query.get("digest"):
            raise ValueError("the task row does not match its signed digest")
        values, node_url = parse_task(raw)
        adopted = await coordinator.adopt(values, node_url, scratch, request.query.get("from", "?"))
    except (UploadError, ValueError, TypeError) as exc:
        return web.json_response({"adopted": False, "error": f"bad hand-over: {exc}"})
    finally:
        coordinator.staging.discard_scratch(scratch)
    return web.json_response({"adopted": adopted})


async def tasks_since(request: web.Request) -> web.Response:
    """The replica feed: task rows newer than `since` (all of them without it), and the nodes.

    A follower that is up to date waits here up to `wait` seconds for the next change (a long poll),
    and each request with `since` confirms that it holds that version (replication.py)."""
    passel, coordinator = request.app[PASSEL_KEY], request.app[COORDINATOR_KEY]
    if not passel.is_coordinator:
        return not_coordinator()
    try:
        since = int(request.query.get("since", "-1"))
        wait = min(max(float(request.query.get("wait", "0")), 0.0), MAX_LONG_POLL_SECONDS)
    except ValueError:
        since, wait = -1, 0.0
    if 0 <= since <= coordinator.book.rev:
        coordinator.replicas.applied(request[PEER_KEY], since)
        await coordinator.book.wait_newer(since, wait)
        if not passel.is_coordinator:
            return not_coordinator()
    feed = export_since(coordinator, since, passel.trust)
    feed["admin_password"] = sealed(request.app[ADMIN_PASSWORD_KEY], passel.trust)
    return web.json_response(feed)


async def _json_body(request: web.Request) -> dict[str, Any]:
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    return body


async def intake_init(request: web.Request) -> web.Response:
    """A follower takes a client's upload in itself: validate the fields and reserve a node here;
    the files stay on that box (cluster/receiving.py)."""
    coordinator = request.app[COORDINATOR_KEY]
    if not request.app[PASSEL_KEY].is_coordinator:
        return not_coordinator()
    try:
        body = await _json_body(request)
        fields = {str(k): str(v) for k, v in dict(body["fields"]).items()}
        set_uuid = body.get("set_uuid")
        parent = parent_of(f"job-{body.get('parent_uuid') or ''}")  # checked as the submodel's token was
        new = NewTask.from_fields(fields, parent)
        task = await coordinator.intake.init(new, str(set_uuid) if set_uuid else None,
                                             staged_on=request[PEER_KEY])
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": f"bad intake call: {exc}"}, status=400)
    except TaskRefused as exc:
        return web.json_response({"error": str(exc)})
    node = coordinator.registry.get(task.node_id)
    return web.json_response({"task": row_values(task), "node_url": node.row.url if node else None})


async def intake_commit(request: web.Request) -> web.Response:
    """The box that took an upload in says it is complete: names and sizes, never the bytes."""
    coordinator = request.app[COORDINATOR_KEY]
    if not request.app[PASSEL_KEY].is_coordinator:
        return not_coordinator()
    try:
        body = await _json_body(request)
        files = {str(k): int(v) for k, v in dict(body["files"]).items()}
        task = coordinator.book.get(str(body["uuid"]).lower())
        if task is None or task.phase != Phase.UPLOADING or task.staged_on != request[PEER_KEY]:
            return web.json_response({"error": replies.TASK_NOT_FOUND_UPLOAD})
        await coordinator.intake.commit_received(task, files, body.get("node_url"), [str(f) for f in body.get("on_node", [])])
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": f"bad intake call: {exc}"}, status=400)
    except TaskRefused as exc:
        return web.json_response({"error": str(exc)})
    return web.json_response({"uuid": task.uuid})


async def deliver(request: web.Request) -> web.Response:
    """The coordinator placed a task whose images are on this box: send them to the node from here.

    Only the box this one follows may ask: a coordinator cut off from the passel, back at the heal, would
    otherwise run what the passel's coordinator runs too. That refusal is not an error of the task (409:
    the asking box waits for the election to settle). A task whose commit this box gave up on is refused
    as an error (CommitAbandoned): its client sends the work again."""
    if request[PEER_KEY] != request.app[PASSEL_KEY].state.coordinator_id:
        return web.json_response({"error": "this box follows another coordinator; it sends images only when "
                                           "its own coordinator asks"}, status=409)
    try:
        body = await _json_body(request)
        files = await request.app[COORDINATOR_KEY].receiver.deliver(dict(body["task"]), str(body["node_url"]),
                                                                    [str(f) for f in body.get("on_node", [])])
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": f"bad deliver call: {exc}"}, status=400)
    except CommitAbandoned as exc:  # the asking coordinator drops the task: its client sent it again
        return web.json_response({"error": str(exc), "given_up": True})
    except NodeDown as exc:  # the asking coordinator takes the node offline, and tries the task elsewhere
        return web.json_response({"error": str(exc), "node_down": True})
    except (NodeError, NodeUnreachable, OSError) as exc:
        return web.json_response({"error": str(exc)})
    return web.json_response({"files": files})


async def downloaded(request: web.Request) -> web.Response:
    """A follower streamed a task's whole all.zip to its client, from the node."""
    coordinator = request.app[COORDINATOR_KEY]
    try:
        task = coordinator.book.get(str((await _json_body(request))["uuid"]).lower())
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": f"bad call: {exc}"}, status=400)
    if task is not None:
        await coordinator.downloaded(task)
    return web.json_response({"success": True})


async def results_copy(request: web.Request) -> web.StreamResponse:
    """Another box serves or copies a task's results from the copy this box holds (Range honoured)."""
    results = request.app[COORDINATOR_KEY].results
    try:
        held = results.has(request.match_info["uuid"])
    except ValueError:
        held = False
    if not held:
        return web.json_response({"error": "this box holds no copy of that task's results"}, status=404)
    return web.FileResponse(results.path(request.match_info["uuid"]), headers={"Content-Type": "application/zip"})


async def _results_report(request: web.Request) -> tuple[Any, dict[str, Any]] | web.Response:
    coordinator = request.app[COORDINATOR_KEY]
    if not request.app[PASSEL_KEY].is_coordinator:
        return not_coordinator()
    try:
        body = await _json_body(request)
        task = coordinator.book.get(str(body["uuid"]).lower())
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": f"bad call: {exc}"}, status=400)
    return task, body


async def results_copied(request: web.Request) -> web.Response:
    """A box holds the whole all.zip of a completed task (cluster/results.py)."""
    found = await _results_report(request)
    if isinstance(found, web.Response):
        return found
    task, _ = found
    if task is not None:
        await request.app[COORDINATOR_KEY].results_copied(task, request[PEER_KEY])
    return web.json_response({"success": True})


async def results_refused(request: web.Request) -> web.Response:
    """The box chosen to keep a task's results cannot (its disk is full): the coordinator picks another."""
    found = await _results_report(request)
    if isinstance(found, web.Response):
        return found
    task, body = found
    if task is not None:
        await request.app[COORDINATOR_KEY].results_not_held(task, request[PEER_KEY], str(body.get("reason", "")))
    return web.json_response({"success": True})


class SignedBoxFiles:
    """Streamed, signed GETs to another box's agent API (cluster/results_copies.BoxFiles). The reply is
    a file, too big to sign whole: the request is signed, and the copy is checked by its length."""

    def __init__(self, passel: Passel) -> None:
        self.passel = passel

    @contextlib.asynccontextmanager
    async def get(self, box_id: str, path: str, headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientResponse]:
        passel = self.passel
        peer = passel.membership.peers.get(box_id)
        if peer is None or not passel.box_alive(box_id):
            raise BoxUnreachable(f"box {box_id} is not heard from")
        signed = passel.trust.sign_request("GET", path, body_digest(None), passel.state.term)
        async with passel.peers.session.get(f"{peer.url}{path}", headers=headers | signed,
                                            timeout=DOWNLOAD_TIMEOUT) as reply:
            if reply.status == 401:
                raise BoxUnreachable(f"box {box_id} refused the call")
            yield reply


async def _attach_box_files(app: web.Application) -> None:
    """After the passel has started (cleanup contexts run first): copies can come from other boxes."""
    app[COORDINATOR_KEY].results.boxes = SignedBoxFiles(app[PASSEL_KEY])


async def sleep(request: web.Request) -> web.Response:
    """Called by systemd before a suspend (passel-sleep.service); answers once the goodbye is sent."""
    await request.app[PASSEL_KEY].sleep()
    return web.json_response({"success": True})


async def wake(request: web.Request) -> web.Response:
    await request.app[PASSEL_KEY].wake()
    return web.json_response({"success": True})


async def set_key(request: web.Request) -> web.Response:
    """`passel key set` on this box: use the new key at once (loopback only)."""
    try:
        use_key(request.app[PASSEL_KEY], str((await request.json())["key"]))
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"success": True})


def setup_agent_routes(app: web.Application) -> None:
    app.router.add_post(f"{AGENT_API}/heartbeat", heartbeat)
    app.router.add_post(f"{AGENT_API}/takeover", takeover)
    app.router.add_post(f"{AGENT_API}/adopt", adopt)
    app.router.add_get(f"{AGENT_API}/tasks", tasks_since)
    app.router.add_post(f"{AGENT_API}/password", receive_password)
    app.router.add_post(f"{AGENT_API}/intake/init", intake_init)
    app.router.add_post(f"{AGENT_API}/intake/commit", intake_commit)
    app.router.add_post(f"{AGENT_API}/deliver", deliver)
    app.router.add_post(f"{AGENT_API}/downloaded", downloaded)
    app.router.add_get(AGENT_RESULTS + "/{uuid}", results_copy)
    app.router.add_post(f"{AGENT_API}/results/copied", results_copied)
    app.router.add_post(f"{AGENT_API}/results/refused", results_refused)
    app.on_startup.append(_attach_box_files)
    app.router.add_post(f"{AGENT_API}/sleep", sleep)
    app.router.add_post(f"{AGENT_API}/wake", wake)
    app.router.add_post(f"{AGENT_API}/key", set_key)


__all__ = ["agent_auth_middleware", "setup_agent_routes"]
