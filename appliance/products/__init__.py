"""A completed task's products, read straight from its all.zip: which there are, their bytes, where
the orthophoto lies on the ground, and a small picture of it."""

from PIL import Image

# Pillow refuses to even open a picture over ~180 million pixels, and a large orthophoto is more; this
# package reads such files' tags and their reduced copies only, and bounds what it decodes itself
# (preview.MAX_DECODE_PIXELS).
Image.MAX_IMAGE_PIXELS = None
