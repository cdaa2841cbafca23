"""Re-dispatch, reconciliation, stalls, moving by hand and the staging lifecycle, on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from appliance.role import Role
from tests.support import StubElection, coordinator_in
from tests.nodeodm_helpers import Api, committed, init_task, jcall, upload, wait_for

TOKEN = "node-secret"


def info(api, uuid: str) -> dict:
    return jcall(api, "GET", f"/task/{uuid}/info")


def placed_on(api, uuid: str) -> str | None:
    return next(t["node_url"] for t in jcall(api, "GET", "/-/tasks") if t["uuid"] == uuid)


def on_node(node, uuid: str) -> dict | None:
    reply = requests.get(f"{node.url}/task/{uuid}/info", params={"token": TOKEN}, timeout=5).json()
    return None if "error" in reply else reply


def test_move_by_hand_through_the_api_and_cli(simnode_factory, passel_factory, capsys):
    from appliance import cli
    a = simnode_factory(token=TOKEN, seconds_per_image=0.3)
    b = simnode_factory(token=TOKEN, seconds_per_image=0.02)
    api = Api(passel_factory([f"{a.url}?token={TOKEN}", f"{b.url}?token={TOKEN}"]))
    jcall(api, "POST", "/-/nodes/2/lock")  # everything goes to node 1 first
    uuid = committed(api, images=20)
    wait_for(lambda: placed_on(api, uuid) == a.url and on_node(a, uuid), what="task on node a")
    jcall(api, "POST", "/-/nodes/2/unlock")
    reply = requests.post(f"{api.url}/-/tasks/{uuid}/move", json={"node": "2"}, timeout=10).json()
    assert reply == {"success": True, "node": b.url}
    wait_for(lambda: info(api, uuid)["status"]["code"] == 40, what="completion on b")
    assert placed_on(api, uuid) == b.url and on_node(a, uuid) is None, "the copy on a is canceled and removed"
    output = jcall(api, "GET", f"/task/{uuid}/output")
    assert output[0] == f"Passel: moved by hand from {a.url} to {b.url}" and len(output) > 3
    kinds = [e["kind"] for e in jcall(api, "GET", f"/-/tasks/{uuid}")["events"]]
    assert "moved" in kinds
    # refused moves say why
    assert requests.post(f"{api.url}/-/tasks/{uuid}/move", json={"node": "1"}, timeout=10).json() == \
        {"error": "Only a queued or running task can be moved"}
    second = committed(api, images=30)
    with pytest.raises(SystemExit, match="No node 9"):
        cli.main(["tasks", "move", second[:8], "9", "--api", api.url])
    other = b if wait_for(lambda: placed_on(api, second), what="placement") == a.url else a
    assert cli.main(["tasks", "move", second[:8], other.url, "--api", api.url]) == 0
    assert "now going to " + other.url in capsys.readouterr().out


@pytest.fixture
def process_simnode(tmp_path):
    """A simulated node in its own process, so it can be frozen with SIGSTOP like a sleeping laptop."""
    from tests.test_persistence import free_port
    started = []

    def start(**flags: str) -> subprocess.Popen[bytes]:
        port = free_port()
        args = [sys.executable, "-m", "appliance", "simnode", "--port", str(port), "--token", TOKEN]
        for key, value in flags.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        process = subprocess.Popen(args, cwd=Path(__file__).parent.parent, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        process.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        started.append(process)
        wait_for(lambda: _answers(process.url), what="the simnode process")
        return process

    yield start
    for process in started:
        if process.poll() is None:  # a test may have killed it
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
            process.wait(10)


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/info", params={"token": TOKEN}, timeout=1).ok
    except requests.RequestException:
        return False


def test_silent_node_tasks_move_elsewhere_and_duplicate_is_removed_on_return(process_simnode, simnode_factory,
                                                                              passel_factory):
    a = process_simnode(seconds_per_image="0.2")
    b = simnode_factory(token=TOKEN, seconds_per_image=0.02)
    api = Api(passel_factory([f"{a.url}?token={TOKEN}", f"{b.url}?token={TOKEN}"], grace_seconds=2.0))
    jcall(api, "POST", "/-/nodes/2/lock")
    uuid = committed(api, images=60)
    wait_for(lambda: on_node(a, uuid), what="task on node a")
    jcall(api, "POST", "/-/nodes/2/unlock")
    os.kill(a.pid, signal.SIGSTOP)  # the lid closes
    try:
        wait_for(lambda: placed_on(api, uuid) == b.url, timeout=40, what="re-dispatch to b")
        wait_for(lambda: info(api, uuid)["status"]["code"] == 40, what="completion on b")
        assert any("has not answered" in line for line in jcall(api, "GET", f"/task/{uuid}/output"))
    finally:
        os.kill(a.pid, signal.SIGCONT)  # the lid opens: a still has its copy
    wait_for(lambda: on_node(a, uuid) is None, timeout=30, what="the stale copy on a to be removed")
    assert jcall(api, "GET", "/task/list").count({"uuid": uuid}) == 1
    kinds = [e["kind"] for e in jcall(api, "GET", f"/-/tasks/{uuid}")["events"]]
    assert "redispatched" in kinds


def test_a_node_found_down_by_a_send_is_not_tried_again_and_the_try_is_not_counted(process_simnode, simnode_factory,
                                                                                    passel_factory):
    """A node dies between two polls (which, in the field, wait for the slowest node). Each send
    that finds nothing listening there took a try from the task, at once and on the same node, and
    the task FAILED within seconds, aborting ODM's whole job (nemesis seed 377). Now the node is
    taken offline at the first such send, and the task waits for a node that answers."""
    a = process_simnode(seconds_per_image="0.05")
    b = simnode_factory(token=TOKEN, seconds_per_image=0.05)
    api = Api(passel_factory([f"{a.url}?token={TOKEN}", f"{b.url}?token={TOKEN}"], poll_seconds=5.0,
                             dispatch_attempts=2))
    wait_for(lambda: all(n["online"] for n in jcall(api, "GET", "/-/nodes")), what="both nodes online")
    jcall(api, "POST", "/-/nodes/2/lock")
    os.kill(a.pid, signal.SIGKILL)
    a.wait(10)
    uuid = committed(api, images=3)
    wait_for(lambda: not jcall(api, "GET", "/-/nodes")[0]["online"], timeout=10, what="node a taken offline")
    assert info(api, uuid)["status"]["code"] in (10, 20), "the task still waits"
    jcall(api, "POST", "/-/nodes/2/unlock")
    final = wait_for(lambda: (i := info(api, uuid))["status"]["code"] in (30, 40) and i, timeout=30, what="an end")
    assert final["status"]["code"] == 40 and placed_on(api, uuid) == b.url


def test_task_missing_from_its_node_is_sent_again(simnode_factory, passel_factory):
    node = simnode_factory(token=TOKEN, seconds_per_image=0.1)
    api = Api(passel_factory([f"{node.url}?token={TOKEN}"], grace_seconds=1.0))
    uuid = committed(api, images=30)
    wait_for(lambda: on_node(node, uuid), what="task on the node")
    requests.post(f"{node.url}/task/remove", data={"uuid": uuid}, params={"token": TOKEN}, timeout=5)
    wait_for(lambda: info(api, uuid)["status"]["code"] == 40, timeout=40, what="completion after re-dispatch")
    assert any("no longer has it" in line for line in jcall(api, "GET", f"/task/{uuid}/output"))
    assert on_node(node, uuid)["imagesCount"] == 30


def test_stalled_task_is_sent_again_then_failed_with_an_explanation(simnode_factory, passel_factory):
    node = simnode_factory(token=TOKEN, seconds_per_image=0.05, stall_at=30)
    api = Api(passel_factory([f"{node.url}?token={TOKEN}"], stall_seconds=1.0, dispatch_attempts=2))
    uuid = committed(api, images=40)
    final = wait_for(lambda: (i := info(api, uuid))["status"]["code"] == 30 and i, timeout=60, what="FAILED")
    assert "no progress" in final["status"]["errorMessage"]
    output = jcall(api, "GET", f"/task/{uuid}/output", params={"line": 0})
    assert any("made no progress" in line for line in output)
    assert on_node(node, uuid) is None or on_node(node, uuid)["status"]["code"] == 50


def fill(path: Path) -> None:
    """Write until the file system has no room left."""
    with open(path, "wb") as ballast:
        with contextlib.suppress(OSError):
            while True:
                ballast.write(b"\0" * 65536)
                ballast.flush()


def phase_on_disk(database: Path, uuid: str) -> str | None:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT phase FROM tasks WHERE uuid = ?", (uuid,)).fetchone()
    return row and row[0]


def test_disk_full_refuses_cleanly_and_keeps_accepted_tasks(simnode_factory, passel_factory, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        node = simnode_factory(token=TOKEN, seconds_per_image=0.02)
        api = Api(passel_factory([f"{node.url}?token={TOKEN}"], state_dir=str(mount / "state")))
        kept = init_task(api, name="kept")
        for i in range(3):
            upload(api, kept, f"IMG_{i}.JPG", b"\xff\xd8" + b"k" * 200_000)
        victim = init_task(api, name="victim")
        reply = jcall(api, "POST", f"/task/new/upload/{victim}", files={"images": ("big.JPG", b"\xff\xd8" + b"x" * 8_000_000)})
        assert "Disk full" in reply["error"], reply
        assert not list((mount / "state" / "staging" / victim).iterdir()), "no partial file left behind"
        fill(mount / "ballast")  # now SQLite too finds no room
        assert jcall(api, "POST", f"/task/new/commit/{kept}") == {"uuid": kept}
        done = wait_for(lambda: (i := info(api, kept))["status"]["code"] == 40 and i, what="the kept task")
        assert done["imagesCount"] == 3
        (mount / "ballast").unlink()
        wait_for(lambda: phase_on_disk(mount / "state" / "passel.sqlite3", kept) == "finished", timeout=30,
                 what="the rows the full disk refused, written once there was room")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_lifecycle_releases_downloaded_and_expired_staging(tmp_path):
    from appliance.cluster.lifecycle import StagingLifecycle
    from appliance.store.models import Phase, Task
    async with coordinator_in(tmp_path) as c:
        now = time.time()
        rows = {
            "downloaded": Task(uuid="00000000-0000-4000-8000-000000000001", phase=Phase.FINISHED, status=40,
                               downloaded_at=now, finished_at=now),
            "fresh": Task(uuid="00000000-0000-4000-8000-000000000002", phase=Phase.FINISHED, status=40, finished_at=now),
            "expired": Task(uuid="00000000-0000-4000-8000-000000000003", phase=Phase.FINISHED, status=30,
                            finished_at=now - 100 * 3600),
            "abandoned": Task(uuid="00000000-0000-4000-8000-000000000004", phase=Phase.UPLOADING,
                              date_created_ms=int((now - 2 * 86400) * 1000)),
            "tombstone": Task(uuid="00000000-0000-4000-8000-000000000005", phase=Phase.REMOVED,
                              finished_at=now - 7200),
        }
        for task in rows.values():
            c.staging.create(task.uuid)
            (c.staging.path(task.uuid) / "IMG.JPG").write_bytes(b"x")
            await c.book.save(task)
        os.utime(c.staging.path(rows["abandoned"].uuid), (now - 2 * 86400,) * 2)  # its last file came 2 days ago
        await StagingLifecycle(c, keep_hours=72).sweep(now)
        staged = {name for name, t in rows.items() if c.staging.path(t.uuid).exists()}
        assert staged == {"fresh", "tombstone"} - {"tombstone"} | ({"tombstone"} & staged)
        assert "fresh" in staged and not {"downloaded", "expired", "abandoned"} & staged
        assert rows["tombstone"].uuid not in c.book.tasks
        assert c.book.tasks[rows["abandoned"].uuid].phase == Phase.REMOVED


async def test_a_staged_upload_no_row_owns_is_dropped_after_a_day_without_a_file(tmp_path):
    """Nemesis seed 282: the coordinator, its disk full, kept an init's row in memory and was killed
    before any replica copied it; the box that took the upload in gave up on its commit and kept the
    images for a commit that could never come. No row: dropped on the abandoned-upload clock, not at
    once (a row on its way to this box's replica is not known here yet)."""
    from appliance.cluster.lifecycle import StagingLifecycle
    from appliance.cluster.receiving import Upload
    from appliance.store.models import Phase, Task
    async with coordinator_in(tmp_path) as c:
        now = time.time()
        orphan, arriving, owned = ("00000000-0000-4000-8000-0000000000a1", "00000000-0000-4000-8000-0000000000a2",
                                   "00000000-0000-4000-8000-0000000000a3")
        for uuid in (orphan, arriving, owned):
            c.staging.create(uuid)
            (c.staging.path(uuid) / "IMG.JPG").write_bytes(b"x")
        await c.book.save(Task(uuid=owned, phase=Phase.UPLOADING))
        c.receiver.uploads[orphan] = Upload(Task(uuid=orphan), early=None)  # its commit was given up on
        scratch = c.staging.scratch()
        os.utime(c.staging.path(orphan), (now - 2 * 86400,) * 2)  # its last file came 2 days ago
        os.utime(c.staging.path(owned), (now - 3600,) * 2)
        assert await StagingLifecycle(c, keep_hours=72).sweep(now) == 1
        assert not c.staging.path(orphan).exists() and not c.receiver.holds(orphan)
        assert c.staging.path(arriving).exists() and c.staging.path(owned).exists() and scratch.exists()


async def test_a_new_coordinator_owns_the_rows_it_copied_so_their_writer_does_not_hand_them_over_again(tmp_path):
    """Rows copied from the old coordinator become the new one's (its id, a new version, one
    transaction): back as a follower, the old coordinator reads them as the coordinator's, not as
    rows of its own still to hand over, and every box's table ends the same."""
    from appliance.replication.handover import own_rows
    from appliance.store.models import Phase, Task
    async with coordinator_in(tmp_path, box="new") as c:
        copied = Task(uuid="00000000-0000-4000-8000-0000000000d1", phase=Phase.REMOVED, owner="old", rev=7)
        mine = Task(uuid="00000000-0000-4000-8000-0000000000d2", phase=Phase.WAITING)
        await c.book.save(mine)
        await c.book.save_replica(copied)
        before = c.book.rev
        await c.book.take_ownership()
        assert c.book.tasks[copied.uuid].owner == "new" and c.book.tasks[copied.uuid].rev == before + 1
        assert c.book.tasks[mine.uuid].rev == before, "its own rows are left as they are"
        await c.book.load()  # written through
        assert c.book.tasks[copied.uuid].owner == "new"
    (tmp_path / "old-box").mkdir()
    async with coordinator_in(tmp_path / "old-box", box="old") as old:
        await old.book.save_replica(c.book.tasks[copied.uuid])
        assert not list(own_rows(old))


async def test_a_hand_over_that_ends_after_this_box_took_the_role_back_leaves_the_row_its_own(tmp_path):
    """A hand-over answered by a coordinator that was then cut off, while this box became coordinator
    again: its row and images stay its own (nemesis seed 16); as a follower they become a replica."""
    from appliance.store.models import Phase, Task
    passel = StubElection(is_coordinator=True)
    async with coordinator_in(tmp_path, box="me", passel=passel) as c:
        task = Task(uuid="00000000-0000-4000-8000-0000000000e1", phase=Phase.WAITING, staged_on="me")
        c.staging.create(task.uuid)
        await c.book.save(task)
        await c.handed_over(task, "other")
        assert (task.owner, task.staged_on) == ("me", "me") and c.staging.path(task.uuid).exists()
        passel.is_coordinator = False
        await c.handed_over(task, "other")
        assert (task.owner, task.staged_on) == ("other", "other") and not c.staging.path(task.uuid).exists()


async def test_a_hand_over_of_a_version_the_coordinator_already_has_keeps_the_only_images(tmp_path):
    """The entry box staged the images and, cut off, took the role; at the heal it hands the task
    back unchanged. The coordinator keeps its equal version, whose row says the images are on the
    giver, and the giver releases its copy once answered: so the coordinator must take the images
    it was brought, or they are on no box (nemesis seed 320: the submodel failed five sends)."""
    from appliance.store.models import Phase, Task, row_values
    uuid = "00000000-0000-4000-8000-0000000000e2"
    async with coordinator_in(tmp_path, box="boss") as c:
        node = await c.registry.add("http://127.0.0.1:9")
        kept = Task(uuid=uuid, phase=Phase.ON_NODE, status=20, node_id=node.id, attempts=1, staged_on="entry")
        await c.book.save(kept)
        brought = tmp_path / "handed-over"
        brought.mkdir()
        (brought / "IMG_1.JPG").write_bytes(b"\xff\xd8")
        same = row_values(Task(uuid=uuid, phase=Phase.ON_NODE, status=20, attempts=1, staged_on="entry",
                               owner="entry", rev=5))
        assert not await c.adopt(same, "http://127.0.0.1:9", brought, "entry"), "its own version is kept"
        row = c.book.tasks[uuid]
        assert row.staged_on == "boss" and [p.name for p in c.staging.files(uuid)] == ["IMG_1.JPG"]
        assert c.can_send_again(row)


async def test_a_node_poll_under_way_during_a_hand_over_never_brings_back_a_removed_task(tmp_path):
    """A poll of the node holds the coordinator's row while a box hands over a further-along
    version, and the client then removes the task. The poll's answer must not write the older row
    back over the removal (nemesis seed 326: the task ran again after its client had removed it)."""
    from appliance.store.models import Phase, Task, row_values
    uuid = "00000000-0000-4000-8000-0000000000e3"
    async with coordinator_in(tmp_path, box="boss") as c:
        node = await c.registry.add("http://127.0.0.1:9")
        polled = Task(uuid=uuid, phase=Phase.ON_NODE, status=20, node_id=node.id, attempts=1)
        await c.book.save(polled)
        empty = tmp_path / "handed-over"
        empty.mkdir()
        completed = row_values(Task(uuid=uuid, phase=Phase.FINISHED, status=40, progress=100.0, attempts=1,
                                    owner="other", rev=5))
        assert await c.adopt(completed, "http://127.0.0.1:9", empty, "other")
        await c.intake.remove(c.book.tasks[uuid])
        await c.observe(polled, node, {"uuid": uuid, "status": {"code": 40}, "progress": 100})
        assert c.book.tasks[uuid].phase == Phase.REMOVED and c.book.visible(uuid) is None


async def test_a_failed_task_its_node_no_longer_lists_stays_failed(tmp_path):
    """Its client was told FAILED (and ODM aborts the job on it); running it again from staging when
    the node restarts empty would show the client a status going backwards (nemesis seed 377)."""
    from appliance.store.models import Phase, Task
    async with coordinator_in(tmp_path) as c:
        node = await c.registry.add("http://127.0.0.1:9")
        failed = Task(uuid="00000000-0000-4000-8000-0000000000e4", phase=Phase.FINISHED, status=30, node_id=node.id,
                      attempts=2, staged_on="me")
        c.staging.create(failed.uuid)
        await c.book.save(failed)
        await c.move_away(failed, "its node no longer has it")
        assert (failed.phase, failed.status) == (Phase.FINISHED, 30)


async def test_an_upload_its_client_gave_up_on_holds_its_nodes_slot_for_a_while_only(tmp_path, monkeypatch):
    """ODM never removes a task whose upload failed (it never learned the uuid): such a reservation
    lapses after RESERVATION_SECONDS, so faults during uploads do not eat the passel's slots."""
    from appliance.cluster import tasks
    from appliance.store.models import Phase, Task
    async with coordinator_in(tmp_path) as c:
        node = await c.registry.add("http://127.0.0.1:9")
        upload = Task(uuid="00000000-0000-4000-8000-0000000000f1", phase=Phase.UPLOADING)
        c.book.reserve(upload, node.id)
        await c.book.save(upload)
        assert c.book.busy_by_node() == {node.id: 1}
        later = tasks.boottime() + tasks.RESERVATION_SECONDS + 1
        monkeypatch.setattr(tasks, "boottime", lambda: later)
        assert c.book.busy_by_node() == {}, "the slot is free again"
        assert c.book.tasks[upload.uuid].node_id == node.id, "the files already sent there stay useful at commit"


async def test_a_clock_set_a_day_ahead_expires_no_upload_and_no_tombstone(tmp_path, monkeypatch):
    """A box with no battery clock whose date is fixed while it runs (+1 day): the clean-up keeps the
    upload that is still arriving and the removal replicas must still learn of. Ages it reads from
    an earlier run (the table, the files) count no longer than this run has lasted."""
    from appliance.clock import wall
    from appliance.cluster.lifecycle import StagingLifecycle
    from appliance.store.models import Phase, Task
    async with coordinator_in(tmp_path) as c:
        uploading = Task(uuid="00000000-0000-4000-8000-0000000000c1", phase=Phase.UPLOADING)
        removed = Task(uuid="00000000-0000-4000-8000-0000000000c2", phase=Phase.REMOVED, finished_at=wall())
        from_before = Task(uuid="00000000-0000-4000-8000-0000000000c3", phase=Phase.REMOVED,
                           finished_at=wall() - 2 * 3600)  # written by an earlier run, under its clock
        c.staging.create(uploading.uuid)
        for task in (uploading, removed, from_before):
            await c.book.save(task)
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + 86400)
        assert await StagingLifecycle(c, keep_hours=72).sweep() == 0
        assert c.book.tasks[uploading.uuid].phase == Phase.UPLOADING and c.staging.path(uploading.uuid).exists()
        assert {removed.uuid, from_before.uuid} <= set(c.book.tasks)


