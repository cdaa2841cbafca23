"""The map tiles ODM puts in all.zip (`orthophoto_tiles/`, `dsm_tiles/`, `dtm_tiles/`), as a web map
asks for them.

ODM makes them with gdal2tiles, which numbers rows from the south (TMS, its tilemapresource.xml
says so); web maps number them from the north (XYZ). Passel's tile addresses are XYZ, so any map
reads them as it reads every other tile source, and the row is flipped here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from xml.etree import ElementTree

LAYERS = {"orthophoto": "orthophoto_tiles/", "dsm": "dsm_tiles/", "dtm": "dtm_tiles/"}
RESOURCE = "tilemapresource.xml"
MAX_ZOOM = 30


@dataclass(frozen=True, slots=True)
class TileSet:
    prefix: str
    min_zoom: int
    max_zoom: int
    tms: bool  # rows counted from the south
    extension: str = "png"

    def member(self, z: int, x: int, y: int) -> str | None:
        """The zip member of tile (z, x, y) as XYZ numbers it; None outside the tile grid."""
        if not (self.min_zoom <= z <= self.max_zoom and 0 <= x < 2 ** z and 0 <= y < 2 ** z):
            return None
        row = 2 ** z - 1 - y if self.tms else y
        return f"{self.prefix}{z}/{x}/{row}.{self.extension}"


def _zooms(names: Iterable[str], prefix: str, extension: str) -> list[int]:
    found = set()
    for name in names:
        if name.startswith(prefix) and name.endswith("." + extension):
            parts = name[len(prefix):].split("/")
            if len(parts) == 3 and parts[0].isdigit() and int(parts[0]) <= MAX_ZOOM:
                found.add(int(parts[0]))
    return sorted(found)


def _is_tms(resource: bytes | None) -> bool:
    """Whether the tiles count rows from the south: what gdal2tiles' TileMap says, and ODM's default
    (gdal2tiles without --xyz) when there is no TileMap to read."""
    if not resource:
        return True
    try:
        root = ElementTree.fromstring(resource)
    except ElementTree.ParseError:
        return True
    return root.tag == "TileMap" and "tms" in root.get("tilemapservice", "tms").lower()


def tile_set(layer: str, names: Iterable[str], resource: bytes | None) -> TileSet | None:
    """The tiles of a layer, from the zip's member names and its tilemapresource.xml (if any)."""
    prefix = LAYERS.get(layer)
    if prefix is None:
        return None
    zooms = _zooms(names, prefix, "png")
    if not zooms:
        return None
    return TileSet(prefix, zooms[0], zooms[-1], _is_tms(resource))
