"""What Passel does beyond a single NodeODM: aggregation, queueing, placement, secrets, admin, staging."""

from __future__ import annotations

import asyncio

import json
import time

import requests

from appliance import cli
from tests.nodeodm_helpers import Api, committed, jcall, wait_for

TOKEN = "node-secret"


def status_of(api, uuid: str) -> int:
    return jcall(api, "GET", f"/task/{uuid}/info")["status"]["code"]


def test_info_sums_online_nodes_only(simnode_factory, passel_factory):
    a = simnode_factory(slots=1, cores=2, memory_mb=4096, max_images=50)
    b = simnode_factory(slots=3, cores=8, memory_mb=16384, max_images=400)
    api = Api(passel_factory([a.url, b.url, "http://127.0.0.1:9"]))
    info = wait_for(lambda: (i := jcall(api, "GET", "/info"))["maxParallelTasks"] == 4 and i, what="both nodes online")
    assert info["cpuCores"] == 10 and info["maxImages"] == 400
    assert info["totalMemory"] == (4096 + 16384) * 1024 * 1024
    c = simnode_factory(max_images=None)
    jcall(api, "POST", "/-/nodes", json={"url": c.url})
    assert jcall(api, "GET", "/info")["maxImages"] is None  # one unlimited node makes the passel unlimited


def test_split_points_sm_cluster_at_the_passel(simnode_factory, passel_factory):
    node = simnode_factory(token=TOKEN)
    api = Api(passel_factory([f"{node.url}?token={TOKEN}"], public_url="http://10.1.2.3:3000"))
    options = json.dumps([{"name": "split", "value": 5}, {"name": "sm-cluster", "value": "http://elsewhere:1"}])
    uuid = committed(api, options=options)
    on_node = wait_for(lambda: _node_info(node, uuid), what="task on node")
    # a passel without a token names the task in the URL, so its submodels show as its parts (job_parts.py)
    assert {"name": "sm-cluster", "value": f"http://10.1.2.3:3000/?token=job-{uuid}"} in on_node["options"]
    assert {"name": "split", "value": 5} in on_node["options"]


def _node_info(node, uuid: str) -> dict | None:
    reply = requests.get(f"{node.url}/task/{uuid}/info", params={"token": TOKEN}, timeout=5).json()
    return None if "error" in reply else reply


def test_full_passel_queues_instead_of_piling_on(simnode_factory, passel_factory):
    node = simnode_factory(token=TOKEN, slots=1, seconds_per_image=0.5)
    api = Api(passel_factory([f"{node.url}?token={TOKEN}"]))
    first = committed(api, images=20)
    assert status_of(api, first) == 20
    second = committed(api, images=2)
    assert status_of(api, second) == 10, "no free slot anywhere: the truth is QUEUED"
    time.sleep(0.5)
    node_tasks = requests.get(f"{node.url}/task/list", params={"token": TOKEN}, timeout=5).json()
    assert node_tasks == [{"uuid": first}], "the second task must wait in Passel, not on the busy node"
    assert jcall(api, "GET", "/info")["taskQueueCount"] == 2
    jcall(api, "POST", "/task/cancel", data={"uuid": first})
    wait_for(lambda: status_of(api, second) == 40, what="queued task dispatched once the slot freed")


def test_submodels_spread_over_free_nodes(simnode_factory, passel_factory):
    nodes = [simnode_factory(token=TOKEN, slots=2, seconds_per_image=0.3) for _ in range(2)]
    api = Api(passel_factory([f"{n.url}?token={TOKEN}" for n in nodes]))
    options = json.dumps([{"name": "pc-quality", "value": "lowest"}])
    uuids = [committed(api, images=6, options=options) for _ in range(2)]
    placed = {t["uuid"]: t["node_id"] for t in jcall(api, "GET", "/-/tasks")}
    assert len({placed[u] for u in uuids}) == 2, placed


def test_node_tokens_never_appear_in_replies(simnode_factory, passel_factory):
    node = simnode_factory(token=TOKEN)
    api = Api(passel_factory([f"{node.url}?token={TOKEN}"]))
    uuid = committed(api)
    wait_for(lambda: status_of(api, uuid) == 40, what="completion")
    for path in ("/info", "/options", "/task/list", f"/task/{uuid}/info", f"/task/{uuid}/output", "/-/nodes",
                 "/-/status.json", "/-/tasks", f"/-/tasks/{uuid}", "/-/events", "/-/settings.json", "/"):
        reply = requests.get(api.url + path, timeout=5)
        assert reply.status_code == 200, path
        assert TOKEN not in reply.text, f"{path} leaks the node token"


def test_remove_cleans_node_row_and_staging(simnode_factory, passel_factory, tmp_path):
    node = simnode_factory(token=TOKEN)
    api = Api(passel_factory([f"{node.url}?token={TOKEN}"], state_dir=str(tmp_path / "state")))
    uuid = committed(api)
    staged = tmp_path / "state" / "staging" / uuid
    assert staged.is_dir()
    wait_for(lambda: status_of(api, uuid) == 40, what="completion")
    assert jcall(api, "POST", "/task/remove", json={"uuid": uuid}) == {"success": True}
    assert not staged.exists()
    assert _node_info(node, uuid) is None
    assert requests.get(f"{api.url}/-/tasks/{uuid}", timeout=5).status_code == 404


