"""Results out: the finished products of completed tasks, pushed to a bucket or an HTTP endpoint
whenever the field team's uplink is up (store and forward).

This module decides what to push and keeps each task's push state in `<state_dir>/results/<uuid>/
push.json`, next to the copy of its all.zip (`results_copies.py`), so a push goes on after a broken
link or a restart: a file whose upload completed is never sent again, and a multipart upload goes on
with the parts the destination already acknowledged. The wire protocols are in `outbox_s3.py`.

Order of checks for each file, so that nothing is sent twice even across a crash:
  1. done in the state: skip;
  2. an unfinished multipart upload in the state: ask the destination for its parts (ListParts is
     the truth); parts it has are not sent again;
  3. no upload (or the destination no longer has it): HEAD the object; one of the same size (and the
     same content fingerprint, when it carries one) means a push completed before the state said so.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol
from urllib.parse import parse_qsl, quote, urlsplit

from aiohttp import web

from appliance.clock import wall
from appliance.cluster.results_copies import ResultsStore
from appliance.products.archive import BadArchive, open_archive, open_member

log = logging.getLogger("passel.results")

STATE_FILE = "push.json"
STATE_VERSION = 1
PART_BYTES = 8 * 1024 * 1024  # files smaller than this go in one PUT; larger ones in parts of this size
MAX_PARTS = 10_000  # S3's limit: a larger file gets larger parts
STREAM_CHUNK_BYTES = 1024 * 1024  # one read of a file streamed in a single PUT (HTTP destinations)
BACKOFF_SECONDS = (5.0, 15.0, 60.0, 300.0)  # between tries while the destination does not answer
IDLE_SECONDS = 30.0  # between looks for newly completed tasks while the link is up
FAILED_RETRY_SECONDS = 3600.0  # a task the destination refused is tried again after this long

CHOICES = ("products", "all")
PRODUCTS = ("odm_orthophoto/odm_orthophoto.tif", "odm_dem/dsm.tif", "odm_dem/dtm.tif")
ALL_ZIP = "all.zip"
FINGERPRINT_META = "passel-fingerprint"  # the object's user metadata that says which content it holds
DEFAULT_REGION = "us-east-1"
EXAMPLES = ("s3://bucket/prefix?endpoint=http://192.168.1.10:9000&region=us-east-1, "
            "s3://bucket/prefix (Amazon S3), or https://host/path (an HTTP PUT of each file)")


class LinkDown(Exception):
    """The destination did not answer (no route, a connection that broke, a timeout, its HTTP 5xx):
    try again later. The message is one sentence."""


class PushRefused(Exception):
    """The destination answered, and said no (no such bucket, access denied): a person must fix the
    settings. The message is one sentence."""


class UploadGone(Exception):
    """The destination no longer has the multipart upload (completed, aborted or expired)."""


class Released(Exception):
    """This box's copy of the task's results was released while it was being pushed."""


# ---------------------------------------------------------------------------------------------
# Where to push


@dataclass(frozen=True)
class Destination:
    """Where finished products go: an S3 bucket (any S3-compatible store) or an HTTP endpoint."""

    kind: Literal["s3", "http"]
    bucket: str = ""  # s3
    prefix: str = ""  # s3: the keys' leading folders, without slashes at either end
    endpoint: str = ""  # s3: scheme://host[:port] of an S3-compatible store; '' for Amazon S3
    region: str = DEFAULT_REGION  # s3
    url: str = ""  # http: the base URL, without a trailing slash

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Read a destination URL; a ValueError's message says what is wrong and how to write it."""
        text = text.strip()
        if not text:
            raise ValueError(f"no results destination is given; write one as {EXAMPLES}")
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - a bad port raises here
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a URL ({exc}); write it as {EXAMPLES}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("s3", "http", "https"):
            said = f"starts with {parts.scheme}://" if parts.scheme else "has no scheme"
            raise ValueError(f"the results destination {text!r} {said}; it must start with s3://, http:// "
                             f"or https://, for example {EXAMPLES}")
        if "@" in parts.netloc:
            raise ValueError(f"the results destination {_without_userinfo(text)!r} carries credentials; "
                             "remove them from the URL and set results_out_key_id and results_out_secret")
        if parts.fragment:
            raise ValueError(f"the results destination {text!r} has a #fragment, which means nothing here; remove it")
        if scheme == "s3":
            return cls._parse_s3(text, parts.netloc, parts.path, parts.query)
        if not parts.hostname:
            raise ValueError(f"the results destination {text!r} names no host; write it as https://host/path")
        if parts.query:
            raise ValueError(f"the results destination {text!r} has a query (?{parts.query}); an HTTP "
                             "destination takes none: each file is PUT to <url>/<task uuid>/<file name>")
        return cls("http", url=f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}")

    @classmethod
    def _parse_s3(cls, text: str, bucket: str, path: str, query: str) -> Destination:
        if not bucket:
            raise ValueError(f"the results destination {text!r} names no bucket; write it as s3://bucket/prefix")
        if not _good_bucket_name(bucket):
            raise ValueError(f"{bucket!r} is not a bucket name: use 3 to 63 lowercase letters, digits, dots "
                             f"and hyphens, starting and ending with a letter or digit (s3://bucket/prefix)")
        prefix = path.strip("/")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise ValueError(f"the prefix {prefix!r} of {text!r} has an empty, '.' or '..' folder; write it as "
                             "s3://bucket/folder/subfolder")
        options: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name not in ("endpoint", "region"):
                raise ValueError(f"the results destination {text!r} has an unknown option {name!r}; an s3:// "
                                 "destination takes only ?endpoint=http://host:port and &region=name")
            if name in options:
                raise ValueError(f"the results destination {text!r} gives {name!r} twice; give it once")
            options[name] = value.strip()
        endpoint = options.get("endpoint", "")
        if "endpoint" in options:
            endpoint = _endpoint(text, endpoint)
        region = options.get("region", DEFAULT_REGION)
        if not region or not all(c.isalnum() or c == "-" for c in region):
            raise ValueError(f"the region {region!r} of {text!r} is not a region name such as us-east-1")
        return cls("s3", bucket=bucket, prefix=prefix, endpoint=endpoint, region=region)

    def location(self, uuid: str, name: str) -> str:
        """Where a task's file goes: the object key (s3) or the URL (http)."""
        if self.kind == "s3":
            return "/".join(part for part in (self.prefix, uuid, name) if part)
        return f"{self.url}/{quote(uuid)}/{quote(name)}"

    def __str__(self) -> str:
        """The destination as a URL, without credentials: shown to people and kept in the state file."""
        if self.kind == "http":
            return self.url
        options = [f"endpoint={self.endpoint}"] if self.endpoint else []
        if self.region != DEFAULT_REGION or self.endpoint:
            options.append(f"region={self.region}")
        tail = f"/{self.prefix}" if self.prefix else ""
        return f"s3://{self.bucket}{tail}" + (f"?{'&'.join(options)}" if options else "")


