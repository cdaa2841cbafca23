"""A follower that takes an upload in: a second init with the same set-uuid (as NodeODM allows) gives
the task the client's new fields, and keeps what was staged here and sent on to the node."""

from __future__ import annotations

from typing import Any

import aiohttp

from appliance.cluster.receiving import Receiver
from appliance.cluster.registry import NodeRegistry
from appliance.cluster.staging import Staging
from appliance.cluster.tasks import TaskBook, forwarded, set_forwarded
from appliance.role import Role
from appliance.store.database import Store
from appliance.store.models import Task, row_values
from tests.support import StubElection

UUID = "00000000-0000-4000-8000-0000000000c1"


class CoordinatorElsewhere(StubElection):
    """A follower's view, whose box-to-box calls reach a coordinator that answers each init."""

    def __init__(self) -> None:
        super().__init__(is_coordinator=False)
        self.calls: list[tuple[str | None, str, dict[str, Any]]] = []

    async def call(self, box_id: str | None, path: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        self.calls.append((box_id, path, body))
        name = body["fields"]["name"]
        return {"task": row_values(Task(uuid=UUID, name=name, staged_on="me", owner="boss")), "node_url": None}


async def test_a_second_init_takes_the_new_fields_and_keeps_what_was_sent(tmp_path):
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    async with aiohttp.ClientSession() as session:
        role = Role("me")
        source = CoordinatorElsewhere()
        role.attach(source)
        staging = Staging(tmp_path / "staging", 0)
        staging.open()
        receiver = Receiver(TaskBook(store, "me"), staging, NodeRegistry(store, session, 1.0, role), role, "")
        assert await receiver.init({"name": "first"}, UUID) == UUID
        upload = receiver.uploads[UUID]
        staged_at = upload.task.staging_path
        set_forwarded(upload.task, 7, ["IMG_1.JPG"])  # what the early send got onto the node

        assert await receiver.init({"name": "second"}, UUID) == UUID
        assert receiver.uploads[UUID] is upload
        assert upload.task.name == "second"
        assert upload.task.staging_path == staged_at and forwarded(upload.task) == (7, {"IMG_1.JPG"})
        assert [path for _, path, _ in source.calls] == ["/intake/init", "/intake/init"]
    await store.close()
