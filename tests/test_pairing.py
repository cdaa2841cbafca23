"""Pairing a box from the browser (docs/pairing.md): a box alone in its passel joins another with the
pairing code that a member shows on its Settings page; a wrong code, a form from elsewhere, a box that
is already in a passel, or a visitor without the admin password changes nothing.

The boxes are real agents with discovery on, on 127.0.0.1: they find each other over mDNS on the
loopback interface and prove the key with signed heartbeats, as on a field network. Each listens on
the port its settings name, because its heartbeats and mDNS records carry that port.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web

from appliance.agent import create_app
from appliance.config import CONFIG_KEY, load_config
from appliance.discovery.trust import KEY_FILE, grouped, new_key_code, normalize_code, parse_typed_code, save_key
from tests import test_browser
from tests.nodeodm_helpers import wait_for
from tests.support import ServerThread
from tests.ui_support import Browser, free_port

PASSWORD = "field-admin-1"
chromium, page = test_browser.chromium, test_browser.page  # Debian's chromium; skipped with a reason when missing
DISCOVERY_SECONDS = 30  # mDNS sighting (a few seconds) and the first heartbeat, with room on a busy machine


class FixedPortServer(ServerThread):
    """An agent on the port its settings name (ServerThread picks any free port)."""

    def __init__(self, factory: Callable[[], web.Application], port: int) -> None:
        super().__init__(factory)
        self.port = port

    async def _start(self) -> None:
        self.app = self._factory()  # type: ignore[assignment]
        self._runner = web.AppRunner(self.app, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()


BoxMaker = Callable[..., FixedPortServer]


@pytest.fixture
def boxes(tmp_path: Path, simnode_factory) -> Iterator[BoxMaker]:
    """Start real boxes with discovery: `start(name, passel_key=None, **flags)`; a passel key is put in
    the key file first (a box of that passel), else the box makes its own on its first start (a new box)."""
    running: list[FixedPortServer] = []

    def start(name: str, passel_key: str | None = None, **flags: Any) -> FixedPortServer:
        state_dir = tmp_path / name
        if passel_key is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
            save_key(state_dir, passel_key)
        port = flags.pop("port", None) or free_port()
        config = load_config(environ={}, flags={
            "host": "127.0.0.1", "port": port, "state_dir": str(state_dir), "discovery": True, "name": name,
            "alias": f"{name}-passel.local", "share": [simnode_factory().url], "poll_seconds": 0.3,
            "min_free_disk_mb": 0, "public_url": f"http://127.0.0.1:{port}"} | flags)
        server = FixedPortServer(lambda: create_app(config), port).start()
        running.append(server)
        return server

    yield start
    for server in reversed(running):
        if not server.loop.is_closed():  # a test may have stopped one to restart it
            server.stop()


def view(box: ServerThread) -> dict[str, Any]:
    return requests.get(box.url + "/-/passel.json", timeout=5).json()


def seen_as(box: ServerThread, name: str, *, foreign: bool) -> bool:
    """Whether `box` sees the box called `name`: alive in its passel, or on the network with another key."""
    return any(b["name"] == name and (b["foreign"] if foreign else b["alive"] and not b["foreign"])
               for b in view(box)["boxes"] if not b["self"])


def key_file(box: ServerThread) -> str:
    return (Path(box.app[CONFIG_KEY].state_dir) / KEY_FILE).read_text()  # type: ignore[index]


def test_typed_codes_are_checked_before_anything_else():
    code = new_key_code()
    assert parse_typed_code(f"  {code.lower().replace('-', ' ')} ") == normalize_code(code)
    with pytest.raises(ValueError, match="0, 1 or 8"):
        parse_typed_code(code[:5] + "0" + code[6:])  # normalize_code would drop the 0 and make another key
    with pytest.raises(ValueError, match="too short"):
        parse_typed_code(code[:9])
    assert grouped(normalize_code(code)) == code


def test_a_lone_box_joins_with_the_code_and_keeps_it(boxes):
    passel_key = new_key_code()
    member = boxes("member", passel_key=passel_key)
    newcomer = boxes("newcomer")
    assert requests.post(member.url + "/-/password", json={"new": PASSWORD}, timeout=10).json()["success"]
    wait_for(lambda: seen_as(newcomer, "member", foreign=True), DISCOVERY_SECONDS, "the member, seen with another key")
    own_key = key_file(newcomer)
    fingerprint = view(member)["key_fingerprint"]
    assert view(newcomer)["key_fingerprint"] != fingerprint

    # the member's code is for admins once a password is set; the newcomer, with none, shows its own to all
    visitor = Browser(member.url)
    settings = visitor.get("/ui/admin").text
    assert "shown to admins only" in settings
    assert passel_key not in settings and normalize_code(passel_key) not in settings
    home = visitor.get("/").text
    assert "Join a passel" in home and 'action="/ui/join"' not in home and "sign in</a> first" in home
    assert grouped(normalize_code(own_key)) in Browser(newcomer.url).get("/ui/admin").text

    browser = Browser(newcomer.url)
    offer = browser.get("/").text
    assert 'action="/ui/join"' in offer
    assert "1 other box is on this network in another passel" in offer and "member" in offer

    wrong = {"0 for O": passel_key[:5] + "0" + passel_key[6:], "a group missing": passel_key[:9],
             "another passel's": new_key_code()}
    for why, code in wrong.items():
        refused = browser.post("/ui/join", {"code": code})
        assert refused.status_code == 400, why
        assert "Not done" in refused.text and "code" in refused.text, why
    assert "No box on this network answers to that code" in browser.post("/ui/join", {"code": new_key_code()}).text
    for forged in (browser.post("/ui/join", {"code": passel_key}, token=False),  # no form token
                   requests.post(newcomer.url + "/ui/join", data={"code": passel_key, "csrf": browser.csrf},
                                 timeout=10)):  # a form from another site: no cookie
        assert forged.status_code == 403 and "expired" in forged.text
    assert key_file(newcomer) == own_key and view(newcomer)["key_fingerprint"] != fingerprint, "nothing changed"

    joined = browser.post("/ui/join", {"code": passel_key.lower().replace("-", " ")})
    assert joined.status_code == 303 and joined.headers["Location"] == "/?done=join", joined.text
    assert normalize_code(key_file(newcomer)) == normalize_code(passel_key)
    assert (Path(newcomer.app[CONFIG_KEY].state_dir) / KEY_FILE).stat().st_mode & 0o777 == 0o600  # type: ignore[index]
    assert view(newcomer)["key_fingerprint"] == fingerprint
    assert seen_as(newcomer, "member", foreign=False), "the member answered the code: it is shown at once"
    after = browser.get("/?done=join").text
    assert "This box joined the passel" in after and 'data-box-name="member"' in after
    assert 'action="/ui/join"' not in after
    wait_for(lambda: seen_as(member, "newcomer", foreign=False), DISCOVERY_SECONDS, "the member to see the newcomer")

    # a box in a passel cannot be pulled out of it from the network, signed in or not
    again = browser.post("/ui/join", {"code": new_key_code()})
    assert again.status_code == 409 and "already in a passel" in again.text
    assert visitor.post("/ui/join", {"code": own_key}).status_code == 403  # the member's password: sign in first
    admin = Browser(member.url)
    assert admin.post("/ui/login", {"password": PASSWORD}).status_code == 303
    assert passel_key in admin.get("/ui/admin").text
    assert admin.post("/ui/join", {"code": own_key}).status_code == 409
    assert view(member)["key_fingerprint"] == fingerprint

    # the passel's password reaches the newcomer, so its code is now for admins only there too
    wait_for(lambda: requests.get(newcomer.url + "/-/password", timeout=5).json()["set"], DISCOVERY_SECONDS,
             "the passel's admin password on the newcomer")
    assert passel_key not in Browser(newcomer.url).get("/ui/admin").text

    # the key survives a restart
    port = newcomer.port
    newcomer.stop()
    restarted = boxes("newcomer", port=port)
    assert view(restarted)["key_fingerprint"] == fingerprint


def test_only_a_box_with_discovery_and_a_key_of_its_own_joins(boxes, passel_factory):
    alone = boxes("alone")  # first, before any other box is on the network
    nobody = Browser(alone.url).post("/ui/join", {"code": new_key_code()})
    assert nobody.status_code == 409 and "No other box is on this network yet" in nobody.text
    itself = Browser(alone.url).post("/ui/join", {"code": key_file(alone)})
    assert itself.status_code == 409 and "already uses that code" in itself.text

    fixed = new_key_code()
    configured = boxes("configured", key=fixed)
    browser = Browser(configured.url)
    assert 'action="/ui/join"' not in browser.get("/").text
    assert fixed in browser.get("/ui/admin").text  # a configured key is still the passel's code
    refused = browser.post("/ui/join", {"code": new_key_code()})
    assert refused.status_code == 409 and "--key" in refused.text

    standalone = Browser(passel_factory([]).url)
    assert 'action="/ui/join"' not in standalone.get("/").text
    off = standalone.post("/ui/join", {"code": new_key_code()})
    assert off.status_code == 409 and "Discovery is off" in off.text


def test_a_foreign_box_joins_by_typing_the_code_in_a_browser(boxes, page):
    """Two boxes of a passel with an admin password, and a new box with its own key: a responder signs in
    on a member's Settings page, reads the code, and types it on the new box's page."""
    passel_key = new_key_code()
    first = boxes("workstation", passel_key=passel_key)
    boxes("laptop", passel_key=passel_key)
    newcomer = boxes("field-laptop")
    wait_for(lambda: seen_as(first, "laptop", foreign=False), DISCOVERY_SECONDS, "the passel of two")
    assert requests.post(first.url + "/-/password", json={"new": PASSWORD}, timeout=10).json()["success"]
    wait_for(lambda: seen_as(newcomer, "workstation", foreign=True) and seen_as(newcomer, "laptop", foreign=True),
             DISCOVERY_SECONDS, "the passel's boxes, seen with another key")

    page.goto(first.url + "/ui/admin")
    assert "shown to admins only" in page.inner_text("#pairing")
    page.fill("#signin input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/admin?done=signin")
    code = page.inner_text("#pairing-code").strip()
    assert normalize_code(code) == normalize_code(passel_key)

    page.goto(newcomer.url + "/")
    offer = page.inner_text("#join")
    assert "2 other boxes are on this network in another passel" in offer
    assert "laptop" in offer and "workstation" in offer
    page.fill("input[name=code]", new_key_code())
    page.get_by_role("button", name="Join", exact=True).click()
    assert page.inner_text("h1") == "Not done"
    assert "No box on this network answers to that code" in page.inner_text("main")

    page.goto(newcomer.url + "/")
    page.fill("input[name=code]", code)
    page.get_by_role("button", name="Join", exact=True).click()
    page.wait_for_url("**/?done=join")
    assert "This box joined the passel" in page.inner_text(".notice")
    for name in ("workstation", "laptop"):  # both answered the code, so both show as boxes of the passel
        assert page.get_attribute(f"[data-box-name='{name}']", "data-box-state").endswith("alive")
    assert page.locator("form[action='/ui/join']").count() == 0
    assert re.sub(r"\s", "", key_file(newcomer)) == code
