"""What each page's template may use: one documented dataclass per page (tests/test_ui.py checks it).

Builders turn the passel into these; the templates only lay them out, so a template can never reach
into the coordinator, and every value it shows is named and explained here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


def doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field with its `help`, as datasette documents its template contexts."""
    return field(metadata={"help": text}, **kwargs)


# -- pieces shared by several pages ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Chrome:
    """The frame around every page: who is speaking, the warning banner, and the form token."""

    version: str = doc("Passel's version, in the footer")
    box_name: str = doc("the name of the box that drew this page")
    page: str = doc("which navigation entry is current: passel, tasks, timeline or admin")
    title: str = doc("the page's title")
    csrf: str = doc("the token every action form carries (matches the passel_csrf cookie)")
    password_set: bool = doc("whether actions need the admin password")
    signed_in: bool = doc("whether this browser is signed in with the admin password")
    banner: str | None = doc("a warning shown on top, e.g. when the coordinator is unreachable", default=None)
    notice: str | None = doc("the outcome of the last action, after a redirect", default=None)
    live: bool = doc("whether the page refreshes its live regions by itself", default=True)


@dataclass(frozen=True, slots=True)
class NodeCard:
    """One NodeODM node as the coordinator sees it."""

    id: int
    ref: str  # the node's URL, quoted for a path segment (ids differ between coordinator and replicas)
    url: str
    label: str
    state: str
    state_class: str
    locked: bool
    online: bool | None
    active_tasks: int
    slots: int
    queue: int
    cores: str
    memory: str
    max_images: str
    last_seen: str
    source: str
    last_error: str


@dataclass(frozen=True, slots=True)
class BoxCard:
    """One box of the passel: its role, its NodeODM nodes and its resources."""

    id: str
    name: str
    role: str
    address: str
    state: str
    state_class: str
    is_self: bool
    is_coordinator: bool
    alive: bool
    last_seen: str
    priority: int
    health: str
    health_class: str
    slots_used: int
    slots_total: int
    queue: int
    cores: str
    memory: str
    disk_free: str
    nodes: list[NodeCard]