def _without_userinfo(text: str) -> str:
    scheme, _, rest = text.partition("://")
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"


def _good_bucket_name(name: str) -> bool:
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789.-")
    return (3 <= len(name) <= 63 and set(name) <= allowed and name[0].isalnum() and name[-1].isalnum()
            and ".." not in name)


def _endpoint(text: str, value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the endpoint {value!r} of {text!r} is not a URL such as http://192.168.1.10:9000 "
                         "(scheme, host and port of the S3-compatible store)")
    if parts.path.strip("/") or parts.query or "@" in parts.netloc:
        raise ValueError(f"the endpoint {value!r} of {text!r} must be only scheme, host and port, such as "
                         "http://192.168.1.10:9000; put folders in the prefix: s3://bucket/folder?endpoint=...")
    return f"{parts.scheme}://{parts.netloc}"


# ---------------------------------------------------------------------------------------------
# What to push


@dataclass(frozen=True)
class OutFile:
    """One file to push: a member of the task's all.zip, or the all.zip itself."""

    name: str  # its name under <task uuid>/ at the destination
    member: str | None  # its path in all.zip; None: all.zip itself
    size: int
    fingerprint: str  # which content: CRC-32 and size from the zip's index (a hash of the index for all.zip)


def files_to_push(zip_path: Path, choice: str) -> list[OutFile]:
    """The files of a task's all.zip to push: its orthophoto and elevation models ("products", those
    it has), or the whole all.zip ("all"). Blocking: reads the zip's index."""
    if choice not in CHOICES:
        raise ValueError(f"the results to push must be one of {', '.join(CHOICES)}, not {choice!r}")
    archive = open_archive(zip_path)
    if choice == "all":
        index = "\n".join(f"{i.filename}:{i.CRC:08x}:{i.file_size}" for i in archive.zip.infolist())
        digest = hashlib.sha256(index.encode()).hexdigest()[:24]
        return [OutFile(ALL_ZIP, None, archive.size, f"zip-{digest}-{archive.size}")]
    return [OutFile(member.rpartition("/")[2], member, info.file_size, f"crc32-{info.CRC:08x}-{info.file_size}")
            for member in PRODUCTS if (info := archive.members.get(member)) is not None]


