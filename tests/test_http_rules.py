"""The route table: every route a box registers has its row and its description, and the middlewares
decide by the row of the route a request matched."""

from __future__ import annotations

from dataclasses import fields
from enum import Enum
from pathlib import Path

import pytest
import requests
from aiohttp import web

from appliance.agent import create_app
from appliance.agent_api import agent_auth_middleware
from appliance.cluster import routes as cluster_routes
from appliance.config import Config, load_config
from appliance.http_rules import ROUTES, Rules, listed, require_rules, unlisted
from appliance.nodeodm.replies import BAD_TOKEN
from appliance.openapi import IO, openapi_path, spec
from tests.ui_support import Browser, peer, start_box
from webui import routes as ui_routes
from webui.render import failure_middleware

TOKEN = "s3cret"


def config(tmp_path: Path, **flags: object) -> Config:
    return load_config(environ={}, flags={"host": "127.0.0.1", "state_dir": str(tmp_path), "min_free_disk_mb": 0}
                       | flags)


def as_described(rules: Rules) -> dict[str, object]:
    values = {f.name: getattr(rules, f.name) for f in fields(rules)}
    return {name: value.value if isinstance(value, Enum) else value for name, value in values.items()}


@pytest.mark.parametrize("discovery", [False, True])
def test_every_route_has_its_row_and_its_description(tmp_path, discovery):
    app = create_app(config(tmp_path, discovery=discovery))
    assert unlisted(app.router) == []
    doc = spec(app.router)
    for registered in app.router.routes():
        route = listed(registered)
        assert route is not None
        operation = doc["paths"][openapi_path(registered.resource)][route.method.lower()]
        assert operation["summary"] == route.summary and operation["tags"] == [route.group]
        assert operation["x-passel-rules"] == as_described(route.rules)


def test_the_table_lists_only_what_a_box_serves(tmp_path):
    app = create_app(config(tmp_path, discovery=True))
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    rows = {(r.method, r.path) for r in ROUTES}
    assert served == rows and len(rows) == len(ROUTES)
    assert set(IO) <= rows, "inputs and replies described for a route nobody serves"


def test_a_route_without_a_row_is_refused(tmp_path):
    app = create_app(config(tmp_path, discovery=False))

    async def unruled(request: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_post("/-/new-thing", unruled)
    assert unlisted(app.router) == ["POST /-/new-thing"]
    with pytest.raises(LookupError, match="POST /-/new-thing"):
        require_rules(app.router)


@pytest.mark.parametrize("discovery", [False, True])
def test_the_middlewares_are_few_and_in_the_documented_order(tmp_path, discovery):
    middlewares = create_app(config(tmp_path, discovery=discovery)).middlewares
    assert middlewares[0] is failure_middleware and middlewares[1].__name__ == "gate"
    assert list(middlewares[2:]) == ([agent_auth_middleware] if discovery else [])


def test_rules_follow_the_matched_route(simnode_factory, passel_factory):
    api = passel_factory([simnode_factory().url], token=TOKEN)
    refused = {"error": BAD_TOKEN}
    assert requests.get(api.url + "/info", timeout=5).json() == refused
    assert requests.head(api.url + "/info", timeout=5).headers["Content-Type"].startswith("application/json")
    assert requests.get(api.url + "/info", params={"token": TOKEN}, timeout=5).json()["version"]
    assert requests.get(api.url + "/auth/info", timeout=5).json()["loginUrl"] is None
    assert requests.get(api.url + "/static/passel.css", timeout=5).status_code == 200
    assert requests.get(api.url + "/ui/admin", timeout=5).status_code == 200
    # an address nobody serves is no secret: it is answered at once, as NodeODM does, without the token
    assert requests.get(api.url + "/no/such/route", timeout=5).status_code == 404
    assert requests.post(api.url + "/info", timeout=5).status_code == 405
    assert "There is no page at /ui/typo" in Browser(api.url).get("/ui/typo").text


def test_a_follower_relays_only_the_coordinators_routes(simnode_factory, passel_factory, tmp_path):
    node = simnode_factory()
    leader_server = passel_factory([node.url])
    leader = peer("leader", "127.0.0.1", leader_server.port, role="coordinator")
    box = start_box(tmp_path / "follower", [], [leader], leader, name="follower")
    try:
        assert [n["url"] for n in requests.get(box.url + "/-/nodes", timeout=10).json()] == [node.url]
        assert requests.get(box.url + "/-/box.json", timeout=10).json()["name"] == "follower"
    finally:
        box.stop()


async def test_a_failure_is_answered_in_its_readers_language(tmp_path, aiohttp_client, monkeypatch):
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    monkeypatch.setattr(cluster_routes, "info", broken)
    monkeypatch.setattr(ui_routes, "admin_page", broken)
    client = await aiohttp_client(create_app(config(tmp_path, discovery=False)))
    program = await client.get("/info")
    assert program.status == 200 and await program.json() == {"error": "Internal error: boom"}
    person = await client.get("/ui/admin")
    assert person.status == 500 and "Something went wrong" in await person.text()
