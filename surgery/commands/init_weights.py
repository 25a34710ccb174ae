"""Write random weights for a net, with exactly the shapes Caffe expects.

Activations stay O(1) through deep nets, so `verify` can compare a converted net
with its original without downloading pretrained weights: the per-channel mean and
variance of every blob are predicted from a standard-normal input as the weights are
drawn, convolutions are scaled to the input they will see, and BatchNorm statistics are
set near what their input is predicted to have. Measured in OpenCV DNN, every blob of
ResNet-152, VGG-16 and MobileNet keeps a standard deviation between 0.1 and 10
(softmax probabilities aside). The same --seed and layer name always give the same
numbers. The file is written as it is drawn, so memory stays flat at any model size.

Without --phase the weights cover the phase in which the net is complete, and both
when both are (a train_val file: its TRAIN-only layers get weights too).
"""

import json
import math

from ..analysis.analyse import parse_input_shapes
from ..errors import SurgeryError
from ..weights.initweights import init_weights
from . import options
from .output import (add_phase_argument, add_quiet_argument, add_strict_argument,
                     choose_phases, load, writing)

NAME = "init-weights"
HELP = "write random weights that keep activations O(1), streaming"


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
    add_quiet_argument(parser)


def run(args):
    with writing(args, [args.net], [args.output]) as (outputs, _progress):
        layers = _write(args, outputs)
        outputs.commit()
    if args.json:
        print(json.dumps({"output": args.output, "seed": args.seed, "layers": [
            {"name": l["name"], "type": l["type"], "shapes": [list(s) for s in l["shapes"]]}
            for l in layers]}, indent=2))
    else:
        count = sum(math.prod(s) for l in layers for s in l["shapes"])
        print(f"wrote {args.output}: {len(layers)} layers, {count} parameters (seed {args.seed})")
    return 0


def _write(args, outputs):
    loaded = load(args)
    numeric = loaded.numeric_placeholders
    if numeric:   # weights need every size; a template leaves some open
        line, col = loaded.position(numeric[0])
        raise SurgeryError(f"template placeholder {numeric[0].text} leaves a size open; "
                           "substitute the placeholders before making weights",
                           file=loaded.path, line=line, col=col)
    net = loaded.net
    shapes = parse_input_shapes(args.input_shape) if args.input_shape else None
    return init_weights(net, args.output, seed=args.seed, input_shapes=shapes,
                        inputs=(args.net,), phases=choose_phases(args, net), outputs=outputs)
