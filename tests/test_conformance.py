"""One catalogue of NodeODM requests, sent to the simulated node and to a real NodeODM 2.2.4.

Most of Passel's tests meet the simulated node, not NodeODM, so wherever the simulator answers or
stores something else than the real node, those tests prove less than they seem to. Every request
below goes to both nodes, in the same order; the replies are compared on status, content type, keys
and values, except values that legitimately differ (uuids, timings, memory, the log lines), which
are compared by type. What each node stored for the tasks it made is compared as well: for NodeODM
its own `tasks.json`, for the simulated node its engine's state.

A difference on purpose is listed in DIFFERENCES with its reason, as the exact pair of replies the
two nodes give to that one request; any other difference, or a listed one that changes, fails.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from appliance.nodeodm.options import OPTIONS_NOT_A_LIST
from appliance.simnode import SimnodeSettings, create_simnode_app
from appliance.simnode.app import ENGINE
from tests.conftest import require_realnode
from tests.nodeodm_helpers import JPEG, raw_multipart
from tests.realnode import RealNode
from tests.support import ServerThread

TOKEN = "conformance-token"
SET_UUID = "6c1f0a52-7f4e-4a3b-8c2d-1e2f3a4b5c6d"
RUN_UUID = "3f2b9c1e-5d4a-4e8f-9a7b-1c2d3e4f5a6b"
UNKNOWN = "0b0e0f5c-8d5f-4c4e-9f55-0a9b1c2d3e4f"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
DEFAULT_NAME = re.compile(r"Task of \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
WAIT_SECONDS = 60  # only against a hang: a fast task finishes in about a second on either node

ODM_OPTIONS = json.dumps([
    {"name": "orthophoto-resolution", "value": "5.0"}, {"name": "pc-quality", "value": "lowest"},
    {"name": "skip-3dmodel", "value": True}, {"name": "dsm", "value": "1"}, {"name": "max-concurrency", "value": "2"},
    {"name": "no-such-option", "value": 1}])
OUTPUTS = json.dumps(["opensfm/reconstruction.json", "cameras.json", "../../etc/passwd", "/abs/odm_report", "odm_dem/"])
# an hour ago, with a fraction: NodeODM reads it with parseInt (and deletes tasks older than two days)
DATE_CREATED = f"{int(time.time() * 1000) - 3_600_000}.9"
# every field init takes, with values that show how each is read
ALL_FIELDS = {"name": "conformance", "options": ODM_OPTIONS, "skipPostProcessing": "true",
              "webhook": "http://127.0.0.1:9/hook", "outputs": OUTPUTS, "dateCreated": DATE_CREATED}
BAD_DOMAIN = json.dumps([{"name": "pc-quality", "value": "X"}, {"name": "split-overlap", "value": -5}])
HIGH = json.dumps([{"name": "pc-quality", "value": "high"}])

View = Callable[[Any], Any]


# --- how a request is sent ---------------------------------------------------------------------

@dataclass(frozen=True)
class Body:
    """A request body, encoded the way some client might send it."""

    encoding: str  # multipart, urlencoded, json or raw
    fields: Any = None
    files: tuple[tuple[str, str, bytes], ...] = ()  # (field, file name, content)
    content_type: str = ""

    def request_kwargs(self, names: dict[str, str]) -> dict[str, Any]:
        """Arguments for `requests`; a field value "{name}" stands for that task's uuid on this node."""
        if self.encoding == "multipart":
            parts = [(k, (None, fill(v, names))) for k, v in self.fields.items()]
            return {"files": parts + [(f, (n, c)) for f, n, c in self.files]}
        if self.encoding == "urlencoded":
            return {"data": {k: fill(v, names) for k, v in self.fields.items()}}
        if self.encoding == "json":
            value = {k: fill(v, names) for k, v in self.fields.items()} if isinstance(self.fields, dict) else self.fields
            return {"json": value}
        return {"data": self.fields, "headers": {"Content-Type": self.content_type}}


def multipart(*files: tuple[str, str, bytes], **fields: str) -> Body:
    return Body("multipart", fields, files)


