"""An incremental multipart/form-data scanner that hands back slices of the chunks it is fed.

Uploads are the hottest path of both the coordinator and the simulated node, and aiohttp's
`BodyPartReader` copies every byte a few times in Python (it glues each chunk to the previous tail
to look for the boundary, then slices the result). This scanner looks for the delimiter with one
`bytes.find` per chunk (C speed) and returns the part's data as the chunk itself, or a memoryview
of it, so a file part costs one scan and one `os.write` per chunk. Only a chunk that ends with what
may be the start of a delimiter keeps a few bytes back and is joined to the next one.

Content-Disposition is decoded by aiohttp's own functions, so names and file names come out exactly
as `BodyPartReader.name` / `.filename` gave them (quoted-string escapes, RFC 5987 `filename*=`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp.helpers import parse_mimetype
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

MAX_HEADER_BYTES = 16 * 1024  # all the headers of one part; clients send two or three short lines
CRLF = b"\r\n"
_ROOTED = re.compile(r'(?:^|;)\s*filename\s*=\s*"?[\\/]', re.IGNORECASE)  # filename="/etc/x" or "\\x"
_PREAMBLE, _HEADERS, _BODY, _DONE = range(4)


class MultipartError(ValueError):
    """The body is not well-formed multipart (the message says where it went wrong)."""


@dataclass(frozen=True, slots=True)
class PartStart:
    """The headers of a part; its data follows as bytes/memoryview events, then a `None` event."""

    name: str | None
    filename: str | None
    content_type: str

    @property
    def charset(self) -> str:
        return parse_mimetype(self.content_type).parameters.get("charset", "utf-8")


Event = PartStart | bytes | memoryview | None


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a multipart Content-Type header."""
    boundary = parse_mimetype(content_type).parameters.get("boundary", "")
    if not boundary or len(boundary) > 200 or not boundary.isascii() or "\r" in boundary or "\n" in boundary:
        raise MultipartError(f"missing or invalid boundary in {content_type!r}")
    return boundary.encode("ascii")


def _parse_headers(block: bytes) -> PartStart:
    headers: dict[str, str] = {}
    for line in block.split(CRLF) if block else []:
        key, colon, value = line.partition(b":")
        if not colon or not key.strip():
            raise MultipartError(f"bad part header line {line[:80]!r}")
        try:
            headers[key.strip().decode("ascii").lower()] = value.strip().decode("utf-8")
        except UnicodeDecodeError:
            raise MultipartError(f"part header is not UTF-8: {line[:80]!r}") from None
    disposition = headers.get("content-disposition")
    _, params = parse_content_disposition(disposition)
    filename = content_disposition_filename(params, "filename")
    if filename is not None and _ROOTED.search(disposition or "") and not filename.startswith(("/", "\\")):
        filename = "/" + filename  # aiohttp drops a leading slash: keep it, so the name's check sees a rooted path
    return PartStart(name=content_disposition_filename(params, "name"), filename=filename,
                     content_type=headers.get("content-type", "text/plain"))


class MultipartScanner:
    """Feed it the body chunk by chunk; it yields `PartStart`, data slices and `None` (end of part).

    The data slices borrow the fed chunk: consume them before the next `feed`.
    """

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = CRLF + b"--" + boundary
        # The first delimiter may open the body without a CRLF before it; a virtual one makes it look
        # like every other, and everything before it is the preamble, which is ignored.
        self._buffer = CRLF
        self._state = _PREAMBLE
        self._preamble = 0  # bytes skipped before the first delimiter

    @property
    def done(self) -> bool:
        """True once the closing delimiter was seen; anything after it is the ignored epilogue."""
        return self._state == _DONE

    def feed(self, chunk: bytes) -> Iterator[Event]:
        """The events that `chunk` completes; a part's data may come in several slices."""
        if self._state == _DONE:
            return
        buffer = self._buffer + chunk if self._buffer else chunk
        self._buffer = b""
        pos = 0
        while True:
            if self._state == _HEADERS:
                if buffer.startswith(CRLF, pos):  # a part without headers
                    block_end, data_start = pos, pos + 2
                else:
                    block_end = buffer.find(b"\r\n\r\n", pos)
                    data_start = block_end + 4
                if block_end < 0:
                    if len(buffer) - pos > MAX_HEADER_BYTES:
                        raise MultipartError(f"part headers longer than {MAX_HEADER_BYTES} bytes")
                    break
                yield _parse_headers(buffer[pos:block_end])
                pos, self._state = data_start, _BODY
                continue
            found = buffer.find(self._delimiter, pos)
            if found < 0:
                # Pass on all but what could be the start of a delimiter cut by the end of the chunk.
                # The delimiter holds one CR, its first byte, so only the last CR can start such a piece.
                keep = buffer.rfind(b"\r", max(pos, len(buffer) - len(self._delimiter) + 1))
                if keep < 0 or not self._delimiter.startswith(buffer[keep:]):
                    keep = len(buffer)
                if self._state == _BODY and keep > pos:
                    yield buffer if pos == 0 and keep == len(buffer) else memoryview(buffer)[pos:keep]
                elif self._state == _PREAMBLE:
                    self._preamble += keep - pos
                    if self._preamble > MAX_HEADER_BYTES:
                        raise MultipartError(f"no boundary in the first {MAX_HEADER_BYTES} bytes")
                pos = keep
                break
            if self._state == _BODY and found > pos:
                yield memoryview(buffer)[pos:found]
            after = found + len(self._delimiter)
            if buffer.startswith(b"--", after):  # the closing delimiter
                if self._state == _BODY:
                    yield None
                self._state = _DONE
                return
            line_end = buffer.find(CRLF, after)
            if line_end < 0:
                if len(buffer) - after > MAX_HEADER_BYTES:
                    raise MultipartError("boundary line never ends")
                pos = found  # wait for the rest of the boundary line
                break
            if buffer[after:line_end].strip(b" \t"):
                raise MultipartError(f"unexpected bytes after a boundary: {buffer[after:line_end][:40]!r}")
            if self._state == _BODY:
                yield None
            pos, self._state = line_end + 2, _HEADERS
        self._buffer = buffer[pos:]

    def close(self) -> None:
        """Raise if the body ended before its closing delimiter."""
        if self._state == _PREAMBLE:
            raise MultipartError("no boundary found in the body")
        if self._state != _DONE:
            raise MultipartError("the body ends before its closing boundary (truncated upload?)")
