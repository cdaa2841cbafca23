"""The context of `_products.html`, the products section of a task's page (filled by
webui/products_view.py). Apart from the other pages' contexts so that `webui/contexts.py` can hold it
in `TaskPage` without importing the routes that fill it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def doc(text: str) -> Any:
    """A dataclass field with its `help`, as in webui/contexts.py."""
    return field(metadata={"help": text})


@dataclass(frozen=True, slots=True)
class ProductRow:
    name: str = doc("what a responder calls it: 'Orthophoto'")
    what: str = doc("one line on what it is for")
    size: str = doc("its size, readable: '7.8 GB'")
    url: str = doc("where to download it on its own")


@dataclass(frozen=True, slots=True)
class ProductMap:
    footprint: str = doc("the orthophoto's corners as JSON [[lat, lon], ...]")
    tiles_url: str = doc("the orthophoto's tiles, {z}/{x}/{y} as web maps count them; '' when the zip has none")
    min_zoom: int = doc("the tiles' lowest zoom")
    max_zoom: int = doc("the tiles' highest zoom")
    overlay_url: str = doc("the preview, laid on the footprint when there are no tiles")


@dataclass(frozen=True, slots=True)
class ProductsSection:
    """`_products.html`: what a completed task made, and where its orthophoto lies."""

    shown: bool = doc("whether the task completed, so the section is drawn at all")
    note: str = doc("why the products cannot be listed now; '' when they are")
    products: list[ProductRow] = doc("each product, to download on its own")
    preview_url: str = doc("a small picture of the orthophoto; '' without one")
    map: ProductMap | None = doc("the map of the orthophoto; None when it cannot be placed")
    map_note: str = doc("one sentence on why there is no map; '' when there is one")
