"""The task state machine: every change of a task's phase is a named step, checked against one table.

A phase says where a task is in Passel's own pipeline (`store.models.Phase`); the client sees its
`status`, which the node reports. Several coroutines act on the same task (intake, dispatch, the
tracker, the reconciler, hand-overs), so a step that does not fit the task's phase is a bug: it
raises instead of quietly overwriting what another coroutine just did.

    UPLOADING --commit--> WAITING --place--> FORWARDING --delivered--> ON_NODE --finish--> FINISHED
                             ^                   |                       |                    |
                             +------requeue------+-----------------------+--------------------+
    any visible phase --remove--> REMOVED        any phase --lose--> LOST --found--> ON_NODE/FINISHED
"""

from __future__ import annotations

from enum import StrEnum

from appliance.store.models import Phase, Task

UPLOADING, WAITING, FORWARDING = Phase.UPLOADING, Phase.WAITING, Phase.FORWARDING
ON_NODE, FINISHED, REMOVED, LOST = Phase.ON_NODE, Phase.FINISHED, Phase.REMOVED, Phase.LOST
ACTIVE = (WAITING, FORWARDING, ON_NODE)


class Step(StrEnum):
    COMMIT = "commit"                 # the client committed its upload: into Passel's queue
    PLACE = "place"                   # a node was chosen: the task is on its way there
    DELIVERED = "delivered"           # the node holds the task, committed
    REQUEUE = "requeue"               # back to the queue: its send failed, its node lost it, it was moved or restarted
    FINISH = "finish"                 # its node reports COMPLETED, FAILED or CANCELED
    CANCEL = "cancel"                 # canceled before a node held it (on a node, the node reports it)
    RESTART_ON_NODE = "restart"       # its node runs it again, from the same staged files
    GIVE_UP = "give up"               # Passel fails it: could not send it, or it stalled
    FOUND_RUNNING = "found running"   # given up for lost, but its node still runs it
    FOUND_FINISHED = "found finished" # given up for lost, but its node still has its results
    REMOVE = "remove"                 # a tombstone: the client removed it (or its upload was abandoned)
    LOSE = "lose"                     # its data is gone for good: clients get not-found and send it again


def _from(phases: tuple[str, ...], to: str) -> dict[str, str]:
    return dict.fromkeys(phases, to)


TRANSITIONS: dict[Step, dict[str, str]] = {
    Step.COMMIT: {UPLOADING: WAITING},
    Step.PLACE: {WAITING: FORWARDING},
    Step.DELIVERED: {FORWARDING: ON_NODE},
    Step.REQUEUE: _from((WAITING, FORWARDING, ON_NODE, FINISHED), WAITING),
    Step.FINISH: _from((ON_NODE, FINISHED), FINISHED),
    Step.CANCEL: _from((WAITING, FORWARDING, FINISHED), FINISHED),
    Step.RESTART_ON_NODE: _from((ON_NODE, FINISHED), ON_NODE),
    Step.GIVE_UP: _from((*ACTIVE, FINISHED), FINISHED),
    Step.FOUND_RUNNING: {LOST: ON_NODE},
    Step.FOUND_FINISHED: {LOST: FINISHED},
    Step.REMOVE: _from((UPLOADING, *ACTIVE, FINISHED, LOST), REMOVED),
    Step.LOSE: _from((UPLOADING, *ACTIVE, FINISHED, LOST, REMOVED), LOST),
}


class IllegalStep(RuntimeError):
    """A step that does not fit the task's phase: two coroutines disagree about the task."""


def advance(task: Task, step: Step) -> None:
    """Move `task` to the phase that `step` leads to from its current phase."""
    target = TRANSITIONS[step].get(task.phase)
    if target is None:
        raise IllegalStep(f"task {task.uuid}: cannot {step} from phase {task.phase}")
    task.phase = target
