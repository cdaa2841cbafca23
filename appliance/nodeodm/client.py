"""A thin asynchronous NodeODM client: one method per endpoint, errors as exceptions."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp

from appliance.nodeodm.file_upload import UploadFailed, post_file, post_growing_file
from appliance.nodeodm.growth import Growth

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_read=30)  # PyODM also waits 30 s
QUICK_TIMEOUT = aiohttp.ClientTimeout(total=5)  # health polls must not pile up behind a dead node


class NodeError(Exception):
    """The node answered, with NodeODM's `{"error": ...}` shape, or with an HTTP error `status`."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NodeUnreachable(Exception):
    """The node did not answer: connection refused, reset or timed out."""


class NodeDown(NodeUnreachable):
    """Not even a connection: nothing listens at the node's address, or no route to it. The node is
    down or cut off, which says nothing about the task that was being sent."""


def split_node_url(url: str) -> tuple[str, str | None]:
    """Split `http://host:port?token=T` into the base URL and the token."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"Not a node URL: {url!r} (expected http://host:port)")
    token = parse_qs(parts.query).get("token", [None])[0]
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return base, token


class NodeClient:
    """Talks to one NodeODM; the token is added here and never leaves this object."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str | None = None) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self._token = token

    def url(self, path: str, **query: Any) -> str:
        params = {k: v for k, v in query.items() if v is not None}
        if self._token:
            params["token"] = self._token
        return f"{self.base_url}{path}" + (f"?{urlencode(params)}" if params else "")

    async def _json(self, method: str, path: str, *, timeout: aiohttp.ClientTimeout = REQUEST_TIMEOUT,
                    query: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        try:
            async with self.session.request(method, self.url(path, **(query or {})), timeout=timeout, **kwargs) as resp:
                if resp.status != 200:
                    raise NodeError(f"HTTP {resp.status} from {self.base_url}{path}", resp.status)
                body = await resp.read()
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            never_connected = isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))
            raise (NodeDown if never_connected else NodeUnreachable)(
                f"{self.base_url} did not answer {method} {path}: {exc or type(exc).__name__}") from None
        try:
            data = json.loads(body)
        except ValueError:
            raise NodeError(f"{self.base_url}{path} did not answer JSON") from None
        if isinstance(data, dict) and data.get("error"):
            raise NodeError(str(data["error"]))
        if isinstance(data, dict) and data.get("success") is False:
            raise NodeError(str(data.get("error", "failed")))
        return data

    async def info(self, timeout: aiohttp.ClientTimeout | None = None) -> dict[str, Any]:
        return await self._json("GET", "/info", timeout=timeout or QUICK_TIMEOUT)

    async def options(self) -> list[dict[str, Any]]:
        return await self._json("GET", "/options", timeout=QUICK_TIMEOUT)

    async def task_list(self, timeout: aiohttp.ClientTimeout | None = None) -> list[dict[str, Any]]:
        return await self._json("GET", "/task/list", timeout=timeout or QUICK_TIMEOUT)

    async def task_info(self, uuid: str, with_output: int | None = None) -> dict[str, Any]:
        return await self._json("GET", f"/task/{uuid}/info", query={"with_output": with_output})

    async def task_output(self, uuid: str, line: int = 0) -> list[str]:
        return await self._json("GET", f"/task/{uuid}/output", query={"line": line})

    async def task_init(self, uuid: str, fields: dict[str, str]) -> str:
        # NodeODM reads init as multipart only: urlencoded fields would be dropped without a word.
        form = aiohttp.FormData(fields, default_to_multipart=True)
        reply = await self._json("POST", "/task/new/init", data=form, headers={"set-uuid": uuid})
        return str(reply["uuid"])

    async def task_upload(self, uuid: str, files: Iterable[Path]) -> None:
        files = list(files)
        if len(files) == 1 and self.base_url.startswith("http://"):
            await self._upload_with_sendfile(uuid, files[0].name, lambda url: post_file(url, files[0]))
            return
        with aiohttp.MultipartWriter("form-data") as writer:
            handles = []
            try:
                for path in files:
                    handle = open(path, "rb")
                    handles.append(handle)
                    part = writer.append(handle)
                    part.set_content_disposition("form-data", name="images", filename=path.name)
                await self._json("POST", f"/task/new/upload/{uuid}", data=writer)
            finally:
                for handle in handles:
                    handle.close()

    async def task_upload_growing(self, uuid: str, handle: BinaryIO, path: Path, growth: Growth) -> None:
        """One file that is still arriving on this box at `path` (`handle` opened when it started), sent
        on as it arrives; over https, once it is whole."""
        if not self.base_url.startswith("http://"):
            if not await growth.ended():
                raise NodeUnreachable(f"the upload of {path.name} to this box broke; nothing was sent")
            await self.task_upload(uuid, [path])
            return
        await self._upload_with_sendfile(uuid, path.name,
                                         lambda url: post_growing_file(url, handle, path.name, growth))

    async def _upload_with_sendfile(self, uuid: str, name: str,
                                    send: Callable[[str], Awaitable[tuple[int, Any]]]) -> None:
        """One file by the kernel's sendfile (file_upload.py), whole or as it arrives."""
        try:
            status, data = await send(self.url(f"/task/new/upload/{uuid}"))
        except UploadFailed as exc:
            raise NodeUnreachable(str(exc)) from None
        if status != 200:
            raise NodeError(f"HTTP {status} from {self.base_url} uploading {name}", status)
        if not isinstance(data, dict) or data.get("error") or not data.get("success"):
            raise NodeError(str((data or {}).get("error", "upload refused")) if isinstance(data, dict) else "upload refused")

    async def task_commit(self, uuid: str) -> None:
        await self._json("POST", f"/task/new/commit/{uuid}")

    async def task_cancel(self, uuid: str) -> None:
        await self._json("POST", "/task/cancel", data={"uuid": uuid})

    async def task_remove(self, uuid: str) -> None:
        await self._json("POST", "/task/remove", data={"uuid": uuid})

    async def task_restart(self, uuid: str, options: str | None = None) -> None:
        data = {"uuid": uuid} | ({"options": options} if options is not None else {})
        await self._json("POST", "/task/restart", data=data)
