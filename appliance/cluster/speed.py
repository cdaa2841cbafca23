"""How long a node takes per image, learned per engine and per task kind, with a prior until it has data.

ODM's split-merge sends two very different kinds of submodel: reconstruction (OpenSfM only) and
toolchain (densification to orthophoto). A box's time per image differs between them and a whole run,
so one number per node would mislead the scheduler. Everything here is pure: the registry persists
the samples as JSON in `nodes.speeds`, and the makespan simulation calls the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

KINDS = ("reconstruction", "toolchain", "full", "split")
PRIOR_MS_PER_IMAGE_PER_CORE = 8000.0  # roughly ODM's default pipeline on one laptop core; calibrated by data
COMFORTABLE_MEMORY_MB = 16384  # below this ODM works on smaller pieces and swaps: slower per image
# Share of a whole run's time per image that each kind takes (OpenSfM is a bit under half of ODM's time).
KIND_SHARE = {"reconstruction": 0.45, "toolchain": 0.55, "full": 1.0, "split": 1.0}
# A split parent's time includes its submodels elsewhere: it says nothing about the box's own speed.
CALIBRATING_KINDS = ("reconstruction", "toolchain", "full")
SUBMODEL_KINDS = ("reconstruction", "toolchain")  # what ODM's split-merge sends to --sm-cluster
RECENT_WEIGHT = 0.3  # a new sample's weight: boxes change (thermal limits, other load), recent runs count more
TOOLCHAIN_OUTPUTS = ("odm_orthophoto", "odm_dem", "odm_report", "odm_georeferencing", "odm_texturing",
                     "odm_meshing", "odm_filterpoints", "entwine_pointcloud")


@dataclass(frozen=True)
class Sample:
    """What was learned for one engine and kind on one node."""

    ms: float  # per image, blended
    n: int  # tasks it was learned from


@dataclass(frozen=True)
class Estimate:
    """Expected time per image for one kind on one node, and where the figure comes from."""

    ms_per_image: float
    source: str  # learned, other kinds (scaled from this node's other kinds), or prior (cores, memory)
    samples: int


def task_kind(outputs: list[str] | None, options: list[dict[str, Any]]) -> str:
    """The part of ODM's pipeline a task runs, from the outputs it asks back and its options."""
    paths = outputs or []
    if any(o.get("name") == "split" for o in options):
        return "split"
    tops = {str(p).strip("/").split("/")[0] for p in paths if isinstance(p, str)}
    if "opensfm" in tops:
        return "reconstruction"
    if tops & set(TOOLCHAIN_OUTPUTS):
        return "toolchain"
    return "full"


def speed_key(engine: str, kind: str) -> str:
    return f"{engine or 'odm'}/{kind}"


def parse_samples(data: Mapping[str, Any]) -> dict[str, Sample]:
    """The `nodes.speeds` column; a damaged entry counts as nothing learned."""
    samples = {}
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(value.get("ms"), (int, float)) and value["ms"] > 0:
            samples[str(key)] = Sample(float(value["ms"]), int(value.get("n") or 1))
    return samples


def dump_samples(samples: Mapping[str, Sample]) -> dict[str, dict[str, float]]:
    return {k: {"ms": round(s.ms, 3), "n": s.n} for k, s in sorted(samples.items())}


def blend(old: Sample | None, ms_per_image: float) -> Sample:
    """Fold one finished task into a sample; the first task is taken as is."""
    if old is None:
        return Sample(ms_per_image, 1)
    return Sample((1 - RECENT_WEIGHT) * old.ms + RECENT_WEIGHT * ms_per_image, old.n + 1)


def prior_ms_per_image(cores: int, memory_mb: int, kind: str) -> float:
    """A guess from the hardware: time falls with cores, and rises when memory is short."""
    ms = PRIOR_MS_PER_IMAGE_PER_CORE / max(1, cores)
    if 0 < memory_mb < COMFORTABLE_MEMORY_MB:
        ms *= math.sqrt(COMFORTABLE_MEMORY_MB / memory_mb)
    return ms * KIND_SHARE.get(kind, 1.0)


@dataclass(frozen=True)
class Hardware:
    """A node as the speed model sees it."""

    samples: Mapping[str, Sample]
    engine: str
    cores: int
    memory_mb: int


def calibrations(nodes: Iterable[Hardware]) -> dict[str, float]:
    """Per engine, the largest ratio of learned to prior time: puts the priors of unmeasured nodes on
    the fleet's real scale, at its slow end. A box thought slower than it is gets small tasks and is
    soon measured; a box thought faster than it is would get a big task and hold up the whole job."""
    ratios: dict[str, list[float]] = {}
    for node in nodes:
        for kind in CALIBRATING_KINDS:
            sample = node.samples.get(speed_key(node.engine, kind))
            if sample is not None:
                ratios.setdefault(node.engine, []).append(
                    sample.ms / prior_ms_per_image(node.cores, node.memory_mb, kind))
    return {engine: max(r) for engine, r in ratios.items()}


def estimate(node: Hardware, kind: str, calibration: float = 1.0) -> Estimate:
    """Learned for this kind; else scaled from this node's other kinds; else the calibrated prior."""
    own = node.samples.get(speed_key(node.engine, kind))
    if own is not None:
        return Estimate(own.ms, "learned", own.n)
    others = [(s.n, k, s) for k in CALIBRATING_KINDS if (s := node.samples.get(speed_key(node.engine, k)))]
    if others:
        n, other, sample = max(others, key=lambda o: (o[0], -KINDS.index(o[1])))
        return Estimate(sample.ms / KIND_SHARE[other] * KIND_SHARE.get(kind, 1.0), "other kinds", 0)
    return Estimate(prior_ms_per_image(node.cores, node.memory_mb, kind) * calibration, "prior", 0)


def estimates(node: Hardware, calibration: float = 1.0) -> dict[str, Estimate]:
    """Every kind's estimate for one node."""
    return {kind: estimate(node, kind, calibration) for kind in KINDS}
