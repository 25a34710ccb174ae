"""From a classification backbone to a trainable segmentation net (DeepLab v2/v3/v3+, PSPNet).

`segment(net, head=..., classes=...)` returns a train net, a deploy net and a report:
1. the backbone goes through `dilate`'s exact rule to the output stride asked for, its
   classifier cut as `dilate --head cut` does (or everything after `cut_after`);
2. its BatchNorm and Scale layers are frozen for fine-tuning with small batches (the
   registry's `rule.fine_tuned`), unless `train_bn`;
3. with `upsample="interp"`, the grid is centred: one pad in the stem moves score pixel j
   onto image pixel S*j (DeepLab's own ResNet stem has that pad), so the label shrink and
   the deploy zoom need no crops, the zoomed output covers the image, and the scales of a
   multi-scale net line up;
4. a head from the HEADS table is appended to the backbone's last blob (the trunk), once
   per scale; the branches of a multi-scale net (`scales`) read the image resized by
   DeepLab's Interp and share every weight with the main one through `param { name }`;
5. the train net reads images and labels (DeepLab's ImageSegData, or Input layers), brings
   the label to each score grid and adds SoftmaxWithLoss(ignore_label) and an Accuracy; the
   deploy net has an Input at the crop size and upsamples the score to the image.

Every size comes from the registry through `analyse` (the trunk's map at the crop, the
pooled bins, the tiles, the label and score sizes); the geometry gives where the score
pixels sit on the image. Label and score are put on one grid:
- `upsample="interp"`: DeepLab's `Interp` samples the label at the centres of the score
  pixels: shrink_factor = the score's stride, and pad_beg/pad_end (crops, DeepLab's own
  Interp fields) when the centres or the crop need them. The deploy net zooms the score by
  the stride with Interp (and crops the zoom to the image when it is larger).
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
the classifier convs, MSRA for the convs before a BatchNorm, identity BatchNorm statistics,
Scale 1/0, bilinear upsampling), and `head_weights` turns those fillers into values.
"""

import math
import re
from fractions import Fraction
from typing import Callable, NamedTuple, Optional

from .. import caffe_pb2
from ..analysis.analyse import analyse
from ..builder import NetBuilder, fill
from ..errors import SurgeryError
from ..layers import rule_for
from ..pair import Pair
from . import fcn as fcn_pass
from .dilate import dilate

DATA_CHOICES = ("imagesegdata", "input")
UPSAMPLE_CHOICES = ("interp", "deconv")
ASPP_RATES_AT_8 = (6, 12, 18, 24)     # DeepLab v2 ASPP-L at output stride 8
ASPP3_RATES_AT_16 = (6, 12, 18)       # DeepLab v3's ASPP at output stride 16
ASPP3_CHANNELS = 256                  # DeepLab v3/v3+ (and mmseg's) head width
DECODER_LOW_CHANNELS = 48             # DeepLab v3+'s low-level projection
DECODER_STRIDE = 4                    # the v3+ decoder works at stride 4
PSP_BINS = (1, 2, 3, 6)
MEAN_BGR = (104.008, 116.669, 122.675)  # DeepLab's ImageSegData mean values
TRAIN_BATCH = 10                      # DeepLab's batch (ImageSegData), or batch x iter_size
CLASSIFIER = {"weight_filler": {"type": "gaussian", "std": 0.01},
              "bias_filler": {"type": "constant", "value": 0}}
HEAD_LR = [{"lr_mult": 10, "decay_mult": 1}, {"lr_mult": 20, "decay_mult": 0}]


class HeadContext(NamedTuple):
    builder: NetBuilder     # the head's layers are appended here
    trunk: str              # the backbone's last blob
    trunk_shape: tuple      # its (N, C, H, W) at this scale's input size, from the registry
    classes: int
    output_stride: int
    rates: Optional[list]
    bins: Optional[list]
    upsample: str           # how a decoder upsamples: "interp" or "deconv" (BVLC)
    backbone: object        # Analysis of the backbone at this input size (a decoder's features)


class HeadOut(NamedTuple):
    score: str              # the blob of class scores
    branches: list          # [(label, blob)] whose receptive field the summary gives
    settings: str           # one line: the rates, the bins...
    expect: tuple = ()      # (blob, (h, w)) the head means to make; checked by the registry
    notes: tuple = ()       # what the head could not make exact (a half-pixel upsampling)


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
    base_lr: float = 2.5e-4  # DeepLab v2's ResNet rate (its VGG nets use 1e-3)


# ---------------------------------------------------------------------------
# Layer helpers: parameters and fillers of new layers
# ---------------------------------------------------------------------------

def _params(layer, specs, **fields):
    fill(layer, {"param": specs, **fields}, where=layer.name)
    return layer


