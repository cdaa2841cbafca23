"""Fuzz every route of the passel's API from its own OpenAPI description (schemathesis), bounded in time.

Whatever the input, the server must never answer with a 5xx or fall over: NodeODM's error shape
(HTTP 200 + {"error": ...}), a 4xx from the admin API or a page saying why are the only acceptable
refusals. The fuzzer signs in like an administrator (the admin password, and a UI session with its
form token), so the destructive actions behind those checks are fuzzed too, not only their refusals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import requests

from appliance.http_rules import Admin, listed
from appliance.openapi import openapi_path

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

PASSWORD = "fuzzing-admin-password"
REFUSED = {Admin.PASSWORD: 401, Admin.SESSION: 403}  # what a missing or wrong credential gets


@dataclass(frozen=True)
class Administrator:
    """What an administrator sends: the password, and a signed-in browser's cookies and form token."""

    headers: dict[str, str]
    cookies: dict[str, str]
    csrf: str


@pytest.fixture(scope="module")
def live_passel(tmp_path_factory):
    from appliance.agent import create_app
    from appliance.config import load_config
    from appliance.simnode import SimnodeSettings, create_simnode_app
    from tests.support import ServerThread
    node = ServerThread(lambda: create_simnode_app(SimnodeSettings(seconds_per_image=0.01))).start()
    config = load_config(environ={}, flags={"host": "127.0.0.1", "state_dir": str(tmp_path_factory.mktemp("fuzz")),
                                            "node": [node.url], "discovery": False, "min_free_disk_mb": 0})
    passel = ServerThread(lambda: create_app(config)).start()
    yield passel
    passel.stop()
    node.stop()


@pytest.fixture(scope="module")
def admin(live_passel) -> Administrator:
    """Set the admin password, then sign in on the UI as a person would."""
    assert requests.post(live_passel.url + "/-/password", json={"new": PASSWORD}, timeout=10).json()["success"]
    browser = requests.Session()
    browser.get(live_passel.url + "/ui/admin", timeout=10)
    csrf = browser.cookies["passel_csrf"]
    signed_in = browser.post(live_passel.url + "/ui/login", data={"csrf": csrf, "password": PASSWORD}, timeout=10,
                             allow_redirects=False)
    assert signed_in.status_code == 303, signed_in.text
    return Administrator(headers={"Authorization": f"Bearer {PASSWORD}"}, cookies=dict(browser.cookies), csrf=csrf)


def test_openapi_document_is_served(live_passel):
    doc = requests.get(live_passel.url + "/-/openapi.json", timeout=5).json()
    assert doc["openapi"].startswith("3.") and "/task/new/init" in doc["paths"] and "/-/nodes" in doc["paths"]


def fuzz(operation: Any, url: str, admin: Administrator) -> tuple[list[int], list[str]]:
    """Up to 15 examples of one operation, sent as the administrator: the statuses, and any server error."""
    statuses: list[int] = []
    failures: list[str] = []

    @settings(max_examples=15, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        if isinstance(case.body, dict) and "csrf" in case.body:
            case.body["csrf"] = admin.csrf  # the form repeats the token its page set
        response = case.call(base_url=url, headers=admin.headers, cookies=admin.cookies, timeout=10)
        statuses.append(response.status_code)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.path}: {response.status_code} {response.text[:200]}")

    check()
    return statuses, failures


def test_fuzz_every_route(live_passel, admin):
    # from the served document, but not from_url: schemathesis would leave out the document's own route
    schema = schemathesis.openapi.from_dict(requests.get(live_passel.url + "/-/openapi.json", timeout=5).json())
    replies: dict[tuple[str, str], list[int]] = {}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        statuses, failed = fuzz(operation, live_passel.url, admin)
        replies[operation.method.upper(), operation.path] = statuses
        failures += failed
    assert sum(map(len, replies.values())) > 300, "the fuzzer must really have exercised the API"
    assert requests.get(live_passel.url + "/info", timeout=5).ok, "the server is still up"
    assert not failures, "\n".join(failures)
    for registered in live_passel.app.router.routes():
        route = listed(registered)
        if registered.method == "HEAD":  # answered as its GET
            continue
        key = (registered.method, openapi_path(registered.resource))
        assert replies.get(key), f"{key} was never fuzzed"
        refused = REFUSED.get(route.rules.admin)
        assert any(status != refused for status in replies[key]), f"{key} never got past its admin check"


def test_the_description_holds_every_route_and_only_those(live_passel):
    served = {(r.method, openapi_path(r.resource)) for r in live_passel.app.router.routes() if r.method != "HEAD"}
    doc: dict[str, Any] = requests.get(live_passel.url + "/-/openapi.json", timeout=5).json()
    described = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert described == served
