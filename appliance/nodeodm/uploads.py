"""Receive multipart uploads straight to disk, never into memory.

aiohttp's `request.post()` buffers the whole body, so uploads are read part by part with
`request.multipart()`. Each file is written as `<name>.part` and renamed when complete, so a crash
never leaves a half file that looks whole.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_exceptions import HttpProcessingError

CHUNK_BYTES = 256 * 1024
MAX_FIELD_BYTES = 1024 * 1024  # options JSON for ODM is a few kB; 1 MiB leaves room and caps abuse
MAX_FILENAME_BYTES = 255  # the usual file-system limit
MIN_FREE_DISK_BYTES = 512 * 1024 * 1024  # refuse new uploads below this, so accepted ones can finish
PARTIAL_SUFFIX = ".part"


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
    """Return `name` if it is a plain file name, else raise UploadError.

    Names with separators, NUL or control characters are refused rather than repaired: a client
    that sends them is either broken or hostile, and a clear error helps both.
    """
    normalized = unicodedata.normalize("NFC", name)
    bad = (
        not normalized
        or normalized in (".", "..")
        or "/" in normalized
        or "\\" in normalized
        or any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in normalized)
        or len(normalized.encode("utf-8")) > MAX_FILENAME_BYTES
        or normalized.endswith(PARTIAL_SUFFIX)
    )
    if bad:
        raise UploadError(f"Invalid file name: {name!r}")
    return normalized


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


async def _save_part(part: BodyPartReader, directory: Path, filename: str) -> tuple[str, int]:
    name = unique_name(directory, check_filename(filename))
    partial = directory / (name + PARTIAL_SUFFIX)
    written = 0
    try:
        with open(partial, "wb") as out:
            while chunk := await part.read_chunk(CHUNK_BYTES):
                out.write(chunk)
                written += len(chunk)
        os.replace(partial, directory / name)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise UploadError("Disk full while receiving the upload; free some space and retry",
                              no_retry=False) from None
        raise
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return name, written


async def _read_field(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise UploadError(f"Field {part.name!r} is larger than {MAX_FIELD_BYTES} bytes")
    try:
        return data.decode(part.get_charset(default="utf-8"))
    except (UnicodeDecodeError, LookupError):
        raise UploadError(f"Field {part.name!r} is not valid text") from None


async def receive_form(request: web.Request, directory: Path | None, file_field: str = "images") -> ReceivedForm:
    """Stream a multipart body: files of `file_field` go to `directory`, text fields are returned.

    With `directory` None, any file is refused (init takes text fields only).
    """
    form = ReceivedForm()
    content_type = request.headers.get("Content-Type", "")
    if request.method != "POST" or not request.body_exists:
        return form
    if content_type.startswith("application/x-www-form-urlencoded"):
        posted = await request.post()
        form.fields = {k: v for k, v in posted.items() if isinstance(v, str)}
        return form
    if not content_type.startswith("multipart/"):
        raise UploadError("Expected a multipart/form-data body")
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if isinstance(part, MultipartReader):
                raise UploadError("Nested multipart bodies are not supported")
            if part.filename is not None:
                if directory is None or part.name != file_field:
                    await part.release()
                    continue
                name, size = await _save_part(part, directory, part.filename)
                form.files.append(name)
                form.bytes_written += size
            elif part.name:
                form.fields[part.name] = await _read_field(part)
    except UploadError:
        raise
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as exc:
        raise UploadError(f"Malformed multipart body: {exc}") from None
    return form


async def read_action_fields(request: web.Request) -> dict[str, str]:
    """The body of cancel, remove and restart: urlencoded, multipart or JSON, as NodeODM accepts.

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
    return (await receive_form(request, directory=None)).fields
