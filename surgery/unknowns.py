"""What a file leaves open, handed from the loader to the analysis.

Kept in its own module so loading a file (io/) never imports the analysis.
"""

from typing import NamedTuple


class Unknowns(NamedTuple):
    """By layer name: `values` -> paths (inside the layer) of fields a template leaves
    open; `opaque` -> why the layer's geometry cannot be known."""
    values: dict
    opaque: dict


NO_UNKNOWNS = Unknowns({}, {})
