"""The web UI in a real browser (Debian's chromium driven by Playwright) against a live passel of
simulated nodes: every page loads and is saved as a screenshot, actions work by clicking, live
updates arrive without a reload, and an action without the admin password is refused."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import requests

from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.discovery.passel import PASSEL_KEY
from tests.nodeodm_helpers import jcall
from tests.test_coordinator import Api, committed, status_of, wait_for
from tests.ui_support import peer, start_box

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Screenshots go to test-artifacts/ (ignored by git); PASSEL_SCREENSHOTS=docs/screenshots refreshes the README's.
SCREENSHOTS = Path(__file__).resolve().parent.parent / os.environ.get("PASSEL_SCREENSHOTS", "test-artifacts/screenshots")
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
PASSWORD = "field-admin-1"
SUBMODEL = {"outputs": '["cameras.json"]', "skipPostProcessing": "true"}


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """One headless chromium for the module; Playwright's own browser download does not work offline."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        message = f"{CHROMIUM} is missing (scripts/ci-deps.sh installs Debian's chromium)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium) -> Iterator[object]:
    context = chromium.new_context(viewport=DESKTOP)
    tab = context.new_page()
    tab.on("dialog", lambda dialog: dialog.accept())  # the confirmations of destructive actions
    yield tab
    context.close()


@pytest.fixture
def field(simnode_factory, passel_factory, tmp_path) -> Iterator[SimpleNamespace]:
    """A passel as a responder meets it: a coordinator box, two follower boxes (one gone quiet), three
    simulated nodes of different sizes on them, and a split-merge job of six submodels plus one task."""
    nodes = {"workstation": simnode_factory(slots=2, cores=8, memory_mb=16384, seconds_per_image=0.05),
             "laptop": simnode_factory(slots=1, cores=4, memory_mb=8192, seconds_per_image=0.4),
             "small laptop": simnode_factory(slots=1, cores=2, memory_mb=4096, seconds_per_image=0.15)}
    laptop_box = passel_factory([], name="laptop")
    small_box = passel_factory([], name="small-laptop")
    peers = [peer("laptop", "127.0.0.1", laptop_box.port), peer("small-laptop", "127.0.0.1", small_box.port),
             peer("tablet", "127.0.0.9", 9)]
    peers[2].last_heard = None  # seen over mDNS once, silent since: shown as gone
    box = start_box(tmp_path / "coordinator", [], peers, None, is_coordinator=True, name="workstation")
    api = Api(box)
    agents = {"workstation": "", "laptop": laptop_box.url, "small laptop": small_box.url}
    for label, node in nodes.items():
        jcall(api, "POST", "/-/nodes", json={"url": node.url, "label": label})
        if agents[label]:
            box.call(box.app[COORDINATOR_KEY].registry.ensure(node.url, agent_url=agents[label]))
    wait_for(lambda: all(n["online"] for n in jcall(api, "GET", "/-/nodes")), what="nodes online")
    job = [committed(api, images=4 + 3 * i, name=f"submodel_{i:04d}", **SUBMODEL) for i in range(6)]
    single = committed(api, images=5, name="Bridge inspection")
    try:
        yield SimpleNamespace(api=api, url=box.url, box=box, peers=peers, nodes=nodes, job=job, single=single)
    finally:
        box.stop()


