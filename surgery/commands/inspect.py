"""Show a net's layers with Caffe-exact output shapes, cumulative stride and receptive field.

Shapes come from the net's Input layer or input header; override or supply them with
--input-shape NAME=N,C,H,W (repeatable). Totals cover parameters, FLOPs (multiply-adds)
and activation memory; the last line gives the output stride and receptive field at the
deepest blob that still lies on the image grid. Misaligned joins and the layer where
shape inference stopped (unknown or Python layers) are warnings, on stderr (and in the
JSON's "warnings").

Without --phase the net is analysed in the phase in which it is complete (a train file
whose data layer exists only in TRAIN: TRAIN), and in both when both are complete and
their layers differ (a train_val file: one table per phase; JSON adds `other_phases`).
"""

import json
import sys

from ..analysis.analyse import analyse, parse_input_shapes
from ..transform.plan import Options
from ..transform.reach import format_reachable, reachable
from ..report.text import format_table, to_json
from . import options
from .output import add_phase_argument, add_strict_argument, choose_phases, load

NAME = "inspect"
HELP = "show shapes, strides, receptive fields and costs of a net"


def add_arguments(parser):
    parser.add_argument("net", metavar="NET.prototxt", help="net definition")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=N,C,H,W",
                        type=options.input_shape,
                        help="shape of an input blob (repeatable)")
    add_phase_argument(parser, "analyse")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_strict_argument(parser)


def run(args):
    shapes = parse_input_shapes(args.input_shape)
    loaded = load(args)
    analyses = [(phase, analyse(loaded.net, input_shapes=shapes or None, phase=phase,
                                unknowns=loaded.unknowns))
                for phase in choose_phases(args, loaded.net)]
    for phase, analysis in analyses:
        where = f" (phase {phase})" if len(analyses) > 1 else ""
        for warning in analysis.warnings:
            print(f"caffe-surgery: warning: {warning}{where}", file=sys.stderr)
    found = _reachable(loaded, analyses[0][1], shapes or None)
    if args.json:
        (phase, first), others = analyses[0], analyses[1:]
        data = {"phase": phase, **to_json(first),
                "reachable_output_strides": [s for s, flags in found.items() if not flags],
                "reachable_with_flags": {str(s): list(flags) for s, flags in found.items()
                                         if flags}}
        if others:
            data["other_phases"] = {p: {"phase": p, **to_json(a)} for p, a in others}
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        if len(analyses) == 1:
            sys.stdout.write(format_table(analyses[0][1]))
        else:
            sys.stdout.write("\n".join(f"phase {p}\n{format_table(a)}" for p, a in analyses))
        if found:
            print(f"reachable output strides (dilate -s N --head cut): {format_reachable(found)}")
    return 0


def _reachable(loaded, analysis, shapes):
    """What `dilate -s N --head cut` accepts, with the flags each stride needs; {} when
    the net has no known stride."""
    if analysis.deepest_blob() is None:
        return {}
    return reachable(loaded.net, Options(1, head="cut"), analysis=analysis,
                     input_shapes=shapes, unknowns=loaded.unknowns)