def part_bytes_for(size: int) -> int:
    """The part size of a multipart upload: 8 MiB, or more (in whole MiB) for a file past 10,000 parts."""
    mib = 1024 * 1024
    return max(PART_BYTES, math.ceil(size / MAX_PARTS / mib) * mib)


class _Source:
    """One file's bytes, read in order: a compressed member is decompressed once, not from its start
    again for every part. Blocking: use from a thread."""

    def __init__(self, zip_path: Path, member: str | None) -> None:
        self._handle: BinaryIO = (open(zip_path, "rb") if member is None  # noqa: SIM115 - closed by close()
                                  else open_member(open_archive(zip_path), member))
        self._pos = 0

    def read(self, start: int, length: int) -> bytes:
        if start != self._pos:
            self._handle.seek(start)
        chunks, left = [], length
        while left > 0:
            chunk = self._handle.read(left)
            if not chunk:
                raise BadArchive(f"the file ends {left} bytes before the size the zip gives it")
            chunks.append(chunk)
            left -= len(chunk)
        self._pos = start + length
        return b"".join(chunks)

    def close(self) -> None:
        self._handle.close()


# ---------------------------------------------------------------------------------------------
# The push state of a task: push.json


@dataclass
class FilePush:
    """How far one file's push is."""

    name: str
    member: str | None
    size: int
    fingerprint: str
    part_bytes: int = 0  # of its multipart upload; 0: none
    upload_id: str = ""  # its unfinished multipart upload
    parts: dict[int, str] = field(default_factory=dict)  # part number -> ETag, as the destination acknowledged
    done: bool = False

    def bytes_done(self) -> int:
        if self.done:
            return self.size
        if not self.part_bytes:
            return 0
        return sum(max(0, min(self.part_bytes, self.size - (n - 1) * self.part_bytes)) for n in self.parts)


