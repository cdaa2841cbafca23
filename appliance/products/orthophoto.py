"""An all.zip's orthophoto and tiles, worked out once per archive: its footprint, its preview, and
the tile sets a map can show. Blocking: run in a thread."""

from __future__ import annotations

import shutil
import tempfile

from appliance.products.archive import ResultsArchive, open_member
from appliance.products.footprint import Footprint, read_footprint
from appliance.products.preview import NoPreview, render_preview
from appliance.products.tiles import LAYERS, RESOURCE, TileSet, tile_set

GEOTIFF = "odm_orthophoto/odm_orthophoto.tif"
PNG = "odm_orthophoto/odm_orthophoto.png"  # ODM's own full-size PNG, with --orthophoto-png
MAX_RESOURCE_BYTES = 64 * 1024


def has_orthophoto(archive: ResultsArchive) -> bool:
    info = archive.members.get(GEOTIFF)
    return info is not None and info.file_size > 0


def footprint(archive: ResultsArchive) -> Footprint | None:
    """Where the orthophoto lies; None without one, or when it is not georeferenced."""

    def compute() -> Footprint | None:
        if not has_orthophoto(archive):
            return None
        with open_member(archive, GEOTIFF) as source:
            return read_footprint(source)

    return archive.remember("footprint", compute)


def _render(archive: ResultsArchive) -> tuple[bytes | None, str]:
    png = archive.members.get(PNG)
    if png is not None and png.file_size > 0:
        try:
            with open_member(archive, PNG) as source:
                return render_preview(source), ""
        except NoPreview:
            pass  # the GeoTIFF may still do
    if not has_orthophoto(archive):
        return None, "this task made no orthophoto"
    # libtiff reads a GeoTIFF from a file of its own: a temporary copy beside the zip, gone when closed
    with tempfile.TemporaryFile(dir=archive.path.parent) as copy:
        with open_member(archive, GEOTIFF) as source:
            shutil.copyfileobj(source, copy, 1024 * 1024)
        copy.seek(0)
        try:
            return render_preview(copy), ""
        except NoPreview as exc:
            return None, str(exc)


def preview(archive: ResultsArchive) -> bytes:
    """The orthophoto as a small PNG; raises NoPreview (with why) when none can be drawn."""
    picture, reason = archive.remember("preview", lambda: _render(archive))
    if picture is None:
        raise NoPreview(reason)
    return picture


def tiles(archive: ResultsArchive, layer: str) -> TileSet | None:
    """A layer's map tiles in this archive, or None."""

    def compute() -> TileSet | None:
        prefix = LAYERS.get(layer)
        if prefix is None:
            return None
        resource = archive.members.get(prefix + RESOURCE)
        text = None
        if resource is not None and resource.file_size <= MAX_RESOURCE_BYTES:
            with open_member(archive, resource.filename) as source:
                text = source.read()
        return tile_set(layer, archive.members, text)

    return archive.remember(f"tiles:{layer}", compute)
