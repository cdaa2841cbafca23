"""Turn a finished upload into a task's project folder, the way NodeODM lays it out.

`images/` receives the uploads; `seed.zip` is unpacked into the project root (ODM's split-merge uses
it to pre-fill `opensfm/`); `*.txt` and alignment files go to `gcp/`; other zips are dropped.
Runs in a worker thread: seeds can be large.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from appliance.nodeodm import replies
from appliance.nodeodm.uploads import PARTIAL_SUFFIX
from appliance.simnode.archive import extract_zip

SEED_NAME = "seed.zip"
GCP_FOLDER_FILE = re.compile(r"(\.txt|^align\.(las|laz|tif))$", re.IGNORECASE)


class IntakeError(Exception):
    """The upload cannot become a task; the message goes to the client as `{"error": ...}`."""


def _plain_files(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir() if entry.is_file())


def prepare_project(upload_dir: Path, project_dir: Path, max_images: int | None) -> list[str]:
    """Move the upload into place and return the image names; on error nothing is left behind."""
    for name in _plain_files(upload_dir):
        if name.endswith(PARTIAL_SUFFIX):  # an upload that never finished
            (upload_dir / name).unlink(missing_ok=True)
    if not _plain_files(upload_dir):
        shutil.rmtree(upload_dir, ignore_errors=True)
        raise IntakeError(replies.NEED_ONE_FILE)
    shutil.rmtree(project_dir, ignore_errors=True)  # a set-uuid reused after a failed attempt
    try:
        return _lay_out(upload_dir, project_dir, max_images)
    except (IntakeError, ValueError, OSError) as exc:
        shutil.rmtree(project_dir, ignore_errors=True)
        shutil.rmtree(upload_dir, ignore_errors=True)
        raise IntakeError(str(exc)) from None


def _lay_out(upload_dir: Path, project_dir: Path, max_images: int | None) -> list[str]:
    images_dir, gcp_dir = project_dir / "images", project_dir / "gcp"
    project_dir.mkdir(parents=True)
    gcp_dir.mkdir()
    os.replace(upload_dir, images_dir)
    if (images_dir / SEED_NAME).is_file():
        seed = project_dir / SEED_NAME
        os.replace(images_dir / SEED_NAME, seed)
        extract_zip(seed, project_dir)
        seed.unlink()
    for name in _plain_files(images_dir):
        if GCP_FOLDER_FILE.search(name):
            os.replace(images_dir / name, gcp_dir / name)
        elif name.lower().endswith(".zip"):
            (images_dir / name).unlink()
    images = _plain_files(images_dir)
    if max_images is not None and len(images) > max_images:
        raise IntakeError(f"{len(images)} images uploaded, but this node can only process up to {max_images}.")
    return images
