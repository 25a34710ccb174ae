"""Fully-convolutional surgery: InnerProduct layers become Convolutions (NOTES §2, fc->conv).

An InnerProduct on a (N, C, H, W) map computes exactly what a Convolution with an HxW
kernel computes at the one position where the kernel covers the whole map; its weight
(num_output, C*H*W) is that kernel flattened row-major. Later InnerProducts (on (N, C)
or 1x1 inputs) are 1x1 convolutions. So the net keeps its numbers and learns nothing new;
it only stops insisting on one input size.

Caffe matches weights by layer name, so converted layers get new names (`rename`), and a
plan says how to rebuild their blobs; `transplant` streams a caffemodel through that plan
(other layers are copied byte for byte).

Padding. `pad="valid"` adds none: at the analysed input size the output is 1x1 and equals
the fc output. `pad="same"` pads floor((extent-1)/2), where extent = dilation*(k-1)+1, so
a larger input gives an output of the input's size and the fc output sits at the centre.
For an even extent no symmetric pad keeps the size: the output is one pixel smaller than
the input on that axis, and at the analysed size the fc value sits at index extent/2 - 1,
still the exact centre of the (odd-sized) output. The change list gives that position.

Decimation (DeepLab-LargeFOV, SSD's reduced fc6): `{"fc6": ((3, 3), 1024)}` keeps kernel
taps 0, s, 2s, ... with s = (K-1)/(k-1) per axis (0, 3, 6 for 7 -> 3; s must be an integer
so the kept taps are evenly spaced and a dilation of s reaches them; k == 1 keeps the
centre tap of an odd K), gives the conv dilation s so its extent stays K, and keeps output
channels 0, t, 2t, ... with t = N/n (must divide). The same channel rule drops the matching
input channels of every converted layer that reads the decimated blob. Decimation is an
approximation (a different, smaller net); the change list says so.
"""

import re
from typing import NamedTuple, Optional

import numpy as np

from .. import layers as registry
from ..analysis.analyse import analyse
from ..errors import SurgeryError
from ..analysis.graph import described_phases
from .grid import Grid
from ..layers import rule_for
from ..pair import Pair, Window
from .regrid import APPROXIMATE, EXACT, Regrid
from .walk import Change, convert, walk

PAD_CHOICES = ("same", "valid")
BAND_BYTES = 8 << 20   # source bytes read at a time when a weight is cut, not just reshaped
CONV_TYPE = registry.Convolution.types[0]


# ---------------------------------------------------------------------------
# Plan: how each converted layer's blobs are rebuilt from the source weights
# ---------------------------------------------------------------------------