def urlencoded(**fields: str) -> Body:
    return Body("urlencoded", fields)


def as_json(value: Any) -> Body:
    return Body("json", value)


def image(name: str, content: bytes = JPEG) -> tuple[str, str, bytes]:
    return ("images", name, content)


def nul_file_name_upload() -> Body:
    body, content_type = raw_multipart([("images", "a\x00b.jpg", JPEG)])
    return Body("raw", body, content_type=content_type)


def fill(value: Any, names: dict[str, str]) -> Any:
    """Replace "{name}" (as a whole value or inside a path) with the uuid that task has on this node."""
    if not isinstance(value, str):
        return value
    return re.sub(r"\{([\w-]+)\}", lambda m: names.get(m.group(1), f"unsaved-{m.group(1)}"), value)


# --- how a reply is compared -------------------------------------------------------------------

def shape(value: Any) -> Any:
    """Types only: a list becomes the sorted set of its elements' shapes, whatever its length."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted({json.dumps(shape(v), sort_keys=True) for v in value})
    if value is None or isinstance(value, bool):
        return "null" if value is None else "bool"
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def exact(body: Any) -> Any:
    return body


def typed(*keys: str) -> View:
    """Compare these keys of an object by shape: their values legitimately differ (timings, memory)."""
    return lambda body: {k: shape(v) if k in keys else v for k, v in body.items()} if isinstance(body, dict) else body


def lines(body: Any) -> Any:
    """A list of log lines, compared by count: each node prints its own (fake) ODM log."""
    return ["<line>"] * len(body) if isinstance(body, list) else body


def with_output(view: View, output: View) -> View:
    """Info with `with_output`: `view` for the info, `output` for its output lines."""
    def combined(body: Any) -> Any:
        if not isinstance(body, dict) or "output" not in body:
            return view(body)
        return view(body) | {"output": output(body["output"])}
    return combined


def normalized(value: Any, names: dict[str, str]) -> Any:
    """uuids become the name of the task they belong to (or `<uuid>`), default task names and
    numbers get one form (NodeODM prints 5.0 as 5)."""
    if isinstance(value, dict):
        return {k: normalized(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v, names) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        by_uuid = {uuid.lower(): f"<{name}>" for name, uuid in names.items()}
        value = UUID.sub(lambda m: by_uuid.get(m.group(0).lower(), "<uuid>"), value)
        return DEFAULT_NAME.sub("Task of <time>", value)
    return value


def reply(body: Any, status: int = 200, kind: str = "application/json") -> dict[str, Any]:
    """One observed reply, as the table below writes it."""
    return {"status": status, "type": kind, "body": body}


NO_REPLY = reply("the connection failed", status=0, kind="")


def observe(response: requests.Response | None, view: View, names: dict[str, str]) -> dict[str, Any]:
    if response is None:
        return NO_REPLY
    kind = response.headers.get("Content-Type", "").split(";")[0]
    body: Any = None
    if kind == "application/json":
        body = view(normalized(response.json(), names))
    elif kind == "application/zip":
        body = {"Content-Disposition": response.headers.get("Content-Disposition"),
                "Accept-Ranges": response.headers.get("Accept-Ranges"),
                "Content-Length is the body's": response.headers.get("Content-Length") == str(len(response.content))}
    return reply(body, response.status_code, kind)


def canonical(observation: Any) -> str:
    return json.dumps(normalized(observation, {}), sort_keys=True, indent=1)


# --- the catalogue -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """One request, sent to both nodes; its reply's uuid is remembered as `save` when it has one."""

    id: str
    method: str
    path: str
    body: Body | None = None
    headers: dict[str, str] = field(default_factory=dict)
    token: str | None = TOKEN
    view: View = exact
    save: str | None = None


@dataclass(frozen=True)
class Wait:
    """Not a request to compare: poll the task's info on each node until `until` holds."""

    name: str
    what: str
    until: Callable[[dict[str, Any]], bool]


def _code(info: dict[str, Any]) -> int | None:
    return info.get("status", {}).get("code")


