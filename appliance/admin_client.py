"""The one client `passel` commands use to talk to a running box.

A command names the box (--api, --token) and, once an admin password is set, the password, which the
admin API takes as `Authorization: Bearer` in place of the web UI's session. The client sends and reads
JSON, and turns every way a call can fail (an address that is not one, nothing answers, an HTTP error,
NodeODM's `{"error": ...}` with a 200, an answer that is not JSON, a plain NodeODM where a Passel was
expected) into an AdminError whose text is one line a field technician can act on: `passel` prints
that line, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from appliance.config import Config

DEFAULT_PORT = 3000
DEFAULT_API = f"http://127.0.0.1:{DEFAULT_PORT}"
PASSWORD_ENV = "PASSEL_ADMIN_PASSWORD"
TIMEOUT_SECONDS = 15.0
BOX_PATH = "/-/box.json"  # what every Passel answers, discovery or not
NOT_JSON = "the answer is not JSON"
HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+")  # a name, an IPv4 or an IPv6 address: no spaces, no slashes


class AdminError(Exception):
    """A call that did not work: `str()` is the line to show, `detail` the reason alone."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class Unreachable(AdminError):
    """Nothing answered (refused, timed out, no route), or something that does not speak JSON."""

    def __init__(self, url: str, detail: str, hint: str = "Is `passel run` running there? "
                                                           "Use --api to point at another box.") -> None:
        super().__init__(f"Cannot reach Passel at {origin(url)}: {detail}. {hint}", detail)


class Refused(AdminError):
    """The box answered, and said no; `status` is the HTTP status when it was an error status."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(f"Passel refused: {detail}", detail)
        self.status = status


class NotAPassel(AdminError):
    """Something answers at --api, but not Passel's admin API: most often a NodeODM's own port."""

    def __init__(self, url: str, what: str) -> None:
        super().__init__(f"{origin(url)} is {what}, not a Passel: point --api at a box running `passel run` "
                         f"(port {DEFAULT_PORT} unless set otherwise).", what)


def origin(url: str) -> str:
    """scheme://host:port of a URL, without the path and the token."""
    return urllib.parse.urlsplit(url)._replace(path="", query="", fragment="").geturl()


def api_url(raw: str) -> str:
    """The --api value as a URL: `10.0.0.5` means http://10.0.0.5:3000, Passel's port; AdminError when it is
    no address at all."""
    url = raw.strip() if "//" in raw else f"http://{raw.strip()}"
    try:
        parts = urllib.parse.urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(HOST.fullmatch(parts.hostname or "")) and parts.port != 0
    except ValueError:  # a port that is not a number from 0 to 65535
        usable = False
    if not usable:
        raise AdminError(f"--api {raw!r} is not an address: give one like http://10.0.0.5:3000 or 10.0.0.5:3000.",
                         "not an address")
    if parts.port is None and parts.scheme == "http":
        return parts._replace(netloc=f"{parts.netloc}:{DEFAULT_PORT}").geturl()
    return url


def network_reason(exc: BaseException) -> str:
    """Why a connection failed, in words: the OS error at the root of what urllib, requests or PyODM raised."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, socket.gaierror):
            return "no machine by that name can be found on this network (check the name, or use the IP address)"
        if isinstance(err, ConnectionRefusedError):
            return "nothing is listening on that port"
        if isinstance(err, TimeoutError):
            return "no answer in time"
        if isinstance(err, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
            return "the connection was cut"
        if isinstance(err, OSError) and err.strerror:
            return err.strerror[0].lower() + err.strerror[1:]
        todo += [err.__cause__, err.__context__, getattr(err, "reason", None),
                 *(a for a in err.args if isinstance(a, BaseException))]
    return str(exc) or type(exc).__name__


def add_api_flags(parser: argparse.ArgumentParser, what: str = "any box's API", password: bool = True) -> None:
    """--api and --token for a command that talks to a running box, and --password if it changes something."""
    parser.add_argument("--api", default=os.environ.get("PASSEL_API", DEFAULT_API),
                        help=f"{what} (default {DEFAULT_API}; port {DEFAULT_PORT} when none is given) "
                             "[env PASSEL_API]")
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
        raise Refused(_error_text(exc), exc.code) from None
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise Unreachable(url, network_reason(exc)) from None
    except ValueError as exc:  # what urllib says of a URL it cannot use
        raise Unreachable(url, str(exc), "Give --api as http://HOST:PORT, e.g. http://10.0.0.5:3000.") from None
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise Unreachable(url, NOT_JSON) from None


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
        return cls(api_url(args.api), args.token, getattr(args, "password", None))

    @classmethod
    def this_box(cls, config: Config, timeout: float = TIMEOUT_SECONDS) -> AdminClient:
        """This box's own agent, at the address it listens on (loopback when that is every address): the
        agent takes sleep, wake and a new key from this box only."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.host, config.host)
        api = f"http://[{host}]:{config.port}" if ":" in host else f"http://{host}:{config.port}"
        return cls(api, config.token or None, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        """Send `body` as JSON to `path` (with `params` as the query) and return the JSON answer."""
        try:
            result = self._exchange(method, path, body, params)
        except Refused as exc:
            if exc.status == 404 and exc.detail.startswith("HTTP 404"):  # no such page, rather than no such thing
                self._check_is_passel()
            raise
        except Unreachable as exc:
            if exc.detail == NOT_JSON:
                self._check_is_passel()
            raise
        if isinstance(result, dict) and result.get("error"):  # NodeODM's way, kept by Passel: 200 and an error
            raise Refused(str(result["error"]))
        return result

    def _exchange(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        query = (params or {}) | ({"token": self.token} if self.token else {})
        url = self.api.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Authorization": f"Bearer {self.password}"} if self.password else {}
        return fetch_json(method, url, body, headers, self.timeout)

    def _check_is_passel(self) -> None:
        """Raise NotAPassel when --api names something that is not a Passel; every Passel answers /-/box.json."""
        with contextlib.suppress(AdminError):
            self._exchange("GET", BOX_PATH)
            return
        try:
            info = self._exchange("GET", "/info")
        except AdminError:
            raise NotAPassel(self.api, "a web server") from None
        if isinstance(info, dict) and {"engine", "taskQueueCount"} & info.keys():
            engine = " ".join(str(v) for v in (info.get("engine") or "odm", info.get("engineVersion")) if v)
            raise NotAPassel(self.api, f"a plain NodeODM ({engine})")
        raise NotAPassel(self.api, "a web server")
