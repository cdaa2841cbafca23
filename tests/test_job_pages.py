"""The pages a responder reads: a split-merge job as a whole, node failures as sentences, nodes by
name, and the page bugs once seen (a title cut inside a number, "0 queued" beside "1 queued",
"waiting for a free node" with no node online, a log that opens in the middle on a phone, error-page
buttons that touch, and a finished task whose log stops before its node's last lines)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web

from appliance.cluster.coordinator import COORDINATOR_KEY
from appliance.nodeodm.sentences import node_problem, readable
from appliance.store.models import Phase, Task
from tests.nodeodm_helpers import Api, committed, jcall, wait_for
from tests.support import ServerThread
from tests.test_browser import PHONE, chromium  # noqa: F401 - the module's browser fixture
from tests.ui_support import Browser, free_port
from webui.task_views import job_title

SUBMODEL = {"outputs": '["cameras.json"]', "skipPostProcessing": "true"}
REFUSED = "http://10.0.0.7:3001 did not answer GET /info: Cannot connect to host 10.0.0.7:3001 ssl:default " \
          "[Connect call failed ('10.0.0.7', 3001)]"
NAMES = {"http://10.0.0.7:3001": "blue laptop", "http://10.0.0.8:3001": "van"}


def visible(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# -- node failures as sentences -----------------------------------------------------------------------
@pytest.mark.parametrize("error, sentence", [
    (ConnectionRefusedError(111, "Connect call failed ('10.0.0.7', 3001)"),
     "The NodeODM on blue laptop does not answer: nothing is listening at its address (is it switched on?)."),
    ("Cannot connect to host 127.0.0.1:3001 ssl:default [Connect call failed]",
     "The NodeODM on blue laptop does not answer: nothing is listening at its address (is it switched on?)."),
    (TimeoutError(), "The NodeODM on blue laptop is too slow to answer: it may be overloaded, or the network is poor."),
    ("Server disconnected", "The NodeODM on blue laptop dropped the connection."),
    ("[Errno 113] No route to host", "The network cannot reach the NodeODM on blue laptop: check its cable or Wi-Fi."),
    ("Cannot connect to host van.local:3001 ssl:default [Name or service not known]",
     "The address of the NodeODM on blue laptop cannot be found on this network."),
    ("HTTP 401 from http://10.0.0.7:3001/info", "The NodeODM on blue laptop refused Passel's token."),
    ("HTTP 502 from http://10.0.0.7:3001/task/new/commit/x", "The NodeODM on blue laptop reported an internal error."),
    ("http://10.0.0.7:3001/info did not answer JSON",
     "Something answers at the address of the NodeODM on blue laptop, but it is not a NodeODM."),
    ("Invalid authentication token", "The NodeODM on blue laptop refused Passel's token."),
    ("Cannot process dataset", "The NodeODM on blue laptop answered: Cannot process dataset."),
])
def test_a_node_failure_is_one_sentence_naming_the_node(error, sentence):
    assert node_problem(error, "blue laptop") == sentence


@pytest.mark.parametrize("stored, shown", [
    (f"Node blue laptop (http://10.0.0.7:3001) is not answering: {REFUSED}",
     "The NodeODM on blue laptop does not answer: nothing is listening at its address (is it switched on?)."),
    (f"http://10.0.0.7:3001: {REFUSED}",
     "The NodeODM on blue laptop does not answer: nothing is listening at its address (is it switched on?)."),
    ("Could not send the task to any node after 3 attempts: HTTP 500 from http://10.0.0.8:3001/task/new/commit/a",
     "Could not send the task to any node after 3 attempts. The NodeODM on van reported an internal error."),
    ("Task 9288e239 is now on node http://10.0.0.8:3001", "Task 9288e239 is now on node van"),
    ("Node van (http://10.0.0.8:3001) added (box)", "Node van added (box)"),
    ("Task 1 accepted: 3 images, waiting for a faster node (ODM is shown RUNNING)",
     "Task 1 accepted: 3 images, waiting for a faster node"),
    ("Cannot connect to host 10.9.9.9:3000 ssl:default [Connect call failed]",
     "The NodeODM on 10.9.9.9:3000 does not answer: nothing is listening at its address (is it switched on?)."),
    ("Test fail", "Test fail"),
    ("", ""),
])
def test_stored_messages_read_as_sentences(stored, shown):
    assert readable(stored, NAMES) == shown


# -- the job, its title and its page -------------------------------------------------------------------
def test_a_job_title_keeps_every_digit():
    names = [f"submodel_{i:04d}" for i in range(6)]
    title = job_title(names)
    assert title == "Job submodel_0000 to submodel_0005 (6 parts)"
    assert not re.search(r"submodel_000\b", title)  # once "submodel_000: 6 submodels"


def test_a_jobs_page_shows_its_progress_boxes_eta_and_where_the_results_are(simnode_factory, passel_factory):
    node = simnode_factory(slots=1, seconds_per_image=0.1)
    api = Api(passel_factory([node.url]))
    jcall(api, "POST", "/-/nodes/1/lock")  # nothing starts until the page has been seen waiting
    job = [committed(api, images=6, name=f"submodel_{i:04d}", **SUBMODEL) for i in range(3)]
    browser = Browser(api.url)
    listing = browser.get("/ui/tasks").text
    link = re.search(r'<a href="(/ui/jobs/[^"]+)">Job submodel_0000 to submodel_0002 \(3 parts\)</a>', listing)
    assert link, "the job's heading links to its page"
    jcall(api, "POST", "/-/nodes/1/unlock")
    wait_for(lambda: jcall(api, "GET", f"/task/{job[0]}/info")["status"]["code"] == 20, what="the first part running")
    page = wait_for(lambda: (p := visible(browser.get(link.group(1)).text)) and re.search(r"about [^.]+ left", p) and p,
                    what="the job's expected end")
    box = jcall(api, "GET", "/-/box.json").get("name") or ""
    assert "0 of 3 parts done" in page and "Working on it:" in page
    assert node.url not in page and (not box or box in page), page
    member = visible(browser.get(f"/ui/tasks/{job[1]}").text)
    assert "Part of Job submodel_0000 to submodel_0002 (3 parts)" in member
    wait_for(lambda: all(jcall(api, "GET", f"/task/{u}/info")["status"]["code"] == 40 for u in job), timeout=30,
             what="the whole job")
    done = visible(browser.get(link.group(1)).text)
    assert "3 of 3 parts done" in done and "All 3 parts are done" in done and "all.zip" in done
    assert "Done: the results are in one file, all.zip" in visible(browser.get(f"/ui/tasks/{job[0]}").text)
    assert browser.get("/ui/jobs/no-such-job").status_code == 404


# -- page bugs --------------------------------------------------------------------------------------
def test_no_node_online_is_said_and_not_waiting_for_a_free_node(passel_factory):
    api = Api(passel_factory([f"http://127.0.0.1:{free_port()}"]))
    box = api.server

    async def waiting() -> None:  # a task accepted while its node was up, which has gone since
        c = box.app[COORDINATOR_KEY]
        c.book.tasks["5e0b8c2a-4a1e-4c1e-9d2b-000000000001"] = Task(
            uuid="5e0b8c2a-4a1e-4c1e-9d2b-000000000001", name="Bridge", images_count=5, phase=Phase.WAITING,
            committed_at=time.time(), date_created_ms=int(time.time() * 1000))
    box.call(waiting())
    browser = Browser(api.url)
    for path in ("/ui/tasks", "/ui/tasks/5e0b8c2a-4a1e-4c1e-9d2b-000000000001"):
        page = visible(browser.get(path).text)
        assert "no node is online" in page and "waiting for a free node" not in page, path


def test_the_summary_and_the_box_cards_count_waiting_tasks_alike(simnode_factory, passel_factory):
    """NodeODM's taskQueueCount counts the tasks it runs too: a card once said "1 queued" for a
    running task while the summary said "0 queued"."""
    node = simnode_factory(slots=1, seconds_per_image=0.2)
    api = Api(passel_factory([node.url]))
    uuid = committed(api, images=60)
    wait_for(lambda: jcall(api, "GET", f"/task/{uuid}/info")["status"]["code"] == 20, what="running")
    wait_for(lambda: jcall(api, "GET", "/-/nodes")[0]["queue"] == 1, what="the node counting it in its queue")
    page = visible(Browser(api.url).get("/").text)
    summary = int(re.search(r"(\d+) waiting,", page).group(1))
    on_cards = [int(n) for n in re.findall(r"(\d+) waiting(?!,)", page)]
    assert summary == 0 and sum(on_cards) == 0, page
    jcall(api, "POST", "/task/cancel", data={"uuid": uuid})


def test_node_errors_on_the_pages_are_sentences(passel_factory):
    port = free_port()
    api = Api(passel_factory([f"http://127.0.0.1:{port}"]))
    jcall(api, "POST", "/-/nodes", json={"url": f"http://127.0.0.1:{free_port()}", "label": "blue laptop"})
    wait_for(lambda: all(n["last_error"] for n in jcall(api, "GET", "/-/nodes")), what="both nodes failing")
    errors = [n["last_error"] for n in jcall(api, "GET", "/-/nodes")]
    assert errors[1] == "The NodeODM on blue laptop does not answer: nothing is listening at its address " \
                        "(is it switched on?).", errors
    page = visible(Browser(api.url).get("/").text)
    assert "Cannot connect" not in page and "Connect call failed" not in page
    assert "The NodeODM on blue laptop does not answer" in page


# -- a finished task's whole log ----------------------------------------------------------------------
class LateLines:
    """A loopback proxy in front of a node whose output lags its status, like NodeODM reading a
    process's output after it exited: until its first finished answer, a task's info comes without
    its newest lines (up to HELD); after that, whole."""

    HELD = 3

    def __init__(self, node_url: str) -> None:
        self.node_url = node_url
        self.held: set[str] = set()
        self.server = ServerThread(self._app).start()
        self.url = self.server.url

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_route("*", "/{tail:.*}", self._relay)
        return app

    async def _relay(self, request: web.Request) -> web.Response:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.request(request.method, self.node_url + request.path_qs, data=await request.read(),
                                       headers={k: v for k, v in request.headers.items()
                                                if k.lower() not in ("host", "content-length", "transfer-encoding")}) as reply:
                body = await reply.read()
                kind = reply.headers.get("Content-Type", "application/json")
        match = re.fullmatch(r"/task/([0-9a-f-]+)/info", request.path)
        if match and reply.status == 200 and "with_output" in request.query:
            info = json.loads(body)
            finished = info.get("status", {}).get("code") in (30, 40, 50)
            if match.group(1) not in self.held:  # its newest lines lag, up to its first finished answer
                self.held.update([match.group(1)] if finished else [])
                output = info.get("output", [])
                info["output"] = output[:max(1, len(output) - self.HELD)]  # the asker's last line stays first
                return web.json_response(info)
        return web.Response(body=body, status=reply.status, headers={"Content-Type": kind})

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(params=["simnode", "nodeodm"])
def late_node(request: pytest.FixtureRequest, simnode_factory) -> Iterator[SimpleNamespace]:
    if request.param == "simnode":
        node = simnode_factory(seconds_per_image=0.05)
    else:
        node = request.getfixturevalue("realnode_factory")("--test_seconds", "1")
    proxy = LateLines(node.url)
    yield SimpleNamespace(node=node, proxy=proxy)
    proxy.stop()


def test_a_finished_tasks_page_shows_its_nodes_last_lines(late_node, passel_factory):
    """A client's info saw the end first and the row was saved without the last lines; the tracker
    polled only unfinished tasks, so the page ended there for good. Now the output is read once
    more after the end."""
    api = Api(passel_factory([late_node.proxy.url], task_poll_seconds=0.3))
    wait_for(lambda: jcall(api, "GET", "/info")["maxParallelTasks"] >= 1, what="the node online")
    uuid = committed(api, images=4, name="Bridge inspection")
    stop = threading.Event()

    def client() -> None:  # a client polling as PyODM and WebODM do, often enough to see the end first
        while not stop.is_set():
            requests.get(f"{api.url}/task/{uuid}/info", params={"with_output": 0}, timeout=10)
            time.sleep(0.02)
    poller = threading.Thread(target=client)
    poller.start()
    try:
        wait_for(lambda: jcall(api, "GET", f"/task/{uuid}/info")["status"]["code"] == 40, timeout=60,
                 what="the task to complete")
    finally:
        stop.set()
        poller.join()
    assert uuid in late_node.proxy.held, "the node's first finished answer came without its last lines"
    on_node = requests.get(f"{late_node.node.url}/task/{uuid}/output", timeout=10).json()
    last = on_node[-1].strip()
    assert last == "Compressing all.zip"
    browser = Browser(api.url)
    wait_for(lambda: last in browser.get(f"/ui/tasks/{uuid}").text.split('id="log"')[1], timeout=5,
             what="the node's last line on the task's page")
    log = browser.get(f"/ui/tasks/{uuid}").text.split('id="log"')[1].split("</pre>")[0]
    assert log.rstrip().endswith(last)
    whole = jcall(api, "GET", f"/task/{uuid}/output")
    assert whole[-len(on_node):] == on_node  # and clients get all of the node's lines, after Passel's own


# -- in a browser, on a phone -----------------------------------------------------------------------
@pytest.fixture
def phone(chromium) -> Iterator[Any]:  # noqa: F811 - the fixture imported above
    context = chromium.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=3)
    tab = context.new_page()
    yield tab
    context.close()


LOG_POSITION = "(() => { const l = document.getElementById('log'); return [l.scrollTop, l.clientHeight, l.scrollHeight]; })()"


def _at_end(tab: Any, what: str) -> None:
    top, height, total = tab.evaluate(LOG_POSITION)
    assert total > height, "the log is long enough to scroll"
    assert top + height >= total - 4, f"{what}: the log is at {top} of {total - height}, not at its end"


def test_on_a_phone_the_log_opens_at_its_end_and_error_buttons_do_not_touch(simnode_factory, passel_factory, phone):
    node = simnode_factory(seconds_per_image=0.15)
    api = Api(passel_factory([node.url]))
    uuid = committed(api, images=60, name="Long log")
    wait_for(lambda: len(jcall(api, "GET", f"/task/{uuid}/output")) > 30, what="a log longer than the screen")
    phone.goto(f"{api.url}/ui/tasks/{uuid}")
    phone.wait_for_load_state("load")
    _at_end(phone, "opened")
    phone.locator("#log").tap()  # a finger on the log (it takes focus) must not stop its new lines
    lines = phone.evaluate("document.getElementById('log').textContent.split('\\n').length")
    phone.wait_for_function(f"document.getElementById('log').textContent.split('\\n').length > {lines}",
                            timeout=15_000)
    _at_end(phone, "after new lines arrived")
    wait_for(lambda: jcall(api, "GET", f"/task/{uuid}/info")["status"]["code"] == 40, what="completion")
    phone.goto(f"{api.url}/ui/tasks/{uuid}")
    phone.wait_for_load_state("load")
    _at_end(phone, "finished")

    phone.goto(f"{api.url}/ui/tasks/5e0b8c2a-4a1e-4c1e-9d2b-000000000000")
    boxes = phone.evaluate("[...document.querySelectorAll('.error-page a')].map(a => {"
                           " const r = a.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })")
    assert len(boxes) == 2
    for left, top, right, bottom in boxes:
        assert bottom - top >= 44 and right - left >= 44, "a touch target of at least 44 px"
    (l1, t1, r1, b1), (l2, t2, r2, b2) = boxes
    apart = max(l2 - r1, l1 - r2, t2 - b1, t1 - b2)
    assert apart >= 8, f"the two buttons are {apart} px apart"
