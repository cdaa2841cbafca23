"""A follower's requests to its coordinator end when the coordinator changes (replication/rounds.py),
and settling a send never cuts off its commit, even when the one waiting is itself ended."""

from __future__ import annotations

import asyncio

from appliance.cluster.dispatcher import Dispatcher
from appliance.replication.rounds import CoordinatorRounds


async def hanging(ended: asyncio.Event) -> None:
    """A request that would wait 120 s for its answer; says when it was ended."""
    try:
        await asyncio.sleep(120)
    finally:
        ended.set()


async def test_a_round_returns_its_result():
    async def answer() -> int:
        return 7
    assert await CoordinatorRounds().run(answer(), "c") == 7


async def test_a_new_coordinator_ends_a_round_at_once_and_the_request_with_it():
    """As a hand-over to a coordinator that was cut off, whose read would wait 120 s."""
    rounds, request_ended = CoordinatorRounds(), asyncio.Event()
    waiting = asyncio.ensure_future(rounds.run(hanging(request_ended), "old"))
    await asyncio.sleep(0.05)
    rounds.end()
    assert await asyncio.wait_for(waiting, 2) is None
    assert request_ended.is_set()


async def test_a_round_already_begun_for_the_new_coordinator_is_not_ended_by_its_announcement():
    """The role changes first and the listeners hear of it later: meanwhile the replica loop may have
    begun handing its tasks to the new coordinator, which must not be thrown away and sent again."""
    rounds, may_finish = CoordinatorRounds(), asyncio.Event()

    async def hand_over() -> int:
        await may_finish.wait()
        return 3
    to_old = asyncio.ensure_future(rounds.run(asyncio.sleep(120), "old"))
    to_new = asyncio.ensure_future(rounds.run(hand_over(), "new"))
    await asyncio.sleep(0.05)
    rounds.end(keep="new")
    assert await asyncio.wait_for(to_old, 2) is None
    may_finish.set()
    assert await asyncio.wait_for(to_new, 2) == 3


async def test_a_round_that_fails_raises_to_its_caller():
    async def refused() -> int:
        raise TimeoutError("no answer")
    try:
        await CoordinatorRounds().run(refused(), "c")
    except TimeoutError:
        return
    raise AssertionError("the failure was swallowed")


async def test_a_caller_that_is_cancelled_cancels_its_request():
    rounds, request_ended = CoordinatorRounds(), asyncio.Event()
    caller = asyncio.ensure_future(rounds.run(hanging(request_ended), "old"))
    await asyncio.sleep(0.05)
    caller.cancel()
    await asyncio.gather(caller, return_exceptions=True)
    assert request_ended.is_set()


async def test_settling_a_commit_lets_it_finish_even_if_the_waiter_is_ended():
    """A hand-over waits for a send that is committing on a node; if the hand-over is ended (a new
    coordinator), the commit must still finish, or the node and the table disagree."""
    dispatcher = Dispatcher.__new__(Dispatcher)  # only the send bookkeeping is used by settle
    dispatcher._sending, dispatcher._committing, dispatcher._early = {}, set(), {}
    committed, may_finish = asyncio.Event(), asyncio.Event()

    async def commit() -> None:
        await may_finish.wait()
        committed.set()
    uuid = "11111111-1111-4111-8111-111111111111"
    dispatcher._sending[uuid] = asyncio.ensure_future(commit())
    dispatcher._committing.add(uuid)
    rounds = CoordinatorRounds()
    waiter = asyncio.ensure_future(rounds.run(dispatcher.settle(uuid), "old"))
    await asyncio.sleep(0.05)
    rounds.end()
    assert await asyncio.wait_for(waiter, 2) is None
    may_finish.set()
    await asyncio.wait_for(committed.wait(), 2)
    assert not dispatcher._sending[uuid].cancelled()