def completed(name: str) -> Wait:
    return Wait(name, "COMPLETED", lambda info: _code(info) == 40)


def canceled(name: str) -> Wait:
    return Wait(name, "CANCELED", lambda info: _code(info) == 50)


def started(name: str) -> Wait:
    return Wait(name, "started", lambda info: _code(info) == 20 and info.get("processingTime", -1) >= 0)


INFO_VIEW = typed("dateCreated", "processingTime", "progress")
NODE_INFO_VIEW = typed("totalMemory", "availableMemory", "cpuCores", "engineVersion")


def submit(name: str, init: Body, *files: tuple[str, str, bytes]) -> list[Call]:
    """init, one upload of `files`, commit: the three steps every client takes."""
    return [Call(f"init-{name}", "POST", "/task/new/init", init, save=name),
            Call(f"upload-{name}", "POST", f"/task/new/upload/{{{name}}}", multipart(*files)),
            Call(f"commit-{name}", "POST", f"/task/new/commit/{{{name}}}")]


# On a node pair whose tasks finish at once (NodeODM --test_seconds 0), with a token.
FAST: list[Call | Wait] = [
    Call("node-info", "GET", "/info", view=NODE_INFO_VIEW),
    Call("options", "GET", "/options", view=shape),
    Call("auth-info", "GET", "/auth/info", token=None),
    Call("auth-login", "POST", "/auth/login", token=None),
    Call("auth-register", "POST", "/auth/register", token=None),
    Call("bad-token", "GET", "/info", token="wrong"),
    Call("no-token", "GET", "/task/list", token=None),
    Call("bad-token-init", "POST", "/task/new/init", multipart(name="x"), token="wrong"),
    Call("bad-token-cancel", "POST", "/task/cancel", urlencoded(uuid=UNKNOWN), token="wrong"),
    Call("unknown-route", "GET", "/no/such/route"),
    Call("unknown-route-without-token", "GET", "/no/such/route", token=None),
    Call("unknown-post-route", "POST", "/task/new/nothing", multipart(name="x")),
    Call("wrong-method", "GET", "/task/new/init"),
    # init with every field, in each encoding a client might use
    Call("init-multipart", "POST", "/task/new/init", multipart(**ALL_FIELDS), save="mp"),
    Call("upload-two-files", "POST", "/task/new/upload/{mp}", multipart(image("IMG_0.JPG"), image("IMG_1.JPG"))),
    Call("upload-same-name-again", "POST", "/task/new/upload/{mp}", multipart(image("IMG_1.JPG"))),
    Call("upload-gcp-file", "POST", "/task/new/upload/{mp}", multipart(image("gcp_list.txt", b"EPSG:4326\n"))),
    Call("info-before-commit", "GET", "/task/{mp}/info"),
    Call("list-before-commit", "GET", "/task/list"),
    Call("commit-multipart", "POST", "/task/new/commit/{mp}"),
    Call("commit-twice", "POST", "/task/new/commit/{mp}"),
    Call("upload-after-commit", "POST", "/task/new/upload/{mp}", multipart(image("IMG_2.JPG"))),
    *submit("urlencoded", urlencoded(**ALL_FIELDS), image("IMG_0.JPG")),
    *submit("json", as_json(ALL_FIELDS), image("IMG_0.JPG")),
    *submit("empty-name", multipart(name=""), image("IMG_0.JPG")),
    # options
    Call("init-options-not-json", "POST", "/task/new/init", multipart(options="[{not json"), view=typed("error")),
    Call("init-options-not-json-urlencoded", "POST", "/task/new/init", urlencoded(options="[{not json")),
    Call("init-options-domain-violation", "POST", "/task/new/init", multipart(options=BAD_DOMAIN)),
    Call("init-options-object", "POST", "/task/new/init", multipart(options='{"pc-quality": "lowest"}')),
    Call("init-options-null", "POST", "/task/new/init", multipart(options="null")),
    Call("init-options-null-entry", "POST", "/task/new/init", multipart(options="[null]"), view=typed("error")),
    Call("init-options-int-fraction", "POST", "/task/new/init",
         multipart(options=json.dumps([{"name": "split", "value": "3.7"}]))),
    Call("init-with-a-file", "POST", "/task/new/init", multipart(image("IMG_0.JPG"), name="x")),
    # set-uuid
    Call("set-uuid", "POST", "/task/new/init", multipart(name="set"), headers={"set-uuid": SET_UUID}, save="set"),
    Call("upload-set-uuid", "POST", "/task/new/upload/{set}", multipart(image("IMG_0.JPG"))),
    Call("set-uuid-again-before-commit", "POST", "/task/new/init", multipart(name="set again"),
         headers={"set-uuid": SET_UUID}),
    Call("commit-set-uuid", "POST", "/task/new/commit/{set}"),
    Call("set-uuid-of-a-task", "POST", "/task/new/init", multipart(name="x"), headers={"set-uuid": SET_UUID}),
    Call("set-uuid-invalid", "POST", "/task/new/init", multipart(name="x"), headers={"set-uuid": "nope"}),
    # upload and commit errors
    Call("init-for-errors", "POST", "/task/new/init", multipart(name="errors"), save="errors"),
    Call("upload-no-file", "POST", "/task/new/upload/{errors}", multipart(name="x")),
    Call("upload-urlencoded-body", "POST", "/task/new/upload/{errors}", urlencoded(images="IMG_0.JPG")),
    Call("upload-json-body", "POST", "/task/new/upload/{errors}", as_json({"images": "IMG_0.JPG"})),
    Call("upload-wrong-field", "POST", "/task/new/upload/{errors}", multipart(("file", "IMG_0.JPG", JPEG))),
    Call("upload-unknown-uuid", "POST", f"/task/new/upload/{UNKNOWN}", multipart(image("IMG_0.JPG"))),
    Call("commit-without-files", "POST", "/task/new/commit/{errors}"),
    Call("commit-without-files-again", "POST", "/task/new/commit/{errors}"),
    Call("commit-unknown-uuid", "POST", f"/task/new/commit/{UNKNOWN}"),
    # the one-shot form
    Call("one-shot", "POST", "/task/new",
         multipart(image("IMG_0.JPG"), image("IMG_1.JPG"), name="one shot", skipPostProcessing="true"), save="one"),
    Call("one-shot-no-files", "POST", "/task/new", multipart(name="x")),
    Call("one-shot-urlencoded", "POST", "/task/new", urlencoded(name="x")),
    Call("one-shot-bad-options", "POST", "/task/new", multipart(image("IMG_0.JPG"), options=BAD_DOMAIN)),
    # finished tasks: info, output, download
    completed("mp"), completed("urlencoded"), completed("json"), completed("empty-name"), completed("set"),
    completed("one"),
    Call("info", "GET", "/task/{mp}/info", view=typed("processingTime")),
    Call("info-urlencoded", "GET", "/task/{urlencoded}/info", view=INFO_VIEW),
    Call("info-json", "GET", "/task/{json}/info", view=INFO_VIEW),
    Call("info-empty-name", "GET", "/task/{empty-name}/info", view=INFO_VIEW),
    Call("info-set-uuid", "GET", "/task/{set}/info", view=INFO_VIEW),
    Call("info-one-shot", "GET", "/task/{one}/info", view=INFO_VIEW),
    Call("info-with-output-negative", "GET", "/task/{mp}/info?with_output=-2",
         view=with_output(typed("processingTime"), lines)),
    Call("info-with-output-zero", "GET", "/task/{mp}/info?with_output=0", view=with_output(typed("processingTime"), shape)),
    Call("output-negative", "GET", "/task/{mp}/output?line=-3", view=lines),
    Call("output-negative-fraction", "GET", "/task/{mp}/output?line=-2.5", view=lines),
    Call("output-from-line", "GET", "/task/{mp}/output?line=2", view=shape),
    Call("output-junk-line", "GET", "/task/{mp}/output?line=junk", view=shape),
    Call("output-past-the-end", "GET", "/task/{mp}/output?line=100000"),
    Call("download", "GET", "/task/{mp}/download/all.zip"),
    Call("download-range", "GET", "/task/{mp}/download/all.zip", headers={"Range": "bytes=10-99"}),
    Call("download-invalid-asset", "GET", "/task/{mp}/download/orthophoto.tif"),
    Call("download-traversal", "GET", "/task/{mp}/download/..%2F..%2Fetc%2Fpasswd"),
    Call("download-unknown-task", "GET", f"/task/{UNKNOWN}/download/all.zip"),
    Call("info-unknown-task", "GET", f"/task/{UNKNOWN}/info"),
    Call("output-unknown-task", "GET", f"/task/{UNKNOWN}/output"),
    # restart of a completed task, with new options
    Call("restart-multipart", "POST", "/task/restart", multipart(uuid="{one}", options=HIGH)),
    Call("restart-completed-with-options", "POST", "/task/restart", urlencoded(uuid="{one}", options=HIGH)),
    completed("one"),
    Call("info-restarted", "GET", "/task/{one}/info", view=INFO_VIEW),
    Call("list", "GET", "/task/list"),
    Call("node-info-at-the-end", "GET", "/info", view=NODE_INFO_VIEW),
]
# the tasks the fast pair ends with, whose stored state is compared
STORED = ("mp", "urlencoded", "json", "empty-name", "set", "one")