class LayerPlan(NamedTuple):
    """Rebuild one converted layer's blobs from the source fc layer's blobs.

    weight: (N, C*H*W) (or (C*H*W, N) when `transpose`) -> (N, C, H, W) row-major, then
    keep output channels ::out_step, input channels ::in_step and taps ::tap_step (the
    first `kernel_out` of them per axis). bias: (N,) -> (N,)[::out_step].
    """

    source: str          # layer name in the original net and caffemodel
    target: str          # the converted layer's name
    num_output: int      # N of the source weights
    channels: int        # C of the source weights
    kernel: Pair         # (H, W): the fc input's spatial size, as a kernel
    transpose: bool
    bias: bool
    out_step: int = 1
    in_step: int = 1
    tap_step: Pair = Pair(1, 1)
    tap_start: Pair = Pair(0, 0)
    kernel_out: Optional[Pair] = None   # kept taps per axis (None: all of `kernel`)
    bottoms: tuple = ()
    tops: tuple = ()

    @property
    def out_kernel(self):
        return self.kernel_out or self.kernel

    @property
    def weight_shape(self):
        k = self.out_kernel
        return (self.num_output // self.out_step, self.channels // self.in_step, k.h, k.w)

    def weight(self, array):
        """The converted weight blob from the source one (any dtype, legacy 4-D dims too)."""
        n, c, (h, w) = self.num_output, self.channels, self.kernel
        flat = np.asarray(array)
        if flat.size != n * c * h * w:
            raise SurgeryError(f"weight blob has {flat.size} values, the net needs "
                               f"{n}x{c * h * w} = {n * c * h * w}; the weights do not belong "
                               "to this prototxt", layer=self.source)
        flat = flat.reshape(c * h * w, n).T if self.transpose else flat.reshape(n, c * h * w)
        kernel = flat.reshape(n, c, h, w)
        k = self.out_kernel
        rows = slice(self.tap_start.h, self.tap_start.h + self.tap_step.h * (k.h - 1) + 1,
                     self.tap_step.h)
        cols = slice(self.tap_start.w, self.tap_start.w + self.tap_step.w * (k.w - 1) + 1,
                     self.tap_step.w)
        return np.ascontiguousarray(kernel[::self.out_step, ::self.in_step, rows, cols])

    @property
    def reshape_only(self):
        """The weight keeps every value in the same order: only its shape changes."""
        return (not self.transpose and self.out_step == 1 and self.in_step == 1
                and self.out_kernel == self.kernel)

    def weight_pieces(self, reader, budget=BAND_BYTES):
        """The converted weight in C order, in pieces, read from an open BlobReader of the
        source weight: a reshape copies the bytes; otherwise bands of kept rows are read
        (about `budget` bytes of source at a time), so memory stays bounded whatever the
        size of the layer."""
        n, c, (h, w) = self.num_output, self.channels, self.kernel
        if reader.blob.count != n * c * h * w:
            raise SurgeryError(f"weight blob has {reader.blob.count} values, the net needs "
                               f"{n}x{c * h * w} = {n * c * h * w}; the weights do not belong "
                               "to this prototxt", layer=self.source)
        if self.reshape_only:
            if reader.packed:
                yield from reader.raw_pieces()
                return
            step = max(1, budget // reader.dtype.itemsize)
            for start in range(0, reader.blob.count, step):
                yield reader.read(start, min(step, reader.blob.count - start))
            return
        k = c * h * w
        kept = range(0, n, self.out_step)
        per_band = max(1, budget // (k * reader.dtype.itemsize))
        for first in range(0, len(kept), per_band):
            rows = kept[first:first + per_band]
            if self.transpose:
                band = self._columns(reader, rows, k, n)
            elif self.out_step == 1:
                band = reader.read(rows[0] * k, len(rows) * k).reshape(len(rows), k)
            else:
                band = np.empty((len(rows), k), reader.native)
                for i, r in enumerate(rows):
                    band[i] = reader.read(r * k, k)
            yield self._select(band.reshape(len(rows), c, h, w))

    def weight_values(self, inputs):
        """The converted weight's pieces, read from the source layer's weight blob
        (`inputs`: surgery.weights.writer.Inputs) as they are written."""
        with inputs.open(0) as reader:
            yield from self.weight_pieces(reader)

    def bias_values(self, inputs):
        yield self.bias_blob(inputs.read(1))

    def _columns(self, reader, rows, k, n):
        """Source columns `rows` of a transposed (K, N) weight, as (len(rows), K) rows."""
        lo, hi = rows[0], rows[-1] + 1
        block = np.empty((k, hi - lo), reader.native)
        for i in range(k):
            block[i] = reader.read(i * n + lo, hi - lo)
        return block[:, ::self.out_step].T

    def _select(self, kernel):
        """Kept input channels and taps of rows already cut to the kept outputs."""
        k = self.out_kernel
        rows = slice(self.tap_start.h, self.tap_start.h + self.tap_step.h * (k.h - 1) + 1,
                     self.tap_step.h)
        cols = slice(self.tap_start.w, self.tap_start.w + self.tap_step.w * (k.w - 1) + 1,
                     self.tap_step.w)
        return np.ascontiguousarray(kernel[:, ::self.in_step, rows, cols])

    def bias_blob(self, array):
        flat = np.asarray(array).reshape(-1)
        if flat.size != self.num_output:
            raise SurgeryError(f"bias blob has {flat.size} values, the net needs "
                               f"{self.num_output}", layer=self.source)
        return np.ascontiguousarray(flat[::self.out_step])

    def to_json(self):
        return {"source": self.source, "target": self.target,
                "weight": {"from": [self.num_output, self.channels * self.kernel.h * self.kernel.w]
                           if not self.transpose else
                           [self.channels * self.kernel.h * self.kernel.w, self.num_output],
                           "transpose": self.transpose,
                           "reshape": [self.num_output, self.channels, *self.kernel],
                           "to": list(self.weight_shape)},
                "bias": self.bias, "out_channel_step": self.out_step,
                "in_channel_step": self.in_step, "tap_step": list(self.tap_step),
                "tap_start": list(self.tap_start)}


class FcnPlan(NamedTuple):
    layers: list      # LayerPlan per converted layer, in net order
    changes: list     # Change per converted/removed layer
    pad: str
    notes: list

    @property
    def exact(self):
        return all(c.exact for c in self.changes)

    def rename_map(self):
        return {p.source: p.target for p in self.layers}

    def to_json(self):
        return {"pad": self.pad, "exact": self.exact,
                "changes": [c.to_json() for c in self.changes],
                "weights": [p.to_json() for p in self.layers], "notes": list(self.notes)}


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------

_DECIMATE = re.compile(r"^\s*([^=]+?)\s*=\s*(\d+)(?:\s*x\s*(\d+))?\s*(?::\s*(\d+))?\s*$")


def parse_decimate(specs):
    """["fc6=3x3:1024", "fc7=:512"...] -> {"fc6": (Pair(3, 3), 1024)}; kernel or channels may be None."""
    out = {}
    for spec in specs or ():
        match = _DECIMATE.match(spec)
        alt = re.match(r"^\s*([^=]+?)\s*=\s*:\s*(\d+)\s*$", spec)
        if match:
            name, kh, kw, n = match.groups()
            kernel = Pair(int(kh), int(kw if kw is not None else kh))
        elif alt:
            name, n = alt.groups()
            kernel = None
        else:
            raise SurgeryError(f"bad --decimate '{spec}'; expected LAYER=KHxKW[:CHANNELS], "
                               "e.g. fc6=3x3:1024")
        if name in out:
            raise SurgeryError(f"--decimate names layer '{name}' twice")
        channels = int(n) if n is not None else None
        if (kernel is not None and min(kernel) < 1) or channels == 0:
            raise SurgeryError(f"bad --decimate '{spec}': sizes must be positive")
        out[name] = (kernel, channels)
    return out


def _new_name(rename, name):
    try:
        return rename.format(name=name)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise SurgeryError(f"bad --rename pattern '{rename}' ({exc!s}); use {{name}} for the "
                           "old name, e.g. '{name}-conv'") from None


def _taps(name, big, small):
    """(start, step) of `small` evenly spaced taps across a `big` kernel axis."""
    if small > big:
        raise SurgeryError(f"cannot decimate a {big}-tap kernel axis to {small} taps", layer=name)
    if small == 1:
        if big % 2 == 0:
            raise SurgeryError(f"decimating an even {big}-tap axis to 1 tap has no centre tap",
                               layer=name)
        return (big - 1) // 2, 1
    if (big - 1) % (small - 1):
        raise SurgeryError(f"{small} evenly spaced taps do not fit a {big}-tap kernel axis "
                           f"({big - 1} is not a multiple of {small - 1})", layer=name)
    return 0, (big - 1) // (small - 1)


# ---------------------------------------------------------------------------
# Graph questions, answered through the registry
# ---------------------------------------------------------------------------

def _is_fc(rule):
    return rule.fully_connected


def _is_view(rule, node, analysis):
    """A layer that only regroups the axes of its input (Flatten, Reshape): no params, one
    bottom, one top, the same values in the same memory order."""
    if not rule.view:
        return False
    return len(node.bottoms) == 1 and len(node.tops) == 1 and not analysis.param_shapes.get(node.name)


def _source_of(analysis, blob, node):
    """Walk back from an fc's bottom through views to the map the conv must read.

    Returns (blob, [view nodes passed])."""
    graph = analysis.graph
    passed = []
    while True:
        writers = graph.writers(blob)
        if len(writers) != 1:
            return blob, passed
        writer = writers[0]
        rule = writer.rule
        if not _is_view(rule, writer, analysis):
            return blob, passed
        if writer.bottoms[0] == blob:
            raise SurgeryError("an in-place reshape feeds this InnerProduct; the convolution "
                               "needs the 4-D map before it", layer=node.name)
        passed.append(writer)
        blob = writer.bottoms[0]


# ---------------------------------------------------------------------------
# The pass
# ---------------------------------------------------------------------------

class FcnPolicy:
    """Which layers become convolutions: every fully connected one, on the map its
    views flatten. Strides and dilations stay; the walk carries where each converted
    value sits (its grid offset). Decimation is bookkept here, per blob."""

    pooling = "strict"
    dilation = "strict"

    def wanted(self, node):
        """No layer is asked onto another grid: fcn keeps every grid."""
        return (None, None)

    def __init__(self, analysis, *, pad, rename, decimate):
        self.analysis, self.pad, self.rename, self.decimate = analysis, pad, rename, decimate
        self.four_d, self.channel_step, self.shapes = set(), {}, {}
        self.plans, self.views = {}, {}     # layer name -> LayerPlan; view index -> node

    def stride(self, step, window):
        return window.stride

    def dilation_scale(self, step, rule, window, f_in, f_out):
        return f_in, ""

    def describe(self, node, rule, outcome):
        if node.name not in self.plans:
            return None        # e.g. a loss now seeing a map: the notes say so
        plan = self.plans[node.name]
        return Change(node.name, node.type, "convert", None, rule_for(CONV_TYPE).window(outcome.layer),
                      outcome.status, outcome.note, details=(
                          ("new_name", plan.target), ("bottom", plan.bottoms[0]),
                          ("input_shape", self.shapes[node.name]),
                          ("num_output", (plan.num_output, plan.num_output // plan.out_step)),
                          ("position", outcome.grid.offset.map(int))))

    def visit(self, node, rule, step):
        if rule.fully_connected:
            return self._convert(node, rule, step)
        if _is_view(rule, node, self.analysis):
            return Regrid(grid=step.grid_in)     # a view regroups axes; positions stay
        pointwise = rule.keeps_grid(node.layer)
        if node.bottoms and pointwise and node.bottoms[0] in self.four_d:
            self.four_d.update(node.tops)
        for b in node.bottoms:
            step_b = self.channel_step.get(b, 1)
            if step_b == 1:
                continue
            if self.analysis.param_shapes.get(node.name):
                raise SurgeryError(f"reads '{b}', whose channels are decimated, and has "
                                   "weights sized for all of them; decimation cannot pass "
                                   "through it", layer=node.name)
            if pointwise:
                self.channel_step.update(dict.fromkeys(node.tops, step_b))
        return None

    def _convert(self, node, rule, step):
        analysis, layer = self.analysis, node.layer
        ipp = layer.inner_product_param
        bottom_shape = analysis.shapes.get(node.bottoms[0]) if node.bottoms else None
        if bottom_shape is None or None in bottom_shape:
            raise SurgeryError("the size of this InnerProduct's input is unknown, so its kernel "
                               "size is too; give the input size with --input-shape NAME=N,C,H,W",
                               layer=node.name)
        if registry.canonical_axis(layer, ipp.axis, len(bottom_shape)) != 1:
            raise SurgeryError(f"InnerProduct with axis {ipp.axis} (not 1) has no convolution "
                               "equivalent here", layer=node.name)
        source, views = _source_of(analysis, node.bottoms[0], node)
        shape = analysis.shapes.get(source)
        if shape is None or None in shape:
            raise SurgeryError(f"the size of blob '{source}' is unknown; give the input size with "
                               "--input-shape NAME=N,C,H,W", layer=node.name)
        if len(shape) == 4:
            channels, kernel = shape[1], Pair(shape[2], shape[3])
        elif len(shape) == 2 and source in self.four_d:
            channels, kernel = shape[1], Pair(1, 1)
        else:
            raise SurgeryError(f"its input '{source}' has shape {tuple(shape)}, not a (N, C, H, W) "
                               "map nor the output of a converted layer, so it cannot become a "
                               "convolution", layer=node.name)
        n = ipp.num_output
        in_step = self.channel_step.get(source, 1)
        if channels % in_step:
            raise SurgeryError(f"input channel decimation step {in_step} does not divide {channels}",
                               layer=node.name)
        tap_start, tap_step, kernel_out, out_step = Pair(0, 0), Pair(1, 1), None, 1
        exact = in_step == 1
        notes = []
        if in_step != 1:
            notes.append(f"input channels {channels} -> {channels // in_step} (every {in_step}th)")
        if node.name in self.decimate:
            want_kernel, want_n = self.decimate[node.name]
            exact = False
            if want_kernel is not None and want_kernel != kernel:
                (sh, dh), (sw, dw) = (_taps(node.name, kernel.h, want_kernel.h),
                                      _taps(node.name, kernel.w, want_kernel.w))
                tap_start, tap_step, kernel_out = Pair(sh, sw), Pair(dh, dw), want_kernel
                notes.append(f"kernel {kernel.h}x{kernel.w} -> {want_kernel.h}x{want_kernel.w} "
                             f"(taps every {dh}x{dw}, from {sh},{sw})")
            if want_n is not None and want_n != n:
                if want_n > n or n % want_n:
                    raise SurgeryError(f"cannot decimate {n} outputs to {want_n}: {want_n} must "
                                       f"divide {n}", layer=node.name)
                out_step = n // want_n
                notes.append(f"outputs {n} -> {want_n} (every {out_step}th: 0, {out_step}, ...)")
        k = kernel_out or kernel
        dilation = Pair(*(s if kk > 1 else 1 for s, kk in zip(tap_step, k)))
        extent = Pair(*(d * (kk - 1) + 1 for d, kk in zip(dilation, k)))
        pads = Pair(*((e - 1) // 2 for e in extent)) if self.pad == "same" else Pair(0, 0)
        # Output o's first tap reads input o - pad; the fc's first kept tap read tap_start.
        centre = Pair(pads.h + tap_start.h, pads.w + tap_start.w)
        if self.pad == "same" and any(e % 2 == 0 for e in extent):
            notes.append("even kernel: the output is one pixel smaller than the input on that "
                         f"axis; the fc value sits at index {tuple(centre)}")
        before = step.grid_in.offset      # views pass their input's grid on (see visit)
        where = Pair(before.h + centre.h, before.w + centre.w)
        window = Window(k, Pair(1, 1), pads, dilation)
        new = rule.as_convolution(layer, _new_name(self.rename, node.name), source, window,
                                  n // out_step)
        self.plans[node.name] = LayerPlan(
            source=node.name, target=new.name, num_output=n, channels=channels, kernel=kernel,
            transpose=bool(ipp.transpose), bias=bool(ipp.bias_term), out_step=out_step,
            in_step=in_step, tap_step=tap_step, tap_start=tap_start, kernel_out=kernel_out,
            bottoms=tuple(new.bottom), tops=tuple(new.top))
        self.shapes[node.name] = tuple(shape)
        for view in views:
            self.views[view.index] = view
        self.four_d.update(node.tops)
        if out_step != 1:
            self.channel_step.update(dict.fromkeys(node.tops, out_step))
        return Regrid(new, Grid.of(1, where), EXACT if exact else APPROXIMATE, "; ".join(notes))

    def removable_views(self):
        """Views whose readers are all converted (rewired past them) or views that go too;
        shrunk to a fixed point so a still-needed chain stays whole."""
        graph = self.analysis.graph
        converted = {n.index for n in graph.nodes if n.name in self.plans}
        removable = dict(self.views)
        changed = True
        while changed:
            changed = False
            for index, view in list(removable.items()):
                users = graph.consumers(view.tops[0])
                if not all(u.index in converted or u.index in removable for u in users):
                    del removable[index]
                    changed = True
        return removable


def convolutionalize(net, *, input_shapes=None, pad="same", rename="{name}-conv", decimate=None,
                     unknowns=None):
    """(new_net, FcnPlan): every InnerProduct of `net` rewritten as a Convolution.

    `net` is an upgraded NetParameter and is not modified. `decimate` maps an fc layer name
    to (kernel Pair or None, channels or None); see the module docstring for the rules.
    """
    if pad not in PAD_CHOICES:
        raise SurgeryError(f"--pad must be one of {', '.join(PAD_CHOICES)}, got '{pad}'")
    decimate = dict(decimate or {})
    walked, plans = {}, {}
    for phase in described_phases(net):
        analysis = analyse(net, input_shapes=input_shapes, phase=phase, unknowns=unknowns)
        policy = FcnPolicy(analysis, pad=pad, rename=rename, decimate=decimate)
        walked[phase] = (walk(analysis, policy, phase=phase), policy)
        for name, plan in policy.plans.items():
            plans.setdefault(name, plan)
    if not plans:
        raise SurgeryError("no InnerProduct layer to convert; the net is already fully "
                           "convolutional")
    unknown = sorted(set(decimate) - set(plans))
    if unknown:
        raise SurgeryError(f"--decimate names '{unknown[0]}', which is not an InnerProduct "
                           "of the net", layer=unknown[0])
    # A view still read in one phase stays, even where the other phase could drop it.
    needed = {v.name for _, policy in walked.values() for i, v in policy.views.items()
              if i not in policy.removable_views()}
    removed = {}

    def plan_phase(phase):
        result, policy = walked[phase]
        gone = {v.name: "reshape before a converted layer; the convolution reads the 4-D map"
                for v in policy.removable_views().values() if v.name not in needed}
        removed.update(gone)
        return result, gone

    try:
        new, changes, _ = convert(net, plan_phase, phases=list(walked))
    except SurgeryError as exc:
        if "different rewrites" not in exc.message:
            raise
        raise SurgeryError("the TRAIN and TEST phases need different convolutions for this "
                           "layer (their input sizes differ)", layer=exc.layer) from None
    _check_names(net, plans, removed)
    targets = {p.target for p in plans.values()}
    notes = _validate(new, input_shapes, targets, unknowns)
    order = {layer.name: i for i, layer in enumerate(net.layer)}
    return new, FcnPlan(sorted(plans.values(), key=lambda p: order[p.source]), changes, pad, notes)


def _check_names(net, plans, removed):
    """New names must not collide with each other or with the layers that stay."""
    staying = {l.name for l in net.layer if l.name not in plans and l.name not in removed}
    taken = set()
    for plan in plans.values():
        if plan.target in staying or plan.target in taken:
            raise SurgeryError(f"the new name '{plan.target}' is already a layer name; choose "
                               "another --rename pattern", layer=plan.source)
        taken.add(plan.target)


def _validate(new, input_shapes, targets, unknowns):
    """Analyse the result, so a conversion Caffe would reject never gets written."""
    notes = []
    for phase in described_phases(new):
        try:
            after = analyse(new, input_shapes=input_shapes, phase=phase, unknowns=unknowns)
        except SurgeryError as exc:
            raise SurgeryError(f"the converted net is not valid ({exc})") from None
        for reason in after.stopped.values():
            notes.append(f"{phase}: shape inference stopped after the rewrite: {reason}")
        for node in after.graph.nodes:
            rule = node.rule
            if rule.collapses(node.layer) and node.name not in targets:
                ins = [after.shapes.get(b) for b in node.bottoms]
                if any(s is not None and len(s) == 4 and s[2] * s[3] > 1 for s in ins) or \
                        _downstream_of_conv(after, node, targets):
                    notes.append(f"layer '{node.name}' ({node.type}) still collapses the map; "
                                 "on a larger input it mixes positions")
    return sorted(set(notes), key=notes.index)


def _downstream_of_conv(analysis, node, targets):
    return any(w.name in targets for b in node.bottoms for w in analysis.graph.writers(b))


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------

def weight_plan(plan, summary):
    """The WeightPlan (surgery.weights.plan) that applies `plan` to `summary`'s weights.

    Converted layers become new Convolution layers at the same place in the file; every
    other layer is copied byte for byte. A plain reshape is `Reshaped` (the bytes copied);
    a decimated or transposed weight is `Replaced`, read in bands as it is written, so
    memory stays bounded whatever the size of a layer. Every source layer is checked
    first, so a mismatch is found before anything is written.
    """
    from ..weights.plan import LayerWeights, Replaced, Reshaped, WeightPlan
    from ..weights.writer import check

    by_name = {}
    for layer in summary.layers:
        by_name.setdefault(layer.name, layer)
    targets = {p.target for p in plan.layers}
    sources = {p.source for p in plan.layers}
    for p in plan.layers:
        info = by_name.get(p.source)
        if info is None:
            raise SurgeryError(f"the weights ({summary.path}) have no layer of this name",
                               layer=p.source)
        want = 2 if p.bias else 1
        if len(info.blobs) != want:
            raise SurgeryError(f"the weights ({summary.path}) have {len(info.blobs)} blob(s) "
                               f"for this layer, the net needs {want}", layer=p.source)
        n, k = p.num_output, p.channels * p.kernel.h * p.kernel.w
        if info.blobs[0].count != n * k or (p.bias and info.blobs[1].count != n):
            counts = ", ".join(str(b.count) for b in info.blobs)
            raise SurgeryError(f"the weights ({summary.path}) hold {counts} values here, which "
                               f"do not fit a {n}x{k} InnerProduct; they belong to another net",
                               layer=p.source)
    for layer in summary.layers:
        if layer.name in targets and layer.name not in sources:
            raise SurgeryError(f"the weights ({summary.path}) already hold a layer called "
                               f"'{layer.name}'; choose another --rename pattern", layer=layer.name)
    edits = []
    for p in plan.layers:
        weight = Reshaped(0, p.weight_shape) if p.reshape_only else \
            Replaced(p.weight_shape, p.weight_values)
        blobs = (weight,)
        if p.bias:
            n = p.num_output // p.out_step
            blobs += (Reshaped(1, (n,)) if p.out_step == 1 else
                      Replaced((n,), p.bias_values, like=1),)
        edits.append(LayerWeights(p.target, blobs, source=p.source, type=CONV_TYPE,
                                  bottoms=p.bottoms, tops=p.tops))
    planned = WeightPlan(edit=tuple(edits))
    check(planned, summary)
    return planned


def transplant(plan, weights_in, weights_out, *, in_place=False, outputs=None):
    """Write `weights_in` converted by `plan` to `weights_out`, atomically and streaming
    (staged in `outputs`, an io.atomic.Outputs transaction, when given).

    Returns the source Summary. Raises SurgeryError, writing nothing, when the weights do
    not fit the plan."""
    from ..io.caffemodel import read_caffemodel
    from ..weights import writer

    summary = read_caffemodel(weights_in)
    writer.write(weight_plan(plan, summary), weights_out, source=summary, in_place=in_place,
                 outputs=outputs)
    return summary


def format_plan(plan):
    """Human summary of what convolutionalize changed."""
    lines = []
    for c in plan.changes:
        if c.action == "remove":
            lines.append(f"  removed   {c.layer}: {c.note}")
            continue
        w, (n_in, n_out), where = c.after, c.get("num_output"), c.get("position")
        size = f"{w.kernel.h}x{w.kernel.w}"
        extra = ""
        if w.dilation != Pair(1, 1):
            extra += f" dilation {w.dilation.h},{w.dilation.w}" if w.dilation.h != w.dilation.w \
                else f" dilation {w.dilation.h}"
        if w.pad != Pair(0, 0):
            extra += f" pad {w.pad.h},{w.pad.w}" if w.pad.h != w.pad.w else f" pad {w.pad.h}"
        outs = n_in if n_in == n_out else f"{n_in}->{n_out}"
        lines.append(f"  converted {c.layer} -> {c.get('new_name')}: Convolution {size}{extra}, "
                     f"{outs} outputs, on '{c.get('bottom')}' {list(c.get('input_shape'))}; fc value at "
                     f"({where.h},{where.w}){'' if c.exact else ' [approximate]'}")
        if c.note:
            lines.append(f"            {c.note}")
    head = f"fcn: {sum(c.action == 'convert' for c in plan.changes)} layer(s) converted, " \
           f"pad {plan.pad}, {'exact' if plan.exact else 'approximate (decimated)'}"
    out = [head] + lines + [f"  note: {n}" for n in plan.notes]
    return "\n".join(out) + "\n"
