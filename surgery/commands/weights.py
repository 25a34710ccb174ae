"""List what a .caffemodel holds: each layer's name, type and blob shapes.

Reads the file's structure without loading any weights, so it is quick and
light even on multi-GiB models. V1 (`layers`) files show the type their enum
upgrades to; blobs stored with legacy num/channels/height/width dims show
those four dims. --json prints {"layers": [{"name", "type", "blobs"}], "params"}.
"""

import json

from ..analysis.check import fmt_shape
from ..io.caffemodel import read_caffemodel

NAME = "weights"
HELP = "list the layers and blob shapes stored in a .caffemodel"


def add_arguments(parser):
    parser.add_argument("model", metavar="MODEL.caffemodel", help="weights file to list")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def as_dict(summary):
    return {"layers": [{"name": l.name, "type": l.type,
                        "blobs": [list(b.shape) for b in l.blobs]} for l in summary.layers],
            "params": summary.params}


def format_table(summary):
    rows = [(l.name, l.type, ", ".join(fmt_shape(b.shape) for b in l.blobs) or "-",
             f"{l.params:,}") for l in summary.layers]
    head = ("layer", "type", "blobs", "params")
    widths = [max([len(head[i])] + [len(r[i]) for r in rows]) for i in range(4)]
    lines = []
    for row in [head] + rows:
        lines.append("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    with_blobs = sum(1 for l in summary.layers if l.blobs)
    lines.append(f"{len(summary.layers)} layers ({with_blobs} with blobs), "
                 f"{summary.params:,} parameters")
    return "\n".join(lines)


def run(args):
    summary = read_caffemodel(args.model)
    if args.json:
        print(json.dumps(as_dict(summary)))
    else:
        print(format_table(summary))
    return 0
