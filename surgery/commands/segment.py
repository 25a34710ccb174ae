"""Turn a classification backbone into a trainable segmentation net (DeepLab v2/v3/v3+, PSPNet).

The backbone is rewritten to --output-stride with `dilate`'s exact rule and its classifier
is cut (as `dilate --head cut`; --cut-after BLOB picks the trunk instead); its BatchNorm and
Scale layers are frozen (use_global_stats, lr_mult 0) unless --train-bn. A head is put on
its last blob:
  aspp           DeepLab v2 ASPP: 3x3 convolutions fc1_c0.. to the classes at rates
                 6,12,18,24 at stride 8 (3,6,9,12 at 16; --rates overrides), summed;
  deeplabv3      DeepLab v3 ASPP: image pooling (Tile back to the map), a 1x1 and 3x3
                 branches at 6,12,18 at stride 16 (12,24,36 at 8), 256 each with BN;
                 Concat, 1x1 256 projection, classifier;
  deeplabv3plus  the v3 ASPP and DeepLab v3+'s decoder at the trunk's stride-4 blob;
  psp            PSPNet pyramid pooling on --bins (1,2,3,6) bins of the map at --crop;
  largefov       DeepLab-LargeFOV on a VGG-style net: fc6/fc7 through `fcn`, fc6
                 decimated to 3x3x1024 (dilation 12 at stride 8), a 1x1 classifier.
--scales 1,0.75,0.5 builds DeepLab v2's multi-scale nets (weights shared by param name,
scores fused by Eltwise MAX, one loss per scale and one for the fused scores).

The train net (-o) reads images and labels with DeepLab's ImageSegData (--data imagesegdata;
its list and folder are ${TRAIN_LIST} and ${DATA_ROOT} placeholders to substitute) or with
Input layers (--data input), brings label and score to one grid and adds SoftmaxWithLoss
(--ignore-label) and an Accuracy. --upsample interp samples the label at the score pixels'
centres with DeepLab's Interp; --upsample deconv keeps to BVLC layers: the scores are
upsampled by a fixed bilinear Deconvolution and cropped to the full-size label. The deploy
net (--deploy) has an Input at the crop size and the same upsampling. --solver writes
DeepLab's poly-schedule solver for the train net.

--weights BACKBONE.caffemodel --weights-out INIT.caffemodel copies the backbone's layers
byte for byte (fcn-converted layers rebuilt) and appends every new layer, initialised from
its fillers; --weights-out alone writes the new layers only. See docs/segment.md.

The summary lists what was added and the receptive field of each head branch in image
pixels. Exit status: 0 written; 2 bad input or an impossible request (nothing is written).
"""

import json
import sys

from .. import api
from ..transform.segment import DATA_CHOICES, HEADS, UPSAMPLE_CHOICES
from . import options
from .output import add_quiet_argument, add_strict_argument, tell, writing

NAME = "segment"
HELP = "add a DeepLab/PSPNet segmentation head, label branch and loss to a backbone"


def add_arguments(parser):
    parser.add_argument("net", metavar="BACKBONE.prototxt", help="classification backbone")
    parser.add_argument("--head", required=True, choices=list(HEADS), help="head kind")
    parser.add_argument("--classes", required=True, type=options.positive_int, metavar="N",
                        help="number of classes (21 for PASCAL VOC)")
    parser.add_argument("--output-stride", "-s", type=options.positive_int, default=8,
                        metavar="N", help="output stride of the trunk (default 8)")
    parser.add_argument("--crop", type=options.crop, metavar="H[,W]",
                        help="training crop (default 321; 473 for psp)")
    parser.add_argument("--rates", type=options.positive_ints, metavar="A,B,...",
                        help="ASPP dilations at the chosen stride (default aspp 6,12,18,24 x "
                             "8/stride; deeplabv3/plus 6,12,18 x 16/stride)")
    parser.add_argument("--bins", type=options.positive_ints, metavar="A,B,...",
                        help="PSP pyramid bin counts (default 1,2,3,6)")
    parser.add_argument("--data", choices=DATA_CHOICES, default="imagesegdata",
                        help="train data layer: DeepLab's ImageSegData (default) or Input")
    parser.add_argument("--upsample", choices=UPSAMPLE_CHOICES, default="interp",
                        help="interp (DeepLab's Interp, default) or deconv (BVLC layers only)")
    parser.add_argument("--ignore-label", type=options.integer, default=255, metavar="L",
                        help="label value the loss ignores (default 255)")
    parser.add_argument("--scales", type=options.scales, metavar="1,S,...",
                        help="DeepLab v2's multi-scale nets, e.g. 1,0.75,0.5")
    parser.add_argument("--train-bn", action="store_true",
                        help="learn the backbone's BatchNorm/Scale (default: frozen)")
    parser.add_argument("--cut-after", metavar="BLOB", type=options.name,
                        help="put the head on BLOB, dropping what follows it")
    parser.add_argument("--weights", metavar="BACKBONE.caffemodel",
                        help="the backbone's weights (with --weights-out)")
    parser.add_argument("--weights-out", metavar="INIT.caffemodel", type=options.output_file,
                        help="backbone weights (with --weights) plus initialised head layers")
    parser.add_argument("--seed", type=options.seed, default=0,
                        help="seed of the random head fillers (default 0)")
    parser.add_argument("-o", "--output", required=True, metavar="TRAIN.prototxt",
                        type=options.output_file, help="where to write the train net")
    parser.add_argument("--deploy", metavar="DEPLOY.prototxt", type=options.output_file,
                        help="where to write the deploy net")
    parser.add_argument("--solver", metavar="SOLVER.prototxt", type=options.output_file,
                        help="write DeepLab's poly-schedule solver for the train net")
    parser.add_argument("--max-iter", type=options.positive_int, default=20000, metavar="N",
                        help="solver iterations (default 20000)")
    parser.add_argument("--iter-size", type=options.positive_int, metavar="N",
                        help="solver iter_size (default: a batch of 10)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_strict_argument(parser)
    add_quiet_argument(parser)


def run(args):
    inputs = [args.net] + ([args.weights] if args.weights else [])
    targets = (args.output, args.deploy, args.weights_out, args.solver)
    with writing(args, inputs, targets) as (outputs, progress):
        result = api.segment(args.net, head=args.head, classes=args.classes,
                         output_stride=args.output_stride, crop=args.crop, rates=args.rates,
                         bins=args.bins, data=args.data, upsample=args.upsample,
                         ignore_label=args.ignore_label, scales=args.scales,
                         train_bn=args.train_bn, cut_after=args.cut_after,
                         weights=args.weights, weights_out=args.weights_out, seed=args.seed,
                         output=args.output, deploy=args.deploy, solver=args.solver,
                         max_iter=args.max_iter, iter_size=args.iter_size,
                         strict=args.strict, outputs=outputs, on_message=tell,
                         progress=progress)
        outputs.commit()
    sys.stdout.write(json.dumps(result.to_json(), indent=1) + "\n" if args.json else result.text)
    return 0
