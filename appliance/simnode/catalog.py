"""The ODM options a simulated node offers on `GET /options`, read from options.json."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from importlib import resources

from appliance.nodeodm.options import OptionSpec

# NodeODM adds these when skipPostProcessing is not 'true', so that ODM builds what NodeODM serves
POST_PROCESSING_OPTIONS = ("pc-ept", "cog", "gltf")


@cache
def _packaged_specs() -> tuple[OptionSpec, ...]:
    text = resources.files(__package__).joinpath("options.json").read_text(encoding="utf-8")
    return tuple(OptionSpec.from_json(item) for item in json.loads(text))


def load_catalog(cores: int) -> tuple[OptionSpec, ...]:
    """The option list, with max-concurrency defaulting to the node's cores as in ODM."""
    return tuple(replace(spec, value=str(cores)) if spec.name == "max-concurrency" else spec
                 for spec in _packaged_specs())
