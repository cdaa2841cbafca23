"""Which products an all.zip holds, named as a responder would name them.

Pure: it reads only the member list (names and sizes), so it is tested with plain tables and costs
nothing to call on every page view. A product is one file of the zip, a folder of it (downloaded as a
zip of its own), or the whole all.zip. An empty file is no product: NodeODM's test mode and failed ODM
steps leave empty placeholders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    FILE = "file"  # one member, served as it is
    FOLDER = "folder"  # the members under a prefix, served as a zip made on the fly
    ARCHIVE = "archive"  # the whole all.zip


@dataclass(frozen=True, slots=True)
class Product:
    key: str  # in the download address: /ui/tasks/{uuid}/products/{key}
    name: str  # what a responder calls it
    what: str  # one line on what it is good for
    kind: Kind
    members: tuple[str, ...]  # the zip members it is made of (none for the whole archive)
    size: int  # bytes as downloaded (a folder: the sum of its files)
    filename: str  # the name the browser saves it under


@dataclass(frozen=True, slots=True)
class _File:
    key: str
    name: str
    what: str
    candidates: tuple[str, ...]  # the first non-empty member of these is the product


@dataclass(frozen=True, slots=True)
class _Folder:
    key: str
    name: str
    what: str
    prefix: str  # with its trailing '/'
    suffixes: tuple[str, ...] = ()  # only these files of the folder, when given
    filename: str = ""


POINT_CLOUDS = ("odm_georeferencing/odm_georeferenced_model.laz",)
FILES = (
    _File("orthophoto", "Orthophoto", "The stitched aerial image, georeferenced (GeoTIFF)",
          ("odm_orthophoto/odm_orthophoto.tif",)),
    _File("dsm", "Surface model (DSM)", "Heights of the ground and everything on it (GeoTIFF)", ("odm_dem/dsm.tif",)),
    _File("dtm", "Terrain model (DTM)", "Heights of the bare ground (GeoTIFF)", ("odm_dem/dtm.tif",)),
    _File("point-cloud", "Point cloud", "The 3D points, georeferenced (LAZ)", POINT_CLOUDS),
    _File("model", "Textured 3D model", "One file for 3D viewers (glTF binary)",
          ("odm_texturing/odm_textured_model_geo.glb",)),
    _File("report", "Processing report", "How the images were processed, and how well (PDF)",
          ("odm_report/report.pdf",)),
)
FOLDERS = (
    _Folder("model-obj", "Textured 3D model (OBJ set)", "The model, its materials and textures (zip)",
            "odm_texturing/", (".obj", ".mtl", ".jpg", ".jpeg", ".png"), "odm_texturing.zip"),
    _Folder("orthophoto-tiles", "Orthophoto map tiles", "Web map tiles of the orthophoto (zip, TMS)",
            "orthophoto_tiles/"),
    _Folder("dsm-tiles", "Surface model map tiles", "Web map tiles of the DSM (zip, TMS)", "dsm_tiles/"),
    _Folder("dtm-tiles", "Terrain model map tiles", "Web map tiles of the DTM (zip, TMS)", "dtm_tiles/"),
)
ALL = "all.zip"


def _file(spec: _File, members: Mapping[str, int]) -> Product | None:
    for name in spec.candidates:
        if members.get(name, 0) > 0:
            return Product(spec.key, spec.name, spec.what, Kind.FILE, (name,), members[name], name.rsplit("/", 1)[-1])
    return None


def _folder(spec: _Folder, members: Mapping[str, int]) -> Product | None:
    inside = tuple(sorted(n for n, size in members.items() if n.startswith(spec.prefix) and not n.endswith("/")
                          and size > 0 and (not spec.suffixes or n.lower().endswith(spec.suffixes))))
    if not inside:
        return None
    filename = spec.filename or spec.prefix.rstrip("/") + ".zip"
    return Product(spec.key, spec.name, spec.what, Kind.FOLDER, inside, sum(members[n] for n in inside), filename)


def catalogue(members: Mapping[str, int], archive_size: int) -> list[Product]:
    """The products in an all.zip, from its members (name -> uncompressed size), in the order shown."""
    found = [_file(spec, members) for spec in FILES] + [_folder(spec, members) for spec in FOLDERS]
    return [p for p in found if p is not None] + [
        Product("all", "Everything (all.zip)", "Every result file of the task, as the node made it", Kind.ARCHIVE,
                (), archive_size, ALL)]


def find(products: list[Product], key: str) -> Product | None:
    return next((p for p in products if p.key == key), None)
