"""The UI's routes: one overview page now; it reads the same admin API as the CLI."""

from __future__ import annotations

from pathlib import Path

import jinja2
from aiohttp import web

from appliance import __version__
from appliance.cluster.coordinator import public_task
from appliance.keys import COORDINATOR

STATIC_DIR = Path(__file__).parent / "static"
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
)


async def overview(request: web.Request) -> web.Response:
    """The passel at a glance; rendered server-side so it works without JavaScript."""
    c = request.app[COORDINATOR]
    busy = c.book.busy_by_node()
    nodes = [s.public(busy.get(s.id, 0)) for s in sorted(c.registry.nodes.values(), key=lambda s: s.id)]
    tasks = [public_task(t, c.registry) for t in reversed(c.book.all_visible())]
    html = _templates.get_template("overview.html").render(
        version=__version__, nodes=nodes, tasks=tasks, public_url=c.public_url)
    return web.Response(text=html, content_type="text/html")


def setup_ui_routes(app: web.Application) -> None:
    app.router.add_get("/", overview)
    app.router.add_static("/static", STATIC_DIR)
