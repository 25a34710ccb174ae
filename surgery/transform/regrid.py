"""The vocabulary of regridding, and how a sliding window moves to another grid.

A conversion walks the net once (transform/walk.py) and asks each layer's registry rule
`rule.regrid(layer, step)` how that layer must change so that its output lands on the
grid the policy wants, given the grid its input now lives on (`step.grid_in`, a
grid.Grid relating converted samples to original ones). The rule answers with a
`Regrid`: the new layer (or None when it stays as it is), the grid of its outputs, and
a status:

- EXACT: the converted output equals the original on the stated grid;
- APPROXIMATE: the closest grid-aligned choice (a widened pooling window);
- ADAPTED: an intended change that keeps the net's meaning at the new stride but is not
  numerically equal (a label shrink factor, a pyramid-pooling kernel).

`window_regrid` is the exact rule for kernel/stride/pad/dilation layers (NOTES §2): a
layer whose input has factor f gets dilation*f and pad*f, so its taps land on the pixels
they were trained on; the stride it keeps is the policy's choice, and its output factor
follows. Caffe's CEIL pooling may have a last, partial window; where a stride goes, one
more pad keeps that window, and a little more zero pad can align the output grid.
"""

import math
from fractions import Fraction
from typing import NamedTuple

from ..errors import SurgeryError
from .grid import Grid
from ..pair import Pair, Window

EXACT, APPROXIMATE, ADAPTED = "EXACT", "APPROXIMATE", "ADAPTED"
SAME_GRID = Grid.of(1, 0)
STATUSES = (EXACT, APPROXIMATE, ADAPTED)


class Unreachable(Exception):
    """No exact rewrite of one layer reaches the policy's grid: args (layer name, why)."""


class Regrid(NamedTuple):
    """A rule's answer for one layer."""

    layer: object = None          # the new LayerParameter, None when the layer stays
    grid: Grid = None             # grid of every top (None: the walk keeps the input's)
    status: str = EXACT
    note: str = ""
    issue: str = None             # why the run must stop here (under the current options)
    head: bool = False            # weights sized for the map: a head the pass must resolve
    size_flags: tuple = None      # per-axis decisions that depend on the input size
    deviates: bool = False        # not the exact rewrite, though one exists (a convention)


class Step(NamedTuple):
    """What a rule needs to know about one layer of the original net during a walk."""

    node: object          # graph.Node
    grid_in: Grid         # grid of the spatial bottom(s) (a join's inputs agree)
    geometry_in: object   # original Geometry of bottom 0, or None
    in_shapes: list       # original bottom shapes (tuples or None)
    out_shapes: list      # original top shapes
    policy: object        # the pass's policy (stride choice, conventions, options)
    side: bool = False    # on a side branch resampled back to the trunk (PSPNet pyramid)
    wanted: tuple = (None, None)   # (Grid, (h, w)) the pass wants this layer's output on
    bottom_grids: tuple = ()       # the grid of every bottom, in order (None: not spatial)


def _centre(window, axis):
    """Centre of output pixel 0's window on its input grid: (extent-1)/2 - pad."""
    return ratio(window.extent[axis] - 1 - 2 * window.pad[axis], 2)


def ratio(a, b):
    """a / b exactly: an int when it divides (nearly always), else a Fraction. The walk
    meets a window layer per layer of the net, and Fraction arithmetic is slow where
    every value is whole."""
    if type(a) is int and type(b) is int:
        return a // b if a % b == 0 else Fraction(a, b)
    return a / b        # a Fraction on either side keeps it exact


def whole_as_int(x):
    """A Fraction that is whole as an int (its arithmetic is then int arithmetic)."""
    return x.numerator if x.denominator == 1 else x


def _fraction(x):
    return x if type(x) is Fraction else Fraction(x)