# On a node pair whose tasks run for minutes, one at a time.
SLOW: list[Call | Wait] = [
    Call("init-long-task", "POST", "/task/new/init", multipart(name="run"), headers={"set-uuid": RUN_UUID}, save="run"),
    Call("upload-long-task", "POST", "/task/new/upload/{run}", multipart(image("IMG_0.JPG"), image("IMG_1.JPG"))),
    Call("commit-long-task", "POST", "/task/new/commit/{run}"),
    started("run"),
    Call("info-running", "GET", "/task/{run}/info", view=INFO_VIEW),
    Call("list-running", "GET", "/task/list"),
    Call("node-info-running", "GET", "/info", view=NODE_INFO_VIEW),
    Call("download-not-ready", "GET", "/task/{run}/download/all.zip"),
    Call("download-invalid-asset-running", "GET", "/task/{run}/download/orthophoto.tif"),
    Call("restart-running", "POST", "/task/restart", urlencoded(uuid="{run}")),
    Call("set-uuid-of-a-running-task", "POST", "/task/new/init", multipart(name="x"), headers={"set-uuid": RUN_UUID}),
    Call("cancel-multipart", "POST", "/task/cancel", multipart(uuid="{run}")),
    Call("cancel-urlencoded", "POST", "/task/cancel", urlencoded(uuid="{run}")),
    canceled("run"),
    Call("cancel-again-json", "POST", "/task/cancel", as_json({"uuid": "{run}"})),
    Call("info-canceled", "GET", "/task/{run}/info", view=INFO_VIEW),
    Call("restart-options-domain-violation", "POST", "/task/restart", as_json({"uuid": "{run}", "options": BAD_DOMAIN})),
    Call("restart-options-not-json", "POST", "/task/restart", urlencoded(uuid="{run}", options="[{not json"),
         view=typed("error")),
    Call("restart-options-object", "POST", "/task/restart", as_json({"uuid": "{run}", "options": {"a": 1}})),
    Call("cancel-after-restart-options-object", "POST", "/task/cancel", urlencoded(uuid="{run}")),
    canceled("run"),
    Call("restart-canceled-with-options", "POST", "/task/restart",
         as_json({"uuid": "{run}", "options": [{"name": "pc-quality", "value": "high"}]})),
    started("run"),
    Call("info-restarted-with-options", "GET", "/task/{run}/info", view=INFO_VIEW),
    Call("remove-json", "POST", "/task/remove", as_json({"uuid": "{run}"})),
    Call("info-removed", "GET", "/task/{run}/info"),
    Call("remove-again-urlencoded", "POST", "/task/remove", urlencoded(uuid="{run}")),
    Call("set-uuid-of-a-removed-task", "POST", "/task/new/init", multipart(name="again"), headers={"set-uuid": RUN_UUID}),
    # cancel, remove and restart: bodies and unknown uuids
    Call("cancel-no-body", "POST", "/task/cancel"),
    Call("cancel-unknown-urlencoded", "POST", "/task/cancel", urlencoded(uuid=UNKNOWN)),
    Call("cancel-unknown-multipart", "POST", "/task/cancel", multipart(uuid=UNKNOWN)),
    Call("cancel-unknown-json", "POST", "/task/cancel", as_json({"uuid": UNKNOWN})),
    Call("cancel-malformed-json", "POST", "/task/cancel", Body("raw", b"{nope", content_type="application/json"),
         view=typed("error")),
    Call("remove-unknown-urlencoded", "POST", "/task/remove", urlencoded(uuid=UNKNOWN)),
    Call("remove-unknown-json", "POST", "/task/remove", as_json({"uuid": UNKNOWN})),
    Call("restart-unknown-json", "POST", "/task/restart", as_json({"uuid": UNKNOWN})),
    Call("restart-unknown-multipart", "POST", "/task/restart", multipart(uuid=UNKNOWN)),
    Call("list-after-remove", "GET", "/task/list"),
    *submit("empty-options", multipart(name="empty options", options=""), image("IMG_0.JPG")),
    # last: this one brings a real NodeODM down
    Call("init-for-nul", "POST", "/task/new/init", multipart(name="nul"), save="nul"),
    Call("upload-nul-in-file-name", "POST", "/task/new/upload/{nul}", nul_file_name_upload()),
    Call("node-info-after-nul", "GET", "/info", view=NODE_INFO_VIEW),
]