async def test_a_task_given_up_for_lost_comes_back_with_its_box_unless_its_client_gave_it_up(tmp_path):
    """Lost means out of reach (a partition, a crash), not gone: a box that returns with the task
    brings it back. A client that removed it after the not-found has sent the work again, so then
    the copy stays dropped, on this coordinator and on the next (the tombstone is replicated)."""
    from appliance.store.models import Phase, Task, row_values
    async with coordinator_in(tmp_path) as c:
        kept, dropped = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"
        for uuid in (kept, dropped):
            await c.lose(Task(uuid=uuid, phase=Phase.ON_NODE, status=20, owner="me"), "its node is out of reach")
        assert c.book.visible(kept) is None
        await c.intake.abandoned(dropped)  # the client removed it after the not-found
        assert c.book.tasks[dropped].phase == Phase.REMOVED
        empty = tmp_path / "handed-over"
        empty.mkdir()
        for uuid in (kept, dropped):
            done = row_values(Task(uuid=uuid, phase=Phase.FINISHED, status=40, owner="other", rev=7))
            await c.adopt(done, None, empty, "other")
        assert c.book.visible(kept).status == 40
        assert c.book.visible(dropped) is None and c.book.tasks[dropped].phase == Phase.REMOVED


async def test_a_commit_this_box_gave_up_on_never_runs_when_its_copy_is_handed_back(tmp_path):
    """This box took the upload in and gave up its commit (the coordinator was cut off; ODM was told
    and sent the work again). The cut-off coordinator had committed it: at the heal, this box wins and
    is handed that copy. It must not run here either (nemesis seed 30)."""
    from appliance.store.models import Phase, Task, row_values
    async with coordinator_in(tmp_path) as c:
        uuid = "00000000-0000-4000-8000-0000000000f2"
        await c.book.save(Task(uuid=uuid, phase=Phase.UPLOADING, staged_on="me"))
        c.staging.create(uuid)
        c.receiver.abandoned.add(uuid)
        empty = tmp_path / "handed-over"
        empty.mkdir()
        committed = row_values(Task(uuid=uuid, phase=Phase.WAITING, staged_on="me", owner="other", rev=9))
        assert not await c.adopt(committed, None, empty, "other")
        assert c.book.tasks[uuid].phase == Phase.LOST and not c.staging.path(uuid).exists()
        assert not c.dispatcher.views() or all(v.uuid != uuid for v in c.dispatcher.views())


