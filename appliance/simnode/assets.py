"""Plausible ODM result files, so that clients unpacking all.zip find what a real ODM run leaves.

Files are small unless `asset_kb` asks for more: binary formats get the right magic bytes followed
by filler, JSON files are valid JSON describing the task's images.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

BASE_LAT, BASE_LON, BASE_ALT = 46.8425, -91.9940, 410.0  # somewhere over a field
CAMERA_ID = "v2 dji fc6310 4000 3000 brown 0.8500"


@dataclass(frozen=True)
class ResultContext:
    """What the fake results are made from."""

    uuid: str
    images: list[str]
    options: dict[str, Any]
    output: list[str] = field(default_factory=list)
    engine_version: str = "3.5.6-sim"
    asset_kb: int = 2

    def flag(self, name: str) -> bool:
        return self.options.get(name) is True


def _dem_files(ctx: ResultContext) -> list[str]:
    names = ["dsm.tif", "dtm.tif"]
    return names + ([n.replace(".tif", ".euclideand.tif") for n in names] if ctx.flag("dem-euclidean-map") else [])


def _orthophoto_files(ctx: ResultContext) -> list[str]:
    names = ["odm_orthophoto.tif", "odm_orthophoto_extent.dxf"]
    if ctx.flag("orthophoto-cutline"):
        names += ["cutline.gpkg", "odm_orthophoto_cut.tif", "odm_orthophoto_feathered.tif"]
    if ctx.flag("orthophoto-png"):
        names.append("odm_orthophoto.png")
    if ctx.flag("orthophoto-kmz"):
        names.append("odm_orthophoto.kmz")
    return names


def _opensfm_files(ctx: ResultContext) -> list[str]:
    return (["reconstruction.json", "tracks.csv", "camera_models.json", "reference_lla.json"]
            + [f"features/{n}" for n in KNOWN_DIRS["opensfm/features"](ctx)]
            + [f"matches/{n}" for n in KNOWN_DIRS["opensfm/matches"](ctx)])


KNOWN_DIRS: dict[str, Callable[[ResultContext], list[str]]] = {
    "opensfm": _opensfm_files,
    "opensfm/features": lambda ctx: [f"{image}.features.npz" for image in ctx.images],
    "opensfm/matches": lambda ctx: [f"{image}_matches.pkl.gz" for image in ctx.images],
    "odm_dem": _dem_files,
    "odm_orthophoto": _orthophoto_files,
    "odm_report": lambda ctx: ["report.pdf", "shots.geojson", "stats/stats.json"],
    "odm_georeferencing": lambda ctx: ["odm_georeferenced_model.laz", "coords.txt"],
    "odm_texturing": lambda ctx: ["odm_textured_model_geo.obj", "odm_textured_model_geo.mtl",
                                  "odm_textured_model_geo.glb", "odm_textured_model_geo_material0000_map_Kd.png"],
    "odm_filterpoints": lambda ctx: ["point_cloud.ply"],
    "odm_meshing": lambda ctx: ["odm_mesh.ply", "odm_25dmesh.ply"],
    "entwine_pointcloud": lambda ctx: ["ept.json", "ept-build.json", "ept-data/0-0-0-0.laz"],
}


def default_outputs(ctx: ResultContext, skip_post_processing: bool) -> list[str]:
    """What all.zip holds when the client names no `outputs`, trimmed the way ODM's options trim it."""
    paths = ["odm_georeferencing", "odm_dem/dsm.tif", "images.json", "cameras.json", "task_output.txt", "log.json"]
    if ctx.flag("dtm"):
        paths.append("odm_dem/dtm.tif")
    if not ctx.flag("skip-orthophoto"):
        paths += ["odm_orthophoto/" + name for name in _orthophoto_files(ctx)]
    if not ctx.flag("skip-3dmodel"):
        paths.append("odm_texturing")
    if not ctx.flag("skip-report"):
        paths.append("odm_report")
    if not skip_post_processing:
        paths.append("entwine_pointcloud")
    return paths


def expand(relpath: str, ctx: ResultContext) -> list[str]:
    """The files a requested output path stands for: itself, a known directory's files (named with
    or without a trailing '/'), or nothing."""
    directory = relpath.rstrip("/")
    if directory in KNOWN_DIRS:
        return [f"{directory}/{name}" for name in KNOWN_DIRS[directory](ctx)]
    return [relpath] if PurePosixPath(relpath).suffix else []


def _position(index: int) -> tuple[float, float, float]:
    return BASE_LAT + 0.0004 * (index // 8), BASE_LON + 0.0006 * (index % 8), BASE_ALT + 60.0


def _cameras() -> dict[str, Any]:
    return {CAMERA_ID: {"projection_type": "brown", "width": 4000, "height": 3000, "focal_x": 0.85,
                           "focal_y": 0.85, "c_x": 0.0, "c_y": 0.0, "k1": -0.004, "k2": 0.009,
                           "p1": 0.0, "p2": 0.0, "k3": -0.006}}


def _reconstruction(ctx: ResultContext) -> list[dict[str, Any]]:
    shots = {}
    for i, image in enumerate(ctx.images):
        shots[image] = {"rotation": [3.14, 0.0, 0.0], "translation": [i * 12.0, 0.0, 60.0],
                        "camera": CAMERA_ID, "orientation": 1, "capture_time": 1.7e9 + i * 2,
                        "gps_dop": 3.0, "gps_position": [i * 12.0, 0.0, _position(i)[2] - BASE_ALT]}
    points = {str(n): {"color": [120, 130, 110], "coordinates": [n * 1.5, n * 0.5, 0.2]} for n in range(5)}
    return [{"cameras": _cameras(), "shots": shots, "points": points,
             "reference_lla": {"latitude": BASE_LAT, "longitude": BASE_LON, "altitude": BASE_ALT}}]


def _images_db(ctx: ResultContext) -> list[dict[str, Any]]:
    rows = []
    for i, image in enumerate(ctx.images):
        lat, lon, alt = _position(i)
        rows.append({"filename": image, "width": 4000, "height": 3000, "camera_make": "DJI",
                     "camera_model": "FC6310", "latitude": lat, "longitude": lon, "altitude": alt,
                     "band_name": "RGB", "band_index": 0, "focal_ratio": 0.85})
    return rows


def _shots_geojson(ctx: ResultContext) -> dict[str, Any]:
    features = []
    for i, image in enumerate(ctx.images):
        lat, lon, alt = _position(i)
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat, alt]},
                         "properties": {"filename": image, "focal": 0.85, "width": 4000, "height": 3000}})
    return {"type": "FeatureCollection", "features": features}


