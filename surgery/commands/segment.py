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

from ..analysis.analyse import analyse
from ..analysis.check import compare, merge, wanted_shapes
from ..errors import SurgeryError
from ..io.caffemodel import read_caffemodel
from ..io.prototxt import format_prototxt
from ..layers import rule_for
from ..transform.segment import (DATA_CHOICES, HEADS, UPSAMPLE_CHOICES, segment, solver,
                                 write_weights)
from . import options
from .output import add_quiet_argument, add_strict_argument, load, writing

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
    if args.weights and not args.weights_out:
        raise SurgeryError("--weights is read to write --weights-out INIT.caffemodel (the "
                           "backbone's layers plus the new ones); give --weights-out")
    inputs = [args.net] + ([args.weights] if args.weights else [])
    targets = (args.output, args.deploy, args.weights_out, args.solver)
    with writing(args, inputs, targets) as (outputs, _):
        return _run(args, outputs)


def _run(args, outputs):
    loaded = load(args)
    numeric = loaded.numeric_placeholders
    if numeric:
        line, col = loaded.position(numeric[0])
        raise SurgeryError(f"template placeholder {numeric[0].text} leaves a size open; "
                           "substitute the placeholders first", file=loaded.path, line=line,
                           col=col)
    result = segment(loaded.net, head=args.head, classes=args.classes,
                     output_stride=args.output_stride, crop=args.crop, rates=args.rates,
                     bins=args.bins, data=args.data, upsample=args.upsample,
                     ignore_label=args.ignore_label, cut_after=args.cut_after,
                     train_bn=args.train_bn, scales=args.scales, unknowns=loaded.unknowns)
    written = None
    if args.weights_out:
        written = write_weights(result, args.weights, args.weights_out, seed=args.seed,
                                outputs=outputs)
        summary = read_caffemodel(outputs.staged(args.weights_out))
        expect = [wanted_shapes(analyse(n)) for n in (result.train, result.deploy)]
        if not args.weights:    # the new layers only: the backbone's come from its file
            expect = [{k: v for k, v in e.items() if k in written} for e in expect]
        if not merge([compare(e, summary) for e in expect]).ok:
            raise SurgeryError("internal error: the written weights do not load into the "
                               "nets (nothing written)")
    outputs.write(args.output, format_prototxt(result.train).encode("utf-8"))
    if args.deploy:
        outputs.write(args.deploy, format_prototxt(result.deploy).encode("utf-8"))
    if args.solver:
        rest = solver(result, args.output, max_iter=args.max_iter, iter_size=args.iter_size)
        first = type(rest)(net=rest.net)        # `net:` first, as solver files have it
        rest.ClearField("net")
        outputs.write(args.solver, (format_prototxt(first) + format_prototxt(rest)).encode("utf-8"))
    outputs.commit()
    if args.json:
        data = result.report.to_json()
        data["files"] = {"train": args.output, "deploy": args.deploy,
                         "weights": args.weights_out, "solver": args.solver}
        data["weights_added"] = written
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
    else:
        sys.stdout.write(format_summary(result, args, written))
    return 0


def _filler(f):
    kind = f.type or "constant"
    if kind == "constant":
        return f"{f.value:g}"
    if kind == "gaussian":
        return f"gaussian std {f.std:g}"
    return kind


def format_summary(result, args, written):
    r = result.report
    d = r.dilate
    rewritten = [c for c in d.changes if c.action == "rewrite"]
    lines = [f"segment: {r.head} head, {r.classes} classes, output stride {r.output_stride}, "
             f"crop {r.crop.h}x{r.crop.w}",
             f"backbone: trunk '{r.trunk}' {'x'.join(map(str, r.trunk_shape))}; dilate rewrote "
             f"{len(rewritten)} layers ({'exact' if d.exact else 'approximate'})"
             + (f"; cut {', '.join(r.cut)}" if r.cut else "")]
    if r.frozen:
        lines.append(f"  {r.frozen}")
    if r.fcn is not None:
        lines.append("  fcn: " + ", ".join(f"{p.source} -> {p.target}" for p in r.fcn.layers)
                     + " (fc6 decimated)")
    lines.append(f"head: {r.settings}; score {'x'.join(map(str, r.score_shape))}")
    if r.scales:
        lines.append("  scales (weights shared by param name, fused by Eltwise MAX): "
                     + ", ".join(f"{float(s):g} '{blob}' {'x'.join(map(str, shape[2:]))}"
                                 for s, blob, shape in r.scales))
    lines.append("  receptive field of each branch, in image pixels:")
    width = max(len(label) for label, _, _ in r.branches) if r.branches else 4
    for label, blob, rf in r.branches:
        size = f"{rf.h}" if rf.h == rf.w else f"{rf.h}x{rf.w}"
        lines.append(f"    {label:<{width}}  {blob:<24} {size}")
    layers = {layer.name: layer for n in (result.train, result.deploy) for layer in n.layer}
    for what, path, added, note in (("train", args.output, r.added_train, r.label),
                                    ("deploy", args.deploy, r.added_deploy, r.output)):
        if what == "deploy" and not path:
            continue
        own = [(n, t) for n, t in added if n not in r.copies]
        shown = [(n, t) for n, t in own if list(layers[n].top) != list(layers[n].bottom)]
        more = [f"{len(own) - len(shown)} of them in place (BatchNorm, Scale, ReLU, Dropout)"] \
            if len(shown) < len(own) else []
        more += [f"{len(added) - len(own)} the other scales' copies"] \
            if len(own) < len(added) else []
        lines.append(f"{what} net {path}: {len(added)} layers added"
                     + "".join(f", {m}" for m in more))
        lines.append("  " + ", ".join(f"{n} ({t})" for n, t in shown))
        lines.append(f"  {note}")
    if written is not None:
        lines.append(f"weights {args.weights_out}: the backbone's layers copied from "
                     f"{args.weights}; {len(written)} new layers:" if args.weights else
                     f"weights {args.weights_out}: the {len(written)} new layers only (no "
                     f"--weights); train with --weights BACKBONE.caffemodel,"
                     f"{args.weights_out} so Caffe loads the backbone's too:")
        sources = {p.target: p for p in (result.fcn.layers if result.fcn is not None else [])}
        for name in written:
            layer = layers[name]
            if name in sources:
                p = sources[name]
                lines.append(f"  {name} ({layer.type}): {'x'.join(map(str, p.weight_shape))}"
                             f"{', ' + str(p.num_output // p.out_step) if p.bias else ''} "
                             f"rebuilt from {p.source} by fcn")
                continue
            shapes = r.new_params[name]
            fills = rule_for(layer.type).fillers(layer)
            parts = [f"{'x'.join(map(str, s))} {_filler(f)}" for s, f in zip(shapes, fills)]
            lines.append(f"  {name} ({layer.type}): {'; '.join(parts)}")
        lines.append("  check: loads into the train and deploy nets")
    if args.solver:
        lines.append(f"solver {args.solver}: net \"{args.output}\", base_lr {r.base_lr:g}, "
                     f"lr_policy poly (power 0.9), momentum 0.9, weight_decay 0.0005, "
                     f"max_iter {args.max_iter}")
    lines.extend(f"note: {n}" for n in r.notes)
    return "\n".join(lines) + "\n"