async def test_a_follower_restarted_mid_upload_keeps_taking_it_in(tmp_path):
    """The entry box is killed while ODM uploads through it: restarted, its replica still says which
    upload it takes in, for the coordinator. Recovering must not rewrite that row as its own (it would
    then hand it over, images and all, and answer the next file not-found: nemesis seed 7)."""
    from appliance.replication.handover import own_rows
    from appliance.store.models import Phase, Task
    uuid = "00000000-0000-4000-8000-0000000000f3"
    follower = StubElection(is_coordinator=False)
    async with coordinator_in(tmp_path, box="entry", passel=follower) as c:
        node = await c.registry.add("http://127.0.0.1:9")
        await c.book.save_replica(Task(uuid=uuid, phase=Phase.UPLOADING, staged_on="entry", owner="boss", rev=3,
                                       node_id=node.id))
        c.staging.create(uuid)
    async with coordinator_in(tmp_path, box="entry", passel=follower) as c:  # after the kill -9
        row = c.book.tasks[uuid]
        assert (row.owner, row.rev, row.node_id) == ("boss", 3, node.id)
        assert not list(own_rows(c)) and c.receiver.holds(uuid)


async def test_a_removal_handed_over_is_never_undone_by_a_copy_that_went_further(tmp_path):
    """A box cut off alone ran a task again from its staging and completed it, while the other side's
    client removed it. At the heal, the removal wins over the further-along copy: the row becomes a
    tombstone and the staged images are released (a client's removal is never undone)."""
    from appliance.store.models import Phase, Task, row_values
    async with coordinator_in(tmp_path) as c:
        uuid = "00000000-0000-4000-8000-00000000000c"
        done = Task(uuid=uuid, phase=Phase.FINISHED, status=40, owner="me", staged_on="me")
        await c.book.save(done)
        c.staging.create(uuid)
        (c.staging.path(uuid) / "IMG_1.JPG").write_bytes(b"\xff\xd8")
        empty = tmp_path / "handed-over"
        empty.mkdir()
        removed = row_values(Task(uuid=uuid, phase=Phase.REMOVED, status=20, owner="other", rev=3))
        assert await c.adopt(removed, None, empty, "other")
        assert c.book.visible(uuid) is None and c.book.tasks[uuid].phase == Phase.REMOVED
        assert not c.staging.path(uuid).exists(), "the staged images of a removed task are released"
        assert not await c.adopt(row_values(done), None, empty, "lone"), "and the completed copy stays dropped"
        assert c.book.visible(uuid) is None