# --- the differences on purpose ----------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    """What each node answers (or stores) for one catalogue entry, and why they may differ."""

    simnode: Any
    nodeodm: Any
    why: str


NOT_A_LIST = reply({"error": OPTIONS_NOT_A_LIST})
STRICTER_OPTIONS = ("NodeODM runs options that are not a list of objects as no options at all, so a client's "
                    "mistake goes unnoticed until the results are wrong; Passel refuses them in NodeODM's error "
                    "shape, and the simulated node shares Passel's option checks")
NO_STRAY_FILE_CHECK = ("NodeODM's multer fails the whole body on a file part it does not expect; the receiver "
                       "Passel and the simulated node share skips such parts (tests/test_uploads.py keeps it so). "
                       "No client sends them: PyODM, ODM and WebODM upload only `images`")
RANGES = ("the simulated node serves ranges (206) like Passel, so that PyODM's parallel ranged download can "
          "be tested against it; NodeODM streams the whole file and PyODM then downloads it in one piece")
ZIP_HEADERS = {"Content-Disposition": "attachment; filename=all.zip", "Content-Length is the body's": True}

DIFFERENCES: dict[str, Difference] = {
    "init-options-object": Difference(NOT_A_LIST, reply({"uuid": "<uuid>"}), STRICTER_OPTIONS),
    "init-options-null": Difference(NOT_A_LIST, reply({"uuid": "<uuid>"}), STRICTER_OPTIONS),
    "restart-options-object": Difference(NOT_A_LIST, reply({"success": True}), STRICTER_OPTIONS),
    "init-options-int-fraction": Difference(
        reply({"error": '[{"name":"split","error":"Invalid value 3.7 (not an integer)"}]'}), reply({"uuid": "<uuid>"}),
        "NodeODM reads an int option with parseInt, so 3.7 runs as 3; Passel's option checks refuse a value "
        "that does not convert (appliance/nodeodm/options.py)"),
    "commit-empty-options": Difference(
        reply({"uuid": "<empty-options>"}), reply({"error": "Unexpected end of JSON input"}),
        "NodeODM's init skips an empty options field but its commit parses it as JSON and fails, after all "
        "the uploads; Passel and the simulated node read an empty field as no options, both times"),
    "init-with-a-file": Difference(reply({"uuid": "<uuid>"}), reply({"error": "Unexpected field"}), NO_STRAY_FILE_CHECK),
    "upload-wrong-field": Difference(reply({"error": "Need at least 1 file.", "noRetry": True}),
                                     reply({"error": "Unexpected field"}), NO_STRAY_FILE_CHECK),
    "download": Difference(reply(ZIP_HEADERS | {"Accept-Ranges": "bytes"}, kind="application/zip"),
                           reply(ZIP_HEADERS | {"Accept-Ranges": None}, kind="application/zip"), RANGES),
    "download-range": Difference(reply(ZIP_HEADERS | {"Accept-Ranges": "bytes"}, status=206, kind="application/zip"),
                                 reply(ZIP_HEADERS | {"Accept-Ranges": None}, kind="application/zip"), RANGES),
    "upload-nul-in-file-name": Difference(
        reply({"error": f"Invalid file name: {'a' + chr(0) + 'b.jpg'!r}", "noRetry": True}), NO_REPLY,
        "NodeODM 2.2.4 crashes, whole, on a NUL byte in a file name; the simulated node refuses the name as "
        "Passel does (its `fragile` setting imitates the crash, for the tests of Passel's shield)"),
    "node-info-after-nul": Difference(
        reply({"version": "2.2.4", "taskQueueCount": 1, "totalMemory": "number", "availableMemory": "number",
               "cpuCores": "number", "maxImages": None, "maxParallelTasks": 1, "engineVersion": "str",
               "engine": "odm"}), NO_REPLY,
        "the real node is down after the NUL byte above; the simulated node still runs the task whose "
        "empty options NodeODM refused at commit"),
}