def _classifier(b, name, bottom, ctx, *, kernel=1, rate=1):
    """A conv to the classes, Gaussian 0.01 / bias 0, lr 10/20; its params named
    `<name>_w`/`<name>_b` as DeepLab names them (what its multi-scale copies share)."""
    b.conv(name, bottom, num_output=ctx.classes, kernel=kernel, pad=rate * (kernel // 2),
           dilation=rate)
    specs = [dict(spec, name=f"{name}_{part}") for spec, part in zip(HEAD_LR, "wb")]
    _params(b.net.layer[-1], specs, convolution_param=CLASSIFIER)
    return name


def _conv_bn_relu(b, name, bottom, *, num_output, kernel, dilation=1):
    """The unit of PSPNet's and DeepLab v3's heads: conv (MSRA, no bias) -> BatchNorm ->
    Scale -> ReLU, in place."""
    b.conv(name, bottom, num_output=num_output, kernel=kernel,
           pad=dilation * (kernel // 2), dilation=dilation, bias=False)
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


def _bilinear(b, name, bottom, like, *, factor, channels, shift):
    """Upsample `bottom` by `factor` with a fixed bilinear Deconvolution (Caffe's filler:
    kernel 2f - f%2, stride f, one group per channel, lr 0, as FCN does) and Crop it to
    `like`. `shift` (per axis): where `bottom`'s pixel 0 sits on `like`'s grid, in `like`'s
    pixels. Returns (top, lag): cropped pixel k is `like` pixel k + lag (0, or -1/2 when an
    even factor puts the kernel centre between two pixels)."""
    f = factor
    b.conv(name, bottom, num_output=channels, kernel=2 * f - f % 2, stride=f, group=channels,
           bias=False, type="Deconvolution")
    _params(b.net.layer[-1], [{"lr_mult": 0, "decay_mult": 0}],
            convolution_param={"weight_filler": {"type": "bilinear"}})
    # Deconvolution pixel m is `bottom` coordinate (m - t)/f, t the kernel centre.
    centre = Fraction(2 * f - 1 - f % 2, 2)
    crop = [math.floor(centre - Fraction(s)) for s in shift]
    if min(crop) < 0:
        raise SurgeryError(f"'{bottom}' starts too far into '{like}' for the bilinear "
                           "upsampling to cover its first pixels", blob=bottom)
    lag = tuple(Fraction(s) + c - centre for s, c in zip(shift, crop))
    b.layer("Crop", f"{name}_crop", [name, like], [f"{name}_crop"],
            crop_param={"axis": 2, "offset": crop})
    return f"{name}_crop", lag


# ---------------------------------------------------------------------------
# The head kinds
# ---------------------------------------------------------------------------

def _aspp(ctx):
    """DeepLab v2 ASPP: parallel 3x3 convs to the classes at the given rates, summed.
    Named by index as DeepLab names them (fc1_c0..), so the names hold at any stride."""
    b, rates = ctx.builder, ctx.rates or aspp_rates(ctx.output_stride)
    branches = [_classifier(b, f"fc1_c{i}", ctx.trunk, ctx, kernel=3, rate=r)
                for i, r in enumerate(rates)]
    b.eltwise("fc1", branches, operation="SUM")
    return HeadOut("fc1", [(f"rate {r}", blob) for r, blob in zip(rates, branches)],
                   f"rates {','.join(map(str, rates))}")


def _aspp_module(ctx):
    """DeepLab v3's ASPP (mmseg's ASPPHead; its projection is the paper's 1x1, where mmseg
    has a 3x3): image pooling (global AVE, 1x1 256, BN, ReLU, then Tile along H and W, which
    reproduces a 1x1 map exactly at a fixed crop), a 1x1 branch and 3x3 branches at the rates
    (6/12/18 at OS 16), 256 channels each with BN and ReLU; Concat (1280) and a 1x1 256
    projection with BN and ReLU. Returns (blob, branches, rates)."""
    b, rates = ctx.builder, ctx.rates or aspp3_rates(ctx.output_stride)
    height, width = ctx.trunk_shape[2:]
    b.pool("aspp_pool", ctx.trunk, method="AVE", global_pooling=True)
    pooled = _conv_bn_relu(b, "aspp_pool_conv", "aspp_pool", num_output=ASPP3_CHANNELS,
                           kernel=1)
    b.layer("Tile", "aspp_pool_tile_h", [pooled], ["aspp_pool_tile_h"],
            tile_param={"axis": 2, "tiles": height})
    b.layer("Tile", "aspp_pool_tile", ["aspp_pool_tile_h"], ["aspp_pool_tile"],
            tile_param={"axis": 3, "tiles": width})
    convs = [_conv_bn_relu(b, "aspp_c0", ctx.trunk, num_output=ASPP3_CHANNELS, kernel=1)]
    convs += [_conv_bn_relu(b, f"aspp_c{i}", ctx.trunk, num_output=ASPP3_CHANNELS, kernel=3,
                            dilation=r) for i, r in enumerate(rates, 1)]
    b.concat("aspp_concat", ["aspp_pool_tile"] + convs)
    x = _conv_bn_relu(b, "aspp_proj", "aspp_concat", num_output=ASPP3_CHANNELS, kernel=1)
    branches = [("1x1", convs[0])] + [(f"rate {r}", c) for r, c in zip(rates, convs[1:])]
    return x, branches, rates


def _finish(b, x, ctx, prefix):
    """Dropout 0.1 (mmseg's decode heads) and the 1x1 classifier `score`."""
    b.dropout(f"{prefix}_dropout", x, ratio=0.1)
    return _classifier(b, "score", x, ctx)


def _deeplabv3(ctx):
    x, branches, rates = _aspp_module(ctx)
    _finish(ctx.builder, x, ctx, "aspp")
    return HeadOut("score", branches, f"rates {','.join(map(str, rates))}, image pooling "
                                      f"tiled {ctx.trunk_shape[2]}x{ctx.trunk_shape[3]}",
                   (("aspp_pool_tile", tuple(ctx.trunk_shape[2:])),))


def _low_level(ctx):
    """The trunk's last stride-4 blob in file order (res2c on ResNet): the v3+ decoder's
    low-level features."""
    a = ctx.backbone
    side = a.resampled_branches()
    for node in reversed(a.graph.nodes):
        for top in node.tops:
            g = a.geometry.get(top)
            if g is not None and g.stride == Pair(DECODER_STRIDE, DECODER_STRIDE) \
                    and top not in side and len(a.shapes.get(top) or ()) == 4:
                return top
    raise SurgeryError(f"--head deeplabv3plus needs a blob at stride {DECODER_STRIDE} in the "
                       "backbone for its decoder; this one has none", blob=ctx.trunk)


def _deeplabv3plus(ctx):
    """DeepLab v3+ (mmseg's DepthwiseSeparableASPPHead, with plain convolutions): the v3
    ASPP, upsampled to stride 4 and concatenated with the low-level features through a 1x1
    to 48 (BN, ReLU); two 3x3 256 convs with BN and ReLU; the classifier. The upsampling is
    DeepLab's Interp zoom (exact: corners on pixels) with --upsample interp, a bilinear
    Deconvolution and a Crop with --upsample deconv (BVLC)."""
    b, a = ctx.builder, ctx.backbone
    x, branches, rates = _aspp_module(ctx)
    low = _low_level(ctx)
    lo = _conv_bn_relu(b, "dec_low", low, num_output=DECODER_LOW_CHANNELS, kernel=1)
    high_g, low_g = a.geometry[ctx.trunk], a.geometry[low]
    factor = Fraction(high_g.stride.h, low_g.stride.h)
    shift = tuple(Fraction(Fraction(ch) - Fraction(cl), sl) for ch, cl, sl in
                  zip(high_g.offset, low_g.offset, low_g.stride))
    notes, up = [], x
    if factor.denominator != 1 or factor < 1 or high_g.stride.h != high_g.stride.w:
        raise SurgeryError(f"the decoder needs the trunk at a whole multiple of stride "
                           f"{DECODER_STRIDE}; it is at {tuple(high_g.stride)}", blob=ctx.trunk)
    if factor > 1 and ctx.upsample == "deconv":
        up, lag = _bilinear(b, "dec_up", x, lo, factor=int(factor), channels=ASPP3_CHANNELS,
                            shift=shift)
        if any(lag):
            notes.append(f"the decoder's bilinear Deconvolution puts ASPP pixel centres "
                         f"{float(-max(lag)):g} of a stride-{DECODER_STRIDE} pixel off "
                         f"the low-level grid (an even factor {factor}; --upsample interp "
                         "is exact)")
    elif factor > 1:
        up = b.layer("Interp", "dec_up", [x], ["dec_up"],
                     interp_param={"zoom_factor": int(factor)}).top[0]
        if any(shift) or not all(s == int(s) for s in shift):
            raise SurgeryError(f"the ASPP map starts {tuple(map(float, shift))} low-level "
                               "pixels into the stride-4 map; Interp zooms from pixel 0 "
                               "(use --upsample deconv)", blob=low)
        n_low, n_up = a.shapes[low][2:], [int(factor) * (n - 1) + 1
                                          for n in ctx.trunk_shape[2:]]
        if any(u < n for u, n in zip(n_up, n_low)):
            raise SurgeryError(f"the ASPP map zoomed by {factor} ({n_up[0]}x{n_up[1]}) does "
                               f"not cover the {n_low[0]}x{n_low[1]} map of '{low}' at this "
                               f"crop; use a crop of the form {high_g.stride.h}k+1 "
                               "(e.g. 321 or 513)", blob=low)
        if n_up != list(n_low):
            up = b.layer("Crop", "dec_up_crop", [up, lo], ["dec_up_crop"],
                         crop_param={"axis": 2, "offset": [0]}).top[0]
    b.concat("dec_concat", [up, lo])
    y = _conv_bn_relu(b, "dec_conv1", "dec_concat", num_output=ASPP3_CHANNELS, kernel=3)
    y = _conv_bn_relu(b, "dec_conv2", y, num_output=ASPP3_CHANNELS, kernel=3)
    _finish(b, y, ctx, "dec")
    return HeadOut("score", branches,
                   f"rates {','.join(map(str, rates))}; decoder on '{low}' "
                   f"(stride {DECODER_STRIDE}), ASPP upsampled by {factor}",
                   (("dec_concat", tuple(a.shapes[low][2:])),), tuple(notes))


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
    if len(fcs) < 3:
        found = ", ".join(n.name for n in fcs) or "none"
        raise SurgeryError(f"--head largefov needs a VGG-style backbone whose fc6 and fc7 are "
                           f"InnerProducts before the classifier (it turns them into "
                           f"convolutions); this net has {len(fcs)} InnerProduct ({found}); "
                           "use --head aspp, deeplabv3 or psp on it")
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
    HeadKind("deeplabv3", "DeepLab v3 ASPP with image pooling, 256 channels, BN", 321,
             "strict", _deeplabv3, takes=("rates",)),
    HeadKind("deeplabv3plus", "DeepLab v3+: the v3 ASPP and a stride-4 decoder", 321,
             "strict", _deeplabv3plus, takes=("rates",)),
    HeadKind("psp", "PSPNet pyramid pooling module", 473, "strict", _psp, takes=("bins",)),
    HeadKind("largefov", "DeepLab-LargeFOV: decimated fc6/fc7 convolutions and fc8", 321,
             "cover", _largefov, prepare=_largefov_prepare, base_lr=1e-3),
)}


def _scaled_rates(rates, at, output_stride, what):
    """Rates given at stride `at`, scaled so each keeps its field of view in pixels."""
    scaled = [Fraction(r * at, output_stride) for r in rates]
    if any(r.denominator != 1 for r in scaled):
        raise SurgeryError(f"the default {what} rates {','.join(map(str, rates))} at stride "
                           f"{at} do not scale to whole rates at output stride "
                           f"{output_stride}; give --rates")
    return [int(r) for r in scaled]


def aspp_rates(output_stride):
    """DeepLab v2's rates at stride 8, scaled to `output_stride` (3,6,9,12 at 16)."""
    return _scaled_rates(ASPP_RATES_AT_8, 8, output_stride, "ASPP")


def aspp3_rates(output_stride):
    """DeepLab v3's rates at stride 16, doubled at 8 (12,24,36), as the paper has them."""
    return _scaled_rates(ASPP3_RATES_AT_16, 16, output_stride, "DeepLab v3")


# ---------------------------------------------------------------------------
# Scales (DeepLab v2's multi-scale nets)
# ---------------------------------------------------------------------------

class Scale(NamedTuple):
    value: Fraction
    suffix: str             # "" for the main scale, "_res075" as DeepLab names 0.75
    shrink: int             # the image Interp: shrink_factor then zoom_factor
    zoom: int

    @property
    def main(self):
        return self.value == 1


def parse_scales(scales):
    """[Scale] with the main scale (1) first, from numbers or their text; None for one
    scale. Each is resized by DeepLab's Interp (shrink, then zoom): 0.75 = zoom 3/shrink 4."""
    if scales is None:
        return None
    values = []
    for s in scales:
        try:
            value = Fraction(str(s)).limit_denominator(1000)
        except (ValueError, ZeroDivisionError):
            raise SurgeryError(f"--scales takes numbers like 1,0.75,0.5, got '{s}'") from None
        if value <= 0 or abs(float(value) - float(s)) > 1e-9:
            raise SurgeryError(f"--scales {s}: a scale is a positive decimal like 0.75")
        if max(value.numerator, value.denominator) > 8:
            raise SurgeryError(f"--scales {s}: Interp makes it with zoom_factor "
                               f"{value.numerator} and shrink_factor {value.denominator}; "
                               "use a scale whose fraction has small terms (0.5, 0.75, 1.5)")
        values.append(value)
    if len(set(values)) != len(values) or 1 not in values:
        raise SurgeryError("--scales lists each scale once and includes 1 (the main scale)")
    values.sort(key=lambda v: v != 1)
    return [Scale(v, "" if v == 1 else "_res" + f"{float(v):g}".replace(".", ""),
                  v.denominator, v.numerator) for v in values]


def scaled_name(name, suffix):
    """DeepLab's names for a scale's copy: the suffix at the end (`res5c_res075`), or before
    an ASPP branch's index (`fc1_res075_c0`)."""
    if not suffix:
        return name
    return re.sub(r"(_c\d+)?$", lambda m: suffix + (m.group(1) or ""), name, count=1)


def _renamed(layers, suffix, blobs):
    """Copies of `layers` for another scale: every layer and blob name scaled (`blobs`
    maps the ones that are named otherwise, such as the image); params keep their names."""
    out = []
    for layer in layers:
        new = caffe_pb2.LayerParameter()
        new.CopyFrom(layer)
        new.name = scaled_name(layer.name, suffix)
        for field in (new.bottom, new.top):
            names = [blobs.get(b) or scaled_name(b, suffix) for b in field]
            del field[:]
            field.extend(names)
        out.append(new)
    return out


def _named_params(layers, param_shapes):
    """Every param of `layers` named (`<layer>_<i>` unless it has a name), so that another
    scale's copies share it, as DeepLab's multi-scale nets do."""
    out = []
    for layer in layers:
        count = len(param_shapes.get(layer.name) or ())
        if count and (len(layer.param) < count or
                      not all(spec.name for spec in layer.param[:count])):
            layer = _copy(layer)
            while len(layer.param) < count:
                layer.param.add()
            for i, spec in enumerate(layer.param[:count]):
                spec.name = spec.name or f"{layer.name}_{i}"
        out.append(layer)
    return out


def _copy(layer):
    new = caffe_pb2.LayerParameter()
    new.CopyFrom(layer)
    return new


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
    new_params: dict        # layer -> param shapes, for every new layer owning params
    notes: list
    scales: list = ()       # [(scale, score blob, score shape)] of a multi-scale net
    copies: frozenset = frozenset()   # the layers of the other scales (sharing params)
    frozen: str = ""        # what was done to the backbone's normalisation layers
    base_lr: float = 2.5e-4

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
                "scales": [{"scale": float(s), "score": blob, "shape": list(shape)}
                           for s, blob, shape in self.scales],
                "copies": sorted(self.copies), "frozen": self.frozen, "base_lr": self.base_lr,
                "dilate": self.dilate.to_json(),
                "fcn": self.fcn.to_json() if self.fcn is not None else None,
                "notes": list(self.notes)}


