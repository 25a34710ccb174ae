"""From a classification backbone to a trainable segmentation net (DeepLab v2, PSPNet).

`segment(net, head=..., classes=...)` returns a train net, a deploy net and a report:
1. the backbone goes through `dilate`'s exact rule to the output stride asked for, its
   classifier cut as `dilate --head cut` does (or everything after `cut_after`);
2. a head from the HEADS table is appended to the backbone's last blob (the trunk);
3. the train net reads images and labels (DeepLab's ImageSegData, or Input layers), brings
   the label to the score grid and adds SoftmaxWithLoss(ignore_label) and an Accuracy; the
   deploy net has an Input at the crop size and upsamples the score to image resolution.

Every size comes from the registry through `analyse` (the trunk's map at the crop, the
pooled bins, the label and score sizes, the upsampled size); the grid geometry gives where
the score pixels sit on the image. Label and score are put on one grid:
- `upsample="interp"`: DeepLab's `Interp` samples the label at the centres of the score
  pixels' receptive fields: shrink_factor = output stride, and pad_beg/pad_end (crops,
  DeepLab's own Interp fields) so that sample j lands on image pixel c + S*j, where c is the
  score's centre offset and S its stride. On a DeepLab-style trunk (c = 0, crop S*k+1) both
  pads are 0, as in DeepLab's own files. The deploy net zooms the score by S with Interp.
- `upsample="deconv"` (BVLC layers only): the score is upsampled to the image instead, as
  FCN does: a Deconvolution with Caffe's bilinear filler (kernel 2S - S%2, stride S, one
  group per class, not learned) and a Crop to the data blob, whose offset puts the kernel
  centres on the score pixels' centres (to half a pixel for even S). The loss then compares
  with the full-size label, so no label layer outside BVLC Caffe is needed. Same in deploy.

A head kind is one HeadKind entry: what it does to the backbone first (`prepare`), which
pooling policy the dilation needs, and `build`, which appends its layers through a
NetBuilder and returns the score blob and the branches whose field of view the summary
reports. Adding a head is adding an entry.

New layers carry the fillers DeepLab and PSPNet use (Gaussian std 0.01 and zero bias for
the classifier convs, MSRA for the PSP convs, identity BatchNorm statistics, Scale 1/0,
bilinear upsampling), and `head_weights` turns those fillers into values.
"""

from fractions import Fraction
from typing import Callable, NamedTuple, Optional

from .. import caffe_pb2
from ..analysis.analyse import analyse
from ..builder import NetBuilder, fill
from ..errors import SurgeryError
from ..pair import Pair
from . import fcn as fcn_pass
from .dilate import dilate

DATA_CHOICES = ("imagesegdata", "input")
UPSAMPLE_CHOICES = ("interp", "deconv")
ASPP_RATES_AT_8 = (6, 12, 18, 24)     # DeepLab v2 ASPP-L at output stride 8
PSP_BINS = (1, 2, 3, 6)
MEAN_BGR = (104.008, 116.669, 122.675)  # DeepLab's ImageSegData mean values
CLASSIFIER = {"weight_filler": {"type": "gaussian", "std": 0.01},
              "bias_filler": {"type": "constant", "value": 0}}
HEAD_LR = [{"lr_mult": 10, "decay_mult": 1}, {"lr_mult": 20, "decay_mult": 0}]


class HeadContext(NamedTuple):
    builder: NetBuilder     # the head's layers are appended here
    trunk: str              # the backbone's last blob
    trunk_shape: tuple      # its (N, C, H, W) at the crop size, from the registry
    classes: int
    output_stride: int
    rates: Optional[list]
    bins: Optional[list]


class HeadOut(NamedTuple):
    score: str              # the blob of class scores
    branches: list          # [(label, blob)] whose receptive field the summary gives
    settings: str           # one line: the rates, the bins...
    expect: tuple = ()      # (blob, (h, w)) the head means to make; checked by the registry