@dataclass(frozen=True, slots=True)
class EventRow:
    at: str
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One task in a list: enough to spot a stuck or failed one at a glance."""

    uuid: str
    short: str
    name: str
    status: str
    status_class: str
    progress: float
    node_label: str  # the node's name (its label, else its box's name), never a URL where a name is known
    node_url: str
    images: int
    elapsed: str
    eta: str  # "about 3 min left", from the coordinator's forecast; empty when it cannot tell
    created: str
    note: str


@dataclass(frozen=True, slots=True)
class TaskGroup:
    """The submodels of one split-merge job (tasks sharing a job key), or a single task."""

    key: str
    title: str
    is_job: bool
    done: int
    rows: list[TaskRow]
    url: str = ""  # the job's page, for a job


@dataclass(frozen=True, slots=True)
class JobSummary:
    """A split-merge job as a whole, as a responder asks about it: how far, where, until when."""

    key: str = doc("the job's key, in its page's address")
    title: str = doc("e.g. 'Job submodel_0000 to submodel_0005 (6 parts)'")
    url: str = doc("the job's page")
    parts: int = doc("how many tasks (submodels) it has")
    done: int = doc("how many completed")
    failed: int = doc("how many failed")
    progress: float = doc("overall progress in per cent, each part weighted by its images")
    boxes: list[str] = doc("the names of the boxes working on it now")
    eta: str = doc("'about 12 min left', when the coordinator can tell; else empty")
    finished: bool = doc("whether every part has ended")
    outcome: str = doc("once finished, one sentence saying where the results are")
    parent: str = doc("the uuid of the task that made the parts (a split job started here), else empty",
                      default="")


@dataclass(frozen=True, slots=True)
class Bar:
    """One task on the timeline: a waiting part (queued) and a running part (on its node)."""

    uuid: str
    title: str
    status_class: str
    wait_left: float
    wait_width: float
    run_left: float
    run_width: float
    row: int
    straggler: bool


@dataclass(frozen=True, slots=True)
class Lane:
    label: str
    detail: str
    rows: int
    bars: list[Bar]


@dataclass(frozen=True, slots=True)
class Tick:
    left: float
    label: str


@dataclass(frozen=True, slots=True)
class JoinOffer:
    """The "Join a passel" form, offered while this box is alone in its passel (docs/pairing.md)."""

    strangers: list[str] = doc("names of the boxes seen on the network that hold another passel's key")


@dataclass(frozen=True, slots=True)
class Pairing:
    """How to add a box to this passel: its pairing code, for admins once a password is set."""

    code: str | None = doc("the pairing code in groups of four; None when the viewer must sign in to see it")
    fingerprint: str = doc("a short id of the code, the same on every box of the passel and safe to show")


# -- pages ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PasselPage:
    """`/`: every box as a card, the nodes, and what the passel is doing."""

    template: ClassVar[str] = "passel.html"
    chrome: Chrome = doc("the page frame")
    public_url: str = doc("the address to give ODM, WebODM or PyODM")
    discovery: bool = doc("whether boxes find each other (off: this box works alone, with the nodes set in its settings)")
    boxes: list[BoxCard] = doc("the boxes of the passel, this box first")
    other_nodes: list[NodeCard] = doc("nodes that belong to no box of the passel (added by hand)")
    nodes: list[NodeCard] = doc("every node, for the nodes table")
    counts: dict[str, int] = doc("tasks per status name: RUNNING, QUEUED, COMPLETED, FAILED, CANCELED")
    events: list[EventRow] = doc("the latest events: arrivals, departures, moves and failures")
    join: JoinOffer | None = doc("the form to join a passel, while this box is alone; else None", default=None)


@dataclass(frozen=True, slots=True)
class TasksPage:
    """`/ui/tasks`: filtered tasks, split-merge submodels grouped by job."""

    template: ClassVar[str] = "tasks.html"
    chrome: Chrome = doc("the page frame")
    groups: list[TaskGroup] = doc("the tasks on this page, grouped by job")
    status: str = doc("the status filter: all, active, or a status name")
    node: str = doc("the node filter: a node URL, or empty for every node")
    text: str = doc("the text filter, matched against names and uuids")
    status_choices: list[tuple[str, str]] = doc("(value, label) for the status filter")
    node_choices: list[tuple[str, str]] = doc("(value, label) for the node filter")
    matching: int = doc("how many tasks match the filters")
    total: int = doc("how many tasks there are")
    page: int = doc("which page of results this is, from 1")
    pages: int = doc("how many pages of results there are")
    prev_url: str | None = doc("the previous page, if any")
    next_url: str | None = doc("the next page, if any")


# -- a completed task's products (_products.html, filled by webui/products_view.py) --------------------
@dataclass(frozen=True, slots=True)
class ProductRow:
    name: str = doc("what a responder calls it: 'Orthophoto'")
    what: str = doc("one line on what it is for")
    size: str = doc("its size, readable: '7.8 GB'")
    url: str = doc("where to download it on its own")


@dataclass(frozen=True, slots=True)
class ProductMap:
    footprint: str = doc("the orthophoto's corners as JSON [[lat, lon], ...]")
    tiles_url: str = doc("the orthophoto's tiles, {z}/{x}/{y} as web maps count them; '' when the zip has none")
    min_zoom: int = doc("the tiles' lowest zoom")
    max_zoom: int = doc("the tiles' highest zoom")
    overlay_url: str = doc("the preview, laid on the footprint when there are no tiles")


@dataclass(frozen=True, slots=True)
class ProductsSection:
    """`_products.html`: what a completed task made, and where its orthophoto lies."""

    shown: bool = doc("whether the task completed, so the section is drawn at all")
    note: str = doc("why the products cannot be listed now; '' when they are")
    products: list[ProductRow] = doc("each product, to download on its own")
    preview_url: str = doc("a small picture of the orthophoto; '' without one")
    map: ProductMap | None = doc("the map of the orthophoto; None when it cannot be placed")
    map_note: str = doc("one sentence on why there is no map; '' when there is one")


@dataclass(frozen=True, slots=True)
class TaskPage:
    """`/ui/tasks/{uuid}`: one task, its log, its history and what can be done with it."""

    template: ClassVar[str] = "task.html"
    chrome: Chrome = doc("the page frame")
    task: TaskRow = doc("the task's summary")
    job: JobSummary | None = doc("the split-merge job it is part of, as a whole; None for a task on its own")
    outcome: str = doc("once it ended, one sentence saying where its results are (or why there are none)")
    error: str = doc("why it failed, or the last send error, in words (never a raw exception)")
    facts: list[tuple[str, str]] = doc("(label, value) lines: created, finished, attempts, node time")
    options: list[tuple[str, str]] = doc("the processing options, as (name, value)")
    log: list[str] = doc("the last lines of its output, Passel's own notes first")
    events: list[EventRow] = doc("its history: accepted, sent, moved, failed, restarted")
    move_targets: list[tuple[str, str]] = doc("(node URL, name) of nodes it may be moved to")
    can_move: bool = doc("whether it is queued or running, so it can be moved or canceled")
    can_restart: bool = doc("whether it has finished, so it can be restarted")
    download_url: str | None = doc("where to download all.zip, once it completed")
    token_needed: bool = doc("whether the download needs the API token added as ?token=")
    products: ProductsSection = doc("what the task made: its downloads, a preview and a map (_products.html)")
    parts: list[TaskRow] = doc("the submodels it sent to the passel, for a split job started here",
                               default_factory=list)


@dataclass(frozen=True, slots=True)
class JobPage:
    """`/ui/jobs/{key}`: one split-merge job, its overall progress and its parts."""

    template: ClassVar[str] = "job.html"
    chrome: Chrome = doc("the page frame")
    job: JobSummary = doc("the job as a whole")
    rows: list[TaskRow] = doc("its parts (submodels), in name order")


@dataclass(frozen=True, slots=True)
class TimelinePage:
    """`/ui/timeline`: a Gantt chart of tasks across nodes, so idle nodes and stragglers stand out."""

    template: ClassVar[str] = "timeline.html"
    chrome: Chrome = doc("the page frame")
    lanes: list[Lane] = doc("one lane per node (and one for the queue), with its bars")
    ticks: list[Tick] = doc("time labels along the axis")
    span: str = doc("the window shown: auto, 1h, 6h or 24h")
    span_choices: list[tuple[str, str]] = doc("(value, label) for the window picker")
    window: str = doc("the window in words, e.g. '14:02 to 14:38 (36 min)'")


@dataclass(frozen=True, slots=True)
class AdminPage:
    """`/ui/admin`: nodes, the coordinator role, this box's priority, the admin password and pairing."""

    template: ClassVar[str] = "admin.html"
    chrome: Chrome = doc("the page frame")
    nodes: list[NodeCard] = doc("the coordinator's nodes, to lock, unlock or remove")
    boxes: list[BoxCard] = doc("the boxes, to hand the coordinator role to")
    discovery: bool = doc("whether this box takes part in a passel (else no role or priority)")
    priority: int = doc("this box's election priority now")
    facts: list[tuple[str, str]] = doc("(label, value) about this box: id, address, state dir")
    pairing: Pairing | None = doc("how to add a box to this passel; None without discovery or a key", default=None)


@dataclass(frozen=True, slots=True)
class ErrorPage:
    """Any error, in the UI's own style, with a way back."""

    template: ClassVar[str] = "error.html"
    chrome: Chrome = doc("the page frame")
    status: int = doc("the HTTP status")
    heading: str = doc("what went wrong, in a few words")
    message: str = doc("what happened and what to do about it")
    back_url: str = doc("where the 'back' link goes")
