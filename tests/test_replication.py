"""A commit waits until every live follower holds it, and never long for one that has stopped asking."""

from __future__ import annotations

import asyncio

from appliance.cluster import replication
from appliance.cluster.replication import ReplicaProgress
from appliance.role import Role
from tests.support import StubElection, coordinator_in


def test_a_commit_waits_for_every_live_follower_then_stops_waiting_for_a_laggard(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(replication, "boottime", lambda: now[0])

    async def scenario() -> None:
        passel = StubElection()
        progress = ReplicaProgress(Role("me"))
        assert await progress.hold(5, timeout=0.01) == []  # no followers: nothing to wait for
        progress.applied("a", 4)
        progress.applied("b", 4)
        waiting = asyncio.create_task(progress.hold(5, timeout=5))
        await asyncio.sleep(0.05)
        progress.applied("a", 5)
        await asyncio.sleep(0.05)
        assert not waiting.done(), "b does not hold version 5 yet"
        progress.applied("b", 6)
        assert await asyncio.wait_for(waiting, 1) == []
        # b stops asking: one commit waits for it in vain, the next ones do not
        progress.applied("a", 7)
        assert await progress.hold(7, timeout=0.05) == ["b"]
        assert await progress.hold(7, timeout=5) == []
        progress.applied("b", 7)  # it asks again, so it is waited for again
        assert progress.live() == {"a": 7, "b": 7}
        now[0] += replication.LIVE_SECONDS + 1
        progress.applied("a", 8)
        assert progress.live() == {"a": 8}, "a follower silent for longer than a long poll is gone"
        # a follower the election knows of is waited for before its first request
        progress.role.attach(passel)
        passel.known = ["a", "c"]
        assert progress.live() == {"a": 8, "c": -1}
        waiting = asyncio.create_task(progress.hold(8, timeout=5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        progress.applied("c", 8)
        assert await asyncio.wait_for(waiting, 1) == []
    asyncio.run(scenario())


async def test_a_client_is_told_a_task_finished_only_once_the_followers_hold_it(tmp_path):
    """The node says COMPLETED: the row is saved before anything else is awaited, and the answer to
    the client waits for the live followers to hold it. Otherwise a coordinator cut off right after
    answering leaves a successor whose replica says the task still runs (nemesis seed 376)."""
    from appliance.store.models import Phase, Task
    async with coordinator_in(tmp_path, passel=StubElection(followers=["f"])) as c:
        node = await c.registry.add("http://127.0.0.1:9")
        task = Task(uuid="00000000-0000-4000-8000-0000000000a7", phase=Phase.ON_NODE, status=20, node_id=node.id,
                    images_count=3, attempts=1)
        await c.book.save(task)
        c.replicas.applied("f", c.book.rev)
        learning = asyncio.Event()

        async def slow_learn_speed(*args):
            await learning.wait()  # a slow disk, or a busy box: any await after the node's answer
        c.registry.learn_speed = slow_learn_speed
        observing = asyncio.create_task(c.observe(task, node, {"status": {"code": 40}, "progress": 100,
                                                               "processingTime": 3000}))
        await asyncio.sleep(0.05)
        assert task.status == 40, "the row took the node's answer in"
        telling = asyncio.create_task(c.told_finished(task))
        await asyncio.sleep(0.2)
        assert not telling.done(), "the follower does not hold the finish yet"
        c.replicas.applied("f", c.book.rev)
        await asyncio.wait_for(telling, 1)
        learning.set()
        await observing