class Segmented(NamedTuple):
    train: object           # NetParameter
    deploy: object
    report: SegmentReport
    fcn: object             # FcnPlan or None (its weights must be transplanted)


def _check(head, classes, output_stride, crop, rates, bins, data, upsample, ignore_label,
           scales):
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
    if scales is not None and len(scales) > 1 and upsample != "interp":
        raise SurgeryError("--scales resizes the image and the scores with DeepLab's Interp; "
                           "use --upsample interp")


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


def _input_layer(image, shape):
    b = NetBuilder()
    b.input(image, shape)
    return b.net.layer[0]


def _net(name, layers):
    net = caffe_pb2.NetParameter()
    if name:
        net.name = name
    for layer in layers:
        net.layer.add().CopyFrom(layer)
    return net


def _analyse_at(name, image, shape, layers, unknowns):
    """The registry's analysis of `layers` fed an Input of `shape` (None where the crop is
    too small for a layer: the caller says so)."""
    try:
        return analyse(_net(name, [_input_layer(image, shape)] + list(layers)),
                       unknowns=unknowns)
    except SurgeryError:
        return None


def _reaches(analysis, trunk):
    shape = analysis.shapes.get(trunk) if analysis is not None else None
    return shape is not None and len(shape) == 4 and None not in shape and min(shape[2:]) >= 2


