"""Receive multipart uploads straight to disk, never into memory.

aiohttp's `request.post()` buffers the whole body, and its `request.multipart()` reader copies every
byte several times in Python, which on a small box costs as much CPU as the kernel's own work of
receiving and writing the upload. So the raw body is read chunk by chunk, `MultipartScanner` finds
the parts, and each file's bytes go to disk with one `os.write` per received chunk.

Each file is written as `<name>.part` and renamed only when the whole body was well-formed, so a
crash never leaves a half file that looks whole, and a body that fails half-way (truncated, too
large a field, disk full) leaves nothing behind: the client is told to send it again.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import shutil
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from appliance.nodeodm.growth import Growth
from appliance.nodeodm.multipart_scan import (
    Event,
    MultipartError,
    MultipartScanner,
    PartStart,
    boundary_of,
)

MAX_FIELD_BYTES = 1024 * 1024  # options JSON for ODM is a few kB; 1 MiB leaves room and caps abuse
MAX_FILENAME_BYTES = 255  # the usual file-system limit
IDLE_UPLOAD_SECONDS = 60.0  # a client that trickles bytes (or vanished) is cut off and its partial file dropped
MIN_FREE_DISK_BYTES = 512 * 1024 * 1024  # refuse new uploads below this, so accepted ones can finish
PARTIAL_SUFFIX = ".part"
_DRIVE = re.compile(r"^[A-Za-z]:")  # a name that starts with a Windows drive (C:) is an absolute path
# Told when a file starts arriving (its partial path, its final name and its Growth), so it can be sent on
# while it arrives: the partial file is renamed when the body is complete, and an open handle follows it.
OnFile = Callable[[Path, str, Growth], None]


class UploadError(ValueError):
    """A bad upload; the message is shown to the client as `{"error": message}`."""

    def __init__(self, message: str, no_retry: bool = True) -> None:
        super().__init__(message)
        self.no_retry = no_retry


@dataclass
class ReceivedForm:
    """Text fields and the file names (in arrival order) that a multipart body carried."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    bytes_written: int = 0


def check_filename(name: str) -> str:
    """The file's base name, or UploadError for a name that tries to leave the task's folder.

    A browser's folder upload sends names like `images/DJI_0004.JPG`; NodeODM (multer) keeps the part
    after the last `/` or `\\`, and so does Passel. A name that climbs (`..`), starts at a root or a
    drive, or carries NUL or control characters is refused rather than repaired: a client that sends it
    is either broken or hostile, and a clear error helps both.
    """
    normalized = unicodedata.normalize("NFC", name)
    parts = re.split(r"[/\\]", normalized)
    base = parts[-1]
    bad = (
        not base
        or base in (".", "..")
        or ".." in parts
        or normalized.startswith(("/", "\\"))
        or _DRIVE.match(normalized) is not None
        or any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in normalized)
        or len(base.encode("utf-8")) > MAX_FILENAME_BYTES
        or base.endswith(PARTIAL_SUFFIX)
    )
    if bad:
        raise UploadError(f"Invalid file name: {name!r}")
    return base