async def test_a_new_coordinator_counts_a_nodes_silence_from_when_it_took_over(tmp_path):
    """A follower polls no node, so when it becomes coordinator an unreachable node's last answer is
    long ago: its tasks must still get the whole grace period, not be lost at once."""
    from appliance.cluster.registry import NodeRegistry
    from appliance.store.database import Store
    import aiohttp
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    async with aiohttp.ClientSession() as session:
        role = Role("me")
        role.attach(StubElection(is_coordinator=False))  # a follower
        registry = NodeRegistry(store, session, 1.0, role)
        state = await registry.add("http://127.0.0.1:9")
        state.last_answer -= 3600  # the box started an hour ago
        registry.start_watching()
        await registry.poll_one(state, timeout=aiohttp.ClientTimeout(total=1))
        assert state.misses == 1 and state.silent_for() < 5
    await store.close()


@pytest.mark.parametrize("kind", ["simnode", "nodeodm"])
async def test_a_send_the_old_coordinator_left_half_way_is_settled_by_the_new_one(tmp_path, simnode_factory, request, kind):
    """A new coordinator makes every copied row its own before it leads (`take_ownership`); the rows
    the old one was still sending must be settled all the same, by what the node lists. Told by the
    row's owner, they stayed RUNNING for ever and the split-merge job never ended (tests/test_faults.py b)."""
    from appliance.cluster.reconciler import Reconciler
    from appliance.store.models import Phase, Task
    node = simnode_factory(seconds_per_image=60) if kind == "simnode" else \
        request.getfixturevalue("realnode_factory")("--test_seconds", "60")
    arrived = committed(Api(node), images=2)  # the old coordinator's last send got through
    async with coordinator_in(tmp_path, box="new") as c:
        state = await c.registry.add(node.url)
        await c.registry.poll_one(state)
        cut_off = "00000000-0000-4000-8000-0000000000e1"  # its send died before the commit
        for rev, uuid in enumerate((arrived, cut_off), start=1):
            await c.book.save_replica(Task(uuid=uuid, phase=Phase.FORWARDING, status=20, node_id=state.id,
                                           owner="old", rev=rev))
        await c.book.take_ownership()
        await Reconciler(c, grace_seconds=60).reconcile()
        assert c.book.tasks[arrived].phase == Phase.ON_NODE
        assert c.book.tasks[cut_off].phase == Phase.WAITING  # to be sent again from its staged images
