"""A small picture of an orthophoto, for the task's page.

Pillow decodes it (through libtiff for a GeoTIFF: deflate, LZW and JPEG alike). A large orthophoto is
never decoded whole: ODM adds reduced copies inside the GeoTIFF (overviews), and the smallest one that
is still big enough is used; a picture larger than MAX_DECODE_PIXELS is refused instead.
"""

from __future__ import annotations

import io
import logging
from typing import BinaryIO

from PIL import Image

log = logging.getLogger("passel.products")
PREVIEW_SIDE = 1024  # pixels along the longer side
MAX_DECODE_PIXELS = 60_000_000  # about 240 MB as RGBA: what a field box can spare for a moment


class NoPreview(Exception):
    """No picture can be drawn; the message says why in one sentence."""


def _best_frame(image: Image.Image) -> None:
    """Seek to the smallest image in the file that is still PREVIEW_SIDE wide, or the largest one that
    can be decoded (masks and other kinds of image in the file are passed over)."""
    mode, choices = image.mode, []
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        width, height = image.size
        if image.mode == mode and width * height <= MAX_DECODE_PIXELS:
            choices.append((max(width, height), index))
    if not choices:
        raise NoPreview("the orthophoto is too large to preview and has no reduced copies (overviews)")
    big_enough = [c for c in choices if c[0] >= PREVIEW_SIDE]
    image.seek(min(big_enough)[1] if big_enough else max(choices)[1])


def render_preview(source: BinaryIO) -> bytes:
    """A PNG at most PREVIEW_SIDE pixels along its longer side, transparency kept."""
    try:
        with Image.open(source) as image:
            _best_frame(image)
            image.load()
            picture = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    except NoPreview:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on a damaged, empty or unusual file
        raise NoPreview(f"the orthophoto could not be read as a picture ({exc})") from None
    picture.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()
