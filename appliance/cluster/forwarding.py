"""Sending a staged task to a node with the same uuid: init, upload what is missing, commit.

What has already reached the node is recorded per file, so after a crash, or when the upload
overlapped the client's own, only the missing files are sent again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from appliance.cluster.job_parts import sm_cluster_url
from appliance.cluster.registry import NodeState
from appliance.cluster.staging import Staging, is_image
from appliance.cluster.tasks import forwarded, set_forwarded
from appliance.nodeodm.client import NodeError, NodeUnreachable
from appliance.nodeodm.growth import Growth
from appliance.nodeodm.options import has_option, set_option
from appliance.nodeodm.sentences import host_port
from appliance.store.models import Task

log = logging.getLogger("passel.forward")
PARALLEL_UPLOADS = 4  # per task; enough to fill a gigabit link from page cache
FLUSH_SECONDS = 0.5
_PENDING_EXISTS = ("Invalid set-uuid", "Directory exists")  # the node already has our pending upload
# Each file is tried this often (ODM tries 5 times) before the whole send counts as failed: a node on
# a flaky link (NodeODM's --test_drop_uploads drops half) then still gets every file at the first send.
UPLOAD_TRIES = 8
RETRY_FIRST_SECONDS = 0.2  # doubled after each failed try, up to RETRY_MAX_SECONDS
RETRY_MAX_SECONDS = 3.0


class KeepsTasks(Protocol):
    """Where a sender records what reached the node: the task table on the coordinator, nothing on a
    box that only holds the files (it reports them instead)."""

    async def save(self, task: Task) -> None: ...


def worth_retrying(exc: Exception) -> bool:
    """A dropped connection or a server error may pass on the next try; an answer in NodeODM's error
    shape (unknown uuid, no file) will not."""
    return isinstance(exc, NodeUnreachable) or (isinstance(exc, NodeError) and (exc.status or 0) >= 500)


def init_fields(task: Task, node: NodeState, public_url: str, api_token: str = "") -> dict[str, str]:
    """The text fields of `/task/new/init`, as the client gave them after validation.

    A split task sends its submodels back to `sm-cluster`: the agent of the box that runs it, when
    known, because that agent relays to whoever is coordinator and so survives a coordinator change.
    Its `?token=` is the passel's API token when it has one (else every submodel would be refused),
    or else names the task, so its submodels are recorded as its parts (job_parts.py).
    """
    options = task.options
    if has_option(options, "split"):
        options = set_option(options, "sm-cluster",
                             sm_cluster_url(node.row.agent_url or public_url, task.uuid, api_token))
    fields = {"name": task.name, "options": json.dumps(options), "dateCreated": str(task.date_created_ms),
              "skipPostProcessing": "true" if task.skip_post_processing else "false"}
    if task.outputs is not None:
        fields["outputs"] = json.dumps(task.outputs)
    if task.webhook:
        fields["webhook"] = task.webhook
    return fields


class Forwarder:
    """Moves one task's staged files to one node."""

    def __init__(self, book: KeepsTasks, staging: Staging, task: Task, node: NodeState, public_url: str,
                 api_token: str = "") -> None:
        self.book, self.staging, self.task, self.node = book, staging, task, node
        self.public_url, self.api_token = public_url, api_token
        self._init_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(PARALLEL_UPLOADS)
        self._confirmed: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._failed: Exception | None = None  # a file that could not be sent: the others stop retrying

    async def ensure_init(self) -> None:
        """Create the pending task on the node once, unless it already exists there."""
        async with self._init_lock:
            node_id, _ = forwarded(self.task)
            if node_id == self.node.id:
                return
            try:
                await self.node.client.task_init(self.task.uuid, init_fields(self.task, self.node, self.public_url, self.api_token))
            except NodeError as exc:
                if not str(exc).startswith(_PENDING_EXISTS):
                    raise
                log.info("Task %s: %s already holds a pending upload; continuing it", self.task.uuid[:8], self.node.row.url)
            set_forwarded(self.task, self.node.id, [])
            await self.book.save(self.task)

    async def refresh_init(self) -> None:
        """The client initialised its pending upload again: the node, if already open, gets the new fields.

        NodeODM replaces a pending upload's fields and keeps its files, so nothing is sent twice.
        """
        async with self._init_lock:
            node_id, _ = forwarded(self.task)
            if node_id == self.node.id:
                await self.node.client.task_init(self.task.uuid, init_fields(self.task, self.node, self.public_url, self.api_token))

    async def send_file(self, path: Path) -> None:
        async with self._slots:
            await self._upload(path)
        self._confirm(path.name)

    async def stream_file(self, handle: BinaryIO, path: Path, growth: Growth) -> None:
        """A file still arriving from the client, sent on as it arrives: tried once, as its bytes cannot
        be asked for again (EarlyForward sends it whole when this fails). Not bound by the slots: the
        client's own parallel uploads already bound it."""
        await self.node.client.task_upload_growing(self.task.uuid, handle, path, growth)
        self._confirm(path.name)

    def _confirm(self, name: str) -> None:
        self._confirmed.add(name)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_soon())

    async def _upload(self, path: Path) -> None:
        """One file, tried again after a dropped connection or a server error, while the node is
        still online; once any file has failed for good the send fails anyway, so others stop trying."""
        delay = RETRY_FIRST_SECONDS
        for attempt in range(1, UPLOAD_TRIES + 1):
            if self._failed is not None:
                raise self._failed
            try:
                await self.node.client.task_upload(self.task.uuid, [path])
                return
            except (NodeError, NodeUnreachable) as exc:
                if attempt == UPLOAD_TRIES or not worth_retrying(exc) or not self.node.online:
                    self._failed = exc
                    raise
                log.info("Task %s: %s did not take %s (%s); trying again in %.1f s (try %d of %d)",
                         self.task.uuid[:8], self.node.row.url, path.name, exc, delay, attempt + 1, UPLOAD_TRIES)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_SECONDS)
        self._flusher = None  # from here on nothing cancels it: a write is never cut off
        await self.flush()

    async def flush(self) -> None:
        """Record which files the node has. Batched: a write (and fsync) per file would slow the
        forward by several seconds per gigabyte, and a crash in between only makes files uncertain."""
        if self._flusher is not None:  # still asleep: this write covers it
            self._flusher.cancel()
            self._flusher = None
        node_id, files = forwarded(self.task)
        if node_id == self.node.id and not self._confirmed <= files:
            set_forwarded(self.task, node_id, files | self._confirmed)
            await self.book.save(self.task)

    async def send_missing(self) -> None:
        await self.ensure_init()
        _, done = forwarded(self.task)
        missing = [p for p in self.staging.files(self.task.uuid) if p.name not in done | self._confirmed]
        results = await asyncio.gather(*(self.send_file(p) for p in missing), return_exceptions=True)
        await self.flush()  # what did arrive is not sent again by the next attempt
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def deliver(self, on_commit: Callable[[], None] = lambda: None) -> None:
        """Everything that is not on the node yet, then commit; a lost pending upload starts over.

        `on_commit` is called just before the commit, after which the send must not be interrupted:
        a commit cut off mid-way may still start the task on the node.
        """
        await self.send_missing()
        on_commit()
        try:
            await self.node.client.task_commit(self.task.uuid)
        except NodeError as exc:
            if "not found" not in str(exc):
                raise
            log.info("Task %s: %s lost its pending upload; sending it again", self.task.uuid[:8], self.node.row.url)
            set_forwarded(self.task, None, [])
            self._confirmed.clear()
            await self.send_missing()
            await self.node.client.task_commit(self.task.uuid)


