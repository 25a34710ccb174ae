"""What a report says about one net or a conversion.

A conversion's statuses, exact blobs, common grid and input-size condition are the
judgement every command reads (transform/judge.py, transform/conversion.py): the two
files judged as `dilate` judges its own result. Nothing here decides them again.
"""

from typing import NamedTuple

from ...transform.conversion import NEW, REMOVED, STATUSES, SizeCondition
from ...transform.judge import judge
from ...transform.regrid import ADAPTED, APPROXIMATE, EXACT

ADDED = NEW
__all__ = ["Side", "Report", "SizeCondition", "compare", "STATUSES", "EXACT", "APPROXIMATE",
           "ADAPTED", "REMOVED", "ADDED"]


class Side(NamedTuple):
    """One net of the report: its file, its NetFile (from load_net) and its Analysis."""
    path: str
    loaded: object
    analysis: object


class Report(NamedTuple):
    before: Side
    after: object          # Side, or None for a one-net report
    status: dict           # layer name -> status or None, over both nets
    approximate: set       # layer names marked APPROXIMATE
    grid: object           # (blob, factor, offset) of the deepest changed exact blob, or None
    sizes: object          # SizeCondition, or None for a one-net report

    @property
    def drawn(self):
        """The net whose layers and shapes the page shows (the converted one, if any)."""
        return self.after or self.before

    def changed(self):
        return [name for name, s in self.status.items() if s is not None]


def compare(before, after, *, input_shapes=None, phase="TEST"):
    """The Report for one Side, or for a conversion `before` -> `after`."""
    if after is None:
        return Report(before, None, {n.name: None for n in before.analysis.graph.nodes},
                      set(), None, None)
    judged = judge(before.loaded.net, after.loaded.net, input_shapes=input_shapes, phase=phase,
                   unknowns=(before.loaded.unknowns, after.loaded.unknowns))
    status = judged.statuses()
    approximate = {name for name, s in status.items() if s == APPROXIMATE}
    blob = judged.deepest
    grid = (blob, *judged.grids[blob]) if blob is not None else None
    return Report(before, after, status, approximate, grid, judged.sizes)
