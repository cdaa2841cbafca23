"""Where an orthophoto lies on the ground: its corners in latitude and longitude.

Pillow reads the GeoTIFF's tags (only the first image's: no pixel is decoded) and pyproj carries the
corners from the image's own coordinate system to WGS84 (PROJ's database ships inside its wheel, so
this works offline and inside the one-file binary). Not tifffile: it needs numpy, which would double
the one-file binary and the time every `passel` command takes to start.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO

import pyproj
from PIL import Image, TiffImagePlugin

log = logging.getLogger("passel.products")
# GeoTIFF 1.1 (OGC 19-008r4): the tags, and the keys of the GeoKeyDirectory this needs
MODEL_PIXEL_SCALE, MODEL_TIEPOINT, MODEL_TRANSFORMATION, GEO_KEY_DIRECTORY = 33550, 33922, 34264, 34735
MODEL_TYPE, RASTER_TYPE, GEOGRAPHIC_TYPE, PROJECTED_TYPE = 1024, 1025, 2048, 3072
PROJECTED, GEOGRAPHIC = 1, 2
PIXEL_IS_POINT = 2
USER_DEFINED = 32767  # "not an EPSG code": a coordinate system spelled out in parameters, not mapped here


@dataclass(frozen=True, slots=True)
class Footprint:
    """The image's four corners as (latitude, longitude), from the top left, clockwise."""

    corners: tuple[tuple[float, float], ...]
    crs: str  # the image's own, e.g. "EPSG:32615"

    @property
    def bounds(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((south, west), (north, east)), as a web map wants them."""
        lats, lons = [c[0] for c in self.corners], [c[1] for c in self.corners]
        return (min(lats), min(lons)), (max(lats), max(lons))


@lru_cache(maxsize=16)
def _to_wgs84(epsg: int) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)


def geo_keys(directory: tuple[int, ...]) -> dict[int, int]:
    """The short-valued keys of a GeoKeyDirectory (a header of four shorts, then four per key: id,
    where the value is (0: right here), count, value). The codes this needs are all such keys."""
    keys = {}
    for start in range(4, 4 + 4 * directory[3] if len(directory) >= 4 else 4, 4):
        key, location, count, value = directory[start:start + 4]
        if location == 0 and count == 1:
            keys[key] = value
    return keys


def _epsg(keys: dict[int, int]) -> int | None:
    model = keys.get(MODEL_TYPE)
    code = keys.get(PROJECTED_TYPE) if model == PROJECTED else keys.get(GEOGRAPHIC_TYPE) if model == GEOGRAPHIC else None
    return code if code not in (None, 0, USER_DEFINED) else None


def _pixel_to_model(tags: TiffImagePlugin.ImageFileDirectory_v2) -> tuple[float, ...] | None:
    """(a, b, c, d, e, f) with x = a*col + b*row + c and y = d*col + e*row + f."""
    matrix = tags.get(MODEL_TRANSFORMATION)
    if matrix and len(matrix) >= 8:
        m = [float(v) for v in matrix]
        return m[0], m[1], m[3], m[4], m[5], m[7]
    scale, tie = tags.get(MODEL_PIXEL_SCALE), tags.get(MODEL_TIEPOINT)
    if not scale or not tie or len(scale) < 2 or len(tie) < 6:
        return None
    col, row, x, y = (float(v) for v in (tie[0], tie[1], tie[3], tie[4]))
    sx, sy = float(scale[0]), float(scale[1])
    return sx, 0.0, x - col * sx, 0.0, -sy, y + row * sy


def read_footprint(source: BinaryIO) -> Footprint | None:
    """The footprint of the GeoTIFF in `source`; None when it is not georeferenced (or not in a
    coordinate system with an EPSG code)."""
    try:
        with Image.open(source, formats=["TIFF"]) as image:
            tags, (width, height) = image.tag_v2, image.size  # type: ignore[attr-defined]
            keys = geo_keys(tuple(int(v) for v in tags.get(GEO_KEY_DIRECTORY, ())))
            affine = _pixel_to_model(tags)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on a damaged or fake file
        log.info("The orthophoto could not be read as a GeoTIFF (%s)", exc)
        return None
    epsg = _epsg(keys)
    if epsg is None or affine is None:
        return None
    a, b, c, d, e, f = affine
    shift = -0.5 if keys.get(RASTER_TYPE) == PIXEL_IS_POINT else 0.0
    pixels = [(0, 0), (width, 0), (width, height), (0, height)]
    xs = [a * (i + shift) + b * (j + shift) + c for i, j in pixels]
    ys = [d * (i + shift) + e * (j + shift) + f for i, j in pixels]
    try:
        lons, lats = _to_wgs84(epsg).transform(xs, ys, errcheck=True)
    except (pyproj.exceptions.CRSError, pyproj.exceptions.ProjError) as exc:
        log.info("The orthophoto's coordinates (EPSG:%d) cannot be turned into latitude and longitude (%s)",
                 epsg, exc)
        return None
    corners = tuple((float(lat), float(lon)) for lat, lon in zip(lats, lons, strict=True))
    if not all(math.isfinite(v) for corner in corners for v in corner) \
            or not all(-90 <= lat <= 90 and -180 <= lon <= 180 for lat, lon in corners):
        return None
    return Footprint(corners, f"EPSG:{epsg}")
