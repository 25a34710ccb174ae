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
import sys

from ..analysis.analyse import parse_input_shapes
from .. import api
from . import options
from .output import (add_phase_argument, add_quiet_argument, add_strict_argument, tell,
                     writing)

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
    with writing(args, [args.net], [args.output]) as (outputs, progress):
        result = api.init_weights(args.net, args.output, seed=args.seed,
                              input_shapes=parse_input_shapes(args.input_shape),
                              phase=args.phase, strict=args.strict, outputs=outputs,
                              on_message=tell, progress=progress)
        outputs.commit()
    sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n" if args.json else result.text)
    return 0
