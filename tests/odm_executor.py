"""A client that behaves like ODM's split-merge executor (opendm/remote.py) against --sm-cluster.

It follows the contract's rules, with shorter waits so tests stay quick:
- uploads are sequential across tasks; within a task, 10 in parallel, each retried 5 times unless
  the reply says noRetry;
- right after commit the task must be RUNNING or COMPLETED: QUEUED means "task limit reached",
  so the task is removed and sent again later;
- polling; FAILED fetches output?line=0 and aborts the job; connection errors and not-found are
  retried 5 times, each time removing the task and sending it again;
- COMPLETED downloads all.zip, extracts it, and (like ODM) removes the task unless told to keep it.
"""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

OUTPUTS = ["opensfm/matches", "opensfm/features", "opensfm/reconstruction.json", "opensfm/tracks.csv",
           "cameras.json"]
OPTIONS = [{"name": "orthophoto-resolution", "value": "5.0"}, {"name": "pc-quality", "value": "lowest"},
           {"name": "skip-3dmodel", "value": True}]


class Retry(Exception):
    """Remove the task and send it again (connection error, not-found, or task limit)."""


class Aborted(Exception):
    """FAILED: ODM writes error.log and stops the whole split-merge."""


@dataclass
class Submodel:
    name: str
    files: list[Path]
    uuid: str | None = None
    attempts: int = 0
    status: str = "pending"
    zip_names: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)


class SplitMergeClient:
    def __init__(self, api: str, poll: float = 0.5, retry_wait: float = 1.0, keep: bool = True,
                 on_stage: Callable[[Submodel, str], None] = lambda s, stage: None,
                 on_reply: Callable[[dict[str, Any]], None] = lambda exchange: None) -> None:
        """`on_reply` hears every request and what came back (the nemesis's history)."""
        self.api = api.rstrip("/")
        self.poll, self.retry_wait, self.keep, self.on_stage = poll, retry_wait, keep, on_stage
        self.on_reply = on_reply
        self._upload_lock = threading.Lock()

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:  # noqa: ANN003
        started = time.monotonic()
        exchange: dict[str, Any] = {"method": method, "path": path, "sent": started}
        if isinstance(kwargs.get("data"), dict) and "uuid" in kwargs["data"]:
            exchange["uuid"] = kwargs["data"]["uuid"]  # /task/remove names its task in the body
        try:
            reply = requests.request(method, self.api + path, timeout=30, **kwargs)
        except requests.RequestException as exc:
            self.on_reply(exchange | {"seconds": time.monotonic() - started, "error": f"connection: {exc}"})
            raise Retry(f"connection: {exc}") from None
        exchange |= {"seconds": time.monotonic() - started, "http": reply.status_code}
        if path.endswith("/download/all.zip"):
            exchange["bytes"] = len(reply.content)
        else:
            try:
                exchange["reply"] = reply.json()
            except ValueError:
                exchange["reply"] = reply.text[:200]
        self.on_reply(exchange)
        return reply

    def _json(self, method: str, path: str, **kwargs) -> dict | list:  # noqa: ANN003
        reply = self._request(method, path, **kwargs)
        if reply.status_code != 200:
            raise Retry(f"HTTP {reply.status_code}")
        return reply.json()

    def _upload(self, uuid: str, path: Path) -> None:
        for attempt in range(6):
            with open(path, "rb") as handle:
                try:
                    reply = self._json("POST", f"/task/new/upload/{uuid}", files={"images": (path.name, handle)})
                except Retry:
                    reply = {"error": "connection"}
            if reply.get("success"):
                return
            if reply.get("noRetry") or attempt == 5:
                raise Retry(f"upload of {path.name}: {reply.get('error')}")
            time.sleep(0.5)

    def _submit(self, sub: Submodel) -> None:
        with self._upload_lock:
            self._json("GET", "/info")
            reply = self._json("POST", "/task/new/init", files={
                "name": (None, ""), "options": (None, json.dumps(OPTIONS)), "skipPostProcessing": (None, "true"),
                "outputs": (None, json.dumps(OUTPUTS))})
            if "uuid" not in reply:
                raise Retry(f"init: {reply}")
            sub.uuid = reply["uuid"]
            sub.history.append(sub.uuid)
            self.on_stage(sub, "uploading")
            with ThreadPoolExecutor(10) as pool:
                list(pool.map(lambda p: self._upload(sub.uuid, p), sub.files))
            if self._json("POST", f"/task/new/commit/{sub.uuid}").get("uuid") != sub.uuid:
                raise Retry("commit refused")
            first = self._json("GET", f"/task/{sub.uuid}/info")
            code = (first.get("status") or {}).get("code")
            if code == 10:
                raise Retry("task limit reached")
            if code not in (20, 40):
                raise Retry(f"unexpected status right after commit: {first}")
        self.on_stage(sub, "committed")

    def _follow(self, sub: Submodel, out: Path) -> None:
        while True:
            info = self._json("GET", f"/task/{sub.uuid}/info")
            if "error" in info:
                raise Retry(f"info: {info['error']}")
            code = info["status"]["code"]
            if code == 10:
                raise Retry("delayed task limit reached")
            if code == 30:
                lines = self._json("GET", f"/task/{sub.uuid}/output", params={"line": 0})
                raise Aborted(f"{sub.name} failed: {lines[-3:]}")
            if code == 40:
                break
            time.sleep(self.poll)
        self._json("GET", f"/task/{sub.uuid}/info")
        try:
            zipped = self._request("GET", f"/task/{sub.uuid}/download/all.zip")
            archive = zipfile.ZipFile(io.BytesIO(zipped.content))
        except zipfile.BadZipFile as exc:
            raise Retry(f"download: {exc}") from None
        archive.extractall(out / sub.name)
        sub.zip_names = archive.namelist()
        if not self.keep:
            self._json("POST", "/task/remove", data={"uuid": sub.uuid})

    def run_one(self, sub: Submodel, out: Path) -> None:
        for attempt in range(6):
            sub.attempts = attempt + 1
            try:
                self._submit(sub)
                self._follow(sub, out)
                sub.status = "completed"
                return
            except Retry as exc:
                sub.status = f"retrying: {exc}"
                if sub.uuid:
                    try:
                        self._json("POST", "/task/remove", data={"uuid": sub.uuid})
                    except Retry:
                        pass
                time.sleep(self.retry_wait * (attempt + 1))
        sub.status = "gave up"

    def run(self, submodels: list[Submodel], out: Path) -> None:
        """All submodels at once (ODM keeps several remote tasks in flight; uploads stay sequential)."""
        with ThreadPoolExecutor(len(submodels)) as pool:
            list(pool.map(lambda s: self.run_one(s, out), submodels))


def make_submodels(root: Path, count: int, images: int) -> list[Submodel]:
    subs = []
    for index in range(count):
        folder = root / f"submodel_{index:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for n in range(images):
            path = folder / f"IMG_{index:02d}{n:02d}.JPG"
            path.write_bytes(b"\xff\xd8" + bytes([index, n]) * 30_000)
            files.append(path)
        seed = folder / "seed.zip"
        with zipfile.ZipFile(seed, "w") as archive:
            archive.writestr("opensfm/split_merge_stop_at_reconstruction.txt", "")
        files.append(seed)
        subs.append(Submodel(name=folder.name, files=files))
    return subs
