"""An OpenAPI description of every route this box serves, written from its route table.

The paths, methods, summaries, tags and security come from appliance/http_rules.py, for the routes
the app registered; what each route takes and gives is in `IO` below. Served at `/-/openapi.json` so
tools can discover the API, and fuzzed in CI (tests/test_fuzz.py). NodeODM answers errors with HTTP
200 and `{"error": ...}`, so its operations document one 200 reply that is the result or an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from appliance import __version__
from appliance.http_rules import NODEODM, Admin, Audience, Peer, Route, Rules, listed

Schema = dict[str, Any]

UUID = {"type": "string", "format": "uuid"}
TEXT = {"type": "string"}
OBJECT = {"type": "object"}
ARRAY = {"type": "array"}
ERROR = {"type": "object", "properties": {"error": TEXT}, "required": ["error"]}
SUCCESS = {"type": "object", "properties": {"success": {"type": "boolean"}, "error": TEXT}}
CREATED = {"type": "object", "properties": {"uuid": UUID}}
TASK_FIELDS = {
    "name": TEXT, "options": {"type": "string", "description": 'JSON: [{"name": ..., "value": ...}]'},
    "skipPostProcessing": {"type": "string", "enum": ["true", "false"]},
    "outputs": {"type": "string", "description": "JSON list of paths relative to the project"},
    "webhook": TEXT, "dateCreated": TEXT,
}
INFO = {"type": "object", "properties": {
    "version": TEXT, "taskQueueCount": {"type": "integer"}, "totalMemory": {"type": "integer"},
    "availableMemory": {"type": "integer"}, "cpuCores": {"type": "integer"},
    "maxImages": {"type": "integer", "nullable": True}, "maxParallelTasks": {"type": "integer"},
    "engineVersion": TEXT, "engine": TEXT}}
TASK_INFO = {"type": "object", "properties": {
    "uuid": UUID, "name": TEXT, "dateCreated": {"type": "integer"}, "processingTime": {"type": "integer"},
    "status": OBJECT, "options": ARRAY, "imagesCount": {"type": "integer"}, "progress": {"type": "number"},
    "output": ARRAY}}
TASK_ACTIONS = ["move", "cancel", "restart", "remove"]
NODE_ACTIONS = ["lock", "unlock", "remove"]
SECURITY_SCHEMES = {
    "clientToken": {"type": "apiKey", "in": "query", "name": "token",
                    "description": "The passel's API token, when it has one (like NodeODM's --token)."},
    "adminBasic": {"type": "http", "scheme": "basic",
                   "description": "The admin password (any user name), once one is set."},
    "adminBearer": {"type": "http", "scheme": "bearer", "description": "The admin password, once one is set."},
    "formToken": {"type": "apiKey", "in": "cookie", "name": "passel_csrf",
                  "description": "The form token a page set; the form repeats it in its `csrf` field."},
    "uiSession": {"type": "apiKey", "in": "cookie", "name": "passel_session",
                  "description": "Signed in with the admin password, once one is set."},
    "passelKey": {"type": "apiKey", "in": "header", "name": "X-Passel-Sig",
                  "description": "Signed with the passel key by a box of the passel (discovery/trust.py)."},
}


@dataclass(frozen=True)
class Io:
    """What a route takes and gives beyond its path: query and header parameters, body, replies."""

    params: tuple[Schema, ...] = ()
    body: Schema | None = None
    reply: Schema = field(default_factory=lambda: OBJECT)
    media: str = "application/json"  # of the 200 reply; JSON replies may be NodeODM's error instead
    path: dict[str, Schema] = field(default_factory=dict)  # path parameters other than a plain string or uuid
    more: dict[str, Schema] = field(default_factory=dict)  # replies besides 200


def _query(name: str, schema: Schema, description: str = "") -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema} | (
        {"description": description} if description else {})


def _content(media: str, properties: Schema, required: list[str] | None = None, optional: bool = False) -> Schema:
    schema = {"type": "object", "properties": properties} | ({"required": required} if required else {})
    return {"required": not optional, "content": {media: {"schema": schema}}}


def _json(properties: Schema, required: list[str] | None = None) -> Schema:
    return _content("application/json", properties, required)


def _multipart(properties: Schema, files: bool = False) -> Schema:
    images = {"images": {"type": "array", "items": {"type": "string", "format": "binary"}}} if files else {}
    return _content("multipart/form-data", properties | images, optional=True)


def _ui_form(**properties: Schema) -> Schema:
    """A UI form: its form token, where to go back to, and its own fields."""
    return _content("application/x-www-form-urlencoded", {"csrf": TEXT, "next": TEXT, **properties}, ["csrf"])


def _task_action() -> Io:
    schema = {"type": "object", "properties": {"uuid": TEXT, "options": TEXT}, "required": ["uuid"]}
    return Io(reply=SUCCESS, body={"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": schema}, "application/json": {"schema": schema}}})


IO: dict[tuple[str, str], Io] = {
    ("GET", "/info"): Io(reply=INFO),
    ("GET", "/options"): Io(reply=ARRAY),
    ("POST", "/task/new"): Io(reply=CREATED, body=_multipart(TASK_FIELDS, files=True)),
    ("POST", "/task/new/init"): Io(reply=CREATED, body=_multipart(TASK_FIELDS), params=(
        {"name": "set-uuid", "in": "header", "required": False, "schema": UUID},)),
    ("POST", "/task/new/upload/{uuid}"): Io(reply=SUCCESS, body=_multipart({}, files=True)),
    ("POST", "/task/new/commit/{uuid}"): Io(reply=CREATED),
    ("GET", "/task/list"): Io(reply=ARRAY),
    ("GET", "/task/{uuid}/info"): Io(reply=TASK_INFO, params=(_query("with_output", {"type": "integer"}),)),
    ("GET", "/task/{uuid}/output"): Io(reply=ARRAY, params=(_query("line", {"type": "integer"}),)),
    ("GET", "/task/{uuid}/download/{asset}"): Io(more={"206": {"description": "A byte range of the zip"}}),
    ("POST", "/task/cancel"): _task_action(),
    ("POST", "/task/remove"): _task_action(),
    ("POST", "/task/restart"): _task_action(),
    ("GET", "/auth/info"): Io(reply={"type": "object", "properties": {
        "message": TEXT, "loginUrl": {"type": "string", "nullable": True},
        "registerUrl": {"type": "string", "nullable": True}}}),
    ("POST", "/auth/login"): Io(reply=ERROR),
    ("POST", "/auth/register"): Io(reply=ERROR),
    ("GET", "/-/nodes"): Io(reply=ARRAY),
    ("POST", "/-/nodes"): Io(body=_json({"url": TEXT, "label": TEXT, "upstream": {"type": "boolean"}}, ["url"])),
    ("GET", "/-/nodes/best"): Io(params=(_query("images", {"type": "integer"}),
                                         _query("mb", {"type": "number", "minimum": 0}, "the images' size in MB"))),
    ("DELETE", "/-/nodes/{ref}"): Io(reply=SUCCESS),
    ("GET", "/-/tasks"): Io(reply=ARRAY, params=(
        _query("unfinished", {"type": "string", "enum": ["1"]}, "1: only the tasks still to finish"),)),
    ("POST", "/-/tasks/{uuid}/{action}"): Io(reply=SUCCESS, path={"action": {"type": "string", "enum": TASK_ACTIONS}},
                                             body=_content("application/json", {"node": TEXT, "options": TEXT},
                                                           optional=True)),
    ("GET", "/-/events"): Io(reply=ARRAY, params=(_query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),)),
    ("POST", "/-/transfer"): Io(body=_json({"to": TEXT}, ["to"])),
    ("POST", "/-/priority"): Io(body=_json({"priority": {"type": "integer"}}, ["priority"])),
    ("GET", "/-/password"): Io(reply={"type": "object", "properties": {"set": {"type": "boolean"}}}),
    ("POST", "/-/password"): Io(body=_json({"old": TEXT, "new": TEXT, "salt": TEXT, "generation": {"type": "integer"},
                                            "only_this_box": {"type": "boolean"}}, ["new"])),
    ("POST", "/-/agent/v1/heartbeat"): Io(body=_json({"v": {"type": "integer"}, "id": TEXT}, ["v", "id"])),
    ("POST", "/-/agent/v1/takeover"): Io(body=_json({"term": {"type": "integer"}, "from": TEXT}, ["term", "from"])),
    ("POST", "/-/agent/v1/adopt"): Io(
        params=(_query("term", {"type": "integer"}), _query("digest", TEXT), _query("from", TEXT)),
        body=_multipart({"task": TEXT}, files=True)),
    ("GET", "/-/agent/v1/tasks"): Io(params=(_query("since", {"type": "integer"}), _query("wait", {"type": "number"}))),
    ("POST", "/-/agent/v1/intake/init"): Io(body=_json({"fields": {"type": "object"}, "set_uuid": TEXT}, ["fields"])),
    ("POST", "/-/agent/v1/intake/commit"): Io(body=_json(
        {"uuid": TEXT, "files": {"type": "object"}, "node_url": TEXT, "on_node": {"type": "array"}}, ["uuid", "files"])),
    ("POST", "/-/agent/v1/downloaded"): Io(body=_json({"uuid": TEXT}, ["uuid"])),
    ("POST", "/-/agent/v1/deliver"): Io(body=_json({"task": {"type": "object"}, "node_url": TEXT, "on_node": {"type": "array"}},
                                                    ["task", "node_url"])),
    ("POST", "/-/agent/v1/password"): Io(body=_json({"record": TEXT}, ["record"])),
    ("POST", "/-/agent/v1/key"): Io(body=_json({"key": TEXT}, ["key"])),
    ("GET", "/ui/tasks"): Io(params=(_query("status", TEXT), _query("node", TEXT), _query("q", TEXT),
                                     _query("page", {"type": "integer"}))),
    ("GET", "/ui/timeline"): Io(params=(_query("span", TEXT),)),
    ("POST", "/ui/tasks/{uuid}/{action}"): Io(path={"action": {"type": "string", "enum": TASK_ACTIONS}},
                                              body=_ui_form(node=TEXT)),
    ("POST", "/ui/join"): Io(body=_ui_form(code=TEXT)),
    ("POST", "/ui/nodes"): Io(body=_ui_form(url=TEXT, label=TEXT)),
    ("POST", "/ui/nodes/{ref}/{action}"): Io(path={"action": {"type": "string", "enum": NODE_ACTIONS}},
                                             body=_ui_form()),
    ("POST", "/ui/transfer"): Io(body=_ui_form(to=TEXT)),
    ("POST", "/ui/priority"): Io(body=_ui_form(priority={"type": "integer"})),
    ("POST", "/ui/password"): Io(body=_ui_form(old=TEXT, new=TEXT, confirm=TEXT)),
    ("POST", "/ui/login"): Io(body=_ui_form(password=TEXT)),
    ("POST", "/ui/logout"): Io(body=_ui_form()),
    ("GET", "/static"): Io(reply={"type": "string", "format": "binary"}, media="*/*"),
}


def openapi_path(resource: web.AbstractResource) -> str:
    """A resource's path in OpenAPI's terms: a static directory serves `{filename}` under its prefix."""
    if isinstance(resource, web.StaticResource):
        return resource.canonical + "/{filename}"
    return resource.canonical


def _security(rules: Rules) -> list[dict[str, list[str]]]:
    """Who may call, as OpenAPI security requirements (each alternative needs all of its schemes)."""
    token = {"clientToken": []} if rules.client_token else {}
    if rules.admin is Admin.PASSWORD:
        return [token | {"adminBasic": []}, token | {"adminBearer": []}]
    if rules.admin is Admin.SESSION:
        return [{"formToken": [], "uiSession": []}]
    if rules.admin is Admin.FORM_TOKEN:
        return [{"formToken": []}]
    if rules.peer in (Peer.SIGNED, Peer.SIGNED_STREAM):
        return [{"passelKey": []}]
    return [token] if token else []


def _replies(rules: Rules, io: Io, method: str, group: str) -> dict[str, Schema]:
    if rules.audience is Audience.PEOPLE:
        page = {"content": {"text/html": {"schema": TEXT}}}
        if method == "GET":
            return {"200": {"description": "The page"} | page, "404": {"description": "Not found"} | page}
        return {"303": {"description": "Done: back to the page the form came from"},
                "4XX": {"description": "Not done: a page says why"} | page,
                "503": {"description": "The coordinator did not answer"} | page}
    reply = {"oneOf": [io.reply, ERROR]} if io.media == "application/json" else io.reply
    replies: dict[str, Schema] = {"200": {"description": "OK", "content": {io.media: {"schema": reply}}}} | io.more
    if group != NODEODM:  # Passel's own APIs answer a refusal with its HTTP status
        replies["4XX"] = {"description": "Refused; the error says why", "content": {"application/json": {
            "schema": ERROR}}}
    return replies


def _description(rules: Rules) -> str:
    where = ("Answered by the coordinator: a follower relays it there." if rules.on_coordinator
             else "Answered by the box asked.")
    if rules.served_near:
        where = ("Answered by the coordinator, but a follower that knows which node holds the results streams "
                 "them from that node itself.")
    if rules.received_here:
        where = ("Answered by the coordinator, but a follower keeps the uploaded files itself and tells the "
                 "coordinator only their names and sizes.")
    return where + (" Only from this box itself (loopback)." if rules.peer is Peer.LOOPBACK else "")


def _path_parameters(path: str, io: Io) -> list[Schema]:
    return [{"name": name, "in": "path", "required": True,
             "schema": io.path.get(name, UUID if name == "uuid" else TEXT)}
            for name in re.findall(r"{(\w+)}", path)]


def operation(route: Route, path: str) -> Schema:
    """One route's OpenAPI operation; `x-passel-rules` carries its rules as the table states them."""
    rules = route.rules
    io = IO.get((route.method, route.path), Io())
    op: Schema = {"summary": route.summary, "description": _description(rules), "tags": [route.group],
                  "parameters": [*_path_parameters(path, io), *io.params],
                  "responses": _replies(rules, io, route.method, route.group), "security": _security(rules),
                  "x-passel-rules": {"on_coordinator": rules.on_coordinator, "received_here": rules.received_here,
                                     "served_near": rules.served_near,
                                     "client_token": rules.client_token,
                                     "admin": rules.admin.value, "peer": rules.peer.value,
                                     "audience": rules.audience.value}}
    if io.body is not None:
        op["requestBody"] = io.body
    return op


def spec(router: web.UrlDispatcher) -> Schema:
    """The description of the routes `router` holds (discovery's only when it is on)."""
    paths: dict[str, dict[str, Schema]] = {}
    for registered in router.routes():
        route = listed(registered)
        if route is None or registered.method == "HEAD":  # HEAD is its GET; require_rules refuses the unlisted
            continue
        path = openapi_path(registered.resource)  # type: ignore[arg-type]  # listed: it has a resource
        paths.setdefault(path, {})[route.method.lower()] = operation(route, path)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Passel", "version": __version__,
                 "description": "One NodeODM made of a field passel of boxes, plus Passel's own admin API, "
                                "its box-to-box API and its web UI."},
        "paths": paths,
        "components": {"securitySchemes": SECURITY_SCHEMES},
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(spec(request.app.router))


def setup_openapi_route(app: web.Application) -> None:
    app.router.add_get("/-/openapi.json", openapi_json)