def unique_name(directory: Path, name: str) -> str:
    """NodeODM keeps both files when a name repeats: the later one becomes `name_.ext`."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    candidate = name
    while (directory / candidate).exists() or (directory / (candidate + PARTIAL_SUFFIX)).exists():
        stem += "_"
        candidate = f"{stem}.{ext}" if dot else stem
    return candidate


def ensure_free_space(directory: Path, min_free: int = MIN_FREE_DISK_BYTES) -> None:
    """Refuse an upload early when the disk is nearly full."""
    free = shutil.disk_usage(directory).free
    if free < min_free:
        raise UploadError(
            f"Not enough disk space on the coordinator ({free // (1024 * 1024)} MB free); "
            "free some space or remove finished tasks", no_retry=False)


class _FormWriter:
    """Applies the scanner's events: files of `file_field` to `<name>.part` files, text fields to memory."""

    def __init__(self, directory: Path | None, file_field: str, form: ReceivedForm, on_file: OnFile | None) -> None:
        self.directory, self.file_field, self.form, self.on_file = directory, file_field, form, on_file
        self._partials: list[tuple[Path, str]] = []  # (partial path, final name), in arrival order
        self._growths: list[Growth] = []  # one per partial, when someone follows the files as they arrive
        self._fd: int | None = None  # the file being written
        self._growth: Growth | None = None  # its Growth
        self._field: tuple[PartStart, bytearray] | None = None  # the text field being read

    def handle(self, event: Event) -> None:
        if isinstance(event, PartStart):
            self._start(event)
        elif event is None:
            self._end()
        elif self._fd is not None:
            written = os.write(self._fd, event)
            while written < len(event):  # a regular file takes it all unless the disk is full
                written += os.write(self._fd, memoryview(event)[written:])
            self.form.bytes_written += written
            if self._growth is not None:
                self._growth.grew(written)
        elif self._field is not None:
            part, data = self._field
            data += event
            if len(data) > MAX_FIELD_BYTES:
                raise UploadError(f"Field {part.name!r} is larger than {MAX_FIELD_BYTES} bytes")

    def _start(self, part: PartStart) -> None:
        if part.content_type.startswith("multipart/"):
            raise UploadError("Nested multipart bodies are not supported")
        if part.filename is not None:
            if self.directory is None or part.name != self.file_field:
                return  # not ours: skipped
            name = unique_name(self.directory, check_filename(part.filename))
            partial = self.directory / (name + PARTIAL_SUFFIX)
            self._fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            self._partials.append((partial, name))
            if self.on_file is not None:
                self._growth = Growth()
                self._growths.append(self._growth)
                self.on_file(partial, name, self._growth)
        elif part.name:
            self._field = (part, bytearray())

    def _end(self) -> None:
        if self._fd is not None:
            fd, self._fd, self._growth = self._fd, None, None
            os.close(fd)
        elif self._field is not None:
            (part, data), self._field = self._field, None
            try:
                self.form.fields[part.name or ""] = data.decode(part.charset)
            except (UnicodeDecodeError, LookupError):
                raise UploadError(f"Field {part.name!r} is not valid text") from None

    def finish(self) -> None:
        """The body was complete: the files become real."""
        for partial, name in self._partials:
            os.replace(partial, partial.with_name(name))
            self.form.files.append(name)
        for growth in self._growths:
            growth.end(kept=True)

    def discard(self) -> None:
        """The body failed: remove every file it started."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for partial, _ in self._partials:
            partial.unlink(missing_ok=True)
        for growth in self._growths:
            growth.end(kept=False)


async def receive_form(request: web.Request, directory: Path | None, file_field: str = "images",
                       on_file: OnFile | None = None) -> ReceivedForm:
    """Stream a multipart body: files of `file_field` go to `directory`, text fields are returned.
    `on_file` is told of each file as it starts, to send it on while it arrives.

    With `directory` None, files are skipped (init takes text fields only). On any error no file of
    this body is left in `directory`. Any other body (urlencoded, JSON) carries nothing here: NodeODM
    reads these routes with multer, which passes such a body over, so a urlencoded init makes a task
    with no name, options or outputs there; a client must find that out the same way on Passel.
    """
    form = ReceivedForm()
    content_type = request.headers.get("Content-Type", "")
    if request.method != "POST" or not request.body_exists or not content_type.startswith("multipart/"):
        return form
    writer = _FormWriter(directory, file_field, form, on_file)
    loop = asyncio.get_running_loop()
    try:
        scanner = MultipartScanner(boundary_of(content_type))
        try:
            async with asyncio.timeout(IDLE_UPLOAD_SECONDS) as idle:
                # iter_chunks, not readchunk until b"": an HTTP chunk's end can arrive as an empty read.
                async for chunk, _ in request.content.iter_chunks():
                    # A new timer per read would cost more than the scan: push the deadline back only
                    # once a tenth of it is used: a stall is cut off after 90 to 100 % of IDLE_UPLOAD_SECONDS.
                    if (idle.when() or 0.0) - loop.time() < 0.9 * IDLE_UPLOAD_SECONDS:
                        idle.reschedule(loop.time() + IDLE_UPLOAD_SECONDS)
                    for event in scanner.feed(chunk):
                        writer.handle(event)
        except TimeoutError:
            raise UploadError(f"The upload stalled: no data for {IDLE_UPLOAD_SECONDS:.0f} s; "
                              "check the connection and send it again", no_retry=False) from None
        scanner.close()
        writer.finish()
    except BaseException as exc:
        writer.discard()
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UploadError("Disk full while receiving the upload; free some space and retry",
                              no_retry=False) from None
        if isinstance(exc, (MultipartError, HttpProcessingError)):
            raise UploadError(f"Malformed multipart body: {exc}") from None
        if isinstance(exc, ConnectionResetError):  # the sender went away: common on field Wi-Fi, not a fault here
            raise UploadError("The connection dropped during the upload; send it again", no_retry=False) from None
        raise
    return form


async def read_action_fields(request: web.Request) -> dict[str, str]:
    """The body of cancel, remove and restart, read as NodeODM reads it: urlencoded or JSON.

    Any other body, multipart too, carries no fields, so its uuid is missing, as on NodeODM.
    Non-string JSON values (such as an options list) come back JSON-encoded, like a form field.
    """
    if request.content_type == "application/json":
        try:
            data = json.loads(await request.text())
        except ValueError:
            raise UploadError("Invalid JSON body") from None
        if not isinstance(data, dict):
            raise UploadError("Invalid JSON body: expected an object")
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    if request.content_type == "application/x-www-form-urlencoded":
        posted = await request.post()
        return {k: v for k, v in posted.items() if isinstance(v, str)}
    return {}