class EarlyForward:
    """Overlaps the forward with the client's upload: each file goes on to the node while it arrives
    (`stream`), or once staged (`push`), up to the node's `maxImages` (beyond it the commit places the
    task on a node that takes it). So the send ends with the last file's arrival, not after it."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.error: Exception | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._streamed: set[str] = set()  # names sent while arriving: push leaves them to their stream
        self._images = 0

    def _room_for(self, name: str) -> bool:
        """Count an image; False (and the early forward stops) past the node's limit."""
        if self.error is not None:
            return False
        node = self.forwarder.node
        limit = node.info.get("maxImages")
        self._images += is_image(name)
        if limit is not None and self._images > int(limit):
            self.error = NodeError(f"The NodeODM on {node.row.label or host_port(node.row.url)} takes at most "
                                   f"{limit} images")
            log.info("Task %s: more images than %s takes (%s); the task is placed when it is committed",
                     self.forwarder.task.uuid[:8], node.row.url, limit)
            return False
        return True

    def _start(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    def stream(self, partial: Path, name: str, growth: Growth) -> None:
        """A file starts arriving (uploads.OnFile): send it on as its bytes reach the disk. It is opened
        now, while it exists under its partial name: a small file may be whole and renamed before the
        send begins."""
        if not self._room_for(name):
            return
        try:
            handle = open(partial, "rb")
        except OSError:  # gone already (the body broke): push sends whatever does arrive
            self._images -= is_image(name)
            return
        self._streamed.add(name)
        self._start(self._stream(handle, partial.with_name(name), growth))

    def push(self, paths: list[Path]) -> None:
        """Files now staged whole: those not already streamed go on."""
        for path in paths:
            if path.name not in self._streamed and self._room_for(path.name):
                self._start(self._send(path))

    async def _stream(self, handle: BinaryIO, path: Path, growth: Growth) -> None:
        try:
            await self.forwarder.ensure_init()
            await self.forwarder.stream_file(handle, path, growth)
        except Exception as exc:
            if growth.failed:  # the client's upload broke: the file is gone here too, and comes again
                self._streamed.discard(path.name)
                self._images -= is_image(path.name)
                return
            log.info("Task %s: sending %s on while it arrived did not work (%s); sending it whole",
                     self.forwarder.task.uuid[:8], path.name, exc)
            if await growth.ended():
                await self._send(path)
        finally:
            handle.close()

    async def _send(self, path: Path) -> None:
        if self.error is not None:
            return
        try:
            await self.forwarder.ensure_init()
            await self.forwarder.send_file(path)
        except Exception as exc:  # the commit falls back to a full send; record why
            self.error = exc

    async def finish(self) -> Exception | None:
        """Wait for files in flight; the error, if any, says why the early forward broke."""
        if self._jobs:
            await asyncio.gather(*list(self._jobs), return_exceptions=True)
        await self.forwarder.flush()
        return self.error

    def cancel(self) -> None:
        for job in list(self._jobs):
            job.cancel()