def test_admin_api_and_cli_manage_nodes(simnode_factory, passel_factory, capsys):
    a, b = simnode_factory(), simnode_factory()
    api = Api(passel_factory([a.url]))
    assert cli.main(["nodes", "add", f"{b.url}?token=abc", "--api", api.url]) == 0
    assert "online" in capsys.readouterr().out
    nodes = jcall(api, "GET", "/-/nodes")
    assert [n["url"] for n in nodes] == [a.url, b.url] and nodes[1]["has_token"] is True
    assert "abc" not in json.dumps(nodes)
    cli.main(["nodes", "lock", "1", "--api", api.url])
    best = jcall(api, "GET", "/-/nodes/best", params={"images": 5})
    assert best["best"] == 2 and best["refused"] == {"1": "locked"}
    uuid = committed(api)
    assert next(t for t in jcall(api, "GET", "/-/tasks") if t["uuid"] == uuid)["node_id"] == 2
    cli.main(["nodes", "unlock", a.url, "--api", api.url])
    cli.main(["nodes", "remove", "2", "--api", api.url, "--json"])
    capsys.readouterr()
    assert cli.main(["nodes", "list", "--api", api.url]) == 0
    listing = capsys.readouterr().out
    assert a.url in listing and b.url not in listing and "locked" not in listing
    assert requests.post(api.url + "/-/nodes", json={"url": "ftp://x"}, timeout=5).status_code == 400


def test_events_record_what_happened(simnode_factory, passel_factory):
    node = simnode_factory()
    api = Api(passel_factory([node.url]))
    uuid = committed(api)
    wait_for(lambda: status_of(api, uuid) == 40, what="completion")
    kinds = [e["kind"] for e in jcall(api, "GET", f"/-/tasks/{uuid}")["events"]]
    assert "accepted" in kinds and "dispatched" in kinds


def test_upload_refused_when_disk_nearly_full(simnode_factory, passel_factory):
    """The guard refuses new work with a clear message instead of corrupting accepted uploads."""
    node = simnode_factory()
    api = Api(passel_factory([node.url], min_free_disk_mb=10 ** 9))  # a petabyte free: never true
    reply = jcall(api, "POST", "/task/new/init", files={"name": (None, "x")})
    assert "Not enough disk space" in reply["error"]


def test_options_come_from_the_nodes(simnode_factory, passel_factory):
    node = simnode_factory()
    api = Api(passel_factory([node.url]))
    direct = requests.get(node.url + "/options", timeout=5).json()
    assert jcall(api, "GET", "/options") == direct


def test_ui_overview_renders(simnode_factory, passel_factory):
    node = simnode_factory()
    api = Api(passel_factory([node.url, "http://127.0.0.1:9"]))
    page = requests.get(api.url + "/", timeout=5)
    assert page.status_code == 200 and "<h2 id=\"nodes-h\">Nodes</h2>" in page.text and node.url in page.text
    assert requests.get(api.url + "/static/passel.css", timeout=5).status_code == 200



async def test_one_node_added_many_times_at_once_is_one_node(tmp_path):
    """mDNS and a technician (or two sightings) may add the same node at the same moment."""
    import aiohttp

    from appliance.cluster.registry import NodeRegistry
    from appliance.role import Role
    from appliance.store.database import Store
    from tests.support import StubElection
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    async with aiohttp.ClientSession() as session:
        role = Role("me")
        role.attach(StubElection(is_coordinator=False))  # a follower: no polling in the way
        registry = NodeRegistry(store, session, 1.0, role)
        states = await asyncio.gather(*(registry.add("http://127.0.0.1:9") for _ in range(8)))
        assert len({s.id for s in states}) == 1 and len(registry.nodes) == 1
    await store.close()


async def test_a_boxs_node_at_a_new_address_is_the_same_node(tmp_path):
    """DHCP arriving after link-local moves a box: its node keeps its row (and the tasks on it)."""
    import aiohttp

    from appliance.cluster.registry import NodeRegistry
    from appliance.role import Role
    from appliance.store.database import Store
    from tests.support import StubElection
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    async with aiohttp.ClientSession() as session:
        role = Role("me")
        role.attach(StubElection(is_coordinator=False))
        registry = NodeRegistry(store, session, 1.0, role)
        first = await registry.ensure("http://169.254.7.1:3001", source="mdns", box="box-a")
        moved = await registry.ensure("http://10.0.0.7:3001", source="mdns", box="box-a")
        assert moved.id == first.id and moved.row.url == "http://10.0.0.7:3001" and len(registry.nodes) == 1
        other_port = await registry.ensure("http://10.0.0.7:3002", source="mdns", box="box-a")
        other_box = await registry.ensure("http://10.0.0.8:3001", source="mdns", box="box-b")
        assert len({first.id, other_port.id, other_box.id}) == 3
    reopened = Store(tmp_path / "db.sqlite3")  # the move is on disk, for the next coordinator
    await store.close()
    await reopened.open()
    from appliance.store.models import Node
    assert sorted(n.url for n in await reopened.load(Node)) == [
        "http://10.0.0.7:3001", "http://10.0.0.7:3002", "http://10.0.0.8:3001"]
    await reopened.close()
