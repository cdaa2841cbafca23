"""A client that behaves like ODM's split-merge executor (opendm/remote.py, through PyODM) against
--sm-cluster.

Compared with ODM 32cfaac and PyODM 6096686, with shorter waits so tests stay quick (`retry_wait`
stands for ODM's 10 s, `inner_wait` for PyODM's 5 s):
- uploads are sequential across tasks; several tasks run at once (ODM's local worker, which takes
  some submodels itself, is not modelled: every submodel goes to the cluster);
- per task: `GET /info`, init, the files 10 in parallel, each retried 5 times on any error (PyODM
  raises on an error reply before it reads `noRetry`) after `inner_wait` x n, commit, and one info;
- a task whose init, upload or commit failed is not removed: ODM never learned its uuid;
- right after commit the task must be RUNNING or COMPLETED: QUEUED means "task limit reached", so
  the task is removed and sent again, without counting against the 5 retries;
- polling: a connection error is retried on the same task 5 times (`inner_wait` x n, PyODM's
  `wait_for_completion`); an error reply (not-found) or a later QUEUED removes the task and sends it
  again (`retry_wait` x n); FAILED fetches `output?line=0` and CANCELED aborts, both for the whole job;
- COMPLETED: one more info, which must say COMPLETED, then all.zip, extracted, then `/task/remove`
  (unless `keep`);
- after 5 retries of one submodel, the whole split-merge aborts: no new task is sent.
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
    """Remove the task (when ODM knows its uuid) and send it again: connection error, not-found."""


class TaskLimit(Retry):
    """QUEUED: the cluster is full. Sent again later, not counted against the retries."""


class Aborted(Exception):
    """FAILED or CANCELED, or a submodel out of retries: ODM writes error.log and stops the split-merge."""


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
                 on_reply: Callable[[dict[str, Any]], None] = lambda exchange: None,
                 inner_wait: float | None = None) -> None:
        """`on_reply` hears every request and what came back (the nemesis's history)."""
        self.api = api.rstrip("/")
        self.poll, self.retry_wait, self.keep, self.on_stage = poll, retry_wait, keep, on_stage
        self.inner_wait = retry_wait / 2 if inner_wait is None else inner_wait
        self.on_reply = on_reply
        self.aborted: str | None = None
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
            if attempt == 5:
                raise Retry(f"upload of {path.name}: {reply.get('error')}")
            time.sleep(self.inner_wait * (attempt + 1))

    def _submit(self, sub: Submodel) -> None:
        with self._upload_lock:
            self._json("GET", "/info")
            reply = self._json("POST", "/task/new/init", files={
                "name": (None, ""), "options": (None, json.dumps(OPTIONS)), "skipPostProcessing": (None, "true"),
                "outputs": (None, json.dumps(OUTPUTS))})
            if "uuid" not in reply:
                raise Retry(f"init: {reply}")
            uuid = reply["uuid"]
            sub.history.append(uuid)
            self.on_stage(sub, "uploading")
            with ThreadPoolExecutor(10) as pool:
                list(pool.map(lambda p: self._upload(uuid, p), sub.files))
            if self._json("POST", f"/task/new/commit/{uuid}").get("uuid") != uuid:
                raise Retry("commit refused")
            sub.uuid = uuid  # from here on ODM holds the task, and removes it before sending it again
            first = self._json("GET", f"/task/{uuid}/info")
            code = (first.get("status") or {}).get("code")
            if code == 10:
                raise TaskLimit("task limit reached")
            if code not in (20, 40):
                raise Retry(f"unexpected status right after commit: {first}")
        self.on_stage(sub, "committed")

    def _info(self, uuid: str) -> dict:
        """PyODM's poll: a connection error is tried again on the same task, 5 times."""
        for attempt in range(6):
            try:
                return self._json("GET", f"/task/{uuid}/info")
            except Retry:
                if attempt == 5:
                    raise
                time.sleep(self.inner_wait * (attempt + 1))
        raise AssertionError("unreachable")

    def _follow(self, sub: Submodel, out: Path) -> None:
        while True:
            info = self._info(sub.uuid)
            if "error" in info:
                raise Retry(f"info: {info['error']}")
            code = info["status"]["code"]
            if code == 10:
                raise TaskLimit("delayed task limit reached")
            if code == 30:
                lines = self._json("GET", f"/task/{sub.uuid}/output", params={"line": 0})
                raise Aborted(f"{sub.name} failed: {lines[-3:]}")
            if code == 50:
                raise Aborted(f"{sub.name} was canceled")
            if code == 40:
                break
            time.sleep(self.poll)
        again = self._json("GET", f"/task/{sub.uuid}/info")
        if (again.get("status") or {}).get("code") != 40:
            raise Retry(f"not COMPLETED before the download: {again}")
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
        retries = 0
        while self.aborted is None:
            sub.attempts += 1
            sub.uuid = None
            try:
                self._submit(sub)
                self._follow(sub, out)
                sub.status = "completed"
                return
            except Aborted as exc:
                sub.status, self.aborted = f"aborted: {exc}", str(exc)
                return
            except Retry as exc:
                sub.status = f"retrying: {exc}"
                if sub.uuid:
                    try:
                        self._json("POST", "/task/remove", data={"uuid": sub.uuid})
                    except Retry:
                        pass
                if not isinstance(exc, TaskLimit):
                    retries += 1
                    if retries > 5:
                        sub.status, self.aborted = "gave up", f"{sub.name}: {exc}"
                        return
                time.sleep(self.retry_wait * max(retries, 1))
        sub.status = f"not sent: the job aborted ({self.aborted})"

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