def _log_json(ctx: ResultContext) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    return {"odmVersion": ctx.engine_version, "startTime": now, "endTime": now, "options": ctx.options,
            "images": len(ctx.images), "successful": True, "stages": [], "processes": []}


def _tracks(ctx: ResultContext) -> bytes:
    rows = ["OPENSFM_TRACKS_VERSION_v2"]
    for i, image in enumerate(ctx.images):
        rows += [f"{image}\t{t}\t{i * 10 + t}\t0.{i}{t}\t-0.{t}{i}\t0.004\t120\t130\t110\t-1\t-1" for t in range(4)]
    return ("\n".join(rows) + "\n").encode()


JSON_FILES: dict[str, Callable[[ResultContext], Any]] = {
    "reconstruction.json": _reconstruction,
    "cameras.json": lambda ctx: _cameras(),
    "camera_models.json": lambda ctx: _cameras(),
    "images.json": _images_db,
    "shots.geojson": _shots_geojson,
    "log.json": _log_json,
    "reference_lla.json": lambda ctx: {"latitude": BASE_LAT, "longitude": BASE_LON, "altitude": BASE_ALT},
    "ept.json": lambda ctx: {"version": "1.1.0", "dataType": "laszip", "hierarchyType": "json",
                             "points": 1000 * max(1, len(ctx.images)), "span": 128,
                             "bounds": [0, 0, 0, 100, 100, 100], "schema": []},
    "stats.json": lambda ctx: {"processing_statistics": {"steps_times": {}, "date": time.ctime()},
                               "reconstruction_statistics": {"reconstructed_shots_count": len(ctx.images),
                                                             "initial_shots_count": len(ctx.images)}},
}

TEXT_FILES: dict[str, Callable[[ResultContext], bytes]] = {
    "tracks.csv": _tracks,
    "task_output.txt": lambda ctx: ("\n".join(ctx.output) + "\n").encode(),
    "coords.txt": lambda ctx: b"WGS84 UTM 15N\n576000 5188000\n",
    "odm_textured_model_geo.obj": lambda ctx: (b"mtllib odm_textured_model_geo.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\n"
                                               b"vt 0 0\nvt 1 0\nvt 0 1\nusemtl material0000\nf 1/1 2/2 3/3\n"),
    "odm_textured_model_geo.mtl": lambda ctx: (b"newmtl material0000\nKa 1 1 1\nKd 1 1 1\n"
                                               b"map_Kd odm_textured_model_geo_material0000_map_Kd.png\n"),
}

MAGIC: dict[str, bytes] = {
    ".tif": b"II*\x00\x08\x00\x00\x00", ".tiff": b"II*\x00\x08\x00\x00\x00",
    ".laz": b"LASF\x00\x00\x00\x00", ".las": b"LASF\x00\x00\x00\x00",
    ".ply": b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nend_header\n",
    ".glb": b"glTF\x02\x00\x00\x00", ".pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
    ".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    ".gpkg": b"SQLite format 3\x00", ".mbtiles": b"SQLite format 3\x00",
    ".npz": b"PK\x03\x04", ".kmz": b"PK\x03\x04", ".gz": b"\x1f\x8b\x08\x00",
}


def _content(relpath: str, ctx: ResultContext) -> tuple[bytes, int]:
    """The head of a file and the size to pad it to with filler."""
    path = PurePosixPath(relpath)
    if path.name in JSON_FILES:
        return json.dumps(JSON_FILES[path.name](ctx), indent=1).encode(), 0
    if path.name in TEXT_FILES:
        return TEXT_FILES[path.name](ctx), 0
    if path.suffix in MAGIC:
        return MAGIC[path.suffix], ctx.asset_kb * 1024
    if path.suffix in (".json", ".geojson"):
        return b"{}\n", 0
    return f"Simulated {path.name} of task {ctx.uuid}\n".encode(), 0


def _filler(relpath: str, size: int) -> Iterator[bytes]:
    block = random.Random(relpath).randbytes(64 * 1024)  # incompressible, so zip sizes stay predictable
    while size > 0:
        piece = block[:size]
        size -= len(piece)
        yield piece


def write_result_file(project_dir: Path, relpath: str, ctx: ResultContext) -> None:
    """Write one fake result file under `project_dir` (the caller has made `relpath` safe)."""
    dest = project_dir / relpath
    dest.parent.mkdir(parents=True, exist_ok=True)
    head, size = _content(relpath, ctx)
    with open(dest, "wb") as out:
        out.write(head)
        for piece in _filler(relpath, size - len(head)):
            out.write(piece)
