"""A sample split-merge-shaped job: submodels of small stand-in images, a seed.zip and a geo.txt each.

The simulated nodes never decode images, so tiny files with a JPEG header are enough to exercise
every step a real job takes: chunked uploads, seeds, outputs and downloads.
"""

from __future__ import annotations

import io
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

# What ODM's split-merge executor asks of a reconstruction submodel (see the contract).
RECONSTRUCTION_OUTPUTS = ["opensfm/matches", "opensfm/features", "opensfm/reconstruction.json",
                          "opensfm/tracks.csv", "cameras.json"]
SUBMODEL_OPTIONS = {"orthophoto-resolution": "5.0", "pc-quality": "lowest", "orthophoto-cutline": True,
                    "dem-euclidean-map": True, "skip-3dmodel": True, "skip-report": True}
JPEG_HEADER = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


@dataclass(frozen=True)
class Submodel:
    name: str
    files: list[str]


def write_sample_job(root: Path, submodels: int, images: int, image_kb: int = 64, seed: int = 7) -> list[Submodel]:
    """Write `submodels` folders of images (sizes differ up to 2x, as real submodels do)."""
    rng = random.Random(seed)
    result = []
    for index in range(submodels):
        folder = root / f"submodel_{index:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        count = max(1, int(images * rng.uniform(0.7, 1.4)))
        files = []
        for n in range(count):
            path = folder / f"IMG_{index:02d}{n:03d}.JPG"
            path.write_bytes(JPEG_HEADER + rng.randbytes(image_kb * 1024))
            files.append(str(path))
        seed_zip = folder / "seed.zip"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("opensfm/split_merge_stop_at_reconstruction.txt", "")
            archive.writestr("opensfm/config.yaml", "feature_type: SIFT\n")
        seed_zip.write_bytes(buffer.getvalue())
        geo = folder / "geo.txt"
        geo.write_text("EPSG:4326\n" + "".join(
            f"IMG_{index:02d}{n:03d}.JPG {-122.4 + n * 1e-4:.6f} {37.7 + index * 1e-3:.6f} 120.0\n" for n in range(count)))
        result.append(Submodel(name=folder.name, files=files + [str(seed_zip), str(geo)]))
    return result