class BinsDoNotFit(SurgeryError):
    """A pyramid bin count does not divide the trunk's map; `segment` names crops that fit."""

    def __init__(self, message, bins):
        super().__init__(message)
        self.bins = bins


class HeadKind(NamedTuple):
    name: str
    about: str
    default_crop: int
    pooling: str            # dilate's --pooling for this kind's backbones
    build: Callable         # HeadContext -> HeadOut
    prepare: Optional[Callable] = None   # (net, unknowns) -> (net, fcn plan, cut_after)
    takes: tuple = ()       # which of --rates, --bins apply


# ---------------------------------------------------------------------------
# Layer helpers: parameters and fillers of new layers
# ---------------------------------------------------------------------------

def _params(layer, specs, **fields):
    fill(layer, {"param": specs, **fields}, where=layer.name)
    return layer


def _classifier(b, name, bottom, ctx, *, kernel=1, rate=1):
    b.conv(name, bottom, num_output=ctx.classes, kernel=kernel, pad=rate * (kernel // 2),
           dilation=rate)
    _params(b.net.layer[-1], HEAD_LR, convolution_param=CLASSIFIER)
    return name


def _conv_bn_relu(b, name, bottom, *, num_output, kernel):
    """PSPNet's unit: conv (MSRA, no bias) -> BatchNorm -> Scale -> ReLU, in place."""
    b.conv(name, bottom, num_output=num_output, kernel=kernel, pad=kernel // 2, bias=False)
    _params(b.net.layer[-1], [{"lr_mult": 10, "decay_mult": 1}],
            convolution_param={"weight_filler": {"type": "msra"}})
    # No use_global_stats: Caffe then uses batch statistics in TRAIN and the stored ones
    # in TEST, which is what a head trained from scratch needs.
    b.layer("BatchNorm", f"{name}_bn", [name], [name],
            param=[{"lr_mult": 0, "decay_mult": 0}] * 3)
    b.layer("Scale", f"{name}_scale", [name], [name],
            param=[{"lr_mult": 10, "decay_mult": 0}] * 2, scale_param={"bias_term": True})
    b.relu(f"{name}_relu", name)
    return name


# ---------------------------------------------------------------------------
# The head kinds
# ---------------------------------------------------------------------------

def _aspp(ctx):
    """DeepLab v2 ASPP: parallel 3x3 convs to the classes at the given rates, summed."""
    b, rates = ctx.builder, ctx.rates or aspp_rates(ctx.output_stride)
    branches = [_classifier(b, f"aspp{i}_r{r}", ctx.trunk, ctx, kernel=3, rate=r)
                for i, r in enumerate(rates)]
    b.eltwise("score", branches, operation="SUM")
    return HeadOut("score", [(f"rate {r}", blob) for r, blob in zip(rates, branches)],
                   f"rates {','.join(map(str, rates))}")


def _psp(ctx):
    """PSPNet's pyramid pooling: per bin count an AVE pool to that many bins, 1x1 conv 512,
    BN, ReLU and Interp back to the map; Concat with the trunk; 3x3 conv 512 with BN, ReLU
    and Dropout 0.1; a 1x1 classifier."""
    b, bins = ctx.builder, ctx.bins or list(PSP_BINS)
    height, width = ctx.trunk_shape[2:]
    pooled, branches = [ctx.trunk], []
    for n in bins:
        if height % n or width % n:
            raise BinsDoNotFit(f"--bins {n} does not divide the {height}x{width} map of "
                               f"'{ctx.trunk}' at this crop", bins)
        pool = b.pool(f"psp_pool{n}", ctx.trunk, kernel=(height // n, width // n),
                      stride=(height // n, width // n), method="AVE")
        conv = _conv_bn_relu(b, f"{pool}_conv", pool, num_output=512, kernel=1)
        b.layer("Interp", f"{pool}_interp", [conv], [f"{pool}_interp"],
                interp_param={"height": height, "width": width})
        pooled.append(f"{pool}_interp")
        branches.append((f"bins {n}", conv))
    b.concat("psp_concat", pooled)
    x = _conv_bn_relu(b, "psp_conv", "psp_concat", num_output=512, kernel=3)
    b.dropout("psp_dropout", x, ratio=0.1)
    _classifier(b, "score", x, ctx)
    return HeadOut("score", [("trunk", ctx.trunk)] + branches,
                   f"bins {','.join(map(str, bins))} on the {height}x{width} map",
                   tuple((f"psp_pool{n}", (n, n)) for n in bins)
                   + tuple((blob, (height, width)) for blob in pooled))


def _largefov_prepare(net, unknowns):
    """fc6/fc7 become convolutions through `fcn`, fc6 decimated to 3x3 (taps 0, 3, 6, so
    dilation 3, which the dilation to stride 8 multiplies to 12) and both to 1024 channels
    (every 4th of 4096, fcn's rule); the classifier (the last fully connected layer) is cut."""
    analysis = analyse(net, unknowns=unknowns)
    fcs = [n for n in analysis.graph.nodes if n.rule.fully_connected]
    if len(fcs) < 2:
        raise SurgeryError("--head largefov needs a VGG-style backbone with fully connected "
                           f"layers fc6, fc7 and a classifier; this net has {len(fcs)}")
    decimate = {fcs[0].name: (Pair(3, 3), 1024), fcs[1].name: (None, 1024)}
    new, plan = fcn_pass.convolutionalize(net, decimate=decimate, unknowns=unknowns)
    keep = [p for p in plan.layers if p.source != fcs[-1].name]
    return new, plan, keep[-1].tops[0]


def _largefov(ctx):
    """DeepLab-LargeFOV: fc8, a 1x1 classifier on the converted fc7."""
    _classifier(ctx.builder, "score", ctx.trunk, ctx)
    return HeadOut("score", [("fc7", ctx.trunk)], "fc6 3x3x1024 from fcn --decimate")


HEADS = {kind.name: kind for kind in (
    HeadKind("aspp", "DeepLab v2 ASPP: 3x3 classifiers at several rates, summed", 321,
             "strict", _aspp, takes=("rates",)),
    HeadKind("psp", "PSPNet pyramid pooling module", 473, "strict", _psp, takes=("bins",)),
    HeadKind("largefov", "DeepLab-LargeFOV: decimated fc6/fc7 convolutions and fc8", 321,
             "cover", _largefov, prepare=_largefov_prepare),
)}


def aspp_rates(output_stride):
    """DeepLab v2's rates at stride 8, scaled so each keeps its field of view in pixels."""
    rates = [Fraction(r * 8, output_stride) for r in ASPP_RATES_AT_8]
    if any(r.denominator != 1 for r in rates):
        raise SurgeryError(f"the default ASPP rates 6,12,18,24 at stride 8 do not scale to "
                           f"whole rates at output stride {output_stride}; give --rates")
    return [int(r) for r in rates]


# ---------------------------------------------------------------------------
# The pass
# ---------------------------------------------------------------------------

class SegmentReport(NamedTuple):
    head: str
    classes: int
    output_stride: int
    crop: Pair
    trunk: str
    trunk_shape: tuple
    score_shape: tuple
    settings: str
    dilate: object          # DilateReport
    fcn: object             # FcnPlan or None
    cut: list               # layers of the backbone left out
    added_train: list       # [(name, type)] of layers the train net adds to the backbone
    added_deploy: list
    branches: list          # [(label, blob, rf Pair)]
    label: str              # how the label reaches the score grid
    output: str             # what the deploy net outputs
    new_params: dict        # layer -> param shapes, for every new layer with params
    notes: list

    def to_json(self):
        return {"head": self.head, "classes": self.classes, "output_stride": self.output_stride,
                "crop": list(self.crop), "trunk": self.trunk,
                "trunk_shape": list(self.trunk_shape), "score_shape": list(self.score_shape),
                "settings": self.settings, "cut": list(self.cut),
                "added": {"train": [{"name": n, "type": t} for n, t in self.added_train],
                          "deploy": [{"name": n, "type": t} for n, t in self.added_deploy]},
                "branches": [{"branch": label, "blob": blob, "rf": list(rf)}
                             for label, blob, rf in self.branches],
                "label": self.label, "output": self.output,
                "new_params": {k: [list(s) for s in v] for k, v in self.new_params.items()},
                "dilate": self.dilate.to_json(),
                "fcn": self.fcn.to_json() if self.fcn is not None else None,
                "notes": list(self.notes)}


class Segmented(NamedTuple):
    train: object           # NetParameter
    deploy: object
    report: SegmentReport
    fcn: object             # FcnPlan or None (its weights must be transplanted)


def _check(head, classes, output_stride, crop, rates, bins, data, upsample, ignore_label):
    if head not in HEADS:
        raise SurgeryError(f"--head must be one of {', '.join(HEADS)}, got '{head}'")
    if data not in DATA_CHOICES:
        raise SurgeryError(f"--data must be one of {', '.join(DATA_CHOICES)}, got '{data}'")
    if upsample not in UPSAMPLE_CHOICES:
        raise SurgeryError(f"--upsample must be one of {', '.join(UPSAMPLE_CHOICES)}, "
                           f"got '{upsample}'")
    if not isinstance(classes, int) or classes < 1:
        raise SurgeryError(f"--classes must be a positive integer, got {classes!r}")
    if min(crop) < 1:
        raise SurgeryError("--crop must be positive")
    kind = HEADS[head]
    for name, value in (("rates", rates), ("bins", bins)):
        if value is not None and name not in kind.takes:
            raise SurgeryError(f"--{name} does not apply to --head {head}")
        if value is not None and (not value or min(value) < 1):
            raise SurgeryError(f"--{name} takes positive integers")
    if upsample == "deconv" and data == "imagesegdata":
        raise SurgeryError("--upsample deconv builds nets of BVLC layers only, but ImageSegData "
                           "is DeepLab's; use --data input (or --upsample interp)")
    if ignore_label is not None and not isinstance(ignore_label, int):
        raise SurgeryError("--ignore-label must be an integer")


def _single_input(analysis):
    sources = [n for n in analysis.graph.nodes if not n.bottoms
               and n.rule.makes_data(n.layer)]
    inputs = [b for b in analysis.graph.inputs]
    if len(inputs) != 1:
        raise SurgeryError(f"the backbone must have one input blob (the image); it has "
                           f"{len(inputs)}: {', '.join(inputs) or 'none'}")
    shape = analysis.shapes.get(inputs[0])
    if shape is None or len(shape) != 4 or shape[1] is None:
        raise SurgeryError("the backbone's input is not an (N, C, H, W) image with known "
                           "channels", blob=inputs[0])
    return inputs[0], shape[1], {n.name for n in sources}


def segment(net, *, head, classes, output_stride=8, crop=None, rates=None, bins=None,
            data="imagesegdata", upsample="interp", ignore_label=255, cut_after=None,
            unknowns=None):
    """(train NetParameter, deploy NetParameter, SegmentReport, FcnPlan or None) as a
    Segmented tuple. `net` is the upgraded backbone NetParameter and is not modified."""
    kind = HEADS.get(head)
    crop = Pair.of(crop if crop is not None else (kind.default_crop if kind else 1))
    _check(head, classes, output_stride, crop, rates, bins, data, upsample, ignore_label)
    notes = []
    plan, prepared = None, net
    if kind.prepare is not None:
        prepared, plan, trunk_blob = kind.prepare(net, unknowns)
        cut_after = cut_after or trunk_blob
    first = analyse(prepared, unknowns=unknowns)
    image, channels, source_layers = _single_input(first)
    shapes = {image: (1, channels, crop.h, crop.w)}
    # The rewrite is planned at the backbone's own input size (its classifier may not
    # fit a small crop); what the head needs is then read at the crop.
    declared = first.shapes.get(image)
    backbone, report = dilate(prepared, output_stride=output_stride, head="cut",
                              pooling=kind.pooling, cut_after=cut_after,
                              input_shapes=None if declared and None not in declared else shapes,
                              unknowns=unknowns)
    notes.extend(report.notes)
    after = analyse(backbone, input_shapes=shapes, unknowns=unknowns)
    trunk = cut_after or after.deepest_blob()
    if trunk is None or after.geometry.get(trunk) is None:
        raise SurgeryError("the backbone has no blob on the image grid to put a head on")
    stride = after.geometry[trunk].stride
    if stride != Pair(output_stride, output_stride):
        raise SurgeryError(f"'{trunk}' has stride {stride.h}x{stride.w}, not {output_stride}; "
                           "segment needs the head on a blob at the output stride "
                           "(--cut-after a blob at that stride)", blob=trunk)
    trunk_shape = after.shapes[trunk]
    kept = {layer.name for layer in backbone.layer}
    cut = [layer.name for layer in prepared.layer if layer.name not in kept]
    body = [layer for layer in backbone.layer if layer.name not in source_layers]

    head_b = NetBuilder()
    try:
        out = kind.build(HeadContext(head_b, trunk, trunk_shape, classes, output_stride,
                                     rates, bins))
    except BinsDoNotFit as exc:
        fits = _crops_that_fit(backbone, image, channels, trunk, crop, exc.bins, unknowns)
        raise SurgeryError(f"{exc.message}; crops near {crop.h}x{crop.w} whose map every bin "
                           f"count divides: {', '.join(fits) or 'none within 32 pixels'}") from None
    head_layers = list(head_b.net.layer)
    taken = {layer.name for layer in body} | {b for layer in body for b in layer.top}
    for layer in head_layers:
        if layer.name in taken:
            raise SurgeryError("the head would reuse this name of the backbone", layer=layer.name)

    geometry = after.geometry[trunk]
    tail = _Tail(image, channels, crop, classes, output_stride, ignore_label, out.score,
                 geometry, data, upsample)
    train = _assemble(backbone.name, tail.train_inputs(), body, head_layers, tail.train_end)
    deploy = _assemble(backbone.name, tail.deploy_inputs(), body, head_layers, tail.deploy_end)
    deploy_a = analyse(deploy, unknowns=unknowns)
    score_shape = deploy_a.shapes[out.score]
    train_a = tail.check(train, deploy_a, unknowns)
    for blob, size in out.expect:      # what the head meant to build, per the registry
        got = deploy_a.shapes.get(blob)
        if got is None or tuple(got[2:]) != tuple(size):
            raise SurgeryError(f"the registry gives {got} here, the head meant "
                               f"{'x'.join(map(str, size))}", blob=blob)
    branches = [(label, blob, deploy_a.geometry[blob].rf) for label, blob in out.branches
                if deploy_a.geometry.get(blob) is not None]
    body_names = {layer.name for layer in body}
    added = lambda n: [(layer.name, layer.type) for layer in n.layer if layer.name not in body_names]
    new_params = {}
    for analysis, n in ((train_a, train), (deploy_a, deploy)):
        for layer in n.layer:
            shapes_ = analysis.param_shapes.get(layer.name)
            if layer.name not in body_names and shapes_:
                new_params.setdefault(layer.name, [tuple(s) for s in shapes_])
    if plan is not None:    # weights only for the converted layers the nets keep
        plan = plan._replace(layers=[p for p in plan.layers if p.target in body_names])
    result = SegmentReport(head, classes, output_stride, crop, trunk, tuple(trunk_shape),
                           tuple(score_shape), out.settings, report, plan, cut, added(train),
                           added(deploy), branches, tail.label_note, tail.output_note(deploy_a),
                           new_params, notes)
    return Segmented(train, deploy, result, plan)


def _crops_that_fit(backbone, image, channels, trunk, crop, bins, unknowns, reach=32):
    """Square crops within `reach` pixels of `crop` whose trunk map (from the registry)
    every bin count divides, nearest first, at most three."""
    found = []
    for delta in sorted(range(-reach, reach + 1), key=abs):
        size = crop.h + delta
        if size < 1:
            continue
        try:
            shape = analyse(backbone, input_shapes={image: (1, channels, size, size)},
                            unknowns=unknowns).shapes.get(trunk)
        except SurgeryError:
            continue
        if shape and all(shape[2] % n == 0 and shape[3] % n == 0 for n in bins):
            found.append(f"{size} (map {shape[2]}x{shape[3]})")
            if len(found) == 3:
                break
    return found


def _assemble(name, inputs, body, head, end):
    net = caffe_pb2.NetParameter()
    if name:
        net.name = name
    for layer in list(inputs) + list(body) + list(head):
        net.layer.add().CopyFrom(layer)
    end(_Appender(net))
    return net


class _Appender(NetBuilder):
    """A NetBuilder that appends to an existing NetParameter."""

    def __init__(self, net):
        self.net = net


class _Tail:
    """The data layers, the label branch and the loss (train); the Input and the
    upsampling (deploy). Sizes are read back from the registry in `check`."""

    def __init__(self, image, channels, crop, classes, stride, ignore_label, score, geometry,
                 data, upsample):
        self.image, self.channels, self.crop, self.classes = image, channels, crop, classes
        self.stride, self.ignore, self.score, self.geometry = stride, ignore_label, score, geometry
        self.data, self.upsample = data, upsample
        self.label_note = ""

    # -- inputs ---------------------------------------------------------------
    def train_inputs(self):
        b = NetBuilder()
        if self.data == "imagesegdata":
            b.layer("ImageSegData", "data", (), [self.image, "label", "data_dim"],
                    transform_param={"mirror": True, "crop_size": self.crop.h,
                                     "mean_value": list(MEAN_BGR)},
                    image_data_param={"root_folder": "${DATA_ROOT}", "source": "${TRAIN_LIST}",
                                      "batch_size": 10, "shuffle": True, "label_type": "PIXEL"})
            if self.crop.h != self.crop.w:
                raise SurgeryError("ImageSegData crops squares (one crop_size); use --data "
                                   "input for a non-square crop")
        else:
            b.input(self.image, (1, self.channels, self.crop.h, self.crop.w))
            b.input("label", (1, 1, self.crop.h, self.crop.w))
        return b.net.layer

    def deploy_inputs(self):
        b = NetBuilder()
        b.input(self.image, (1, self.channels, self.crop.h, self.crop.w))
        return b.net.layer

    # -- the score on the image grid ----------------------------------------------
    def _offset(self):
        """Where label sample 0 goes: the first score pixel's centre, or the pixel before
        it when the centre falls between pixels (VGG's 2x2 pools)."""
        off = [Fraction(o) for o in self.geometry.offset]
        if min(off) < 0:
            raise SurgeryError(f"the first score pixel is centred at {tuple(map(float, off))}, "
                               "outside the image; the label cannot be put on its grid")
        self.label_shift = tuple(float(o - int(o)) for o in off)
        return Pair(int(off[0]), int(off[1]))

    def _deconv(self, b):
        """Bilinear Deconvolution (Caffe's filler) and a Crop to the image."""
        f = self.stride
        kernel = 2 * f - f % 2
        b.conv("upscore", self.score, num_output=self.classes, kernel=kernel, stride=f,
               group=self.classes, bias=False, type="Deconvolution")
        _params(b.net.layer[-1], [{"lr_mult": 0, "decay_mult": 0}],
                convolution_param={"weight_filler": {"type": "bilinear"}})
        # Score pixel i (image pixel c + f*i) lands on upscore f*i + t, t the centre of
        # Caffe's bilinear kernel: (2f - 1 - f%2) / 2.
        centre = Fraction(2 * f - 1 - f % 2, 2)
        off = self.geometry.offset
        crop = [int(centre - Fraction(o)) if centre - Fraction(o) >= 0 else -1 for o in off]
        if min(crop) < 0:
            raise SurgeryError("the score grid starts too far into the image for the bilinear "
                               "upsampling to cover its first pixels")
        self.shift = tuple(float(Fraction(o) + c - centre) for o, c in zip(off, crop))
        b.layer("Crop", "upscore_crop", ["upscore", self.image], ["upscore_crop"],
                crop_param={"axis": 2, "offset": crop})
        return "upscore_crop"

    def train_end(self, b):
        if self.upsample == "interp":
            off = self._offset()
            self.label_pads = off
            b.layer("Interp", "label_shrink", ["label"], ["label_shrink"],
                    interp_param={"shrink_factor": self.stride})
            label, scores = "label_shrink", self.score
            self._shrink_layer = b.net.layer[-1]
        else:
            scores, label = self._deconv(b), "label"
        b.layer("SoftmaxWithLoss", "loss", [scores, label], ["loss"],
                loss_param={"ignore_label": self.ignore})
        b.layer("Accuracy", "accuracy", [scores, label], ["accuracy"],
                accuracy_param={"ignore_label": self.ignore})
        if self.data == "imagesegdata":
            b.layer("Silence", "silence", ["data_dim"], [])
        self.train_scores, self.train_label = scores, label

    def deploy_end(self, b):
        if self.upsample == "interp":
            b.layer("Interp", "upscore", [self.score], ["upscore"],
                    interp_param={"zoom_factor": self.stride})
            self.output = "upscore"
        else:
            self.output = self._deconv(b)

    # -- sizes, from the registry ------------------------------------------------
    def check(self, train, deploy_a, unknowns):
        """Fit the label shrink's crops to the score size (the deploy net's: the train net
        does not build until they agree), then check that label and score agree in the
        analysed train net (and raise if the registry says otherwise)."""
        score = deploy_a.shapes[self.score]
        train_a = None
        if self.upsample == "interp":
            n = Pair(score[2], score[3])
            off = self.label_pads
            # Sample j of the label lands on c + S*j when the cropped extent is S*(n-1)+1.
            ends = [self.stride * (k - 1) + 1 - (size - o) for k, size, o in
                    zip(n, self.crop, off)]
            if max(ends) > 0:
                raise SurgeryError(f"the crop {self.crop.h}x{self.crop.w} ends before the centre "
                                   f"of the last score pixel; use a crop of at least "
                                   f"{self.stride * (n.h - 1) + 1 + off.h}")
            ip = self._shrink_layer.interp_param
            if off.h or off.w or min(ends) < 0:
                if off.h != off.w or ends[0] != ends[1]:
                    raise SurgeryError("Interp crops both axes alike; the score grid needs "
                                       "different crops per axis (use a square crop)")
                ip.pad_beg = -off.h
                ip.pad_end = ends[0]
            train_a = analyse(train, unknowns=unknowns)
            self.label_note = (f"label: Interp shrink_factor {self.stride}"
                               + (f", pad_beg {ip.pad_beg} pad_end {ip.pad_end}"
                                  if ip.pad_beg or ip.pad_end else "")
                               + f": label sample j is image pixel {off.h} + {self.stride}*j, "
                               + ("the centre of score pixel j" if not any(self.label_shift)
                                  else f"{max(self.label_shift):g} pixel before the centre "
                                       "of score pixel j"))
        else:
            train_a = analyse(train, unknowns=unknowns)
            self.label_note = (f"label: full size; scores upsampled by a bilinear Deconvolution "
                               f"(kernel {2 * self.stride - self.stride % 2}, stride "
                               f"{self.stride}) and cropped to the image: upsampled pixel k is "
                               f"image pixel k{_signed(self.shift[0])}")
        got_s = train_a.shapes[self.train_scores]
        got_l = train_a.shapes[self.train_label]
        if tuple(got_s[2:]) != tuple(got_l[2:]):
            raise SurgeryError(f"label {'x'.join(map(str, got_l[2:]))} and score "
                               f"{'x'.join(map(str, got_s[2:]))} differ in the train net")
        return train_a

    def output_note(self, deploy_a):
        shape = deploy_a.shapes[self.output]
        if self.upsample == "interp":
            off = self.geometry.offset
            return (f"deploy output '{self.output}' {shape[2]}x{shape[3]}: image pixels "
                    f"{off[0]}..{off[0] + shape[2] - 1} (Interp zoom_factor {self.stride})")
        return f"deploy output '{self.output}' {shape[2]}x{shape[3]}, the crop size"


def _signed(x):
    return "" if x == 0 else f" {'+' if x > 0 else '-'} {abs(x):g}"


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------

def head_weights(segmented, *, seed=0):
    """LayerWeights (surgery.weights.plan) for every new head layer with params, each blob
    `New`, drawn from its filler seeded by (seed, layer, blob)."""
    from ..layers import rule_for
    from ..weights.plan import LayerWeights, New

    layers = {layer.name: layer for n in (segmented.train, segmented.deploy) for layer in n.layer}
    out = []
    for name, shapes in segmented.report.new_params.items():
        layer = layers[name]
        fillers = rule_for(layer.type).fillers(layer)
        if fillers is None or len(fillers) != len(shapes):
            raise SurgeryError("no filler tells how to initialise this new layer", layer=name)
        blobs = tuple(New(tuple(s), filler=f, seed=seed) for f, s in zip(fillers, shapes))
        out.append(LayerWeights(name, blobs, type=layer.type, bottoms=tuple(layer.bottom),
                                tops=tuple(layer.top)))
    return out


def _check_backbone(segmented, summary):
    """The backbone's weights must load into the backbone part of the train net (what
    Caffe's CopyTrainedLayersFrom checks), before anything is written."""
    from ..analysis.check import OK, compare, whole_shapes

    converted = {p.target for p in segmented.fcn.layers} if segmented.fcn is not None else set()
    skip = set(segmented.report.new_params) | converted
    shapes = whole_shapes(analyse(segmented.train).param_shapes)
    expected = {name: value for name, value in shapes.items() if name not in skip}
    for row in compare(expected, summary).layers:
        if row.name in expected and expected[row.name] and row.status != OK:
            raise SurgeryError(f"the weights ({summary.path}) do not fit the backbone here "
                               f"({row.status.replace('_', ' ')}: {row.message or 'see check'})",
                               layer=row.name)


def write_weights(segmented, weights_in, weights_out, *, seed=0, outputs=None):
    """Stream `weights_in` to `weights_out` (backbone layers byte for byte; fcn-converted
    layers rebuilt) and append the new head layers; atomically, or staged in `outputs`
    (an io.atomic.Outputs transaction) when given. Returns the names added."""
    from ..io.caffemodel import read_caffemodel
    from ..weights import writer
    from ..weights.plan import WeightPlan

    summary = read_caffemodel(weights_in)
    _check_backbone(segmented, summary)
    new = head_weights(segmented, seed=seed)
    names = {layer.name for layer in summary.layers}
    if segmented.fcn is not None:
        names |= {p.target for p in segmented.fcn.layers}
    for entry in new:
        if entry.name in names:
            raise SurgeryError(f"the weights ({weights_in}) already hold a layer of this name",
                               layer=entry.name)
    edits = fcn_pass.weight_plan(segmented.fcn, summary).edit if segmented.fcn is not None else ()
    writer.write(WeightPlan(edit=edits, add=tuple(new)), weights_out, source=summary,
                 outputs=outputs)
    converted = [p.target for p in segmented.fcn.layers] if segmented.fcn is not None else []
    return converted + [e.name for e in new]