def _shoot(tab, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_every_page_loads_and_is_photographed(field, chromium):
    """Every page, on a desktop and on a phone, with no request leaving the box and no script error."""
    wait_for(lambda: status_of(field.api, field.job[0]) == 40 and status_of(field.api, field.single) == 40,
             timeout=30, what="some work done")
    requests.get(field.url + "/", timeout=10)  # the boxes' facts are fetched in the background, then shown
    time.sleep(0.5)
    pages = {"passel": "/", "tasks": "/ui/tasks", "task": f"/ui/tasks/{field.job[0]}", "timeline": "/ui/timeline",
             "settings": "/ui/admin", "not-found": "/ui/tasks/5e0b8c2a-4a1e-4c1e-9d2b-000000000000"}
    for suffix, viewport in (("", DESKTOP), ("-phone", PHONE)):
        context = chromium.new_context(viewport=viewport)
        tab = context.new_page()
        outside: list[str] = []
        errors: list[str] = []
        tab.on("request", lambda r, seen=outside: seen.append(r.url) if not r.url.startswith(field.url) else None)
        tab.on("pageerror", lambda e, seen=errors: seen.append(str(e)))
        for name, path in pages.items():
            reply = tab.goto(field.url + path)
            assert reply.status == (404 if name == "not-found" else 200), name
            assert tab.locator("h1").count() == 1, name
            _shoot(tab, name + suffix)
        if suffix:  # on a phone the page fits the screen: nothing wider than the viewport but the chart
            tab.goto(field.url + "/ui/tasks")
            assert tab.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        context.close()
        assert not outside and not errors, (outside, errors)


def test_move_a_task_and_lock_a_node_by_clicking(field, page):
    api = field.api
    laptop = field.nodes["laptop"].url
    page.goto(field.url + "/ui/admin")
    page.locator(f"tr[data-node='{laptop}'] button", has_text="Lock").click()
    page.wait_for_url("**/ui/admin?done=lock")
    assert "The node is locked" in page.inner_text(".notice")
    assert next(n for n in jcall(api, "GET", "/-/nodes") if n["url"] == laptop)["locked"] is True
    page.locator(f"tr[data-node='{laptop}'] button", has_text="Unlock").click()
    page.wait_for_url("**/ui/admin?done=unlock")

    uuid = committed(api, images=40)  # slow enough to still be running when it is moved
    wait_for(lambda: jcall(api, "GET", f"/-/tasks/{uuid}")["status"] in (10, 20), what="queued or running")
    page.goto(f"{field.url}/ui/tasks/{uuid}")
    target = field.nodes["small laptop"].url
    page.select_option("select[name=node]", target)
    page.get_by_role("button", name="Move", exact=True).click()
    page.wait_for_url(f"**/ui/tasks/{uuid}?done=move")
    wait_for(lambda: jcall(api, "GET", f"/-/tasks/{uuid}")["node_url"] == target, what="the move")
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.wait_for_url(f"**/ui/tasks/{uuid}?done=cancel")
    assert jcall(api, "GET", f"/-/tasks/{uuid}")["status_name"] == "CANCELED"


def test_live_updates_arrive_without_a_reload(field, page):
    uuid = committed(field.api, images=80, name="watched task")  # seconds of work even on the fastest node
    page.goto(f"{field.url}/ui/tasks/{uuid}")
    page.evaluate("window.passelMarker = 'still the same page'")
    page.wait_for_function("document.querySelector('#task-head').dataset.status === 'COMPLETED'", timeout=45_000)
    assert page.evaluate("window.passelMarker") == "still the same page"
    assert "watched task is now COMPLETED" in page.inner_text("#changes")
    assert "No output yet." not in page.inner_text("#log")  # the log tail arrived live too

    page.goto(field.url + "/")
    page.evaluate("window.passelMarker = 'still the same page'")
    jcall(field.api, "POST", f"/-/nodes/{quote(field.nodes['workstation'].url, safe='')}/lock")
    page.wait_for_function("document.querySelector('#nodes').innerText.includes('locked')", timeout=15_000)
    assert page.evaluate("window.passelMarker") == "still the same page"


def test_arrivals_departures_and_a_new_coordinator_show_live(field, page):
    page.goto(field.url + "/")
    page.evaluate("window.passelMarker = 'still the same page'")
    laptop, small = field.peers[0], field.peers[1]

    async def change() -> None:  # what heartbeats would do: a box arrives, one goes silent, one takes the role
        passel = field.box.app[PASSEL_KEY]
        van = peer("drone-van", "127.0.0.1", small.port)
        passel.membership.peers[van.id] = van
        laptop.last_heard = None
        small.role = "coordinator"
        passel.is_coordinator, passel.leader = False, small
        passel.state.role, passel.state.coordinator_id = "follower", small.id

    field.box.call(change())
    page.wait_for_function("document.querySelector('#changes').innerText.includes('now the coordinator')",
                           timeout=15_000)
    changes = page.inner_text("#changes")
    assert "drone-van joined" in changes and "laptop stopped answering" in changes
    assert "small-laptop is now the coordinator" in changes
    assert page.evaluate("window.passelMarker") == "still the same page"
    assert "coordinator" in page.inner_text("[data-box-name='small-laptop'] .role")


def test_an_action_without_the_password_is_refused(field, page):
    reply = requests.post(f"{field.url}/-/password", json={"new": PASSWORD}, timeout=10).json()
    assert reply["boxes"]["this box"] == "changed"
    laptop = field.nodes["laptop"].url
    page.goto(field.url + "/ui/admin")
    assert page.locator("#signin").is_visible()
    page.locator(f"tr[data-node='{laptop}'] button", has_text="Lock").click()
    assert "Not allowed" in page.inner_text("h1") and "sign in" in page.inner_text("main")
    assert next(n for n in jcall(field.api, "GET", "/-/nodes") if n["url"] == laptop)["locked"] is False
    _shoot(page, "refused")
    page.goto(field.url + "/ui/admin")
    page.fill("input[name=password]", "not it")
    page.get_by_role("button", name="Sign in").click()
    assert "Wrong password" in page.inner_text("h1")
    page.goto(field.url + "/ui/admin")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/admin?done=signin")
    page.locator(f"tr[data-node='{laptop}'] button", has_text="Lock").click()
    page.wait_for_url("**/ui/admin?done=lock")
    assert next(n for n in jcall(field.api, "GET", "/-/nodes") if n["url"] == laptop)["locked"] is True
    started = time.monotonic()
    assert requests.post(f"{field.url}/-/nodes/1/unlock", timeout=10).status_code == 401
    assert time.monotonic() - started >= 0.4  # a wrong or missing password is answered slowly