@dataclass
class PushState:
    """A task's push: its files, and when it ended (pushed, or refused with the reason)."""

    uuid: str
    destination: str
    files: list[FilePush] = field(default_factory=list)
    pushed_at: float | None = None  # epoch seconds
    error: str = ""  # why the destination refused it, one sentence
    failed_at: float | None = None

    @property
    def pushed(self) -> bool:
        return self.pushed_at is not None and all(f.done for f in self.files)

    def bytes_total(self) -> int:
        return sum(f.size for f in self.files)

    def bytes_done(self) -> int:
        return sum(f.bytes_done() for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION, "uuid": self.uuid, "destination": self.destination,
            "pushed_at": self.pushed_at, "error": self.error, "failed_at": self.failed_at,
            "files": [{"name": f.name, "member": f.member, "size": f.size, "fingerprint": f.fingerprint,
                       "part_bytes": f.part_bytes, "upload_id": f.upload_id,
                       "parts": [[n, etag] for n, etag in sorted(f.parts.items())], "done": f.done}
                      for f in self.files],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PushState:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"version {data.get('version')!r} is not {STATE_VERSION}")
        files = [FilePush(str(f["name"]), f["member"], int(f["size"]), str(f["fingerprint"]), int(f["part_bytes"]),
                          str(f["upload_id"]), {int(n): str(etag) for n, etag in f["parts"]}, bool(f["done"]))
                 for f in data["files"]]
        return cls(str(data["uuid"]), str(data["destination"]), files, data["pushed_at"], str(data["error"]),
                   data["failed_at"])


def state_path(store: ResultsStore, uuid: str) -> Path:
    return store.path(uuid).with_name(STATE_FILE)


def load_state(store: ResultsStore, uuid: str) -> PushState | None:
    """The task's push state as last written; None when there is none (or it cannot be read: the
    HEAD checks then keep a push that completed from being sent again)."""
    path = state_path(store, uuid)
    try:
        return PushState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.info("Task %s: its push state %s cannot be read (%s); checking the destination afresh",
                 uuid[:8], path, exc)
        return None


