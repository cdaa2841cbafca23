"""NodeODM task status codes, as PyODM and ODM's split-merge executor read them."""

from enum import IntEnum


class TaskStatus(IntEnum):
    """The `status.code` values of `/task/{uuid}/info`."""

    QUEUED = 10
    RUNNING = 20
    FAILED = 30
    COMPLETED = 40
    CANCELED = 50

    @property
    def finished(self) -> bool:
        """True when the task will not change again without a restart."""
        return self in (TaskStatus.FAILED, TaskStatus.COMPLETED, TaskStatus.CANCELED)

    @property
    def restartable(self) -> bool:
        """NodeODM allows restart only from these states."""
        return self.finished


def status_rank(code: int) -> int:
    """Order statuses so that a cached status only moves forward: from active to finished.

    QUEUED and RUNNING rank the same: a node moves a task from RUNNING back to QUEUED when it lays
    out the files before a slot is free (seen in the traces), or after its own restart. Passel does
    not pass that step back on to its clients (`cluster.tasks.move_status`): ODM takes it as "task
    limit reached" and sends the task again.
    """
    return 0 if code in (TaskStatus.QUEUED, TaskStatus.RUNNING) else 1
