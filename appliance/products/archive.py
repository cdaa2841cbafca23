"""Reading a task's all.zip in place: its member list, one member's bytes (or a range of them), and a
folder of it as a new zip, all without extracting the archive.

Blocking file work: callers on the event loop run these in a thread. An archive's index (its central
directory, thousands of entries with map tiles) is read once and kept for the few archives in use;
a file replaced or released under the same path is seen by its changed identity (inode, size, mtime).
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

CHUNK_BYTES = 256 * 1024
KEPT_ARCHIVES = 4
# PKWARE APPNOTE 4.3.7: a member's local header is 30 bytes; the lengths of its name and extra field end it
LOCAL_HEADER = struct.Struct("<4s22xHH")
LOCAL_SIGNATURE = b"PK\x03\x04"


class BadArchive(Exception):
    """The file is not a zip this code can read; the message says why in one sentence."""


@dataclass
class ResultsArchive:
    """One all.zip, open for reading by any number of threads (zipfile locks its shared handle)."""

    path: Path
    identity: tuple[int, int, int]
    size: int
    zip: zipfile.ZipFile
    members: dict[str, zipfile.ZipInfo]
    _memo: dict[str, Any] = field(default_factory=dict)
    _memo_locks: dict[str, threading.Lock] = field(default_factory=dict)  # one per key: a slow preview delays no map
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def sizes(self) -> dict[str, int]:
        """Member name -> uncompressed size, for the catalogue."""
        return {name: info.file_size for name, info in self.members.items()}

    def remember(self, key: str, compute: Callable[[], Any]) -> Any:
        """What `compute` gives for this archive, worked out once (a footprint, a preview)."""
        with self._lock:
            key_lock = self._memo_locks.setdefault(key, threading.Lock())
        with key_lock:
            if key not in self._memo:
                self._memo[key] = compute()
            return self._memo[key]

    def open_compressed(self, info: zipfile.ZipInfo) -> BinaryIO:
        """zipfile's reader of one member (it counts the readers of its shared handle without a lock)."""
        with self._lock:
            return self.zip.open(info)

    def close(self) -> None:
        with self._lock:
            self.zip.close()  # members still being read keep the file open until they are done


_open: OrderedDict[Path, ResultsArchive] = OrderedDict()
_open_lock = threading.Lock()


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def open_archive(path: Path) -> ResultsArchive:
    """The archive at `path`, its index read once while the file stays the same."""
    stat = path.stat()
    with _open_lock:
        known = _open.get(path)
        if known is not None and known.identity == _identity(stat):
            _open.move_to_end(path)
            return known
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise BadArchive(f"{path.name} is not a readable zip file ({exc})") from None
    members = {info.filename: info for info in archive.infolist() if not info.is_dir() and not info.flag_bits & 0x1}
    opened = ResultsArchive(path, _identity(stat), stat.st_size, archive, members)
    with _open_lock:
        replaced = _open.pop(path, None)
        _open[path] = opened
        while len(_open) > KEPT_ARCHIVES:
            _open.popitem(last=False)[1].close()
    if replaced is not None:
        replaced.close()
    return opened


class _StoredMember(io.RawIOBase):
    """A stored (uncompressed) member as a file of its own: seeking is seeking in the zip."""

    def __init__(self, handle: BinaryIO, start: int, size: int) -> None:
        self._handle, self._start, self._size, self._pos = handle, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self._size - self._pos)
        if wanted <= 0:
            return 0
        self._handle.seek(self._start + self._pos)
        got = self._handle.readinto(memoryview(buffer)[:wanted])
        self._pos += got
        return got

    def close(self) -> None:
        self._handle.close()
        super().close()


def _data_start(handle: BinaryIO, info: zipfile.ZipInfo) -> int:
    handle.seek(info.header_offset)
    signature, name_length, extra_length = LOCAL_HEADER.unpack(handle.read(LOCAL_HEADER.size))
    if signature != LOCAL_SIGNATURE:
        raise BadArchive(f"{info.filename} has no local header where the zip's index says")
    return info.header_offset + LOCAL_HEADER.size + name_length + extra_length


def open_member(archive: ResultsArchive, name: str) -> BinaryIO:
    """A member as a seekable file: a stored one seeks in place; a compressed one is decompressed
    from its start, and a seek forward skips by decompressing (zipfile's own seek)."""
    info = archive.members[name]
    if info.compress_type == zipfile.ZIP_STORED:
        handle = open(archive.path, "rb")  # noqa: SIM115 - the returned reader owns and closes it
        try:
            return io.BufferedReader(_StoredMember(handle, _data_start(handle, info), info.file_size), CHUNK_BYTES)
        except BaseException:
            handle.close()
            raise
    return archive.open_compressed(info)


def read_member(archive: ResultsArchive, name: str, start: int = 0,
                stop: int | None = None) -> Generator[bytes, None, None]:
    """The bytes [start, stop) of a member, in chunks."""
    info = archive.members[name]
    stop = info.file_size if stop is None else min(stop, info.file_size)
    with open_member(archive, name) as source:
        source.seek(start)
        left = stop - start
        while left > 0:
            chunk = source.read(min(CHUNK_BYTES, left))
            if not chunk:
                raise BadArchive(f"{name} ends before the size the zip gives it")
            left -= len(chunk)
            yield chunk


class _Sink(io.RawIOBase):
    """An unseekable output that hands each written block on (zipfile then writes data descriptors)."""

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self._send = send

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        block = bytes(data)
        if block:
            self._send(block)
        return len(block)


def write_folder_zip(archive: ResultsArchive, names: Iterable[str], prefix: str, send: Callable[[bytes], None]) -> None:
    """A new zip of the given members, named relative to `prefix`, written through `send` as it is made.

    Stored, not compressed again: tiles and textures are compressed images already, and the box's
    cores are busy processing."""
    buffered = io.BufferedWriter(_Sink(send), CHUNK_BYTES)
    with zipfile.ZipFile(buffered, "w", zipfile.ZIP_STORED) as out:
        for name in names:
            info = archive.members[name]
            entry = zipfile.ZipInfo(name.removeprefix(prefix), info.date_time)
            entry.external_attr = 0o644 << 16
            with archive.open_compressed(info) as source, out.open(entry, "w", force_zip64=info.file_size >= 2 ** 31) as dest:
                while chunk := source.read(CHUNK_BYTES):
                    dest.write(chunk)
    buffered.flush()