def _smallest_crop(name, image, channels, body, trunk, crop, unknowns):
    """The smallest square crop at which `trunk` has a map of at least 2x2 (doubling, then
    bisecting: a larger crop never gives a smaller map)."""
    low, high = max(crop.h, crop.w), max(crop.h, crop.w) * 2
    fits = lambda n: _reaches(_analyse_at(name, image, (1, channels, n, n), body, unknowns),
                              trunk)
    while not fits(high):
        low, high = high, high * 2
        if high > 1 << 14:
            return None
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid, high)
    return high


def _trunk_at_crop(name, image, channels, crop, body, trunk, output_stride, unknowns):
    """The body's analysis at the crop, once the trunk is known to have a map there (else
    the smallest crop that gives it one) at the output stride."""
    if trunk is None:
        raise SurgeryError("the backbone has no blob on the image grid to put a head on")
    after = _analyse_at(name, image, (1, channels, crop.h, crop.w), body, unknowns)
    if not _reaches(after, trunk):
        least = _smallest_crop(name, image, channels, body, trunk, crop, unknowns)
        raise SurgeryError(f"--crop {crop.h}x{crop.w} is too small for this net: '{trunk}' "
                           f"(the trunk at output stride {output_stride}) needs a map of 2x2 "
                           f"or more" + (f"; the smallest crop that gives one is {least}"
                                         if least else ""))
    stride = after.geometry[trunk].stride if after.geometry.get(trunk) else None
    if stride != Pair(output_stride, output_stride):
        raise SurgeryError(f"'{trunk}' has stride "
                           f"{'x'.join(map(str, stride)) if stride else 'unknown'}, not "
                           f"{output_stride}; segment needs the head on a blob at the output "
                           "stride (--cut-after a blob at that stride)", blob=trunk)
    return after


def _stem_chain(graph, image):
    """The layers every path from the image goes through before it first branches
    (conv1, pool1 on ResNet), in order."""
    chain, blob = [], image
    while True:
        writers = {w.name for w in graph.writers(blob)}
        readers = [n for n in graph.consumers(blob) if n.name not in writers]
        if len(readers) != 1 or len(readers[0].tops) != 1:
            return chain
        chain.append(readers[0])
        blob = readers[0].tops[0]


