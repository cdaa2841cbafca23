"""The UI's route table, and the page handlers: each gathers a snapshot and fills its page's dataclass.

Every UI path is answered by the box the browser talks to (appliance/http_rules.py never relays them),
so a page renders even when the coordinator is gone; actions go to the coordinator (webui/actions.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.clock import wall
from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.cluster.outbox import OUTBOX_KEY, push_status
from appliance.config import CONFIG_KEY
from appliance.discovery.identity import IDENTITY_KEY
from appliance.discovery.passel import PASSEL_KEY
from appliance.nodeodm.sentences import readable
from appliance.nodeodm.status import TaskStatus
from appliance.store.models import Task
from webui import actions, new_job, pairing, products_view, snapshot
from webui import format as fmt
from webui.boxes import BOX_FACTS_KEY, BoxFactsCache, box_cards, box_names, node_card, node_names
from webui.contexts import AdminPage, EventRow, JobPage, PasselPage, TaskPage, TasksPage, TimelinePage
from webui.render import chrome, error_page, respond
from webui.task_views import (STATUS_CHOICES, any_online, can_move, counts, facts_of, job_of, job_summary, list_tasks,
                              log_of, member_row, members_of, move_targets, options_of, outcome_of, page_url,
                              task_row)
from webui.timeline import SPAN_CHOICES, SPANS, build

STATIC_DIR = Path(__file__).parent / "static"
EVENTS_SHOWN = 10


def _events(rows: list[dict[str, Any]], names: dict[str, str]) -> list[EventRow]:
    """Events as sentences: what the coordinator stored, with raw node errors and addresses put in words."""
    return [EventRow(at=fmt.clock(e.get("at")), kind=str(e.get("kind", "")).replace("-", " "),
                     message=readable(str(e.get("message", "")), names)) for e in rows]


async def passel_page(request: web.Request) -> web.Response:
    """The passel at a glance: every box, its nodes, and what is running."""
    snap = await snapshot.take(request)
    cards, others = box_cards(request, snap, request.app[BOX_FACTS_KEY])
    names = node_names(request, snap)
    page = PasselPage(chrome=chrome(request, "passel", "The passel", snap.banner),
                      public_url=request.app[COORDINATOR_KEY].public_url, discovery=snap.view is not None,
                      boxes=cards, other_nodes=others, nodes=[n for c in cards for n in c.nodes] + others,
                      counts=counts(snap.tasks),
                      events=_events(await snapshot.events(request, snap, limit=EVENTS_SHOWN), names),
                      join=pairing.join_offer(request))
    return respond(request, page)


async def tasks_page(request: web.Request) -> web.Response:
    snap = await snapshot.take(request)
    status = request.query.get("status", "all")
    status = status if status in dict(STATUS_CHOICES) else "all"
    node, text = request.query.get("node", ""), request.query.get("q", "")
    try:
        number = int(request.query.get("page", "1"))
    except ValueError:
        number = 1
    labels = node_names(request, snap)
    listing = list_tasks(snap, labels, await snapshot.etas(request, snap), status, node, text, number)
    page = TasksPage(
        chrome=chrome(request, "tasks", "Tasks", snap.banner), groups=listing.groups, status=status,
        node=node, text=text, status_choices=STATUS_CHOICES, node_choices=[("", "Any node"), *labels.items()],
        matching=listing.matching, total=len(snap.tasks), page=listing.page, pages=listing.pages,
        prev_url=page_url(status, node, text, listing.page - 1) if listing.page > 1 else None,
        next_url=page_url(status, node, text, listing.page + 1) if listing.page < listing.pages else None)
    return respond(request, page)


def _pushed(request: web.Request, task: Task) -> list[tuple[str, str]]:
    """Where the task's products stand on their way out (results_out), when that is configured."""
    outbox = request.app.get(OUTBOX_KEY)
    if outbox is None or task.status != TaskStatus.COMPLETED:
        return []
    return [("Results out", f"{push_status(outbox, task.uuid)} ({outbox.destination})")]


async def task_page(request: web.Request) -> web.Response:
    uuid = request.match_info["uuid"].lower()
    snap = await snapshot.take(request)
    task = snap.coordinator.book.visible(uuid)
    if task is None:
        return error_page(request, 404, "No such task",
                          f"There is no task {uuid} in this passel; it may have been removed.", "/ui/tasks")
    status = TaskStatus(task.status)
    events, eta = await snapshot.task_detail(request, snap, uuid)
    names = node_names(request, snap)
    key = job_of(task)
    etas = await snapshot.etas(request, snap)
    job = job_summary(snap, key, box_names(request, snap), etas)  # None for a task on its own
    now, online = wall(), any_online(snap)
    parts = [member_row(t, snap.node_url(t), names, now, etas.get(t.uuid), online)
             for t in members_of(snap, key) if t.uuid != task.uuid] if job and job.parent == task.uuid else []
    page = TaskPage(
        chrome=chrome(request, "tasks", task.name or uuid, snap.banner),
        task=task_row(task, snap.node_url(task), names, wall(), eta, any_online(snap)), job=job,
        outcome=outcome_of(task), error=readable(task.error_message or task.last_error, names),
        facts=facts_of(task, wall()) + _pushed(request, task), options=options_of(task), log=log_of(task), events=_events(events, names),
        move_targets=move_targets(task, snap, names), can_move=can_move(task), can_restart=status.finished,
        download_url=f"/task/{uuid}/download/all.zip" if status == TaskStatus.COMPLETED else None,
        token_needed=bool(request.app[CONFIG_KEY].token),
        products=await products_view.products_section(request, task), parts=parts)
    return respond(request, page)


