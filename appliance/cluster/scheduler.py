"""Choosing a node for a task: a pure function of the task and a snapshot of the nodes.

The order of preference, and why:
1. Hard filters: online, not locked, a free slot, `maxImages` allows the task, the engine matches.
   A task never goes to a full node: it waits in the coordinator's queue as QUEUED instead, which is
   the truth ODM needs (ClusterODM piles it onto the first full node).
2. Fewest tasks of the same job already on the node: submodels of one split-merge job spread out.
3. Shortest expected run: the node's learned ms per image, or a prior from its cores.
4. Most free slots, then most memory, then shortest queue.
5. The node id, so equal nodes always give the same answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

PRIOR_MS_PER_IMAGE_PER_CORE = 8000.0  # roughly ODM's default pipeline on a laptop core; replaced by learned speed
MIN_MB_PER_IMAGE = 16.0  # below this the node would swap on a task of this size


@dataclass(frozen=True)
class NodeView:
    """What the scheduler knows about one node at one moment."""

    id: int
    online: bool = True
    locked: bool = False
    slots: int = 1
    busy: int = 0  # tasks queued or running on it, by its own count or ours, whichever is larger
    max_images: int | None = None
    engine: str = "odm"
    cores: int = 1
    memory_mb: int = 0
    ms_per_image: float | None = None  # learned from finished tasks
    same_job: int = 0  # active tasks of the job being placed

    @property
    def free_slots(self) -> int:
        return max(0, self.slots - self.busy)

    @property
    def expected_ms_per_image(self) -> float:
        if self.ms_per_image is not None:
            return self.ms_per_image
        return PRIOR_MS_PER_IMAGE_PER_CORE / max(1, self.cores)


@dataclass(frozen=True)
class Demand:
    """What a task needs from a node."""

    images: int
    engine: str | None = None


def why_not(node: NodeView, demand: Demand) -> str | None:
    """The reason `node` cannot take `demand` now, or None when it can."""
    if not node.online:
        return "offline"
    if node.locked:
        return "locked"
    if node.max_images is not None and demand.images > node.max_images:
        return f"takes at most {node.max_images} images"
    if demand.engine and node.engine != demand.engine:
        return f"runs {node.engine}, not {demand.engine}"
    if node.memory_mb and demand.images * MIN_MB_PER_IMAGE > node.memory_mb:
        return f"{node.memory_mb} MB of memory is too little for {demand.images} images"
    if node.free_slots <= 0:
        return "no free slot"
    return None


def rank(nodes: Sequence[NodeView], demand: Demand) -> list[NodeView]:
    """Eligible nodes, best first."""
    eligible = [n for n in nodes if why_not(n, demand) is None]
    return sorted(eligible, key=lambda n: (
        n.same_job,
        n.expected_ms_per_image * max(1, demand.images),
        -n.free_slots,
        -n.memory_mb,
        n.busy,
        n.id,
    ))


def choose_node(nodes: Sequence[NodeView], demand: Demand) -> NodeView | None:
    """The best node for `demand`, or None when the task must wait in the coordinator's queue."""
    ranked = rank(nodes, demand)
    return ranked[0] if ranked else None


def could_ever_run(nodes: Sequence[NodeView], demand: Demand) -> bool:
    """True when some known node could take the task once it has a free slot."""
    return any(why_not(replace(n, busy=0, online=True, locked=False), demand) is None for n in nodes)