def _centre_grid(body, analysis, image, trunk):
    """(body, note, centred): the body with one stem layer padded more, so that the trunk's
    pixel 0 is centred on image pixel 0: the deepest layer of the stem whose input stride
    divides the move, and whose padding changes no interior output (a convolution's zeros,
    a MAX pool's ignored cells): pool1 on MSRA ResNet, pad 0 -> 1, as DeepLab's own
    ResNet-101 has it. The trunk is then the backbone's exact conversion applied to the
    image shifted by that many pixels. The note is None when the trunk is centred already,
    and says why when no stem layer can move it (centred False)."""
    offset, stride = analysis.geometry[trunk].offset, analysis.geometry[trunk].stride
    move = [Fraction(o) for o in offset]
    if not any(move):
        return body, None, True
    for node in reversed(_stem_chain(analysis.graph, image)):
        rule, layer = node.rule, node.layer
        geometry_in = analysis.geometry.get(node.bottoms[0])
        if geometry_in is None or not rule.reads_window(layer) or not rule.pad_is_neutral(layer):
            continue
        stride_in = geometry_in.stride
        extra = [m / s for m, s in zip(move, stride_in)]
        window = rule.window(layer)
        pad = [p + e for p, e in zip(window.pad, extra)]
        if any(p.denominator != 1 or p < 0 for p in pad):
            continue
        try:
            new = rule.with_window(layer, window._replace(pad=Pair(*(int(p) for p in pad))))
            rule.window(new)
        except SurgeryError:
            continue
        note = (f"'{node.name}' pad {_pair_text(window.pad)} -> "
                f"{_pair_text(rule.window(new).pad)}: trunk pixel j is centred on image pixel "
                f"{_pair_text(stride)}*j (was {_pair_text(offset)} + {_pair_text(stride)}*j), as "
                f"in DeepLab's ResNet-101; the trunk is the backbone's exact conversion applied "
                f"to the image shifted by {_pair_text(offset)} pixels")
        return [new if l.name == node.name else l for l in body], note, True
    return body, (f"the trunk's pixel 0 is centred on image pixel {_pair_text(offset)} and "
                  "no stem layer's pad can move it to 0"), False


def _pair_text(p):
    values = [float(v) if Fraction(v).denominator != 1 else int(v) for v in p]
    return f"{values[0]:g}" if values[0] == values[1] else f"{values[0]:g},{values[1]:g}"


class _Branch(NamedTuple):
    """One scale's part of the net: the resize, the trunk and the head, renamed."""
    scale: Scale
    layers: list            # the image Interp (not for the main scale), body and head
    trunk: frozenset        # the names of its trunk's layers
    score: str              # its score blob
    score_shape: tuple
    geometry: object        # the score's Geometry on this scale's input
    head: HeadOut
    analysis: object        # of Input + body + head at this scale's input size


def segment(net, *, head, classes, output_stride=8, crop=None, rates=None, bins=None,
            data="imagesegdata", upsample="interp", ignore_label=255, cut_after=None,
            train_bn=False, scales=None, unknowns=None):
    """(train NetParameter, deploy NetParameter, SegmentReport, FcnPlan or None) as a
    Segmented tuple. `net` is the upgraded backbone NetParameter and is not modified.
    `scales` (e.g. [1, 0.75, 0.5]) builds DeepLab v2's multi-scale nets."""
    kind = HEADS.get(head)
    crop = Pair.of(crop if crop is not None else (kind.default_crop if kind else 1))
    _check(head, classes, output_stride, crop, rates, bins, data, upsample, ignore_label,
           scales)
    scales = parse_scales(scales) or [Scale(Fraction(1), "", 1, 1)]
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
    known = declared and None not in declared
    backbone, report = dilate(prepared, output_stride=output_stride, head="cut",
                              pooling=kind.pooling, cut_after=cut_after,
                              input_shapes=None if known else shapes, unknowns=unknowns)
    notes.extend(report.notes)
    body = [layer for layer in backbone.layer if layer.name not in source_layers]
    name = backbone.name
    trunk = cut_after or analyse(backbone, input_shapes=None if known else shapes,
                                 unknowns=unknowns).deepest_blob()
    after = _trunk_at_crop(name, image, channels, crop, body, trunk, output_stride, unknowns)
    centred = True
    if upsample == "interp":
        body, note, centred = _centre_grid(body, after, image, trunk)
        if note:
            notes.append(note)
    if len(scales) > 1 and not centred:
        raise SurgeryError(f"--scales needs every scale's score pixel 0 on image pixel 0, so "
                           f"that the scales line up; {notes[-1]}")
    kept = {layer.name for layer in backbone.layer}
    cut = [layer.name for layer in prepared.layer if layer.name not in kept]

    body_names = {layer.name for layer in body}
    branches = [_branch(s, kind, name, image, channels, crop, body, trunk, classes,
                        output_stride, rates, bins, upsample, unknowns, len(scales) > 1)
                for s in scales]
    main = branches[0]
    for out in (b.head for b in branches):
        notes.extend(n for n in out.notes if n not in notes)
    tail = _Tail(image, channels, crop, classes, ignore_label, data, upsample, branches)
    train = _net(name, tail.train_inputs() + _layers(branches, train=train_bn)
                 + tail.train_end())
    deploy = _net(name, tail.deploy_inputs() + _layers(branches, train=False)
                  + tail.deploy_end())
    for net_ in (train, deploy):
        seen = set()
        for layer in net_.layer:
            if layer.name in seen:
                raise SurgeryError("two layers of the net would have this name (rename the "
                                   "backbone's)", layer=layer.name)
            seen.add(layer.name)
    deploy_a = analyse(deploy, unknowns=unknowns)
    train_a = tail.check(analyse(train, unknowns=unknowns), deploy_a)
    for blob, size in main.head.expect:      # what the head meant to build, per the registry
        got = deploy_a.shapes.get(blob)
        if got is None or tuple(got[2:]) != tuple(size):
            raise SurgeryError(f"the registry gives {got} here, the head meant "
                               f"{'x'.join(map(str, size))}", blob=blob)
    reported = [(label, blob, deploy_a.geometry[blob].rf) for label, blob in main.head.branches
                if deploy_a.geometry.get(blob) is not None]
    shared = {layer.name for b in branches[1:] for layer in b.layers}
    added = lambda n: [(layer.name, layer.type) for layer in n.layer
                       if layer.name not in body_names]
    new_params = {}
    for analysis, n in ((train_a, train), (deploy_a, deploy)):
        for layer in n.layer:
            shapes_ = analysis.param_shapes.get(layer.name)
            if layer.name not in body_names | shared and shapes_:
                new_params.setdefault(layer.name, [tuple(s) for s in shapes_])
    if plan is not None:    # weights only for the converted layers the nets keep
        plan = plan._replace(layers=[p for p in plan.layers if p.target in body_names])
    norms = {}
    for layer in body:
        if rule_for(layer.type).fine_tuned(layer, train=train_bn) is not None:
            norms[layer.type] = norms.get(layer.type, 0) + 1
    counted = " and ".join(f"{n} {t}" for t, n in norms.items())
    frozen = "" if not norms else (
        f"{counted} learned: batch statistics in TRAIN, Scale at the base rate (--train-bn)"
        if train_bn else f"{counted} frozen: use_global_stats, lr_mult 0 on their blobs "
                         "(--train-bn learns them)")
    result = SegmentReport(head, classes, output_stride, crop, trunk,
                           tuple(main.analysis.shapes[trunk]), tuple(main.score_shape),
                           main.head.settings, report, plan, cut, added(train), added(deploy),
                           reported, tail.label_note, tail.output_note(deploy_a), new_params,
                           notes, [(b.scale.value, b.score, tuple(b.score_shape))
                                   for b in branches] if len(branches) > 1 else [],
                           frozenset(shared), frozen, kind.base_lr)
    return Segmented(train, deploy, result, plan)


