"""Rewrite a fork's layers to BVLC Caffe's own layer types, wherever an exact form exists.

PSPNet's BN becomes BatchNorm (its stored statistics, its eps) and a Scale with a bias;
SegNet/ENet's inference BN a Scale; ConvolutionDepthwise a Convolution with one group per
channel; ReLU6 a Clip from 0 to 6; the fork field ceil_mode BVLC's round_mode; SENet's
Axpy a Reshape, a two-bottom Scale and an Eltwise sum; an Interp that only zooms by a
whole factor z a per-channel Deconvolution with the bilinear kernel (stride z, 2z-1
taps); YOLO v3's nearest Upsample a per-channel Deconvolution of ones. Each is the same
arithmetic (up to float rounding order; the Scale and Upsample forms bit for bit). Layers
with no BVLC form (other Interps, SegNet's Upsample, ShuffleChannel, data
readers of forks...) stay as they are and are listed; --strict refuses them instead.

The net is written as a minimal edit of the input; with --weights, the weights are
streamed: the rewritten layers' blobs reshaped to the shapes BVLC checks (BatchNorm and
Scale take 1-D blobs) or made (BatchNorm's moving-average factor 1), every other layer
copied byte for byte. `caffe-surgery verify NET OUT --weights IN --weights-converted
OUT.caffemodel` proves the result computes what the original did.

Exit status: 0 written; 2 bad input, or with --strict a layer with no BVLC form
(nothing is written).
"""

from .. import api
from . import options
from .output import add_output_arguments, run_edit, tell

NAME = "bvlc"
HELP = "rewrite fork layers (PSPNet BN, depthwise, ReLU6...) to exact BVLC Caffe layers"


def add_arguments(parser):
    parser.add_argument("net", metavar="NET.prototxt", help="net definition")
    parser.add_argument("--weights", metavar="IN.caffemodel", help="the trained weights of NET")
    parser.add_argument("--weights-out", metavar="OUT.caffemodel", type=options.output_file,
                        help="where to write the weights of the rewritten net")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=N,C,H,W",
                        type=options.input_shape,
                        help="the size of an input the net does not give (a data layer's "
                             "tops): a form that names a channel count (a zoom Interp, a "
                             "nearest Upsample) needs its input's shape (repeatable)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a net that keeps a layer with no BVLC form, or a field "
                             "the schema does not know (default: keep them, and list the layers)")
    add_output_arguments(parser)


def run(args):
    from ..analysis.analyse import parse_input_shapes

    shapes = parse_input_shapes(args.input_shape) or None

    def call(outputs, progress):
        return api.bvlc(args.net, weights=args.weights, weights_out=args.weights_out,
                        input_shapes=shapes,
                        output=args.output, dry_run=args.dry_run, canonical=args.canonical,
                        diff=bool(args.diff), strict=args.strict, outputs=outputs,
                        on_message=tell, progress=progress)
    return run_edit(args, call)