# --- running it --------------------------------------------------------------------------------

@dataclass
class Node:
    """One node under test, with the uuids its tasks got, by catalogue name."""

    kind: str  # simnode or nodeodm
    url: str
    server: ServerThread | RealNode
    names: dict[str, str] = field(default_factory=dict)


@dataclass
class Observed:
    """What the catalogue saw: replies by call id, stored tasks by name, each by node kind."""

    replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)


@contextmanager
def node_pair(workdir: Path, real_flags: tuple[str, ...], **sim_settings: Any) -> Iterator[list[Node]]:
    """A simulated node and a real NodeODM, set up alike."""
    settings = SimnodeSettings(**sim_settings)
    simnode = ServerThread(lambda: create_simnode_app(settings)).start()
    real = RealNode(workdir, *real_flags)
    try:
        real.start()
        yield [Node("simnode", simnode.url, simnode), Node("nodeodm", real.url, real)]
    finally:
        real.stop(graceful=False)
        simnode.stop()


def send(node: Node, call: Call) -> requests.Response | None:
    kwargs = call.body.request_kwargs(node.names) if call.body else {}
    headers = call.headers | kwargs.pop("headers", {})
    params = {} if call.token is None else {"token": call.token}
    try:
        return requests.request(call.method, node.url + fill(call.path, node.names), params=params,
                                headers=headers, timeout=30, **kwargs)
    except requests.ConnectionError:
        return None


