"""ODM-like console output for a simulated run: which line appears at which progress percentage.

Clients read this output: ODM's split-merge executor counts tasks with at least 3 lines as really
running, and people read it in the UI, so it follows ODM's stages and wording.
"""

from __future__ import annotations

import time
from typing import Any

Script = list[tuple[float, str]]

ODM_DONE_AT = 97.0  # the rest of the bar is NodeODM's own post-processing and zipping
STAGE_WEIGHTS = {
    "dataset": 2, "split": 1, "merge": 1, "opensfm": 40, "openmvs": 25, "odm_filterpoints": 3,
    "odm_meshing": 5, "mvs_texturing": 8, "odm_georeferencing": 4, "odm_dem": 4, "odm_orthophoto": 5,
    "odm_report": 1, "odm_postprocess": 1,
}
FAILURE_MESSAGE = "Cannot process dataset"  # what NodeODM reports when ODM exits with code 1


def info(text: str) -> str:
    return f"[INFO]    {text}"


def _stages(options: dict[str, Any]) -> list[str]:
    """The stages ODM runs for these options, up to `end-with`."""
    skipped = set()
    if options.get("fast-orthophoto") is True:
        skipped |= {"openmvs", "odm_filterpoints"}
    if options.get("skip-3dmodel") is True and options.get("skip-orthophoto") is True:
        skipped |= {"odm_meshing", "mvs_texturing"}
    if options.get("skip-orthophoto") is True:
        skipped.add("odm_orthophoto")
    if options.get("skip-report") is True:
        skipped.add("odm_report")
    stages = [s for s in STAGE_WEIGHTS if s not in skipped]
    end_with = options.get("end-with")
    return stages[:stages.index(end_with) + 1] if end_with in stages else stages


def _stage_body(stage: str, images: list[str], project: str) -> list[str]:
    count = len(images)
    bodies: dict[str, list[str]] = {
        "dataset": [info(f"Loading dataset from: {project}/images"), info(f"Loading {count} images"),
                    info(f"Wrote images database: {project}/images.json"),
                    info(f"Found {count} usable images")],
        "split": [info("Normal dataset, will process all at once.")],
        "merge": [info("Normal dataset, nothing to merge.")],
        "opensfm": ([info("Writing exif overrides"), info("Maximum photo dimensions: 4000px")]
                    + [f"INFO: Extracting ROOT_DSPSIFT features for image {img}" for img in images]
                    + [f"Matching {img}  -  {i + 1} / {count}" for i, img in enumerate(images)]
                    + [f"INFO: Reconstruction 0: {count} shots, {count * 1450} points",
                       info("Export reconstruction stats")]),
        "openmvs": ([info("Estimating depthmaps")]
                    + [f"Depth-map for image {i} estimated using {i % 4 + 2} images" for i in range(count)]
                    + [info("Fusing depthmaps")]),
        "odm_filterpoints": [info(f"Filtering {project}/odm_filterpoints/point_cloud.ply (statistical, meanK 16)")],
        "odm_meshing": [info(f"Writing ODM 2.5D Mesh file in: {project}/odm_meshing/odm_25dmesh.ply")],
        "mvs_texturing": [info("Generating texture for the 3D model"), "Building adjacency graph: done."],
        "odm_georeferencing": [info("Georeferencing point cloud"), info("Exporting odm_georeferenced_model.laz")],
        "odm_dem": [info("Creating DSM"), info("Completed dsm.tif in 0:00:03")],
        "odm_orthophoto": [info("Creating GeoTIFF"), info(f"Wrote {project}/odm_orthophoto/odm_orthophoto.tif")],
        "odm_report": [info("Exporting shots.geojson"), info("Generating report.pdf")],
        "odm_postprocess": [info("Post-processing done")],
    }
    return bodies[stage]


def build_script(uuid: str, images: list[str], options: dict[str, Any], engine_version: str,
                 skip_post_processing: bool) -> Script:
    """Every output line of a successful run, each with the progress at which it appears."""
    project = f"/var/www/data/{uuid}"
    now = time.strftime("%a %b %d %H:%M:%S %Y")
    script: Script = [(0.0, info(f"Initializing ODM {engine_version} - {now}")), (0.0, info("=============="))]
    script += [(0.0, info(f"{name.replace('-', '_')}: {value}")) for name, value in sorted(options.items())]
    script += [(0.0, info(f"project_path: {project}")), (0.0, info("=============="))]
    stages = _stages(options)
    total = sum(STAGE_WEIGHTS[s] for s in stages)
    start = 0.0
    for stage in stages:
        span = ODM_DONE_AT * STAGE_WEIGHTS[stage] / total
        body = _stage_body(stage, images, project)
        script.append((start, info(f"Running {stage} stage")))
        script += [(start + span * (i + 1) / (len(body) + 1), line) for i, line in enumerate(body)]
        script.append((start + span, info(f"Finished {stage} stage")))
        start += span
    script += [(ODM_DONE_AT, info(f"ODM app finished - {time.strftime('%a %b %d %H:%M:%S %Y')}")),
               (ODM_DONE_AT, "100 - done.")]
    if not skip_post_processing:
        script.append((98.0, "Postprocessing: building Entwine point tiles and Cloud Optimized GeoTIFFs"))
    return script


def failure_lines(stage_hint: str) -> list[str]:
    """What ODM prints when a subprocess crashes, ending with the simulated cause."""
    return [
        "===== Dumping Info for Geeks (developers need this to fix bugs) =====",
        "Child returned 1",
        "Traceback (most recent call last):",
        '  File "/code/stages/odm_app.py", line 82, in execute',
        "    self.first_stage.run()",
        '  File "/code/opendm/types.py", line 470, in run',
        "    self.next_stage.run(outputs)",
        '  File "/code/opendm/system.py", line 112, in run',
        '    raise SubprocessException("Child returned {}".format(retcode), retcode)',
        "opendm.system.SubprocessException: Child returned 1",
        "===== Done =====",
        f"[ERROR]   Uh oh! Processing stopped in the {stage_hint} stage (simulated fault injected by the simnode).",
    ]


def current_stage(script: Script, progress: float) -> str:
    """The stage a run is in at `progress`, read back from its script."""
    stage = "dataset"
    for at, line in script:
        if at > progress:
            break
        if line.startswith(info("Running ")) and line.endswith(" stage"):
            stage = line[len(info("Running ")):-len(" stage")]
    return stage
