"""The passel key: only boxes that hold it may join, coordinate or be given work.

Every agent-to-agent request is signed with HMAC-SHA256 over the method, path and query, the
sender's box id and term, a per-process boot id with a counter, and a digest of the body; the
reply is signed over its body and the request's counter. A receiver accepts each (box, boot,
counter) once, within a window of recent counters, so a recorded heartbeat or claim cannot be replayed.
Counters rather than timestamps, because field boxes often have no time source and clocks drift.

Node tokens travel between agents in the replica feed, sealed with a key derived from the passel
key (Fernet: AES-128-CBC with HMAC), so a laptop listening on the field Wi-Fi does not learn them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "passel.key"
UNSIGNED_BODY = "streamed"  # large streamed bodies (hand-overs) carry a digest of their metadata instead
MAX_BOXES_REMEMBERED = 256
TYPED_CODE = re.compile(r"[A-Za-z2-7\s-]*")  # what a pairing code may hold as typed: letters, 2-7, dashes, spaces
REPLAY_WINDOW = 64  # how far out of order a counter may arrive (concurrent heartbeats, syncs, hand-overs)
H_BOX, H_BOOT, H_SEQ, H_TERM, H_SIG = "X-Passel-Box", "X-Passel-Boot", "X-Passel-Seq", "X-Passel-Term", "X-Passel-Sig"


class Untrusted(Exception):
    """A request or reply that does not prove the passel key; the message says what was wrong."""


def grouped(code: str) -> str:
    """A code in groups of four, as a person reads it out and types it."""
    return "-".join(code[i:i + 4] for i in range(0, len(code), 4))


def new_key_code() -> str:
    """A key a responder can read out and type: 24 base32 letters in groups of four."""
    return grouped(base64.b32encode(secrets.token_bytes(15)).decode())


def normalize_code(code: str) -> str:
    cleaned = re.sub(r"[^A-Z2-7]", "", code.upper())
    if len(cleaned) < 16:
        raise ValueError("A passel key is at least 16 letters and digits 2-7, like ABCD-EFGH-IJKL-MNOP")
    return cleaned


def parse_typed_code(typed: str) -> str:
    """A code a person typed, normalized. Stricter than `normalize_code`, which drops what is not a
    letter or 2-7: a 0 typed for the letter O would silently make another key."""
    if not TYPED_CODE.fullmatch(typed.strip()):
        raise ValueError("A pairing code has only the letters A to Z and the digits 2 to 7: where you read "
                         "0, 1 or 8, it is the letter O, I or B.")
    try:
        return normalize_code(typed)
    except ValueError:
        raise ValueError("That code is too short: a pairing code has at least 16 letters and digits, in groups "
                         "of four like ABCD-EFGH-IJKL-MNOP. Check that you typed every group.") from None


def read_key(configured: str, state_dir: Path) -> str | None:
    """The key this box uses, without making one: the configured key, else the key file's; None
    before the first start has made one."""
    if configured:
        return normalize_code(configured)
    path = state_dir / KEY_FILE
    return normalize_code(path.read_text()) if path.exists() else None


def load_or_create_key(configured: str, state_dir: Path) -> str:
    """The configured key, else the one this box made on its first start (kept in the state dir)."""
    known = read_key(configured, state_dir)
    if known is not None:
        return known
    path = state_dir / KEY_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    code = new_key_code()
    temporary = path.with_suffix(".tmp")
    temporary.write_text(code + "\n")
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return normalize_code(code)


def save_key(state_dir: Path, code: str) -> str:
    normalized = normalize_code(code)
    path = state_dir / KEY_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(code.strip() + "\n")
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return normalized


def body_digest(body: bytes | None) -> str:
    return hashlib.sha256(body or b"").hexdigest()


class Trust:
    """Signs this box's calls and checks other boxes' calls with the shared key."""

    def __init__(self, key: str, box_id: str) -> None:
        self.box_id = box_id
        self.boot = secrets.token_hex(6)
        self._counter = itertools.count(1)
        self.set_key(key)
        self._seen: OrderedDict[tuple[str, str], tuple[int, frozenset[int]]] = OrderedDict()

    def set_key(self, key: str) -> None:
        self._secret = hashlib.sha256(b"passel-hmac:" + normalize_code(key).encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"passel-seal:" + normalize_code(key).encode()).digest()))

    def fingerprint(self) -> str:
        """A short, safe-to-show id of the key, so two boxes can compare without revealing it."""
        return hashlib.sha256(b"fingerprint" + self._secret).hexdigest()[:8]

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._secret, "\n".join(parts).encode(), hashlib.sha256).hexdigest()

    def sign_request(self, method: str, path_qs: str, digest: str, term: int) -> dict[str, str]:
        seq = str(next(self._counter))
        headers = {H_BOX: self.box_id, H_BOOT: self.boot, H_SEQ: seq, H_TERM: str(term)}
        headers[H_SIG] = self._mac("req", method.upper(), path_qs, self.box_id, self.boot, seq, str(term), digest)
        return headers

    def verify_request(self, method: str, path_qs: str, digest: str, headers: Mapping[str, str]) -> tuple[str, int]:
        """Check a signed request; returns (box id, term). Each (box, boot, counter) is accepted once."""
        try:
            box, boot, seq, term, sig = (headers[h] for h in (H_BOX, H_BOOT, H_SEQ, H_TERM, H_SIG))
            seq_n, term_n = int(seq), int(term)
        except (KeyError, ValueError):
            raise Untrusted("not signed with a passel key") from None
        expected = self._mac("req", method.upper(), path_qs, box, boot, seq, term, digest)
        if not hmac.compare_digest(expected, sig):
            raise Untrusted(f"box {box[:12]} does not hold this passel's key")
        top, recent = self._seen.get((box, boot), (0, frozenset()))
        if seq_n in recent or seq_n <= top - REPLAY_WINDOW:
            raise Untrusted(f"replayed request from box {box[:12]}")
        top = max(top, seq_n)
        # Concurrent calls may arrive out of order: accept any unseen counter within the window.
        self._seen[(box, boot)] = (top, frozenset(n for n in recent | {seq_n} if n > top - REPLAY_WINDOW))
        self._seen.move_to_end((box, boot))
        while len(self._seen) > MAX_BOXES_REMEMBERED:
            self._seen.popitem(last=False)
        return box, term_n

    def sign_reply(self, body: bytes, request_headers: Mapping[str, str]) -> str:
        return self._mac("rep", body_digest(body), request_headers.get(H_BOX, ""), request_headers.get(H_BOOT, ""),
                         request_headers.get(H_SEQ, ""))

    def verify_reply(self, body: bytes, signature: str | None, sent: Mapping[str, str]) -> None:
        if not signature or not hmac.compare_digest(self.sign_reply(body, sent), signature):
            raise Untrusted("the reply is not signed with this passel's key")

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode() if secret else ""

    def unseal(self, sealed: str) -> str:
        if not sealed:
            return ""
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise Untrusted("a sealed node token does not open with this passel's key") from None


def decode_json(body: bytes) -> Any:
    return json.loads(body) if body else None
