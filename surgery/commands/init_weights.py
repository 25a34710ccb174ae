"""Write random weights for a net, with exactly the shapes Caffe expects.

The weights are variance-preserving (He-style convolutions, BatchNorm
variance in 0.5..1.5, Scale near 1), so activations stay O(1) through deep
nets and `verify` can compare a converted net with its original without
downloading pretrained weights. The same --seed and layer name always give
the same numbers.

Without --phase the weights cover the phase in which the net is complete, and both
when both are (a train_val file: its TRAIN-only layers get weights too).
"""

import json

from ..analysis import parse_input_shapes
from ..errors import SurgeryError
from ..initweights import random_weights
from ..io.atomic import guard_output
from ..io.caffemodel import write_caffemodel
from . import options
from .output import add_phase_argument, add_strict_argument, choose_phases, load

NAME = "init-weights"
HELP = "write random (variance-preserving) weights for a net"


def add_arguments(parser):
    parser.add_argument("net", metavar="NET.prototxt", help="net definition")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.caffemodel",
                        type=options.output_file, help="where to write the weights")
    parser.add_argument("--seed", type=options.seed, default=0, help="random seed (default 0)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=N,C,H,W",
                        type=options.input_shape,
                        help="input blob size when the net does not declare it (repeatable)")
    add_phase_argument(parser, "make weights for")
    parser.add_argument("--json", action="store_true", help="print the layers written as JSON")
    add_strict_argument(parser)


def run(args):
    loaded = load(args)
    numeric = loaded.numeric_placeholders
    if numeric:   # weights need every size; a template leaves some open
        line, col = loaded.position(numeric[0])
        raise SurgeryError(f"template placeholder {numeric[0].text} leaves a size open; "
                           "substitute the placeholders before making weights",
                           file=loaded.path, line=line, col=col)
    net = loaded.net
    shapes = parse_input_shapes(args.input_shape) if args.input_shape else None
    guard_output(args.output, [args.net])
    by_name = {}
    for phase in choose_phases(args, net):
        for layer in random_weights(net, seed=args.seed, input_shapes=shapes, phase=phase):
            first = by_name.setdefault(layer["name"], layer)
            if [b.shape for b in first["blobs"]] != [b.shape for b in layer["blobs"]]:
                raise SurgeryError("its weight shapes differ between the TEST and TRAIN "
                                   "phases; choose one with --phase", layer=layer["name"])
    layers = list(by_name.values())
    write_caffemodel(args.output, layers, name=net.name or None)
    if args.json:
        print(json.dumps({"output": args.output, "seed": args.seed, "layers": [
            {"name": l["name"], "type": l["type"], "shapes": [list(b.shape) for b in l["blobs"]]}
            for l in layers]}, indent=2))
    else:
        count = sum(b.size for l in layers for b in l["blobs"])
        print(f"wrote {args.output}: {len(layers)} layers, {count} parameters (seed {args.seed})")
    return 0
