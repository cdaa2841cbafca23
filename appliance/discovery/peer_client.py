"""Calls from this agent to another, signed with the passel key, with the reply's signature checked."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from yarl import URL

from appliance.discovery.trust import H_SIG, Trust, Untrusted, body_digest, decode_json


class PeerClient:
    def __init__(self, session: aiohttp.ClientSession, trust: Trust, term: Callable[[], int]) -> None:
        self.session = session
        self.trust = trust
        self.term = term

    async def call(self, method: str, url: str, *, json_body: Any = None, params: dict[str, Any] | None = None,
                   data: Any = None, digest: str | None = None,
                   timeout: aiohttp.ClientTimeout) -> tuple[int, Any]:
        """Send a signed request; returns (HTTP status, decoded JSON). Raises Untrusted on a forged reply."""
        if params:
            url = f"{url}?{urlencode(params)}"
        parts = urlsplit(url)
        path_qs = parts.path + (f"?{parts.query}" if parts.query else "")
        body = None
        headers: dict[str, str] = {}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        signed = self.trust.sign_request(method, path_qs, digest or body_digest(body), self.term())
        async with self.session.request(method, URL(url, encoded=True), data=body if body is not None else data,
                                        headers=headers | signed, timeout=timeout) as reply:
            payload = await reply.read()
            if reply.status == 401:
                raise Untrusted(str((decode_json(payload) or {}).get("error", "refused: not in this passel")))
            self.trust.verify_reply(payload, reply.headers.get(H_SIG), signed)
            return reply.status, decode_json(payload)
