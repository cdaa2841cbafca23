"""Every route a box serves and the rules a request to it must pass, in one table.

The middlewares take their decisions from this table, by the route aiohttp matched (never by reading
the path again), and `/-/openapi.json` is written from it (appliance/openapi.py), so what is enforced
and what clients are told cannot drift apart. `require_rules` refuses an app with a route the table
does not list, so a new route cannot slip in unguarded.

The rules are applied by these middlewares, outermost first (appliance/agent.py installs them):
  1. `failure_middleware` (webui/render.py) answers any failure below it: a page where people browse,
     NodeODM's JSON error where programs call. Outermost, so a failure in the checks is answered too.
  2. `gate_middleware` (here) decides who answers and whether the caller may ask. A follower relays a
     coordinator's route untouched, before any check, so the coordinator checks it with its own token
     and password; then the client token, then the admin password (NodeODM refuses a bad token first).
  3. `agent_auth_middleware` (agent_api.py, with discovery only) lets only the boxes of the
     passel call the box-to-box API, and only this box itself call its loopback-only routes.
The web UI's forms are checked by their actions (webui/security.py), on the coordinator after a relay.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from aiohttp import web

from appliance.admin_auth import password_refusal
from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.discovery.passel import PASSEL_KEY
from appliance.nodeodm import replies
from appliance.nodeodm.auth import token_matches
from appliance.relay import relay_to_coordinator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


class Admin(Enum):
    """What shows that the caller may change the passel. Nothing is asked until a password is set,
    except a UI form's token, which keeps other sites from posting the forms."""

    NONE = "none"
    PASSWORD = "password"  # HTTP Basic or Bearer; checked by gate_middleware
    FORM_TOKEN = "form token"  # a form this passel drew; checked by the UI action
    SESSION = "session"  # a form this passel drew, from a signed-in browser; checked by the UI action


class Peer(Enum):
    """Which box may call: the box-to-box API is for the passel's own boxes only."""

    ANY = "any"
    SIGNED = "signed"  # request and body signed with the passel key; the reply is signed back
    SIGNED_STREAM = "signed stream"  # the same, but the body is streamed: its digest is in the signed query
    LOOPBACK = "loopback"  # only this box itself (its systemd units, `passel key set`)


class Audience(Enum):
    """Who reads the replies, and so how a failure is answered."""

    PROGRAMS = "programs"  # NodeODM's JSON error; aiohttp's plain text for a 404
    PEOPLE = "people"  # a page in the UI's style
    EITHER = "either"  # a page when the client asks for HTML (a mistyped address)


@dataclass(frozen=True, slots=True)
class Rules:
    """The rules of one route."""

    on_coordinator: bool = False  # the coordinator answers: a follower relays the request there
    received_here: bool = False  # an upload: the box the client talks to keeps the files (receiving.py)
    served_near: bool = False  # a download: a follower whose replica knows the node streams it from there
    client_token: bool = False  # NodeODM's `?token=`, when the passel has one (--token)
    admin: Admin = Admin.NONE
    peer: Peer = Peer.ANY
    audience: Audience = Audience.PROGRAMS


@dataclass(frozen=True, slots=True)
class Route:
    """One row of the table: a route as registered (method and path pattern), its rules and what it does."""

    method: str
    path: str
    rules: Rules
    group: str  # the OpenAPI tag
    summary: str


CLIENT_CALL = Rules(on_coordinator=True, client_token=True)  # NodeODM clients, and reads of the admin API
UPLOAD_CALL = Rules(on_coordinator=True, client_token=True, received_here=True)  # the coordinator hears names only
DOWNLOAD_CALL = Rules(on_coordinator=True, client_token=True, served_near=True)  # node to asker, never a third box
ADMIN_ACTION = Rules(on_coordinator=True, client_token=True, admin=Admin.PASSWORD)
BOX_READ = Rules(client_token=True)  # what only the box asked can answer
BOX_ACTION = Rules(client_token=True, admin=Admin.PASSWORD)
OPEN = Rules()  # PyODM's probes and the UI's files
PEER_CALL = Rules(peer=Peer.SIGNED)
THIS_BOX_ONLY = Rules(peer=Peer.LOOPBACK)
PAGE = Rules(audience=Audience.PEOPLE)  # every box draws its pages from its own view of the passel
UI_FORM = Rules(admin=Admin.FORM_TOKEN, audience=Audience.PEOPLE)
UI_ACTION = Rules(admin=Admin.SESSION, audience=Audience.PEOPLE)
NO_ROUTE = Rules(audience=Audience.EITHER)  # an address nobody serves: this box says so itself

