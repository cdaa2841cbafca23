"""Where an orthophoto lies on the ground: its corners in latitude and longitude.

tifffile reads the GeoTIFF's tags and decodes its GeoKey directory (only the first image's header: no
pixel is decoded), and pyproj carries the corners from the image's own coordinate system to WGS84
(PROJ's database ships inside its wheel, so this works offline and inside the one-file binary).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, BinaryIO

import pyproj
import tifffile

log = logging.getLogger("passel.products")
PROJECTED, GEOGRAPHIC = 1, 2  # GTModelTypeGeoKey
PIXEL_IS_POINT = 2  # GTRasterTypeGeoKey
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


def _epsg(meta: dict[str, Any]) -> int | None:
    model = _code(meta.get("GTModelTypeGeoKey"))
    key = "ProjectedCSTypeGeoKey" if model == PROJECTED else "GeographicTypeGeoKey" if model == GEOGRAPHIC else ""
    code = _code(meta.get(key))
    return code if code not in (None, 0, USER_DEFINED) else None


def _code(value: Any) -> int | None:
    """A GeoKey's numeric value (tifffile gives known codes as enums, unknown ones as ints)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _pixel_to_model(meta: dict[str, Any]) -> tuple[float, ...] | None:
    """(a, b, c, d, e, f) with x = a*col + b*row + c and y = d*col + e*row + f."""
    matrix = meta.get("ModelTransformation")
    if matrix is not None:
        m = [float(v) for row in matrix for v in row]
        return m[0], m[1], m[3], m[4], m[5], m[7]
    scale, tie = meta.get("ModelPixelScale"), meta.get("ModelTiepoint")
    if scale is None or tie is None or len(scale) < 2 or len(tie) < 6:
        return None
    col, row, x, y = (float(v) for v in (tie[0], tie[1], tie[3], tie[4]))
    sx, sy = float(scale[0]), float(scale[1])
    return sx, 0.0, x - col * sx, 0.0, -sy, y + row * sy


def read_footprint(source: BinaryIO) -> Footprint | None:
    """The footprint of the GeoTIFF in `source`; None when it is not georeferenced (or not in a
    coordinate system with an EPSG code)."""
    try:
        with tifffile.TiffFile(source) as tiff:
            meta = tiff.geotiff_metadata if tiff.is_geotiff else None
            width, height = tiff.pages[0].imagewidth, tiff.pages[0].imagelength
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds on a damaged or fake file
        log.info("The orthophoto could not be read as a GeoTIFF (%s)", exc)
        return None
    if not meta:
        return None
    epsg, affine = _epsg(meta), _pixel_to_model(meta)
    if epsg is None or affine is None:
        return None
    a, b, c, d, e, f = affine
    shift = -0.5 if _code(meta.get("GTRasterTypeGeoKey")) == PIXEL_IS_POINT else 0.0
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