def extra_window(in_size, out_size, window):
    """Per axis: does the layer have a last, partial window that floor rounding drops?"""
    return Pair(*(o > (h + 2 * p - e) // s + 1 for h, o, e, s, p in
                  zip(in_size, out_size, window.extent, window.stride, window.pad)))


def _scaled_pad(pad, kernel, dilation, rounded, scale):
    """The pad of a kernel whose dilation was rounded: the part that centres its taps,
    d*(k-1)/2, follows the new dilation; the rest (a border the net adds around the map,
    like Dilation's 33 on its first context layer) scales with the map, rounded."""
    border = pad - Fraction(dilation * (kernel - 1), 2)
    return max(0, math.floor(Fraction(rounded * (kernel - 1), 2) + border * scale))


def _whole(value, layer, what, scale):
    """`value` (a pad or dilation `what`, times `scale`) as a whole number, or Unreachable."""
    if value.denominator != 1:
        times = f"divided by {1 / scale}" if scale < 1 else f"times {scale}"
        raise Unreachable(layer, f"its {what} {times} is not whole")
    return int(value)


def _meets(factor, offset):
    """Whether offset + factor*x is a whole number for some whole x."""
    return any((offset + factor * x).denominator == 1 for x in range(factor.denominator))


def _extra_coarse_window(rule, new, step, f_out, offset):
    """Per axis, whether a pooling made coarser (on an unchanged input) gains a last, partial
    CEIL window past the end of the denser net's output: a sample with no twin there, which
    layers reading the border would see where the denser net saw padding. None when that
    is not the case to judge (or the sizes are unknown)."""
    if step.grid_in.factor != (1, 1) or all(f >= 1 for f in f_out):
        return None
    in_shape = step.in_shapes[0] if step.in_shapes else None
    out_shape = step.out_shapes[0] if step.out_shapes else None
    if in_shape is None or out_shape is None or len(in_shape) != 4 or None in in_shape + out_shape:
        return None
    coarse = rule.out_shapes(new, [in_shape])[0]
    return Pair(*((coarse[2 + a] - 1 - offset[a]) / f_out[a] > out_shape[2 + a] - 1
                  for a in range(2)))


def pyramid_regrid(rule, layer, step):
    """A pooling on a side branch that is resampled back to the trunk (PSPNet's pyramid,
    kernel and stride in map pixels) keeps its bin count on the new map: kernel, stride and
    pad scale with the map (ADAPTED), rounded where a bin is no longer whole."""
    win = rule.window(layer)
    f = step.grid_in.factor
    scaled = [Pair(*(v * g for v, g in zip(part, f))) for part in (win.kernel, win.stride, win.pad)]
    kernel, stride, pad = (Pair(*(max(1 if i < 2 else 0, round(v)) for v in part))
                           for i, part in enumerate(scaled))
    notes = [f"pyramid bin kept: window {win.kernel.h}x{win.kernel.w} -> {kernel.h}x{kernel.w}"]
    if any(v.denominator != 1 for part in scaled for v in part):
        notes.append("the bins are no longer whole on the new map (rounded)")
    after = Window(kernel, stride, pad, win.dilation)
    return Regrid(rule.with_window(layer, after), SAME_GRID, ADAPTED, "; ".join(notes) +
                  " (adapted)")