NODEODM, ADMIN, BOX, BOX_TO_BOX, UI = "NodeODM", "Passel admin", "This box", "Box to box", "Web UI"


def _rows(group: str, rows: Iterable[tuple[str, str, Rules, str]]) -> tuple[Route, ...]:
    return tuple(Route(method, path, rules, group, summary) for method, path, rules, summary in rows)


ROUTES: tuple[Route, ...] = (
    *_rows(NODEODM, [  # at the root, because PyODM drops any path in a node's URL
        ("GET", "/info", CLIENT_CALL, "The passel as one node: the summed capacity of its online nodes"),
        ("GET", "/options", CLIENT_CALL, "The options the nodes accept"),
        ("POST", "/task/new", CLIENT_CALL, "Create a task in one request (fields and images)"),
        ("POST", "/task/new/init", UPLOAD_CALL, "Start a chunked upload; the set-uuid header picks the uuid"),
        ("POST", "/task/new/upload/{uuid}", UPLOAD_CALL, "Upload one or more images"),
        ("POST", "/task/new/commit/{uuid}", UPLOAD_CALL, "Finish the upload; the task starts"),
        ("GET", "/task/{uuid}/files", UPLOAD_CALL,
         "Passel's own: the files of an unfinished upload already held here, to resume it"),
        ("GET", "/task/list", CLIENT_CALL, "Tasks"),
        ("GET", "/task/{uuid}/info", CLIENT_CALL, "A task"),
        ("GET", "/task/{uuid}/output", CLIENT_CALL, "A task's output lines"),
        ("GET", "/task/{uuid}/download/{asset}", DOWNLOAD_CALL, "Download all.zip"),
        ("POST", "/task/cancel", CLIENT_CALL, "Cancel a task"),
        ("POST", "/task/remove", CLIENT_CALL, "Remove a task and its files everywhere"),
        ("POST", "/task/restart", CLIENT_CALL, "Restart a finished, failed or canceled task"),
        ("GET", "/auth/info", OPEN, "How to sign in: never, a passel has a static token at most"),
        ("POST", "/auth/login", OPEN, "Not available: a passel has a static token at most"),
        ("POST", "/auth/register", OPEN, "Not available: a passel has a static token at most"),
    ]),
    *_rows(ADMIN, [
        ("GET", "/-/status.json", CLIENT_CALL, "Nodes, tasks and jobs in one reply"),
        ("GET", "/-/settings.json", CLIENT_CALL, "The effective settings and where each came from"),
        ("GET", "/-/nodes", CLIENT_CALL, "Nodes (never with their tokens)"),
        ("POST", "/-/nodes", ADMIN_ACTION, "Add a node"),
        ("GET", "/-/nodes/best", CLIENT_CALL, "Where a task of N images would go, and why not elsewhere"),
        ("DELETE", "/-/nodes/{ref}", ADMIN_ACTION, "Remove a node"),
        ("POST", "/-/nodes/{ref}/lock", ADMIN_ACTION, "Lock a node: it takes no new tasks"),
        ("POST", "/-/nodes/{ref}/unlock", ADMIN_ACTION, "Unlock a node"),
        ("GET", "/-/tasks", CLIENT_CALL, "Tasks, with where they run and their ETA"),
        ("GET", "/-/tasks/{uuid}", CLIENT_CALL, "A task and its history of events"),
        ("POST", "/-/tasks/{uuid}/{action}", ADMIN_ACTION, "Move, cancel, restart or remove a task"),
        ("GET", "/-/events", CLIENT_CALL, "The audit log"),
        ("GET", "/-/openapi.json", CLIENT_CALL, "This description"),
        ("POST", "/-/transfer", ADMIN_ACTION, "Hand the coordinator role to another box"),
    ]),
    *_rows(BOX, [
        ("GET", "/-/box.json", BOX_READ, "This box's facts: cores, memory, disk, clock"),
        ("POST", "/-/priority", BOX_ACTION, "Change this box's election priority until it restarts"),
        ("GET", "/-/passel.json", BOX_READ, "The passel as this box sees it"),
        ("GET", "/-/password", BOX_READ, "Whether an admin password is set"),
        # no Admin.PASSWORD: the change itself carries the current password
        ("POST", "/-/password", BOX_READ, "Set the admin password, or change it with the current one"),
    ]),
    *_rows(BOX_TO_BOX, [
        ("POST", "/-/agent/v1/heartbeat", PEER_CALL, "A box's heartbeat: who it is and what it holds"),
        ("POST", "/-/agent/v1/takeover", PEER_CALL, "Take the coordinator role, handed over by the coordinator"),
        ("POST", "/-/agent/v1/adopt", Rules(peer=Peer.SIGNED_STREAM),
         "Take a task and its staged files from a box that is no longer coordinator"),
        ("GET", "/-/agent/v1/tasks", PEER_CALL, "The replica feed: task rows newer than a version"),
        ("POST", "/-/agent/v1/intake/init", PEER_CALL, "A task whose upload another box takes in: its fields"),
        ("POST", "/-/agent/v1/intake/commit", PEER_CALL, "That upload is complete: its files' names and sizes"),
        ("POST", "/-/agent/v1/deliver", PEER_CALL, "Send a task's staged files from this box to a node"),
        ("POST", "/-/agent/v1/downloaded", PEER_CALL, "A follower served a task's whole all.zip to its client"),
        ("GET", "/-/agent/v1/results/{uuid}", PEER_CALL, "The copy of a completed task's all.zip this box holds"),
        ("POST", "/-/agent/v1/results/copied", PEER_CALL, "A box holds the whole copy of a task's all.zip"),
        ("POST", "/-/agent/v1/results/refused", PEER_CALL, "A box cannot keep the copy of a task's all.zip"),
        ("POST", "/-/agent/v1/password", PEER_CALL, "A newer admin password record, from a box that has it"),
        ("POST", "/-/agent/v1/sleep", THIS_BOX_ONLY, "Say goodbye before a suspend"),
        ("POST", "/-/agent/v1/wake", THIS_BOX_ONLY, "Rejoin after a suspend"),
        ("POST", "/-/agent/v1/key", THIS_BOX_ONLY, "Use a new passel key at once"),
    ]),
    *_rows(UI, [
        ("GET", "/", PAGE, "The passel at a glance"),
        ("GET", "/ui/new", PAGE, "Start a job: choose images and options, then upload from the browser"),
        ("GET", "/ui/tasks", PAGE, "Tasks, filtered and paged"),
        ("GET", "/ui/tasks/{uuid}", PAGE, "A task"),
        ("GET", "/ui/jobs/{key}", PAGE, "A split-merge job: its overall progress, boxes, time left and parts"),
        ("GET", "/ui/timeline", PAGE, "What ran where, and when"),
        ("GET", "/ui/admin", PAGE, "Settings: nodes, boxes, the admin password"),
        ("GET", "/ui/tasks/{uuid}/products/{product}", PAGE, "Download one product of a completed task, read from its all.zip"),
        ("GET", "/ui/tasks/{uuid}/tiles/{layer}/{z}/{x}/{y}.png", OPEN, "A map tile of a task's orthophoto, DSM or DTM (XYZ)"),
        ("GET", "/ui/tasks/{uuid}/preview.png", OPEN, "A small picture of a task's orthophoto"),
        ("POST", "/ui/tasks/{uuid}/{action}", UI_ACTION, "Move, cancel, restart or remove a task"),
        ("POST", "/ui/nodes", UI_ACTION, "Add a node"),
        ("POST", "/ui/nodes/{ref}/{action}", UI_ACTION, "Lock, unlock or remove a node"),
        ("POST", "/ui/transfer", UI_ACTION, "Hand the coordinator role to another box"),
        ("POST", "/ui/priority", UI_ACTION, "Change this box's election priority"),
        ("POST", "/ui/join", UI_ACTION, "Join a passel with its pairing code, while this box is alone"),
        ("POST", "/ui/password", UI_FORM, "Set the admin password, or change it with the current one"),
        ("POST", "/ui/login", UI_FORM, "Sign in with the admin password"),
        ("POST", "/ui/logout", UI_FORM, "Sign out"),
        ("GET", "/static", OPEN, "The UI's style sheet, script and icons"),
    ]),
)

