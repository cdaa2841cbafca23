"""An OpenAPI description of the passel's HTTP API: the NodeODM part clients use, and Passel's admin part.

Served at `/-/openapi.json` so tools can discover the API, and fuzzed in CI (tests/test_fuzz.py).
NodeODM answers errors with HTTP 200 and `{"error": ...}`, so most operations document one 200 reply
that is either the result or an error object.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from appliance import __version__

UUID = {"type": "string", "format": "uuid"}
ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
SUCCESS = {"type": "object", "properties": {"success": {"type": "boolean"}, "error": {"type": "string"}}}
TOKEN = {"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "The API token, when the passel has one (like NodeODM's --token)."}
UUID_PATH = {"name": "uuid", "in": "path", "required": True, "schema": UUID}
TASK_FIELDS = {
    "name": {"type": "string"}, "options": {"type": "string", "description": 'JSON: [{"name": ..., "value": ...}]'},
    "skipPostProcessing": {"type": "string", "enum": ["true", "false"]},
    "outputs": {"type": "string", "description": "JSON list of paths relative to the project"},
    "webhook": {"type": "string"}, "dateCreated": {"type": "string"},
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, reply: dict[str, Any], params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, tag: str = "NodeODM", more: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "parameters": [TOKEN, *(params or [])],
                          "responses": {"200": _json({"oneOf": [reply, ERROR]})} | (more or {})}
    if body is not None:
        op["requestBody"] = body
    return op


def _form(properties: dict[str, Any], files: bool = False, required: list[str] | None = None) -> dict[str, Any]:
    props = dict(properties)
    if files:
        props["images"] = {"type": "array", "items": {"type": "string", "format": "binary"}}
    schema = {"type": "object", "properties": props} | ({"required": required} if required else {})
    return {"required": False, "content": {"multipart/form-data": {"schema": schema}}}


def _action(summary: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"uuid": {"type": "string"}, "options": {"type": "string"}},
              "required": ["uuid"]}
    return _op(summary, SUCCESS, body={"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": schema}, "application/json": {"schema": schema}}})


def _admin(summary: str, schema: dict[str, Any], params: list[dict[str, Any]] | None = None,
           body: dict[str, Any] | None = None) -> dict[str, Any]:
    return _op(summary, schema, params, body, tag="Passel admin",
               more={"400": _json(ERROR, "Bad request"), "404": _json(ERROR, "Not found"),
                     "409": _json(ERROR, "Refused")})


def spec() -> dict[str, Any]:
    info = {"type": "object", "properties": {
        "version": {"type": "string"}, "taskQueueCount": {"type": "integer"}, "totalMemory": {"type": "integer"},
        "availableMemory": {"type": "integer"}, "cpuCores": {"type": "integer"},
        "maxImages": {"type": ["integer", "null"]}, "maxParallelTasks": {"type": "integer"},
        "engineVersion": {"type": "string"}, "engine": {"type": "string"}}}
    task_info = {"type": "object", "properties": {
        "uuid": UUID, "name": {"type": "string"}, "dateCreated": {"type": "integer"},
        "processingTime": {"type": "integer"}, "status": {"type": "object"}, "options": {"type": "array"},
        "imagesCount": {"type": "integer"}, "progress": {"type": "number"}, "output": {"type": "array"}}}
    node_ref = {"name": "ref", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Passel", "version": __version__,
                 "description": "One NodeODM made of a field passel of boxes, plus Passel's own admin API."},
        "paths": {
            "/info": {"get": _op("The passel as one node: summed capacity of the online nodes", info)},
            "/options": {"get": _op("The options the nodes accept", {"type": "array"})},
            "/task/new": {"post": _op("Create a task in one request (fields and images)", {"type": "object"},
                                      body=_form(TASK_FIELDS, files=True))},
            "/task/new/init": {"post": _op("Start a chunked upload; header set-uuid picks the uuid",
                                           {"type": "object", "properties": {"uuid": UUID}},
                                           params=[{"name": "set-uuid", "in": "header", "required": False,
                                                    "schema": UUID}], body=_form(TASK_FIELDS))},
            "/task/new/upload/{uuid}": {"post": _op("Upload one or more images", SUCCESS, [UUID_PATH],
                                                    _form({}, files=True))},
            "/task/new/commit/{uuid}": {"post": _op("Finish the upload; the task starts",
                                                    {"type": "object", "properties": {"uuid": UUID}}, [UUID_PATH])},
            "/task/list": {"get": _op("Tasks", {"type": "array"})},
            "/task/{uuid}/info": {"get": _op("A task", task_info, [UUID_PATH, {
                "name": "with_output", "in": "query", "required": False, "schema": {"type": "integer"}}])},
            "/task/{uuid}/output": {"get": _op("A task's output lines", {"type": "array"}, [UUID_PATH, {
                "name": "line", "in": "query", "required": False, "schema": {"type": "integer"}}])},
            "/task/{uuid}/download/{asset}": {"get": _op(
                "Download all.zip", {"type": "object"},
                [UUID_PATH, {"name": "asset", "in": "path", "required": True, "schema": {"type": "string"}}],
                more={"206": {"description": "A byte range of the zip"}})},
            "/task/cancel": {"post": _action("Cancel a task")},
            "/task/remove": {"post": _action("Remove a task and its files everywhere")},
            "/task/restart": {"post": _action("Restart a finished, failed or canceled task")},
            "/-/status.json": {"get": _admin("Nodes and tasks in one reply", {"type": "object"})},
            "/-/passel.json": {"get": _admin("The passel as this box sees it", {"type": "object"})},
            "/-/nodes": {"get": _admin("Nodes (never with their tokens)", {"type": "array"}),
                         "post": _admin("Add a node", {"type": "object"}, body={"required": True, "content": {
                             "application/json": {"schema": {"type": "object", "properties": {
                                 "url": {"type": "string"}}, "required": ["url"]}}}})},
            "/-/nodes/best": {"get": _admin("Where a task of N images would go", {"type": "object"}, [{
                "name": "images", "in": "query", "required": False, "schema": {"type": "integer"}}])},
            "/-/nodes/{ref}": {"delete": _admin("Remove a node", SUCCESS, [node_ref])},
            "/-/nodes/{ref}/lock": {"post": _admin("Lock a node: no new tasks", {"type": "object"}, [node_ref])},
            "/-/nodes/{ref}/unlock": {"post": _admin("Unlock a node", {"type": "object"}, [node_ref])},
            "/-/tasks": {"get": _admin("Tasks, with where they run and their ETA", {"type": "array"}, [{
                "name": "unfinished", "in": "query", "required": False, "schema": {"type": "string", "enum": ["1"]},
                "description": "1: only the tasks still to finish"}])},
            "/-/tasks/{uuid}": {"get": _admin("A task and its history of events", {"type": "object"}, [UUID_PATH])},
            "/-/events": {"get": _admin("The audit log", {"type": "array"}, [{
                "name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1,
                                                                             "maximum": 1000}}])},
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(spec())


def setup_openapi_route(app: web.Application) -> None:
    app.router.add_get("/-/openapi.json", openapi_json)