def _layers(branches, *, train):
    """Every branch's layers, its trunk's normalisation layers set for fine-tuning (the
    deploy net's frozen, the train net's frozen unless `train`); the head's stay trainable."""
    out = []
    for branch in branches:
        for layer in branch.layers:
            if layer.name in branch.trunk:
                layer = rule_for(layer.type).fine_tuned(layer, train=train) or layer
            out.append(layer)
    return out


def _branch(scale, kind, name, image, channels, crop, body, trunk, classes, output_stride,
            rates, bins, upsample, unknowns, multi):
    """One scale: the image resized (DeepLab's Interp: shrink, then zoom), the trunk and the
    head, analysed at that size; a scale's copy renamed, its params named like the main's."""
    resize = []
    size = (1, channels, crop.h, crop.w)
    if not scale.main:
        b = NetBuilder()
        params = {"shrink_factor": scale.shrink} if scale.shrink > 1 else {}
        if scale.zoom > 1:
            params["zoom_factor"] = scale.zoom
        layer = b.layer("Interp", f"data{scale.suffix}", [image], [f"data{scale.suffix}"],
                        interp_param=params)
        size = rule_for(layer.type).out_shapes(layer, [size])[0]
        resize = [layer]
    backbone = _analyse_at(name, image, size, body, unknowns)
    if not _reaches(backbone, trunk):
        raise SurgeryError(f"--scales {float(scale.value):g}: the image resized to "
                           f"{size[2]}x{size[3]} is too small for the trunk '{trunk}'")
    head_b = NetBuilder()
    ctx = HeadContext(head_b, trunk, backbone.shapes[trunk], classes, output_stride, rates,
                      bins, upsample, backbone)
    try:
        out = kind.build(ctx)
    except BinsDoNotFit as exc:
        fits = _crops_that_fit(name, image, channels, body, trunk, crop, exc.bins, unknowns)
        where = f" (the {float(scale.value):g} scale)" if not scale.main else ""
        raise SurgeryError(f"{exc.message}{where}; crops near {crop.h}x{crop.w} whose map every "
                           f"bin count divides: {', '.join(fits) or 'none within 32 pixels'}"
                           ) from None
    head_layers = list(head_b.net.layer)
    taken = {layer.name for layer in body} | {b for layer in body for b in layer.top}
    for layer in head_layers:
        if layer.name in taken:
            raise SurgeryError("the head would reuse this name of the backbone", layer=layer.name)
    whole = analyse(_net(name, [_input_layer(image, size)] + body + head_layers),
                    unknowns=unknowns)
    layers = body + head_layers
    if multi:
        layers = _named_params(layers, whole.param_shapes)
    if not scale.main:
        layers = _renamed(layers, scale.suffix, {image: f"data{scale.suffix}"})
    score = scaled_name(out.score, scale.suffix)
    geometry = whole.carried_geometry().get(out.score)
    if geometry is None:
        raise SurgeryError("the score is not on the image grid", blob=out.score)
    trunk_names = frozenset(scaled_name(layer.name, scale.suffix) for layer in body)
    return _Branch(scale, resize + layers, trunk_names, score, tuple(whole.shapes[out.score]), geometry,
                   out, whole)


def _crops_that_fit(name, image, channels, body, trunk, crop, bins, unknowns, reach=32):
    """Square crops within `reach` pixels of `crop` whose trunk map (from the registry)
    every bin count divides, nearest first, at most three."""
    found = []
    for delta in sorted(range(-reach, reach + 1), key=abs):
        size = crop.h + delta
        if size < 1:
            continue
        a = _analyse_at(name, image, (1, channels, size, size), body, unknowns)
        shape = a.shapes.get(trunk) if a is not None else None
        if shape and all(shape[2] % n == 0 and shape[3] % n == 0 for n in bins):
            found.append(f"{size} (map {shape[2]}x{shape[3]})")
            if len(found) == 3:
                break
    return found