_BY_KEY: dict[tuple[str, str], Route] = {(r.method, r.path): r for r in ROUTES}
# what every request looks up, HEAD included (aiohttp adds a HEAD route beside every GET)
_RULES: dict[tuple[str, str], Rules] = {key: r.rules for key, r in _BY_KEY.items()} | {
    ("HEAD", r.path): r.rules for r in ROUTES if r.method == "GET"}


def listed(route: web.AbstractRoute) -> Route | None:
    """The table's row for a registered route (HEAD is answered as its GET)."""
    if route.resource is None:
        return None
    method = "GET" if route.method == "HEAD" else route.method
    return _BY_KEY.get((method, route.resource.canonical))


def unlisted(router: web.UrlDispatcher) -> list[str]:
    """The registered routes the table has no row for."""
    return [f"{route.method} {route.resource.canonical if route.resource else '?'}"
            for route in router.routes() if listed(route) is None]


def require_rules(router: web.UrlDispatcher) -> None:
    """Refuse to build an app with a route nobody decided the rules of."""
    missing = unlisted(router)
    if missing:
        raise LookupError(f"No row in appliance/http_rules.py ROUTES for: {', '.join(missing)}")


def rules_of(request: web.Request) -> Rules:
    """The rules for a request, from the route it matched; an unmatched request has NO_ROUTE's."""
    route = request.match_info.route
    if route.resource is None:
        return NO_ROUTE
    return _RULES[route.method, route.resource.canonical]


