"""The passel key: signatures, replays, sealed tokens, and a foreign box on a real network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from appliance.discovery.trust import (H_SIG, Trust, Untrusted, body_digest, load_or_create_key, new_key_code,
                                       normalize_code)
from tests.netns import Bridge, wait_until

KEY = new_key_code()


def test_signed_request_verifies_once_and_only_with_the_key():
    alice, bob = Trust(KEY, "aaaaaaaaaaaa"), Trust(KEY, "bbbbbbbbbbbb")
    headers = alice.sign_request("POST", "/-/agent/v1/heartbeat", body_digest(b"{}"), term=3)
    assert bob.verify_request("POST", "/-/agent/v1/heartbeat", body_digest(b"{}"), headers) == ("aaaaaaaaaaaa", 3)
    with pytest.raises(Untrusted, match="replayed"):
        bob.verify_request("POST", "/-/agent/v1/heartbeat", body_digest(b"{}"), headers)
    later = alice.sign_request("POST", "/-/agent/v1/heartbeat", body_digest(b"{}"), term=3)
    assert bob.verify_request("POST", "/-/agent/v1/heartbeat", body_digest(b"{}"), later)[0] == "aaaaaaaaaaaa"


@pytest.mark.parametrize("tamper", ["path", "body", "term", "box"])
def test_any_change_breaks_the_signature(tamper):
    alice, bob = Trust(KEY, "aaaaaaaaaaaa"), Trust(KEY, "bbbbbbbbbbbb")
    headers = alice.sign_request("POST", "/-/agent/v1/takeover", body_digest(b'{"term": 4}'), term=3)
    path, body = "/-/agent/v1/takeover", b'{"term": 4}'
    if tamper == "path":
        path = "/-/agent/v1/adopt"
    if tamper == "body":
        body = b'{"term": 99}'
    if tamper in ("term", "box"):
        headers = dict(headers, **({"X-Passel-Term": "9"} if tamper == "term" else {"X-Passel-Box": "cccccccccccc"}))
    with pytest.raises(Untrusted):
        bob.verify_request("POST", path, body_digest(body), headers)


def test_wrong_key_and_unsigned_are_refused():
    mallory, bob = Trust(new_key_code(), "mmmmmmmmmmmm"), Trust(KEY, "bbbbbbbbbbbb")
    with pytest.raises(Untrusted, match="does not hold"):
        bob.verify_request("GET", "/x", body_digest(b""), mallory.sign_request("GET", "/x", body_digest(b""), 1))
    with pytest.raises(Untrusted, match="not signed"):
        bob.verify_request("GET", "/x", body_digest(b""), {})


def test_replies_are_bound_to_their_request():
    alice, bob = Trust(KEY, "aaaaaaaaaaaa"), Trust(KEY, "bbbbbbbbbbbb")
    first = alice.sign_request("POST", "/h", body_digest(b""), 1)
    second = alice.sign_request("POST", "/h", body_digest(b""), 1)
    signature = bob.sign_reply(b'{"role": "coordinator"}', first)
    alice.verify_reply(b'{"role": "coordinator"}', signature, first)
    with pytest.raises(Untrusted):
        alice.verify_reply(b'{"role": "coordinator"}', signature, second)  # a replayed reply
    with pytest.raises(Untrusted):
        alice.verify_reply(b'{"role": "follower"}', signature, first)


def test_sealed_tokens_open_only_with_the_key():
    sealed = Trust(KEY, "aaaaaaaaaaaa").seal("node-secret")
    assert "node-secret" not in sealed
    assert Trust(KEY, "bbbbbbbbbbbb").unseal(sealed) == "node-secret"
    with pytest.raises(Untrusted):
        Trust(new_key_code(), "cccccccccccc").unseal(sealed)


def test_key_made_once_kept_and_normalized(tmp_path: Path):
    first = load_or_create_key("", tmp_path)
    assert load_or_create_key("", tmp_path) == first
    assert (tmp_path / "passel.key").stat().st_mode & 0o777 == 0o600
    assert load_or_create_key("abcd-efgh ijkl-mnop", tmp_path) == "ABCDEFGHIJKLMNOP"
    with pytest.raises(ValueError):
        normalize_code("short")


@pytest.mark.netns
def test_a_foreign_box_is_shown_never_elected_never_used_and_forgeries_fail(tmp_path, netns_required):
    bridge = Bridge(3, tmp_path)
    try:
        stranger = bridge.boxes[2]
        stranger.key = new_key_code()  # holds another passel's key
        for box in bridge.boxes:
            box.start_simnode()
            box.start_agent("--priority", "99" if box is stranger else str(box.index))
        members = bridge.boxes[:2]

        def passel_ok() -> bool:
            views = [requests.get(b.api + "/-/passel.json", timeout=3).json() for b in members]
            leaders = {(v["coordinator"] or {}).get("name") for v in views}
            foreign = all(any(x["name"] == "box3" and x["foreign"] for x in v["boxes"]) for v in views)
            return leaders == {"box2"} and foreign
        wait_until(passel_ok, 40, "box1 and box2 to form a passel with box3 shown as foreign")
        # box3 claims the role in its own passel of one; the others are not moved by it
        wait_until(lambda: requests.get(stranger.api + "/-/passel.json", timeout=3).json()["self"]["role"]
                   == "coordinator", 30, "the stranger to coordinate itself")
        assert passel_ok()
        nodes = requests.get(members[0].api + "/-/nodes", timeout=3).json()
        assert f"http://{stranger.address}:3001" not in [n["url"] for n in nodes], "never given work"

        url = members[0].api + "/-/agent/v1/heartbeat"
        payload = {"v": 1, "id": "ffffffffffff", "name": "evil", "term": 99, "role": "coordinator", "priority": 99,
                   "port": 3000}
        body = json.dumps(payload).encode()
        assert requests.post(url, data=body, timeout=3).status_code == 401, "unsigned"
        forged = Trust(new_key_code(), "ffffffffffff").sign_request("POST", "/-/agent/v1/heartbeat", body_digest(body), 99)
        assert requests.post(url, data=body, headers=forged, timeout=3).status_code == 401, "wrong key"
        signed = Trust(members[0].key, "ffffffffffff").sign_request("POST", "/-/agent/v1/heartbeat", body_digest(body), 99)
        ok = requests.post(url, data=body, headers=signed, timeout=3)
        assert ok.status_code == 200 and ok.headers[H_SIG], "a box with the key is heard, and the reply is signed"
        replay = requests.post(url, data=body, headers=signed, timeout=3)
        assert replay.status_code == 401 and "replayed" in replay.json()["error"]
    finally:
        bridge.close()


def test_key_cli_show_new_and_set(tmp_path, monkeypatch, capsys):
    from appliance import cli
    monkeypatch.setenv("PASSEL_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PASSEL_PORT", "9")  # no agent there: the CLI says the key is used at next start
    with pytest.raises(SystemExit, match="No passel key at .* Passel makes one on its first start"):
        cli.main(["key", "show"])  # showing never makes a key: that one would be no box's
    assert not (tmp_path / "passel.key").exists()
    assert cli.main(["key", "new"]) == 0
    assert "used when Passel starts" in capsys.readouterr().out
    assert cli.main(["key", "show"]) == 0
    assert "Passel key: " in capsys.readouterr().out
    code = new_key_code()
    assert cli.main(["key", "set", code]) == 0
    assert "used when Passel starts" in capsys.readouterr().out
    assert normalize_code((tmp_path / "passel.key").read_text()) == normalize_code(code)
    with pytest.raises(SystemExit, match="at least 16"):
        cli.main(["key", "set", "nope"])


def test_out_of_order_counters_are_fine_but_old_ones_are_not():
    alice, bob = Trust(KEY, "aaaaaaaaaaaa"), Trust(KEY, "bbbbbbbbbbbb")
    signed = [alice.sign_request("POST", "/h", body_digest(b""), 1) for _ in range(100)]
    for headers in (signed[5], signed[3], signed[4]):  # concurrent calls arrive shuffled
        bob.verify_request("POST", "/h", body_digest(b""), headers)
    bob.verify_request("POST", "/h", body_digest(b""), signed[99])
    with pytest.raises(Untrusted, match="replayed"):
        bob.verify_request("POST", "/h", body_digest(b""), signed[3])  # seen
    with pytest.raises(Untrusted, match="replayed"):
        bob.verify_request("POST", "/h", body_digest(b""), signed[10])  # too old to tell apart from a replay


def test_the_settings_page_never_shows_a_configured_key(passel_factory):
    """/-/settings.json is open to anyone on the network; the key makes a box a member of the passel."""
    import requests
    code = new_key_code()
    server = passel_factory([], key=code)
    reply = requests.get(f"{server.url}/-/settings.json", timeout=10)
    assert reply.json()["settings"]["key"] == "***"
    assert code not in reply.text