def window_regrid(rule, layer, step):
    """The exact rule for a sliding-window layer (see the module docstring)."""
    node, policy = step.node, step.policy
    win = rule.window(layer)
    if step.side and not rule.dilatable and not step.grid_in.identity:
        return pyramid_regrid(rule, layer, step)
    if step.geometry_in is None:
        if step.grid_in.identity:
            return Regrid(grid=step.grid_in)
        return Regrid(issue="its input's stride is unknown (geometry stopped upstream), so it "
                            "cannot be rewritten")
    # Whole factors and offsets (nearly every layer) as ints; the Grid holds Fractions.
    f_in, o_in = (Pair(*map(whole_as_int, part)) for part in step.grid_in)
    stride = policy.stride(step, win)
    f_out = Pair(*(ratio(f * s, n) for f, s, n in zip(f_in, win.stride, stride)))
    loses = any(fo > fi for fo, fi in zip(f_out, f_in))     # a stride goes (densifying)
    status, notes, issue, flags = 0, [], None, None
    scale, why = policy.dilation_scale(step, rule, win, f_in, f_out)
    if why:
        status = max(status, 1)
        notes.append(why)
    deviates = bool(why)
    # A 1-wide kernel axis has no taps to spread, so its dilation stays; its pad is a
    # shift of the grid and scales like any other.
    spread = Pair(*(f if k > 1 else 1 for f, k in zip(scale, win.kernel)))
    kernel, dilation, rounded = win.kernel, win.dilation, False
    narrowing = not rule.dilatable and any(k > 1 and f < 1 for k, f in zip(kernel, f_in))
    if narrowing:
        # On a coarser grid a pooling window narrows to the same extent where that is a
        # whole window, and stays as it is otherwise (approximate either way: the denser
        # net's window saw the samples in between).
        if policy.pooling == "strict":
            raise Unreachable(node.name, f"its {win.kernel.h}x{win.kernel.w} pooling window has "
                                         "no dilation to divide by the coarsening")
        whole = all(((k - 1) * f).denominator == 1 and (p * f).denominator == 1
                    for k, p, f in zip(win.kernel, win.pad, f_in))
        if whole:
            kernel = Pair(*(int((k - 1) * f + 1) for k, f in zip(win.kernel, f_in)))
        pad = Pair(*(int(p * f) for p, f in zip(win.pad, f_in))) if whole else win.pad
        status = max(status, 1)
        notes.append(f"window {'narrowed to' if whole else 'kept at'} {kernel.h}x{kernel.w} on "
                     "the coarser map (approximate)")
    elif rule.dilatable and policy.dilation == "round" and any(
            (d * s).denominator != 1 or (p * s).denominator != 1
            for d, p, s in zip(win.dilation, win.pad, spread)):
        # Coarser than the dilation allows: the nearest whole dilation (at least 1), the
        # pad scaled with it so the window stays where it was centred (approximate).
        rounded = True
        dilation = Pair(*(max(1, round(d * s)) for d, s in zip(win.dilation, spread)))
        pad = Pair(*(_scaled_pad(p, k, d, d2, s) for p, k, d, d2, s in
                     zip(win.pad, win.kernel, win.dilation, dilation, scale)))
        status = max(status, 1)
        notes.append(f"dilation {win.dilation.h},{win.dilation.w} -> {dilation.h},{dilation.w}: "
                     "the exact one is not whole on the coarser map (rounded, approximate)")
    else:
        pad = Pair(*(_whole(p * s, node.name, f"pad {p}", s) for p, s in zip(win.pad, scale)))
    if rounded:
        pass
    elif rule.dilatable:
        dilation = Pair(*(_whole(d * s, node.name, f"dilation {d}", s)
                          for d, s in zip(win.dilation, spread)))
    elif narrowing:
        pass
    elif any(k > 1 and f > 1 for k, f in zip(kernel, f_in)):
        # No dilation field (pooling): widening the window is the closest grid-aligned choice.
        kernel = Pair(*(_whole((k - 1) * f + 1, node.name, f"window {k}", f)
                        for k, f in zip(win.kernel, f_in)))
        status = max(status, 1)
        notes.append(f"window widened to {kernel.h}x{kernel.w} (approximate)")
        if policy.pooling == "strict":
            issue = (f"its {win.kernel.h}x{win.kernel.w} {layer.type} window follows a removed "
                     "stride and has no dilation field, so no exact rewrite exists")
    if loses:
        in_shape = step.in_shapes[0] if step.in_shapes else None
        out_shape = step.out_shapes[0] if step.out_shapes else None
        if (in_shape is None or out_shape is None) and not rule.dilatable:
            status = max(status, 1)
            notes.append("input size unknown, so Caffe's partial CEIL window could not be "
                         "checked; give --input-shape")
        if in_shape is not None and out_shape is not None and len(in_shape) == 4:
            flags = extra_window(in_shape[2:], out_shape[2:], win)
            bump = Pair(*(s - 1 if (x and n == 1) else 0
                          for x, s, n in zip(flags, win.stride, stride)))
            if any(x and n != 1 and s != n for x, s, n in zip(flags, win.stride, stride)):
                status = max(status, 1)
                notes.append("a partial CEIL window is lost (stride only partly removed)")
            if any(bump):
                pad = Pair(pad.h + bump.h, pad.w + bump.w)
                notes.append(f"pad +{bump.h},{bump.w} keeps the last partial (CEIL) window")
                if not rule.pad_is_neutral(layer):
                    status = max(status, 1)
                    notes.append("the extra pad changes border averages")
    offset = []
    for axis in range(2):
        after = Window(kernel, stride, pad, dilation)
        shift = o_in[axis] + f_in[axis] * _centre(win, axis) - _centre(after, axis)
        dense = f_out[axis] >= 1 and f_out[axis].denominator == 1
        if dense and shift.denominator == 1 and shift % stride[axis] and rule.pad_is_neutral(layer):
            need = stride[axis] - int(shift) % stride[axis]   # a little more zero pad aligns it
            pad = Pair(*(p + need if a == axis else p for a, p in enumerate(pad)))
            shift += need
        value = ratio(shift, stride[axis])
        if not dense:
            # Coarser than the original: samples coincide wherever offset + f*x is whole.
            if not _meets(f_out[axis], value):
                status = max(status, 1)
                notes.append("output shares no sample with the original grid")
            offset.append(value)
            continue
        if value.denominator != 1 or value < 0:
            status = max(status, 1)
            notes.append("output is off the original grid")
        offset.append(math.floor(value))
    after = Window(kernel, stride, pad, dilation)
    f_out, offset = Pair(*map(_fraction, f_out)), Pair(*map(_fraction, offset))
    new = None
    if after != win:
        new = rule.with_window(layer, after)
        try:
            rule.window(new)
        except SurgeryError as exc:
            raise SurgeryError(f"the rewritten window {tuple(map(tuple, after))} is not one "
                               f"Caffe accepts ({exc.message}); choose another input size",
                               layer=node.name) from None
    if new is not None and not rule.dilatable:
        extra = _extra_coarse_window(rule, new, step, f_out, offset)
        if extra is not None:
            flags = extra       # size-dependent: verify and --input-shape see it
            if any(extra):
                status = max(status, 1)
                notes.append("a last, partial (CEIL) window the denser net does not have "
                             "changes what reads the border (approximate)")
    note = "; ".join(dict.fromkeys(notes))
    return Regrid(new, Grid(f_out, offset), (EXACT, APPROXIMATE)[status], note, issue,
                  size_flags=flags, deviates=deviates)