def wait(node: Node, step: Wait) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        info = requests.get(f"{node.url}/task/{node.names.get(step.name)}/info", params={"token": TOKEN},
                            timeout=30).json()
        if step.until(info):
            return
        assert time.monotonic() < deadline, f"{node.kind}: task {step.name} never {step.what}: {info}"
        time.sleep(0.05)


def run(catalogue: list[Call | Wait], nodes: list[Node], observed: Observed) -> None:
    """Each step on each node in turn, so that both see the same sequence."""
    for step in catalogue:
        for node in nodes:
            if isinstance(step, Wait):
                wait(node, step)
                continue
            response = send(node, step)
            observed.replies.setdefault(step.id, {})[node.kind] = observe(response, step.view, node.names)
            if step.save and observed.replies[step.id][node.kind]["type"] == "application/json":
                node.names[step.save] = response.json().get("uuid", "no uuid")


def _listing(project: Path) -> dict[str, list[str] | None]:
    """The files the task was given, as laid out in its project folder."""
    return {folder: sorted(p.name for p in (project / folder).iterdir()) if (project / folder).is_dir() else None
            for folder in ("images", "gcp")}


def _simnode_stored(node: Node) -> dict[str, dict[str, Any]]:
    """The engine's tasks in NodeODM's tasks.json form, read on the node's own loop."""
    engine = node.server.app[ENGINE]

    async def snapshot() -> dict[str, dict[str, Any]]:
        stored = {}
        for task in engine.tasks.values():
            record = {"name": task.name} if task.name is not None else {}
            stored[task.uuid] = record | {
                "options": task.options, "webhook": task.webhook, "skipPostProcessing": task.skip_post_processing,
                "outputs": task.outputs, "dateCreated": task.date_created, "files": _listing(task.project_dir)}
        return stored

    return node.server.call(snapshot())


