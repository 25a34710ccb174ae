"""`surgery.api.weights`: what a .caffemodel holds, read without loading a weight."""

from dataclasses import dataclass

from .base import Result


@dataclass
class Listed(Result):
    summary: object     # io.caffemodel.Summary: `.layers` (name, type, blobs), `.params`

    @property
    def layers(self):
        return self.summary.layers

    @property
    def params(self):
        return self.summary.params

    def to_json(self):
        return {"layers": [{"name": l.name, "type": l.type,
                            "blobs": [list(b.shape) for b in l.blobs]} for l in self.layers],
                "params": self.params}

    @property
    def text(self):
        from ..analysis.check import fmt_shape

        rows = [(l.name, l.type, ", ".join(fmt_shape(b.shape) for b in l.blobs) or "-",
                 f"{l.params:,}") for l in self.layers]
        head = ("layer", "type", "blobs", "params")
        widths = [max([len(head[i])] + [len(r[i]) for r in rows]) for i in range(4)]
        lines = []
        for row in [head] + rows:
            lines.append("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                                   for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
        with_blobs = sum(1 for l in self.layers if l.blobs)
        lines.append(f"{len(self.layers)} layers ({with_blobs} with blobs), "
                     f"{self.params:,} parameters")
        return "\n".join(lines) + "\n"


def weights(model):
    """List the layers, types and blob shapes of the .caffemodel at `model` (streamed: no
    weight is decoded, so a multi-GiB file is quick)."""
    from ..io.caffemodel import read_caffemodel

    return Listed(read_caffemodel(model))
