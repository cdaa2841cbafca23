"""`/ui/new`: start a job from the browser, with no terminal, PyODM or WebODM.

The page itself only lays out the choices; `static/new_job.js` reads the options from `/options`,
plans the split and the expected time from the nodes drawn here, and uploads through NodeODM's own
chunked API (init, upload, commit), resuming from what `GET /task/{uuid}/files` says is held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.cluster.scheduler import MIN_MB_PER_IMAGE
from appliance.config import CONFIG_KEY
from webui import snapshot
from webui.contexts import Chrome, doc
from webui.render import chrome, respond

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Preset:
    """A plain-language choice that stands for a set of ODM options."""

    key: str
    label: str
    sentence: str
    options: tuple[tuple[str, Any], ...]


PRESETS = (
    Preset("quick", "Quick orthophoto", "A map image fast: skips the 3D model, good for a first look at the area.",
           (("fast-orthophoto", True), ("feature-quality", "medium"))),
    Preset("standard", "Standard", "A map image and a 3D model with ODM's usual settings; right for most flights.", ()),
    Preset("high", "High quality", "Sharper results from more detail, at about twice the processing time.",
           (("feature-quality", "ultra"), ("pc-quality", "high"), ("mesh-size", 300000))),
    Preset("elevation", "Elevation models", "Adds surface and terrain elevation models (DSM and DTM) to the map image.",
           (("dsm", True), ("dtm", True), ("pc-quality", "high"))),
)


@dataclass(frozen=True, slots=True)
class NewJobPage:
    """`/ui/new`: choose images, a name and a preset (or options), then upload and start the job."""

    template: ClassVar[str] = "new_job.html"
    chrome: Chrome = doc("the page frame")
    presets: tuple[Preset, ...] = doc("the plain-language presets, the first one chosen")
    default_preset: str = doc("the key of the preset chosen when the page opens")
    token_needed: bool = doc("whether the passel needs its API token, which the page then asks for")
    plan: dict[str, Any] = doc("what the page's script plans with: nodes, presets, the passel's address")


def plan_data(nodes: list[dict[str, Any]], public_url: str) -> dict[str, Any]:
    """The nodes as the split proposal and the time estimate need them (online, unlocked ones)."""
    usable = [{"label": str(n.get("label") or n.get("url")),
               "maxImages": n.get("max_images"),
               "memoryMb": int(n.get("total_memory") or 0) // MB,
               "msPerImage": float(n.get("ms_per_image") or 0.0),
               "slots": int(n.get("slots") or 1),
               "busy": int(n.get("active_tasks") or 0)}
              for n in nodes if n.get("online") is not False and not n.get("locked")]
    return {"nodes": usable, "minMbPerImage": MIN_MB_PER_IMAGE, "smCluster": public_url,
            "presets": {p.key: [{"name": name, "value": value} for name, value in p.options] for p in PRESETS}}


async def new_job_page(request: web.Request) -> web.Response:
    snap = await snapshot.take(request)
    page = NewJobPage(chrome=chrome(request, "new", "New job", snap.banner, live=False), presets=PRESETS,
                      default_preset="standard", token_needed=bool(request.app[CONFIG_KEY].token),
                      plan=plan_data(snap.nodes, request.app[COORDINATOR_KEY].public_url))
    return respond(request, page)