def _nodeodm_stored(node: Node) -> dict[str, dict[str, Any]]:
    keys = ("name", "options", "webhook", "skipPostProcessing", "outputs", "dateCreated")
    real = node.server
    return {uuid: {k: task[k] for k in keys if k in task} | {"files": _listing(real.task_dir(uuid))}
            for uuid, task in real.stored_tasks().items()}


def record_stored(nodes: list[Node], observed: Observed, since_ms: int) -> None:
    """Each node's stored tasks by catalogue name; a dateCreated the node took from its clock is `<now>`."""
    for node in nodes:
        stored = _simnode_stored(node) if node.kind == "simnode" else _nodeodm_stored(node)
        until_ms = int(time.time() * 1000)
        by_uuid = {uuid: name for name, uuid in node.names.items()}
        for uuid, record in stored.items():
            if since_ms <= record["dateCreated"] <= until_ms:
                record["dateCreated"] = "<now>"
            name = by_uuid.get(uuid, f"unnamed {uuid}")
            observed.stored.setdefault(name, {})[node.kind] = normalized(record, node.names)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Observed:
    """Run the whole catalogue once per module, on two node pairs one after the other (about ten seconds)."""
    require_realnode()
    result = Observed()
    since_ms = int(time.time() * 1000)
    with node_pair(tmp_path_factory.mktemp("fast"), ("--token", TOKEN, "--test_seconds", "0",
                                                     "--parallel_queue_processing", "4"),
                   token=TOKEN, slots=4, seconds_per_image=0.01) as nodes:
        run(FAST, nodes, result)
        record_stored(nodes, result, since_ms)
    with node_pair(tmp_path_factory.mktemp("slow"), ("--token", TOKEN, "--test_seconds", "600"),
                   token=TOKEN, seconds_per_image=60) as nodes:
        run(SLOW, nodes, result)
    return result


# --- the tests ---------------------------------------------------------------------------------

CALL_IDS = [step.id for step in FAST + SLOW if isinstance(step, Call)]


def test_call_ids_are_unique():
    assert len(CALL_IDS) == len(set(CALL_IDS))


def test_every_listed_difference_names_an_entry():
    entries = set(CALL_IDS) | {f"stored {name}" for name in STORED}
    assert set(DIFFERENCES) <= entries, set(DIFFERENCES) - entries


def _assert_same(entry: str, simnode: Any, nodeodm: Any) -> None:
    if entry in DIFFERENCES:
        listed = DIFFERENCES[entry]
        assert (canonical(simnode), canonical(nodeodm)) == (canonical(listed.simnode), canonical(listed.nodeodm)), \
            f"{entry}: not the listed difference"
    else:
        assert canonical(simnode) == canonical(nodeodm), f"{entry}: the simulated node differs from NodeODM"


@pytest.mark.parametrize("call_id", CALL_IDS)
def test_reply_matches_nodeodm(observed: Observed, call_id: str):
    seen = observed.replies[call_id]
    _assert_same(call_id, seen["simnode"], seen["nodeodm"])


@pytest.mark.parametrize("name", STORED)
def test_stored_task_matches_nodeodm(observed: Observed, name: str):
    seen = observed.stored.get(name, {})
    _assert_same(f"stored {name}", seen.get("simnode"), seen.get("nodeodm"))


def test_both_nodes_store_the_same_tasks(observed: Observed):
    assert {name for name, seen in observed.stored.items() if "simnode" in seen} == \
        {name for name, seen in observed.stored.items() if "nodeodm" in seen} == set(STORED)