class _Tail:
    """The data layers, the label branches and the losses (train); the Input and the
    upsampling (deploy); for several scales, the scores brought back to the main grid and
    fused by Eltwise MAX. Sizes come from the branches' analyses; `check` reads them back
    from the registry in the assembled nets."""

    def __init__(self, image, channels, crop, classes, ignore_label, data, upsample, branches):
        self.image, self.channels, self.crop, self.classes = image, channels, crop, classes
        self.ignore, self.data, self.upsample, self.branches = ignore_label, data, upsample, \
            branches
        main = branches[0]
        self.stride = main.geometry.stride.h
        if main.geometry.stride.h != main.geometry.stride.w:
            raise SurgeryError("the score's stride differs per axis; segment needs one stride",
                               blob=main.score)
        self.offset = main.geometry.offset
        self.label_note = ""
        self.pairs = []         # (score, label) the train net compares

    # -- inputs ---------------------------------------------------------------
    def train_inputs(self):
        b = NetBuilder()
        if self.data == "imagesegdata":
            b.layer("ImageSegData", "data", (), [self.image, "label", "data_dim"],
                    transform_param={"mirror": True, "crop_size": self.crop.h,
                                     "mean_value": list(MEAN_BGR)},
                    image_data_param={"root_folder": "${DATA_ROOT}", "source": "${TRAIN_LIST}",
                                      "batch_size": TRAIN_BATCH, "shuffle": True,
                                      "label_type": "PIXEL"})
            if self.crop.h != self.crop.w:
                raise SurgeryError("ImageSegData crops squares (one crop_size); use --data "
                                   "input for a non-square crop")
        else:
            b.input(self.image, (1, self.channels, self.crop.h, self.crop.w))
            b.input("label", (1, 1, self.crop.h, self.crop.w))
        return list(b.net.layer)

    def deploy_inputs(self):
        return [_input_layer(self.image, (1, self.channels, self.crop.h, self.crop.w))]

    # -- several scales: back onto the main grid ----------------------------------
    def _fused(self, b):
        """The main score, or the Eltwise MAX of every scale's score brought back to the
        main grid (Interp shrink then zoom by the inverse scale, as DeepLab does). That is
        exact when crop - 1 is a multiple of stride x shrink for every scale (321 for 0.75
        at stride 8): the resized image, every map and the way back then fall on pixels."""
        main = self.branches[0]
        if len(self.branches) == 1:
            return main.score
        step = math.lcm(*(self.stride * branch.scale.shrink for branch in self.branches))
        if (self.crop.h - 1) % step or (self.crop.w - 1) % step:
            k = max(1, round((self.crop.h - 1) / step))
            raise SurgeryError(f"--scales at crop {self.crop.h}x{self.crop.w}: the scales line "
                               f"up on the main grid when crop - 1 is a multiple of {step} "
                               f"(stride {self.stride} x each scale's shrink_factor); use "
                               f"--crop {step * k + 1}")
        scores = [main.score]
        for branch in self.branches[1:]:
            s = branch.scale
            params = {"shrink_factor": s.zoom} if s.zoom > 1 else {}
            if s.shrink > 1:
                params["zoom_factor"] = s.shrink
            layer = b.layer("Interp", f"{branch.score}_interp", [branch.score],
                            [f"{branch.score}_interp"], interp_param=params)
            got = rule_for(layer.type).out_shapes(layer, [branch.score_shape])[0][2:]
            if tuple(got) != tuple(main.score_shape[2:]):
                raise SurgeryError(f"--scales {float(s.value):g}: its score map "
                                   f"{branch.score_shape[2]}x{branch.score_shape[3]} comes back "
                                   f"as {got[0]}x{got[1]}, not the main "
                                   f"{main.score_shape[2]}x{main.score_shape[3]}", blob=branch.score)
            scores.append(layer.top[0])
        return b.eltwise(f"{main.score}_fusion", scores, operation="MAX")

    # -- the label on a score's grid ---------------------------------------------
    def _label(self, b, name, factor, n, offset, score):
        """DeepLab's Interp shrink of the label so that sample j lands on image pixel
        c + factor*j, c the first score pixel's centre (or the pixel before it, when it
        falls between two pixels): pad_beg/pad_end crop the label to fit. Score pixels
        centred past the image's end (a CEIL pool's extra window) have no label: a Crop
        leaves them out of the loss. Returns (the note, the score blob to compare)."""
        off = [Fraction(o) for o in offset]
        if min(off) < 0:
            raise SurgeryError(f"the first score pixel is centred at "
                               f"{tuple(map(float, off))}, outside the image; the label "
                               "cannot be put on its grid")
        start = Pair(int(off[0]), int(off[1]))
        past = [max(0, k - 1 - (size - 1 - o) // factor) for k, size, o in
                zip(n, self.crop, start)]
        kept = [k - p for k, p in zip(n, past)]
        if min(kept) < 1:
            raise SurgeryError(f"the crop {self.crop.h}x{self.crop.w} ends before the centre "
                               "of the first score pixel")
        ends = [factor * (k - 1) + 1 - (size - o) for k, size, o in zip(kept, self.crop, start)]
        params = {"shrink_factor": factor}
        if start.h or start.w or min(ends) < 0:
            if start.h != start.w or ends[0] != ends[1]:
                raise SurgeryError("Interp crops both axes alike; the score grid needs "
                                   "different crops per axis (use a square crop)")
            params.update(pad_beg=-start.h, pad_end=ends[0])
        b.layer("Interp", name, ["label"], [name], interp_param=params)
        if any(past):
            score = b.layer("Crop", f"{score}_crop", [score, name], [f"{score}_crop"],
                            crop_param={"axis": 2, "offset": [0]}).top[0]
        between = max(o - s for o, s in zip(off, start))
        pads = (f", pad_beg {params['pad_beg']} pad_end {params['pad_end']}"
                if "pad_beg" in params else "")
        where = (f"{start.h} + {factor}*j" if start.h else f"{factor}*j")
        left = (f"; the last {max(past)} score pixel(s), centred past the image, are cropped "
                f"from the loss (a crop of {factor}k+1 has none)" if any(past) else "")
        return (f"Interp shrink_factor {factor}{pads}: label sample j is image pixel {where}, "
                + ("the centre of score pixel j" if not between
                   else f"{float(between):g} pixel before the centre of score pixel j")
                + left), score

    def train_end(self):
        b = NetBuilder()
        main = self.branches[0]
        if self.upsample == "deconv":
            scores, lag = _bilinear(b, "upscore", main.score, self.image, factor=self.stride,
                                    channels=self.classes, shift=self.offset)
            self.pairs.append((scores, "label"))
            self.label_note = (f"label: full size; scores upsampled by a bilinear Deconvolution "
                               f"(kernel {2 * self.stride - self.stride % 2}, stride "
                               f"{self.stride}) and cropped to the image: upsampled pixel k is "
                               f"image pixel k{_signed(float(lag[0]))}")
            fused = scores
        else:
            note, fused = self._label(b, "label_shrink", self.stride, main.score_shape[2:],
                                      self.offset, self._fused(b))
            self.label_note = f"label: {note}"
            self.pairs.append((fused, "label_shrink"))
        b.layer("SoftmaxWithLoss", "loss", [fused, self.pairs[0][1]], ["loss"],
                loss_param={"ignore_label": self.ignore})
        if len(self.branches) > 1:
            self._scale_losses(b)
        b.layer("Accuracy", "accuracy", [fused, self.pairs[0][1]], ["accuracy"],
                accuracy_param={"ignore_label": self.ignore})
        if self.data == "imagesegdata":
            b.layer("Silence", "silence", ["data_dim"], [])
        return list(b.net.layer)

    def _scale_losses(self, b):
        """One loss per scale, as DeepLab's multi-scale nets have: the main scale's and a
        scale whose stride on the image is whole (0.5: 16) against the label shrunk to its
        own grid; another (0.75) on its score brought back to the main grid."""
        main = self.branches[0]
        b.layer("SoftmaxWithLoss", "loss_res1", [main.score, "label_shrink"], ["loss_res1"],
                loss_param={"ignore_label": self.ignore})
        self.pairs.append((main.score, "label_shrink"))
        for branch in self.branches[1:]:
            factor = Fraction(self.stride) / branch.scale.value
            score, label = f"{branch.score}_interp", "label_shrink"
            if factor.denominator == 1 and factor != self.stride:
                label = f"label_shrink{factor}"
                offset = [Fraction(o) / branch.scale.value for o in branch.geometry.offset]
                _, score = self._label(b, label, int(factor), branch.score_shape[2:], offset,
                                       branch.score)
            b.layer("SoftmaxWithLoss", f"loss{branch.scale.suffix}", [score, label],
                    [f"loss{branch.scale.suffix}"], loss_param={"ignore_label": self.ignore})
            self.pairs.append((score, label))

    def deploy_end(self):
        b = NetBuilder()
        main = self.branches[0]
        if self.upsample == "deconv":
            self.output, self.lag = _bilinear(b, "upscore", main.score, self.image,
                                              factor=self.stride, channels=self.classes,
                                              shift=self.offset)
            return list(b.net.layer)
        fused = self._fused(b)
        b.layer("Interp", "upscore", [fused], ["upscore"],
                interp_param={"zoom_factor": self.stride})
        self.output = "upscore"
        size = [self.stride * (n - 1) + 1 for n in main.score_shape[2:]]
        if not any(self.offset) and all(s > c for s, c in zip(size, self.crop)):
            b.layer("Crop", "upscore_crop", ["upscore", self.image], ["upscore_crop"],
                    crop_param={"axis": 2, "offset": [0]})
            self.output = "upscore_crop"
        return list(b.net.layer)

    # -- sizes, from the registry ------------------------------------------------
    def check(self, train_a, deploy_a):
        """Every (score, label) the train net compares has one size, per the registry."""
        for scores, label in self.pairs:
            got_s, got_l = train_a.shapes[scores], train_a.shapes[label]
            if tuple(got_s[2:]) != tuple(got_l[2:]):
                raise SurgeryError(f"label {'x'.join(map(str, got_l[2:]))} and score "
                                   f"{'x'.join(map(str, got_s[2:]))} differ in the train net",
                                   blob=label)
        return train_a

    def output_note(self, deploy_a):
        shape = deploy_a.shapes[self.output]
        size = f"deploy output '{self.output}' {shape[2]}x{shape[3]}"
        if self.upsample == "deconv":
            return f"{size}, the crop size"
        off = self.offset
        zoom = f"Interp zoom_factor {self.stride}"
        if not any(off) and tuple(shape[2:]) == tuple(self.crop):
            return f"{size}: the whole image, pixel k on image pixel k ({zoom})"
        return (f"{size}: image pixels {_pair_text(off)}..{float(off[0]) + shape[2] - 1:g} "
                f"({zoom}); a crop of {self.stride}k+1 on a centred grid covers the image")


def _signed(x):
    return "" if x == 0 else f" {'+' if x > 0 else '-'} {abs(x):g}"


# ---------------------------------------------------------------------------
# The solver
# ---------------------------------------------------------------------------

def solver(segmented, train_path, *, max_iter=20000, iter_size=None, snapshot=2000,
           snapshot_prefix=None):
    """DeepLab v2's solver for the train net at `train_path` (as the user wrote it): SGD
    with the poly schedule (power 0.9), momentum 0.9, weight decay 5e-4, the head kind's
    base_lr (2.5e-4; 1e-3 for VGG's LargeFOV); `iter_size` makes the batch DeepLab's 10
    (1 with ImageSegData's batch of 10, 10 with an Input batch of 1)."""
    batch = next((layer.image_data_param.batch_size for layer in segmented.train.layer
                  if layer.HasField("image_data_param")), 1) or 1
    s = caffe_pb2.SolverParameter()
    s.net = train_path
    s.base_lr = segmented.report.base_lr
    s.lr_policy = "poly"
    s.power = 0.9
    s.momentum = 0.9
    s.weight_decay = 5e-4
    s.iter_size = iter_size or max(1, TRAIN_BATCH // batch)
    s.max_iter = max_iter
    s.average_loss = 20
    s.display = 20
    s.snapshot = snapshot
    s.snapshot_prefix = snapshot_prefix or re.sub(r"\.prototxt$", "", train_path)
    return s


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------

def head_weights(segmented, *, seed=0):
    """LayerWeights (surgery.weights.plan) for every new head layer with params, each blob
    `New`, drawn from its filler seeded by (seed, layer, blob)."""
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
    from ..analysis.check import OK, compare, wanted_shapes

    converted = {p.target for p in segmented.fcn.layers} if segmented.fcn is not None else set()
    skip = set(segmented.report.new_params) | converted
    shapes = wanted_shapes(analyse(segmented.train))
    expected = {name: value for name, value in shapes.items() if name not in skip}
    for row in compare(expected, summary).layers:
        if row.name in expected and expected[row.name] and row.status != OK:
            raise SurgeryError(f"the weights ({summary.path}) do not fit the backbone here "
                               f"({row.status.replace('_', ' ')}: {row.message or 'see check'})",
                               layer=row.name)


def write_weights(segmented, weights_in, weights_out, *, seed=0, outputs=None):
    """Stream `weights_in` to `weights_out` (backbone layers byte for byte; fcn-converted
    layers rebuilt) and append the new head layers; atomically, or staged in `outputs`
    (an io.atomic.Outputs transaction) when given. Without `weights_in`, the file holds
    the new layers only (Caffe's `--weights` takes it after the backbone's,
    comma-separated). Returns the names added."""
    from ..io.caffemodel import read_caffemodel
    from ..weights import writer
    from ..weights.plan import WeightPlan

    new = head_weights(segmented, seed=seed)
    if weights_in is None:
        if segmented.fcn is not None:
            raise SurgeryError("--weights-out needs --weights here: fc6/fc7 are rebuilt from "
                               "the backbone's fully connected weights")
        writer.write(WeightPlan(add=tuple(new)), weights_out, outputs=outputs)
        return [e.name for e in new]
    summary = read_caffemodel(weights_in)
    _check_backbone(segmented, summary)
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
