"""Check, without running Caffe, that a .caffemodel loads into a net.

Does what Caffe's Net::CopyTrainedLayersFrom does: layers are matched by
name; weights for layers the net lacks are ignored (listed as unused); a
matched layer needs exactly as many blobs as it has params, each of the
param's shape (legacy 4-D blob dims are accepted when Caffe accepts them).
Net layers with params that get no weights are listed as not initialised.
Exit status 0 when every layer with params loads, 1 otherwise.

Param shapes of InnerProduct layers depend on the input size: when the net
declares none, give one with --input-shape data=1,3,224,224.
"""

import json

from ..check import compare, format_report, whole_shapes
from ..errors import SurgeryError
from ..io.caffemodel import read_caffemodel
from .output import add_strict_argument, load

NAME = "check"
HELP = "check that a .caffemodel's blobs fit a net (what Caffe checks when loading weights)"


def add_arguments(parser):
    parser.add_argument("net", metavar="NET.prototxt", help="net definition")
    parser.add_argument("model", metavar="MODEL.caffemodel", help="weights to load into it")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=N,C,H,W",
                        help="shape of an input blob (repeatable)")
    parser.add_argument("--phase", choices=("TEST", "TRAIN"), default="TEST",
                        help="which phase's layers to check (default TEST)")
    parser.add_argument("--problems", action="store_true",
                        help="list only layers that are not ok")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_strict_argument(parser)


def parse_input_shapes(specs):
    """{'data': (1, 3, 224, 224)} from ['data=1,3,224,224']."""
    shapes = {}
    for spec in specs:
        name, sep, dims = spec.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d <= 0 for d in shape):
            raise SurgeryError(f"--input-shape {spec!r}: expected NAME=N,C,H,W with positive sizes")
        shapes[name] = shape
    return shapes


def expected_param_shapes(net_path, *, input_shapes=None, phase="TEST", args=None):
    """({layer: [shape, ...]}, {layer: why its shapes are unknown}) for the phase-filtered
    net, from the analysis module. A shape a template placeholder leaves open is None."""
    from ..analysis import analyse  # imported late: only this command needs the analysis stack

    loaded = load(args, net_path)   # args None: not strict
    analysis = analyse(loaded.net, input_shapes=input_shapes or None, phase=phase,
                       unknowns=loaded.unknowns)
    return whole_shapes(analysis.param_shapes), analysis.unknown_reasons()


def run(args):
    input_shapes = parse_input_shapes(args.input_shape)
    summary = read_caffemodel(args.model)
    expected, why = expected_param_shapes(args.net, input_shapes=input_shapes, phase=args.phase,
                                          args=args)
    report = compare(expected, summary, why)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(format_report(report, show_ok=not args.problems))
    return 0 if report.ok else 1