def _takes_in(request: web.Request) -> bool:
    """Whether this follower handles an upload call itself: a new task's init, and the files and the
    commit of a task whose upload it took in (cluster/receiving.py)."""
    uuid = request.match_info.get("uuid")
    return uuid is None or request.app[COORDINATOR_KEY].receiver.holds(uuid)


def _results_known(request: web.Request) -> bool:
    """Whether this follower's replica says where a completed task's results are: it streams them from
    that node itself, so the bytes never pass through the coordinator."""
    return request.app[COORDINATOR_KEY].results_node(request.match_info["uuid"]) is not None


def gate_middleware(token: str | None) -> Middleware:
    """Relay to the coordinator, or check the client token and the admin password, as the route's rules say."""

    async def checked(request: web.Request, handler: Handler, rules: Rules) -> web.StreamResponse:
        if token and rules.client_token and not token_matches(request, token):
            return replies.error(replies.BAD_TOKEN)
        if rules.admin is Admin.PASSWORD and (refusal := await password_refusal(request)) is not None:
            return refusal
        return await handler(request)

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        rules = rules_of(request)
        passel = request.app.get(PASSEL_KEY) if rules.on_coordinator else None
        if passel is not None and not passel.is_coordinator and not (rules.received_here and _takes_in(request)) \
                and not (rules.served_near and _results_known(request)):
            # this box may become coordinator while the request waits: then it is checked here
            return await relay_to_coordinator(request, functools.partial(checked, handler=handler, rules=rules),
                                              passel)
        return await checked(request, handler, rules)

    return gate
