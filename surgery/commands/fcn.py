"""Make a classifier fully convolutional: InnerProduct layers become Convolutions.

An InnerProduct on a CxHxW map becomes a Convolution with an HxW kernel (later ones, on
1x1 maps, become 1x1 convolutions); num_output and bias_term stay. The weights are the
same numbers reshaped row-major (N, C*H*W) -> (N, C, H, W), written under new layer names
(--rename, default '{name}-conv'), because Caffe matches weights by name. Reshape layers
(Flatten) in front of a converted layer are bypassed: the convolution reads the 4-D map.

--pad same (default; DeepLab, SSD) pads floor((extent-1)/2) so a larger input keeps its
size and the fc output sits at the centre position; --pad valid (FCN) pads nothing, so
at the original input size the output is 1x1 and equals the fc output.

--decimate fc6=3x3:1024 (DeepLab-LargeFOV, SSD's reduced fc6) keeps taps 0,3,6 of a 7x7
kernel (evenly spaced, step (K-1)/(k-1), which becomes the dilation) and output channels
0,4,8,... (step N/n); the next converted layer drops the matching input channels. Run
`caffe-surgery dilate` afterwards to reach output stride 8 or 16.

The new .caffemodel is streamed: untouched layers are copied byte for byte, converted
layers are rebuilt one at a time.

Exit status: 0 written, 2 bad input (nothing is written).
"""

from ..analysis.analyse import parse_input_shapes
from .. import api
from ..transform.fcn import PAD_CHOICES
from . import options
from .output import add_output_arguments, run_edit, tell

NAME = "fcn"
HELP = "turn InnerProduct layers into convolutions, transplanting their weights"


def add_arguments(parser):
    parser.add_argument("net", metavar="NET.prototxt", help="net definition")
    parser.add_argument("--weights", metavar="IN.caffemodel",
                        help="trained weights of NET (converted into --weights-out)")
    parser.add_argument("--weights-out", metavar="OUT.caffemodel", type=options.output_file,
                        help="where to write the converted weights")
    parser.add_argument("--pad", choices=PAD_CHOICES, default="same",
                        help="same (default): output keeps the input size; valid: no padding")
    parser.add_argument("--rename", default="{name}-conv", metavar="PATTERN",
                        type=options.rename_pattern,
                        help="new layer names, {name} is the old one (default '{name}-conv')")
    parser.add_argument("--decimate", action="append", default=[], metavar="LAYER=KxK:N",
                        type=options.decimate,
                        help="subsample a converted layer's kernel taps and output channels, "
                             "e.g. fc6=3x3:1024 (repeatable)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=N,C,H,W",
                        type=options.input_shape,
                        help="input size that fixes the fc kernels' sizes (repeatable)")
    add_output_arguments(parser)


def run(args):
    shapes = parse_input_shapes(args.input_shape) or None

    def call(outputs, progress):
        return api.fcn(args.net, weights=args.weights, weights_out=args.weights_out,
                       pad=args.pad, rename=args.rename, decimate=args.decimate,
                       input_shapes=shapes, output=args.output, dry_run=args.dry_run,
                       canonical=args.canonical, diff=bool(args.diff), strict=args.strict,
                       outputs=outputs, on_message=tell, progress=progress)
    return run_edit(args, call)