def upsampler_regrid(rule, layer, step):
    """A Deconvolution that upsamples (FCN's `upscore`, Dilation's `ctx_upsample`) lands its
    output on the grid the pass wants (the original's unless a join names another). From
    an input on grid (f, o), stride s becomes s' = g*s/f for a wanted factor g. The output
    sample y sits at input coordinate (y + p - (k-1)/2)/s, so the converted output has
    offset  o_out = s'*o + g*(p - (k-1)/2) - p' + (k'-1)/2:  the kernel k' keeps the
    original's phase (odd or even taps), the pad p' makes o_out the wanted offset (where
    that pad would be negative, zero taps around the kernel do it instead). A new stride
    takes the bilinear kernel of its factor, 2s'-1 or 2s' taps, whose weights the
    registry rule rewrites (ADAPTED: interpolating a denser map is not the same numbers)."""
    wanted = step.wanted[0] or SAME_GRID
    win = rule.window(layer)
    f_in, o_in = step.grid_in
    if step.grid_in == wanted and step.wanted[0] is None:
        return Regrid(grid=wanted)
    if win.dilation != (1, 1):
        return Regrid(grid=wanted, issue="a dilated Deconvolution has no upsampling rule to "
                                         "follow the grid")
    kernel, stride, pad, offset = [], [], [], []
    for k, s, p, f, o, g, o_w in zip(win.kernel, win.stride, win.pad, f_in, o_in,
                                     wanted.factor, wanted.offset):
        s2 = g * s / f
        if s2.denominator != 1:
            return Regrid(grid=wanted, issue=(f"an upsampling by {s2} would put it back on the "
                                              "grid it had, and no whole stride does that; stop "
                                              "before it with --cut-after BLOB"))
        s2 = int(s2)
        shift = s2 * o + g * (p - Fraction(k - 1, 2))
        phase = (o_w - shift) % 1
        if phase not in (0, Fraction(1, 2)):
            return Regrid(grid=wanted, issue="no kernel puts its output on the grid it must reach "
                                             f"(a phase of {phase} pixel)")
        k2 = k if s2 == s and Fraction(k - 1, 2) % 1 == phase else 2 * s2 - (phase == 0)
        p2 = int(shift + Fraction(k2 - 1, 2) - o_w)
        if p2 < 0:      # a pad cannot be negative: zero taps around the kernel shift it
            k2, p2 = k2 - 2 * p2, 0
        kernel.append(k2)
        stride.append(s2)
        pad.append(p2)
        offset.append(shift - p2 + Fraction(k2 - 1, 2))
    grid = Grid(wanted.factor, Pair(*offset))
    after = Window(Pair(*kernel), Pair(*stride), Pair(*pad), win.dilation)
    if after == win:
        return Regrid(grid=grid)
    new = rule.with_window(layer, after)
    if after.stride == win.stride and f_in == (1, 1):
        return Regrid(new, grid, EXACT, "the same upsampling, shifted by its pad or by zero "
                                        "taps around its kernel")
    note = (f"upsamples by {after.stride.h}x{after.stride.w} instead of "
            f"{win.stride.h}x{win.stride.w}" if after.stride != win.stride else "same factor")
    if after.kernel != win.kernel:
        note += f", kernel {win.kernel.h}x{win.kernel.w} -> {after.kernel.h}x{after.kernel.w}"
    if rule.new_weights(win, after):
        note += " (new weights)"
    return Regrid(new, grid, ADAPTED, note + " (adapted)")


def crop_regrid(offsets, step):
    """New spatial Crop offsets (h, w) so that the cropped blob lands on the grid of the
    blob it lines up with (its second bottom, unless the pass names another grid): with
    its input on (f, o) and the wanted grid (f, o_w), offset c becomes o - o_w + f*c.
    None when the Crop stays. Returns (offsets, grid, issue)."""
    reference = step.bottom_grids[1] if len(step.bottom_grids) > 1 else None
    wanted = step.wanted[0] or reference or SAME_GRID
    new = []
    for c, f, o, g, o_w in zip(offsets, *step.grid_in, *wanted):
        if f != g:      # where it stays, its output keeps its input's factor
            kept = Grid(step.grid_in.factor,
                        Pair(*(o + (f - 1) * c for c, f, o in zip(offsets, *step.grid_in))))
            return None, kept, ("Crop cannot change the grid's factor (its input is on "
                                f"factor {f}, the blob it must match on {g})")
        c2 = o - o_w + f * c
        if c2.denominator != 1 or c2 < 0:
            return None, wanted, f"no whole offset >= 0 aligns it (it would need {c2})"
        new.append(int(c2))
    return (None if tuple(new) == tuple(offsets) else Pair(*new)), wanted, None