async def job_page(request: web.Request) -> web.Response:
    """One split-merge job: its overall progress, the boxes on it, when it should end, and its parts."""
    key = request.match_info["key"]
    snap = await snapshot.take(request)
    etas = await snapshot.etas(request, snap)
    job = job_summary(snap, key, box_names(request, snap), etas)
    if job is None:
        return error_page(request, 404, "No such job",
                          "This passel has no job at that address; its tasks may have been removed.", "/ui/tasks")
    names, now, online = node_names(request, snap), wall(), any_online(snap)
    rows = [member_row(t, snap.node_url(t), names, now, etas.get(t.uuid), online) for t in members_of(snap, key)]
    return respond(request, JobPage(chrome=chrome(request, "tasks", job.title, snap.banner), job=job, rows=rows))


async def timeline_page(request: web.Request) -> web.Response:
    snap = await snapshot.take(request)
    span = request.query.get("span", "auto")
    span = span if span in SPANS else "auto"
    lanes, ticks, window = build(snap, node_names(request, snap), span)
    page = TimelinePage(chrome=chrome(request, "timeline", "Timeline", snap.banner), lanes=lanes, ticks=ticks,
                        span=span, span_choices=SPAN_CHOICES, window=window)
    return respond(request, page)


async def admin_page(request: web.Request) -> web.Response:
    snap = await snapshot.take(request)
    cards, _ = box_cards(request, snap, request.app[BOX_FACTS_KEY])
    config, identity, passel = request.app[CONFIG_KEY], request.app[IDENTITY_KEY], request.app.get(PASSEL_KEY)
    facts = [("Box", f"{identity.name} ({identity.id})"), ("Entry address", request.app[COORDINATOR_KEY].public_url),
             ("State directory", str(config.state_dir)), ("Discovery", "on" if passel else "off (--no-discovery)"),
             ("API token", "required (?token=)" if config.token else "none")]
    page = AdminPage(chrome=chrome(request, "admin", "Settings", snap.banner, live=False),
                     nodes=[node_card(n, node_names(request, snap).get(n["url"])) for n in snap.nodes], boxes=cards,
                     discovery=passel is not None,
                     priority=passel.priority if passel else config.priority, facts=facts,
                     pairing=pairing.pairing(request))
    return respond(request, page)


async def _close_facts(app: web.Application) -> None:
    await app[BOX_FACTS_KEY].close()


def setup_ui_routes(app: web.Application) -> None:
    """The whole UI; call after setup_admin_auth, whose password guards the UI's actions."""
    app[BOX_FACTS_KEY] = BoxFactsCache()
    app.on_cleanup.append(_close_facts)
    app.router.add_get("/", passel_page)
    app.router.add_get("/ui/new", new_job.new_job_page)
    app.router.add_get("/ui/tasks", tasks_page)
    app.router.add_get("/ui/tasks/{uuid}", task_page)
    app.router.add_get("/ui/jobs/{key}", job_page)
    app.router.add_get("/ui/timeline", timeline_page)
    app.router.add_get("/ui/admin", admin_page)
    app.router.add_get("/ui/tasks/{uuid}/products/{product}", products_view.product_download)
    app.router.add_get(r"/ui/tasks/{uuid}/tiles/{layer}/{z:\d+}/{x:\d+}/{y:\d+}.png", products_view.tile)
    app.router.add_get("/ui/tasks/{uuid}/preview.png", products_view.preview)
    app.router.add_post("/ui/tasks/{uuid}/{action}", actions.task_action)
    app.router.add_post("/ui/nodes", actions.node_add)
    app.router.add_post("/ui/nodes/{ref}/{action}", actions.node_action)
    app.router.add_post("/ui/transfer", actions.transfer)
    app.router.add_post("/ui/priority", actions.priority)
    app.router.add_post("/ui/join", actions.join)
    app.router.add_post("/ui/password", actions.password)
    app.router.add_post("/ui/login", actions.sign_in)
    app.router.add_post("/ui/logout", actions.sign_out)
    app.router.add_static("/static", STATIC_DIR)