def save_state(store: ResultsStore, state: PushState) -> None:
    """Write push.json whole or not at all (a temporary file, fsync, rename). Raises Released when
    the task's folder is gone: the copy was released, and no folder is made again for it."""
    path = state_path(store, state.uuid)
    tmp = path.with_name(STATE_FILE + ".tmp")
    try:
        with open(tmp, "w") as out:
            json.dump(state.to_json(), out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except FileNotFoundError:
        raise Released(f"the copy of task {state.uuid} was released") from None
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _resume(old: PushState | None, uuid: str, destination: str, files: list[OutFile]) -> tuple[PushState, list[FilePush]]:
    """The state to go on with: what `old` says of each file that is still the same, at the same
    destination; and the unfinished uploads of files whose content changed (to abort)."""
    same_place = old is not None and old.destination == destination
    kept = {f.name: f for f in old.files} if old is not None and same_place else {}
    state = PushState(uuid, destination)
    for out in files:
        before = kept.get(out.name)
        if before is not None and before.fingerprint == out.fingerprint and before.size == out.size:
            state.files.append(before)
        else:
            state.files.append(FilePush(out.name, out.member, out.size, out.fingerprint))
    stale = [f for f in kept.values() if f.upload_id and not f.done and not any(f is g for g in state.files)]
    if old is not None and same_place:
        state.error, state.failed_at = old.error, old.failed_at
        if all(f.done for f in state.files):
            state.pushed_at = old.pushed_at
    return state, stale


# ---------------------------------------------------------------------------------------------
# The transports (outbox_s3.py) as the outbox sees them


@dataclass(frozen=True)
class Stored:
    """An object at the destination: its size, and the content fingerprint it carries ('' none)."""

    size: int
    fingerprint: str = ""


class Transport(Protocol):
    """One destination's wire protocol. Every method raises LinkDown or PushRefused; the multipart
    ones raise UploadGone when the destination no longer has the upload."""

    destination: Destination
    multipart: bool  # True: large files go in parts that survive a broken link (S3)

    async def stat(self, location: str) -> Stored | None: ...

    async def put(self, location: str, body: bytes | AsyncIterator[bytes], size: int, fingerprint: str) -> None: ...

    async def start_upload(self, location: str, fingerprint: str) -> str: ...

    async def list_parts(self, location: str, upload_id: str) -> dict[int, tuple[str, int]]: ...

    async def put_part(self, location: str, upload_id: str, number: int, data: bytes) -> str: ...

    async def complete(self, location: str, upload_id: str, parts: dict[int, str]) -> None: ...

    async def abort(self, location: str, upload_id: str) -> None: ...

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# The outbox


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


class Outbox:
    """Pushes the finished products of the completed tasks this box holds, one task at a time,
    whenever the destination answers; backs off while it does not."""

    def __init__(self, store: ResultsStore, transport: Transport, completed: Callable[[], Iterable[str]],
                 choice: str = "products", backoff: tuple[float, ...] = BACKOFF_SECONDS,
                 idle_seconds: float = IDLE_SECONDS, failed_retry_seconds: float = FAILED_RETRY_SECONDS) -> None:
        if choice not in CHOICES:
            raise ValueError(f"the results to push must be one of {', '.join(CHOICES)}, not {choice!r}")
        self.store = store
        self.transport = transport
        self.destination = transport.destination
        self.completed = completed
        self.choice = choice
        self.backoff = backoff
        self.idle_seconds = idle_seconds
        self.failed_retry_seconds = failed_retry_seconds
        self.link_up: bool | None = None  # None: not tried yet
        self._states: dict[str, PushState] = {}
        self._streamed: tuple[str, int] = ("", 0)  # a file going out in one PUT: (uuid, bytes read so far)
        self._current = ""  # the task being pushed
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    # -- what the UI reads

    def state(self, uuid: str) -> PushState | None:
        """The task's push state (kept in memory once read)."""
        if uuid not in self._states:
            loaded = load_state(self.store, uuid)
            if loaded is None:
                return None
            self._states[uuid] = loaded
        return self._states[uuid]

    def status(self, uuid: str) -> str:
        """A few words for the web UI: "pushed at 2024-05-01 14:03", "pushing 40%", "waiting for the
        link", "queued", "failed: <sentence>", or "no copy of its results on this box"."""
        state = self.state(uuid)
        if state is not None and state.destination != str(self.destination):
            state = None  # pushed elsewhere, under other settings
        if state is not None and state.pushed:
            if not state.files:
                return "nothing to push: its results have no orthophoto or elevation model"
            return f"pushed at {time.strftime('%Y-%m-%d %H:%M', time.localtime(state.pushed_at))}"
        if state is not None and state.error:
            return f"failed: {state.error}"
        if state is None and not self.store.has(uuid):
            return "no copy of its results on this box"
        if self.link_up is False:
            return "waiting for the link"
        done = state.bytes_done() if state is not None else 0
        if self._streamed[0] == uuid:
            done += self._streamed[1]
        total = state.bytes_total() if state is not None else 0
        if self._current != uuid and not done:
            return "queued"
        return f"pushing {min(99, 100 * done // total) if total else 0}%"

    # -- pushing

    def wake(self) -> None:
        """Look for tasks to push now (a task just completed) rather than at the next idle round."""
        self._wake.set()

    async def run_forever(self) -> None:
        """Rounds of pushes: every idle_seconds while the destination answers (or when woken), and
        after 5, 15, 60, then every 300 s while it does not."""
        failures = 0
        while True:
            if await self.round():
                failures, delay = 0, self.idle_seconds
            else:
                delay = self.backoff[min(failures, len(self.backoff) - 1)]
                failures += 1
            self._wake.clear()
            if failures:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    async def round(self) -> bool:
        """Push every completed task held here that is not pushed yet; False when the destination
        stopped answering (the rest wait for the next round)."""
        for uuid in list(self.completed()):
            if not self.store.has(uuid):
                continue
            state = self.state(uuid)
            if state is not None and state.destination == str(self.destination):
                if state.pushed:
                    continue
                if state.error and state.failed_at is not None and wall() - state.failed_at < self.failed_retry_seconds:
                    continue
            try:
                await self.push_task(uuid)
            except LinkDown:
                return False
            except Released:
                continue
        return True

    async def push_task(self, uuid: str) -> PushState:
        """Push one task's files, going on from where its state says. Returns the state: pushed, or
        refused (its `error` says why). Raises LinkDown when the destination stopped answering (the
        state is kept for the next try), Released when the copy of its results went meanwhile."""
        async with self._lock:
            self._current = uuid
            try:
                return await self._push_task(uuid)
            finally:
                self._current = ""

    async def _push_task(self, uuid: str) -> PushState:
        zip_path = self.store.path(uuid)
        if not zip_path.is_file():
            raise Released(f"there is no copy of task {uuid}'s results on this box")
        try:
            files = await asyncio.to_thread(files_to_push, zip_path, self.choice)
        except (BadArchive, OSError, zipfile.BadZipFile) as exc:
            return await self._refused(PushState(uuid, str(self.destination)), f"its all.zip cannot be read ({exc})")
        state, stale = _resume(self.state(uuid), uuid, str(self.destination), files)
        self._states[uuid] = state
        if state.pushed:
            return state
        for old in stale:  # the task's results changed since: its old upload is of no use
            with contextlib.suppress(UploadGone, PushRefused):
                await self._call(self.transport.abort(self.destination.location(uuid, old.name), old.upload_id))
        started = state.bytes_done()
        if started and self.link_up is not False:  # while the link is down, its one line says it all
            log.info("Task %s: going on pushing its %s to %s from %s of %s", uuid[:8], self._what(), self.destination,
                     _mb(started), _mb(state.bytes_total()))
        try:
            for out in state.files:
                if not out.done:
                    await self._push_file(state, out)
        except PushRefused as exc:
            return await self._refused(state, str(exc))
        except (BadArchive, zipfile.BadZipFile) as exc:
            return await self._refused(state, f"its all.zip cannot be read ({exc})")
        state.pushed_at, state.error, state.failed_at = wall(), "", None
        await asyncio.to_thread(save_state, self.store, state)
        if state.files:
            log.info("Task %s: pushed its %s (%d file%s, %s) to %s", uuid[:8], self._what(), len(state.files),
                     "" if len(state.files) == 1 else "s", _mb(state.bytes_total()), self.destination)
        else:
            log.info("Task %s: its results have no orthophoto or elevation model; nothing to push", uuid[:8])
        return state

    def _what(self) -> str:
        return "products" if self.choice == "products" else "results (all.zip)"

    async def _refused(self, state: PushState, reason: str) -> PushState:
        state.error, state.failed_at = reason, wall()
        self._states[state.uuid] = state
        with contextlib.suppress(Released):
            await self._save(state)
        log.warning("Task %s: pushing its %s to %s failed: %s", state.uuid[:8], self._what(), self.destination, reason)
        return state

    async def _call(self, step: Any) -> Any:
        """One exchange with the destination; says once when the link goes down and once when it is back."""
        try:
            result = await step
        except LinkDown as exc:
            if self.link_up is not False:
                log.warning("The link to %s is down (%s); finished products wait on this box until it is back",
                            self.destination, exc)
            self.link_up = False
            raise
        if self.link_up is False:
            log.info("The link to %s is back; pushing the finished products that waited", self.destination)
        self.link_up = True
        return result

    async def _save(self, state: PushState) -> None:
        await asyncio.to_thread(save_state, self.store, state)

    async def _already_there(self, location: str, out: FilePush) -> bool:
        found = await self._call(self.transport.stat(location))
        return found is not None and found.size == out.size and found.fingerprint in ("", out.fingerprint)

    async def _push_file(self, state: PushState, out: FilePush) -> None:
        location = self.destination.location(state.uuid, out.name)
        if out.size >= PART_BYTES and self.transport.multipart:
            for _ in range(2):  # once more from the start when the destination lost the upload midway
                try:
                    await self._push_parts(state, out, location)
                    return
                except UploadGone:
                    out.upload_id, out.parts, out.part_bytes = "", {}, 0
                    await self._save(state)
            raise PushRefused(f"the destination dropped the upload of {out.name} twice while it was under way")
        if await self._already_there(location, out):
            out.done = True
            await self._save(state)
            return
        zip_path = self.store.path(state.uuid)
        if out.size < PART_BYTES:
            source = await asyncio.to_thread(_Source, zip_path, out.member)
            try:
                data = await asyncio.to_thread(source.read, 0, out.size)
            finally:
                await asyncio.to_thread(source.close)
            await self._call(self.transport.put(location, data, out.size, out.fingerprint))
        else:
            try:
                await self._call(self.transport.put(location, self._stream(state.uuid, zip_path, out), out.size,
                                                    out.fingerprint))
            finally:
                self._streamed = ("", 0)
        out.done = True
        await self._save(state)

    async def _stream(self, uuid: str, zip_path: Path, out: FilePush) -> AsyncIterator[bytes]:
        """A whole file for one PUT, read as it is sent (a destination without parts)."""
        source = await asyncio.to_thread(_Source, zip_path, out.member)
        try:
            sent = 0
            while sent < out.size:
                chunk = await asyncio.to_thread(source.read, sent, min(STREAM_CHUNK_BYTES, out.size - sent))
                sent += len(chunk)
                self._streamed = (uuid, sent)
                yield chunk
        finally:
            self._streamed = ("", 0)
            await asyncio.to_thread(source.close)

    async def _push_parts(self, state: PushState, out: FilePush, location: str) -> None:
        listed: dict[int, tuple[str, int]] | None = None
        if out.upload_id and out.part_bytes:
            with contextlib.suppress(UploadGone):
                listed = await self._call(self.transport.list_parts(location, out.upload_id))
        if listed is None:  # no upload, or the destination no longer has it: did one complete?
            if await self._already_there(location, out):
                out.done, out.upload_id, out.parts = True, "", {}
                await self._save(state)
                return
            out.part_bytes = part_bytes_for(out.size)
            out.upload_id = await self._call(self.transport.start_upload(location, out.fingerprint))
            out.parts, listed = {}, {}
            await self._save(state)  # before any part goes: a restart finds the upload and its parts
        count = math.ceil(out.size / out.part_bytes)

        def length(number: int) -> int:
            return min(out.part_bytes, out.size - (number - 1) * out.part_bytes)

        acknowledged, unsure = {}, {}
        for number, (etag, size) in listed.items():
            if number > count or size != length(number):
                continue
            if out.parts.get(number) == etag:
                acknowledged[number] = etag
            else:  # there, but the state never heard: acknowledged just before a crash, or another content
                unsure[number] = etag
        out.parts = acknowledged
        source = await asyncio.to_thread(_Source, self.store.path(state.uuid), out.member)
        try:
            for number in range(1, count + 1):
                if number in out.parts:
                    continue
                data = await asyncio.to_thread(source.read, (number - 1) * out.part_bytes, length(number))
                if number in unsure and unsure[number].strip('"') == hashlib.md5(data, usedforsecurity=False).hexdigest():
                    out.parts[number] = unsure[number]
                else:
                    out.parts[number] = await self._call(self.transport.put_part(location, out.upload_id, number, data))
                await self._save(state)
        finally:
            await asyncio.to_thread(source.close)
        try:
            await self._call(self.transport.complete(location, out.upload_id, out.parts))
        except UploadGone:  # completed by an earlier try whose answer the link lost?
            if not await self._already_there(location, out):
                raise
        out.done, out.upload_id = True, ""
        await self._save(state)

    async def aclose(self) -> None:
        await self.transport.aclose()


def push_status(outbox: Outbox | None, uuid: str) -> str:
    """The web UI's few words on a task's push: "not configured" when no destination is set."""
    return "not configured" if outbox is None else outbox.status(uuid)


OUTBOX_KEY: web.AppKey[Outbox | None] = web.AppKey("outbox")  # where the app holds it (None: results_out is off)
