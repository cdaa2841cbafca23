"""What `submit` and `download` do through PyODM, made patient with the field network. PyODM retries
each file of an upload, but gives up on any other call at the first refused connection; here every
other call is repeated with growing waits until --patience seconds have gone by. The commands import
this module only when they run, as PyODM and requests take a while to load."""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import requests
from pyodm import Node, Task
from pyodm.exceptions import NodeConnectionError, NodeResponseError
from pyodm.types import TaskInfo
from requests_toolbelt.multipart.encoder import MultipartEncoder
from tqdm import tqdm

from appliance.admin_client import NotAPassel, Unreachable, network_reason, origin

T = TypeVar("T")
BAR = "{desc:<12}{percentage:3.0f}%|{bar}| {elapsed}"
FIRST_WAIT_SECONDS = 0.5
LONGEST_WAIT_SECONDS = 10.0
UPLOAD_ATTEMPTS = 5  # PyODM's own retries of each file, spread over the patience
BLIPS = (NodeConnectionError, requests.RequestException)  # the latter: a download cut mid-stream
ENDED = ("COMPLETED", "FAILED", "CANCELED")


class GaveUp(Exception):
    """The passel did not answer for the whole patience; `str()` says why, in words."""


def patiently(call: Callable[[], T], patience: float, doing: str) -> T:
    """`call()`, again after 0.5, 1, 2, 4 ... 10 s while the network fails, until `patience` seconds have gone."""
    deadline = time.monotonic() + patience
    wait = FIRST_WAIT_SECONDS
    while True:
        try:
            return call()
        except BLIPS as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GaveUp(network_reason(exc)) from None
            tqdm.write(f"No answer from the passel while {doing} ({network_reason(exc)}); "
                       f"trying again in {min(wait, left):.2g} s", file=sys.stderr)
            time.sleep(min(wait, left))
            wait = min(wait * 2, LONGEST_WAIT_SECONDS)


class PatientNode(Node):
    """A PyODM node whose calls wait through blips once the passel has answered; until then, an address
    where nothing answers is a mistake to report at once (Unreachable), not a blip. Each file upload is
    left to PyODM's own retries (create_task's max_retries), so that a blip is not retried twice over."""

    def __init__(self, api: str, token: str, patience: float) -> None:
        parts = urllib.parse.urlsplit(api)
        super().__init__(parts.hostname or "", parts.port or 443, token=token, timeout=60)
        self.api = api
        self.patience = patience
        self.reached = False

    def _patiently(self, call: Callable[[], T], doing: str) -> T:
        if self.reached:
            return patiently(call, self.patience, doing)
        try:
            result = call()
        except BLIPS as exc:
            raise Unreachable(self.api, network_reason(exc)) from None
        self.reached = True
        return result

    def get(self, url: str, query: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self._patiently(lambda: super(PatientNode, self).get(url, query or {}, **kwargs),
                               "asking how things stand")

    def listing(self, path: str) -> list[Any]:
        """A JSON list of NodeODM's API (/options, /task/list); anything else is not a NodeODM API."""
        answer = self.get(path)
        if not isinstance(answer, list):
            raise NotAPassel(self.api, "a web server")
        return answer

    def post(self, url: str, data: Any = None, headers: dict[str, str] | None = None) -> Any:
        send = super().post
        if url.startswith("/task/new/upload/"):
            return send(url, data, headers or {})
        if isinstance(data, MultipartEncoder):  # the task's init: a fresh body for each attempt
            fields, boundary = data.fields, data.boundary_value
            return self._patiently(lambda: send(url, MultipartEncoder(fields=fields, boundary=boundary),
                                                headers or {}), "starting the task")
        try:
            return self._patiently(lambda: send(url, data, headers or {}), "sending")
        except NodeResponseError:
            uuid = url.rsplit("/", 1)[-1]
            if url.startswith("/task/new/commit/") and self._exists(uuid):
                return {"uuid": uuid}  # an earlier attempt got through, only its answer was lost
            raise

    def _exists(self, uuid: str) -> bool:
        try:
            self.get(f"/task/{uuid}/info")
        except NodeResponseError:
            return False
        return True

    def find_task(self, ref: str) -> Task:
        """The task whose id starts with `ref`, from NodeODM's own task list."""
        matches = [t["uuid"] for t in self.listing("/task/list") if str(t.get("uuid", "")).startswith(ref.lower())]
        if len(matches) != 1:
            raise SystemExit(f"No task {ref!r} on the passel at {origin(self.api)}; see `passel tasks list`."
                             if not matches else f"More than one task starts with {ref!r}: give more of its id.")
        return self.get_task(matches[0])

    def upload(self, files: list[str], options: dict[str, Any], name: str, parallel: int) -> Task:
        """create_task with an upload bar, its file retries spread over the patience (waits of 1, 2 ...
        5 units), in a daemon thread: PyODM's upload threads are then daemons too, and Ctrl-C ends the
        program instead of leaving it waiting on them for ever."""
        unit = max(1, round(self.patience / sum(range(1, UPLOAD_ATTEMPTS + 1))))
        outcome: dict[str, Any] = {}
        with progress_bar("Uploading") as bar:
            def run() -> None:
                try:
                    outcome["task"] = self.create_task(files, options, name=name, parallel_uploads=parallel,
                                                       progress_callback=lambda pct: set_bar(bar, pct),
                                                       max_retries=UPLOAD_ATTEMPTS, retry_timeout=unit)
                except BaseException as exc:  # handed to the waiting thread as it is
                    outcome["error"] = exc

            thread = threading.Thread(target=run, name="passel-upload", daemon=True)
            thread.start()
            while thread.is_alive():
                thread.join(0.2)
            if "error" in outcome:
                raise outcome["error"]
            set_bar(bar, 100)
        return outcome["task"]


@contextmanager
def progress_bar(desc: str) -> Iterator[tqdm]:
    """A bar that Ctrl-C cannot catch half-built: tqdm's __init__ cut short by it leaves an object whose
    __del__ prints a traceback at exit. The interrupt is held until the bar is whole, then raised."""
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        bar = tqdm(total=100, desc=desc, unit="%", bar_format=BAR)
    finally:
        signal.signal(signal.SIGINT, previous)
    with bar:
        if held:
            raise KeyboardInterrupt
        yield bar


def set_bar(bar: Any, percent: float) -> None:
    bar.n = min(100.0, max(bar.n, round(float(percent), 1)))
    bar.refresh()


def follow(task: Task, interval: float) -> TaskInfo:
    """Poll the task until it ends, with a processing bar and a line per status change."""
    last_status = None
    with progress_bar("Processing") as bar:
        while True:
            info = task.info()
            if info.status != last_status:
                bar.write(f"Status: {info.status.name}")
                last_status = info.status
            set_bar(bar, info.progress)
            if info.status.name in ENDED:
                return info
            time.sleep(interval)


def download_results(task: Task, output: Path, patience: float) -> None:
    """all.zip into a scratch folder beside the results, then unpacked; a cut download starts again."""
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output, prefix=".download-") as scratch, \
            progress_bar("Downloading") as bar:
        archive = patiently(lambda: task.download_zip(scratch, progress_callback=lambda pct: set_bar(bar, pct),
                                                      parallel_downloads=4), patience, "downloading the results")
        try:
            with zipfile.ZipFile(archive) as results:
                results.extractall(output)
        except zipfile.BadZipFile:
            raise SystemExit(f"The results of task {task.uuid} arrived damaged; run "
                             f"`passel download {task.uuid}` to fetch them again.") from None
        set_bar(bar, 100)
