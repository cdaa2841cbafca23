"""`GET /task/{uuid}/files`, a Passel extension: which files of an upload this passel already holds.

A browser that lost its connection, or was closed and opened again, asks this before it sends more,
and sends only what is missing, so a field upload is never started over. The box that takes the
upload in answers: the coordinator for uploads staged on it, a follower for the ones it receives
itself (http_rules.UPLOAD_CALL lets it). Only whole files count; a file still arriving (or left
half-sent by a dropped connection, until the upload's idle timeout drops it) is listed as arriving,
so a client waits for it rather than sending a copy that would be kept under another name.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from appliance.cluster.coordinator import COORDINATOR_KEY, Coordinator
from appliance.nodeodm import replies
from appliance.nodeodm.uploads import PARTIAL_SUFFIX
from appliance.store.models import Phase


def held(c: Coordinator, uuid: str) -> dict[str, Any]:
    """The whole files and the arriving ones of an upload this box takes in."""
    directory = c.staging.path(uuid)
    entries = sorted(directory.iterdir()) if directory.is_dir() else []
    return {"uuid": uuid, "committed": False,
            "files": [{"name": p.name, "size": p.stat().st_size} for p in entries
                      if p.is_file() and not p.name.endswith(PARTIAL_SUFFIX)],
            "arriving": [p.name.removesuffix(PARTIAL_SUFFIX) for p in entries if p.name.endswith(PARTIAL_SUFFIX)]}


async def task_files(request: web.Request) -> web.Response:
    """The upload's files held here; a committed task says so (its client goes to it rather than
    sending it again); an unknown or removed one is not found, and the client starts afresh."""
    c = request.app[COORDINATOR_KEY]
    uuid = request.match_info["uuid"].lower()
    try:
        c.staging.path(uuid)
    except ValueError:
        return replies.task_not_found(request.match_info["uuid"])
    if c.receiver.holds(uuid):
        return replies.ok(held(c, uuid))
    task = c.book.known(uuid)
    if task is not None and task.phase == Phase.UPLOADING:
        if task.staged_on not in ("", c.self_id):  # its client uploads to another box, which answers this
            return replies.error(f"Task {uuid} is being uploaded to another box of the passel; ask that box")
        return replies.ok(held(c, uuid))
    if task is None or await c.intake.find_visible(uuid) is None:
        return replies.task_not_found(request.match_info["uuid"])
    return replies.ok({"uuid": uuid, "committed": True, "files": [], "arriving": []})
