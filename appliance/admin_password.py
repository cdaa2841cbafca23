"""The admin password as this box keeps it: a salted scrypt hash at rest in the state dir, replaced
atomically, and ordered by generation so that every box of the passel converges on the newest
(replication/password.py). The HTTP side that asks for it is admin_auth.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from aiohttp import web

PASSWORD_FILE = "admin-password.json"
MIN_LENGTH = 8
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1  # ~16 MB and ~50 ms per check: slow for a guesser, fine for a person
FAILURE_DELAY_SECONDS = 0.5  # after a wrong password, so guessing over the field Wi-Fi stays slow


class PasswordRefused(Exception):
    """A password change that cannot be made; the message says why."""


@dataclass(frozen=True)
class PasswordRecord:
    """What is kept on disk: a salted scrypt hash, never the password."""

    salt: str
    hash: str
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P
    generation: int = 0  # one more at every change

    @classmethod
    def make(cls, password: str, salt: str | None, generation: int) -> PasswordRecord:
        salt = salt or secrets.token_hex(16)
        return cls(salt=salt, hash=_scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P), generation=generation)

    def supersedes(self, other: PasswordRecord | None) -> bool:
        """Newer than `other`: a later generation. Two changes made apart (on the two sides of a
        partition) are ordered by their hashes, so every box picks the same one."""
        return other is None or (self.generation, self.hash) > (other.generation, other.hash)

    def matches(self, password: str) -> bool:
        return hmac.compare_digest(_scrypt(password, self.salt, self.n, self.r, self.p), self.hash)

    def session_key(self) -> bytes:
        """32 bytes for the UI's session cookies; a new password signs everyone out."""
        return hmac.new(bytes.fromhex(self.hash), b"passel-ui-session-v1", hashlib.sha256).digest()


def _scrypt(password: str, salt: str, n: int, r: int, p: int) -> str:
    return hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=n, r=r, p=p, maxmem=64 * 1024 * 1024).hex()


class AdminPassword:
    """This box's admin password, loaded at start and replaced atomically on a change."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / PASSWORD_FILE
        self.record: PasswordRecord | None = None

    @property
    def is_set(self) -> bool:
        return self.record is not None

    def load(self) -> None:
        try:
            self.record = PasswordRecord(**json.loads(self.path.read_text()))
        except FileNotFoundError:
            self.record = None

    async def check(self, password: str | None) -> bool:
        """True when no password is set, or this is it (hashed off the event loop)."""
        record = self.record
        if record is None:
            return True
        if not password:
            return False
        return await asyncio.to_thread(record.matches, password)

    async def change(self, old: str | None, new: str, salt: str | None = None, generation: int | None = None) -> None:
        """Set the first password, or change it given the current one; `salt` and `generation` come
        with a change made on another box."""
        if len(new) < MIN_LENGTH:
            raise PasswordRefused(f"The new password must be at least {MIN_LENGTH} characters")
        if self.record is not None and not await self.check(old):
            await asyncio.sleep(FAILURE_DELAY_SECONDS)
            raise PasswordRefused("The current password is wrong")
        next_generation = (self.record.generation if self.record else 0) + 1
        record = await asyncio.to_thread(PasswordRecord.make, new, salt, max(generation or 0, next_generation))
        await asyncio.to_thread(self._save, record)
        self.record = record

    async def adopt(self, record: PasswordRecord) -> bool:
        """Take a record from another box of the passel when it is newer than ours."""
        if not record.supersedes(self.record):
            return False
        await asyncio.to_thread(self._save, record)
        self.record = record
        return True

    def _save(self, record: PasswordRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(record)))
        os.chmod(temporary, 0o600)
        os.replace(temporary, self.path)


ADMIN_PASSWORD_KEY: web.AppKey[AdminPassword] = web.AppKey("admin_password")
