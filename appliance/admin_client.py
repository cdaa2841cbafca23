"""The one client `passel` commands use to talk to a running box.

A command names the box (--api, --token) and, once an admin password is set, the password, which the
admin API takes as `Authorization: Bearer` in place of the web UI's session. The client sends and reads
JSON, and turns every way a call can fail (nothing answers, an HTTP error, NodeODM's `{"error": ...}`
with a 200, an answer that is not JSON) into an AdminError whose text is one line a field technician
can act on: `passel` prints that line, never a traceback.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from appliance.config import Config

DEFAULT_API = "http://127.0.0.1:3000"
PASSWORD_ENV = "PASSEL_ADMIN_PASSWORD"
TIMEOUT_SECONDS = 15.0


class AdminError(Exception):
    """A call that did not work: `str()` is the line to show, `detail` the reason alone."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class Unreachable(AdminError):
    """Nothing answered (refused, timed out, no route), or something that does not speak JSON."""

    def __init__(self, url: str, detail: str) -> None:
        origin = urllib.parse.urlsplit(url)._replace(path="", query="", fragment="").geturl()
        super().__init__(f"Cannot reach Passel at {origin}: {detail}. Is `passel run` running? "
                         "Use --api to point at another box.", detail)


class Refused(AdminError):
    """The box answered, and said no."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"Passel refused: {detail}", detail)


def add_api_flags(parser: argparse.ArgumentParser, what: str = "any box's API", password: bool = True) -> None:
    """--api and --token for a command that talks to a running box, and --password if it changes something."""
    parser.add_argument("--api", default=os.environ.get("PASSEL_API", DEFAULT_API),
                        help=f"{what} (default {DEFAULT_API}) [env PASSEL_API]")
    parser.add_argument("--token", default=os.environ.get("PASSEL_TOKEN") or None,
                        help="the API token, if one is set [env PASSEL_TOKEN]")
    if password:
        parser.add_argument("--password", default=os.environ.get(PASSWORD_ENV) or None,
                            help=f"the admin password, when one is set [env {PASSWORD_ENV}]")


def fetch_json(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
               timeout: float = TIMEOUT_SECONDS) -> Any:
    """One exchange in JSON: an HTTP error status raises Refused, no (JSON) answer raises Unreachable."""
    data = json.dumps(body).encode() if body is not None else None
    sent = ({"Content-Type": "application/json"} if data is not None else {}) | (headers or {})
    try:
        request = urllib.request.Request(url, data=data, method=method, headers=sent)
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            raw = reply.read()
    except urllib.error.HTTPError as exc:
        raise Refused(_error_text(exc)) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError is an OSError; a bad URL, ValueError
        raise Unreachable(url, str(getattr(exc, "reason", exc))) from None
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise Unreachable(url, "the answer is not JSON") from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    """The `error` of a JSON error body, else the status line."""
    try:
        error = json.loads(exc.read()).get("error")
    except (ValueError, AttributeError, OSError):
        error = None
    return str(error) if error else f"HTTP {exc.code} {exc.reason}"


@dataclass(frozen=True)
class AdminClient:
    """A box's API as one command reaches it."""

    api: str = DEFAULT_API
    token: str | None = None
    password: str | None = None
    timeout: float = TIMEOUT_SECONDS

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AdminClient:
        """The box named by the flags of add_api_flags; `--api 10.0.0.5:3000` means http://, as for `submit`."""
        api = args.api if "//" in args.api else f"http://{args.api}"
        return cls(api, args.token, getattr(args, "password", None))

    @classmethod
    def this_box(cls, config: Config, timeout: float = TIMEOUT_SECONDS) -> AdminClient:
        """This box's own agent, at the address it listens on (loopback when that is every address): the
        agent takes sleep, wake and a new key from this box only."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.host, config.host)
        api = f"http://[{host}]:{config.port}" if ":" in host else f"http://{host}:{config.port}"
        return cls(api, config.token or None, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        """Send `body` as JSON to `path` (with `params` as the query) and return the JSON answer."""
        query = (params or {}) | ({"token": self.token} if self.token else {})
        url = self.api.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Authorization": f"Bearer {self.password}"} if self.password else {}
        result = fetch_json(method, url, body, headers, self.timeout)
        if isinstance(result, dict) and result.get("error"):  # NodeODM's way, kept by Passel: 200 and an error
            raise Refused(str(result["error"]))
        return result
