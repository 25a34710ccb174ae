"""The per-layer-type registry: every fact about a Caffe layer type lives here.

`rule_for(type_string)` returns a LayerRule. Shape inference, geometry, FLOPs and the
passes all ask the rule instead of testing `layer.type`, so supporting a new type means
adding one class below. Facts follow BVLC Caffe (NOTES §1) and the forks named in
NOTES §3; where a fork is ambiguous the class docstring says what was chosen.

Roles (`Role`, DESIGN.md): what a layer does to the spatial grid. `rule.role` is the
type's usual role; `rule.role_of(layer)` refines it for one layer (global pooling
collapses, a Concat or Slice off the channel axis resamples). The rest of the package
never compares roles: it asks the rule's predicates (`keeps_grid`, `reads_window`,
`joins`, `collapses`, `resamples`, `sinks`, `makes_data`, `known`), and shows a role by
`role_name`.
"""

import enum

import math
from fractions import Fraction
from typing import NamedTuple, Optional

from .errors import SurgeryError
from .transform.grid import SAME
from .pair import Pair, Window
from .transform.regrid import ADAPTED, APPROXIMATE, Regrid, crop_regrid, upsampler_regrid, window_regrid


class Role(enum.Enum):
    """What a layer does to the spatial grid; the value is the name reports show."""

    SOURCE = "source"          # makes blobs (Input, Data, ...)
    POINTWISE = "pointwise"    # keeps its input's grid and shape (ReLU, BatchNorm, ...)
    WINDOW = "window"          # a sliding window: kernel, stride, pad (Convolution, Pooling)
    JOIN = "join"              # reads several blobs on one grid (Eltwise, channel Concat)
    COLLAPSE = "collapse"      # removes the grid (InnerProduct, global pooling, Flatten)
    RESAMPLE = "resample"      # changes the grid by its own rule (Interp, Deconvolution, Crop)
    SINK = "sink"              # no spatial output (losses, Accuracy, Silence)
    UNKNOWN = "unknown"        # not in the registry


class Unknown(Exception):
    """A rule cannot tell (missing size, runtime-dependent, unsupported form); not a user error."""


class ChannelAffine(NamedTuple):
    """What a layer computes per channel c of axis 1 at inference, read from its blobs:
    y = scale_c * (x - mean_c) / sqrt(var_c + eps) + shift_c. Each term is a blob index;
    None means scale 1, shift 0, mean 0, and without `var` no normalisation (and no eps).
    `factor` is BVLC BatchNorm's moving-average factor f: mean and var are stored times f
    (f = 0 means zero statistics). `batch` says why the layer normalises with each batch's
    own statistics instead (then no fixed map exists), "" when it does not."""

    scale: Optional[int] = None
    shift: Optional[int] = None
    mean: Optional[int] = None
    var: Optional[int] = None
    factor: Optional[int] = None
    eps: float = 0.0
    batch: str = ""


class WeightLayout(NamedTuple):
    """Where a layer's output channels sit in its weight blob (the first `rank` axes that
    count; legacy 4-D blobs carry leading 1s): output channel o of element (i, j, ...) is
    i when `axis` is 0, and (i // (shape[0] / groups)) * shape[1] + j when `axis` is 1
    (a Deconvolution's (C_in, C_out/group, kh, kw), a transposed InnerProduct's (K, N))."""

    axis: int
    groups: int
    rank: int


# ---------------------------------------------------------------------------
# Caffe arithmetic, exposed so passes can reason about sizes without a layer.
# ---------------------------------------------------------------------------

def conv_out_size(size, kernel, stride=1, pad=0, dilation=1):
    """Caffe convolution: floor((in + 2p - extent)/s) + 1."""
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


def deconv_out_size(size, kernel, stride=1, pad=0, dilation=1):
    """Caffe deconvolution: s*(in-1) + extent - 2p."""
    extent = dilation * (kernel - 1) + 1
    return stride * (size - 1) + extent - 2 * pad


def pool_out_size(size, kernel, stride=1, pad=0, *, ceil=True):
    """Caffe pooling, CEIL by default, with the rule that the last window must start inside."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_has_extra_window(size, kernel, stride=1, pad=0):
    """True when CEIL rounding adds a partial window that FLOOR would not."""
    return pool_out_size(size, kernel, stride, pad, ceil=True) != pool_out_size(
        size, kernel, stride, pad, ceil=False)


IDENTITY = Window(Pair(1, 1), Pair(1, 1), Pair(0, 0), Pair(1, 1))


# ---------------------------------------------------------------------------
# Field access that tolerates a schema without a fork's field.
# ---------------------------------------------------------------------------

def has_field(msg, name):
    """msg.HasField(name), False when the schema lacks the field."""
    try:
        return msg.HasField(name)
    except ValueError:
        return False


def memo_by(param):
    """Memoise a rule's `window(layer)` on the bytes of the layer's `param` sub-message, of
    which it is a pure function: shapes, geometry and the passes ask it of every layer
    many times per run. An error is raised again each time (its message names the layer)."""
    def decorate(method):
        cache = {}

        def window(self, layer):
            key = (type(self), getattr(layer, param).SerializeToString())
            try:
                return cache[key]
            except KeyError:
                if len(cache) >= 4096:      # a long-lived process sees many nets: stay small
                    cache.clear()
                found = cache[key] = method(self, layer)
                return found
        window.__doc__ = method.__doc__
        return window
    return decorate


def field(msg, name, default=None):
    """The field value (its schema default when unset), `default` when the schema lacks it."""
    if name not in msg.DESCRIPTOR.fields_by_name:
        return default
    return getattr(msg, name)


def sub(layer, name):
    """A parameter sub-message; Unknown when this schema cannot hold it."""
    if name not in layer.DESCRIPTOR.fields_by_name:
        raise Unknown(f"the schema has no {name}")
    return getattr(layer, name)


def _err(layer, message):
    return SurgeryError(message, layer=layer.name)


def count(shape):
    return math.prod(shape) if shape is not None else None


def canonical_axis(layer, axis, ndim):
    """Caffe's CanonicalAxisIndex with an error naming the layer."""
    if not -ndim <= axis < ndim:
        raise _err(layer, f"axis {axis} is out of range for a {ndim}-axis input")
    return axis % ndim


def _spatial4(layer, shape):
    if len(shape) < 3:
        raise _err(layer, f"needs an input with spatial axes, got shape {tuple(shape)}")
    if len(shape) != 4:
        raise Unknown(f"only 4-D (N, C, H, W) inputs are handled, got {len(shape)}-D")
    return shape


def _positive(layer, shape, what="output"):
    if any(d <= 0 for d in shape):
        raise _err(layer, f"{what} shape {tuple(shape)} has a non-positive size; "
                          "the input is too small for this layer")
    return tuple(shape)


def _blob_shape(blob_shape):
    return tuple(int(d) for d in blob_shape.dim)


# ---------------------------------------------------------------------------
# Base rules
# ---------------------------------------------------------------------------

class LayerRule:
    """Defaults: unknown role, no params, no window, no FLOPs."""

    types = ()
    role = Role.UNKNOWN
    dilatable = False        # can absorb an input factor exactly through its dilation field
    fully_connected = False  # weights see the whole input at once (InnerProduct)
    fits_joins = False       # a resampler whose output grid is set by the blob it meets
    shifts_only = False      # its output is its first bottom shifted (Crop): same factor
    view = False             # only regroups its input's axes, values and order unchanged
    # The types of this rule that BVLC Caffe has no layer for (a fork's layers): `verify
    # --engine caffe` refuses a net with one, auto falls back to OpenCV. A class whose
    # types are all a fork's sets `fork_types = types`.
    fork_types = ()
    # Caffe's upgrader sets lr_mult and decay_mult to 0 in the `param` specs of a layer
    # that declares exactly this many (its blobs must never be learned).
    frozen_param_specs = None
    # Random weights (surgery.weights.initweights): initialiser names per param blob, in Caffe's blob
    # order (blobs past the end get "small"), and the rule carrying per-channel moments.
    init = ()
    moment = "default"

    def role_of(self, layer):
        return self.role

    # The questions the package asks about a layer's role (never a role comparison outside
    # this module).
    def makes_data(self, layer):
        return self.role_of(layer) is Role.SOURCE

    def keeps_grid(self, layer):
        """Its output is on its input's grid, position for position (pointwise)."""
        return self.role_of(layer) is Role.POINTWISE

    def reads_window(self, layer):
        return self.role_of(layer) is Role.WINDOW

    def joins(self, layer):
        return self.role_of(layer) is Role.JOIN

    def collapses(self, layer):
        return self.role_of(layer) is Role.COLLAPSE

    def resamples(self, layer):
        return self.role_of(layer) is Role.RESAMPLE

    def sinks(self, layer):
        return self.role_of(layer) is Role.SINK

    def known(self, layer):
        return self.role_of(layer) is not Role.UNKNOWN

    def role_name(self, layer):
        """The role as reports and JSON show it."""
        return self.role_of(layer).value

    def fillers(self, layer):
        """The FillerParameter Caffe uses for each param blob when no weights are loaded,
        in blob order (`surgery.weights.fillers` turns them into values); None when the type has
        no filler fields (its blobs cannot be initialised from the prototxt)."""
        return None

    # fold (surgery/transform/fold.py): a normaliser (BatchNorm, the forks' BN) starts a
    # group that folds into the layer before it, or becomes one Scale.
    normalizes = False

    def channel_affine(self, layer, phase="TEST"):
        """The per-channel map the layer computes at `phase` (ChannelAffine), None when it
        is not one (a Scale on two bottoms or another axis, any other type)."""
        return None

    def training_updates(self, layer):
        """Why training changes this layer's blobs in TRAIN (statistics it updates, an
        lr_mult that is not 0), "" when it does not."""
        return ""

    def output_layout(self, layer):
        """WeightLayout of the weight blob, for scaling each output channel; None when the
        layer's outputs cannot absorb a per-channel scale and shift (no such weights, or
        its output channels are not on axis 1)."""
        return None

    def with_bias_term(self, layer):
        """A copy of `layer` that has a bias blob."""
        raise _err(layer, f"type '{layer.type}' has no bias term to add")

    def fine_tuned(self, layer, *, train):
        """A copy of a backbone layer set up for fine-tuning with small batches, as DeepLab
        does: a normalisation's statistics fixed and its learned blobs frozen, or (`train`)
        learned again. None for a layer that is not a normalisation (left as it is)."""
    def follows_grid(self, layer):
        """Whether this layer follows whatever grid its input moves to, ADAPTED: settings
        that encode the stride of the map it reads are rewritten for the new one (an RoI
        pooling's spatial_scale, an RPN's feat_stride, a prior box's step), or it turns
        the map into a list of positions that grows or shrinks with it (SSD's Flatten).
        It never limits coarsening, and the reports mark it ADAPTED."""
        return False

    def input_values(self, layer, bottom, inputs):
        """What a net input read as bottom number `bottom` of this layer must hold for a
        run to mean something (an array of the input's shape), or None when random
        values do; `inputs` maps the net's input blobs to their shapes (verify asks)."""
        return None

    def new_weights(self, before, after):
        """Whether a rewrite from window `before` to `after` needs new weights (a dilation
        or a stride kept or removed never does: the kernel sees the same taps)."""
        return False

    def resized_weights(self, old, new, open_reader):
        """(shape, pieces): the weight blob of `new`, a rewrite of `old` with another
        kernel, made from `old`'s weights (`open_reader()` gives an io.caffemodel.BlobReader
        to use in a `with`); `pieces()` yields its values in order, reading as it goes.
        Only an upsampler has such a rule."""
        raise _err(old, f"its param shapes change and type '{old.type}' has no rule for new "
                        "weights")

    def pad_is_neutral(self, layer):
        """Whether extra padding leaves every interior output unchanged (zeros for a
        convolution, ignored for MAX pooling); the dilate pass may then add pad to align grids."""
        return False

    def with_global(self, layer):
        raise _err(layer, f"type '{layer.type}' cannot become global pooling")

    def is_global(self, layer):
        """Whether the layer pools over the whole map whatever its size."""
        return False

    def rounds_down(self, layer):
        """Whether its output size rounds down (FLOOR) where Caffe's pooling rounds up."""
        return False

    def out_shapes(self, layer, in_shapes):
        raise Unknown(f"no shape rule for type '{layer.type}'")

    def param_shapes(self, layer, in_shapes):
        return []

    def param_count(self, layer, bottoms):
        """How many param blobs the layer has when its input sizes are unknown (asked of
        param_shapes on a small stand-in input); None when even that cannot tell."""
        try:
            return len(self.param_shapes(layer, [(1, 1, 3, 3)] * bottoms))
        except (SurgeryError, Unknown, ArithmeticError, IndexError, ValueError):
            return None

    def window(self, layer):
        return None

    def with_window(self, layer, window):
        raise _err(layer, f"type '{layer.type}' has no kernel/stride/pad to set")

    def grid_window(self, layer):
        """How the output grid sits on the input grid, as a Window; None = grid lost."""
        if self.keeps_grid(layer) or self.joins(layer):
            return IDENTITY
        if self.reads_window(layer):
            return self.window(layer)
        return None

    def grid_bottoms(self, layer):
        """Indices of bottoms that carry the spatial grid (all must align for a join)."""
        if self.joins(layer):
            return tuple(range(len(layer.bottom)))
        return (0,) if len(layer.bottom) else ()

    def flops(self, layer, in_shapes, out_shapes):
        return 0

    # -- regridding (see transform/regrid.py) ------------------------------------------------

    def regrid(self, layer, step):
        """How this layer moves to the grid its input now lives on. By role: a window
        follows the exact rule; pointwise layers, joins and sources keep their input's
        grid; anything else is unchanged while its input is, and otherwise must be a
        head (weights sized for the map), a sink (a loss or score over the map at the new
        stride: adapted), a collapse to one point (approximate over the new map), or
        stops the run."""
        if self.reads_window(layer):
            return window_regrid(self, layer, step)
        if self.keeps_grid(layer) or self.joins(layer) or self.makes_data(layer) or \
                step.grid_in.identity:
            return Regrid(grid=step.grid_in)
        if self.size_bound(layer, step.in_shapes):
            return Regrid(grid=SAME, head=True)
        if self.sinks(layer):
            where = "denser" if all(f >= 1 for f in step.grid_in.factor) else "coarser"
            return Regrid(grid=SAME, status=ADAPTED,
                          note=f"scores the {where} map, at the new stride (adapted)")
        if self.collapses_to_point(layer, step.out_shapes, len(step.in_shapes)):
            denser = all(f >= 1 for f in step.grid_in.factor)
            return Regrid(grid=SAME, status=APPROXIMATE, note=(
                "pools over the denser map, so it also sees positions the original never "
                "computed (approximate)" if denser else
                "pools over the coarser map, so it misses positions the original saw "
                "(approximate)"))
        why = ("its type is not in the registry, so what it does on a denser map is unknown"
               if not self.known(layer) else
               "it reshapes or collapses the map, so its output depends on the map size"
               if self.collapses(layer) else "it resamples the grid by its own rule")
        return Regrid(grid=SAME, issue=(f"{layer.type} after a removed stride has no exact "
                                        f"rewrite ({why}); stop before it with --cut-after BLOB"))

    def coarsen_limit(self, layer, limit_out, *, narrow=False, round_dilation=False):
        """Per axis, how much coarser this layer's spatial input may be made (an integer
        every coarsening factor must divide; 0: no limit), given `limit_out`, the limit of
        its outputs (surgery.analysis.nominal). A window's taps and pad must shrink to whole
        numbers: a kernel > 1 allows what divides its dilation and pad, and its output's
        limit too, since a coarsening only ever gives strides back and never takes one
        away (a stride-2 1x1 cannot pass its stride to the layer before it). A pooling
        has no dilation, so it allows
        nothing, unless `narrow` (--pooling cover) lets its window follow (approximate);
        `round_dilation` (--dilation round) lets a kernel whose dilation or pad does not
        divide round them (approximate), so only its stride limits.
        Pointwise layers and joins pass their output's limit; a global pooling and a sink
        have none (they average or score whatever map they get: where a stride comes back
        must not depend on a train net's losses), nor has a layer that follows the grid
        (`follows_grid`); any other layer allows none."""
        if self.follows_grid(layer):
            return Pair(0, 0)
        if self.keeps_grid(layer) or self.joins(layer):
            return limit_out
        if self.is_global(layer) or self.sinks(layer):
            return Pair(0, 0)
        if not self.reads_window(layer):
            return Pair(1, 1)
        win = self.window(layer)
        out = []
        for k, p, d, lim in zip(win.kernel, win.pad, win.dilation, limit_out):
            if narrow and not self.dilatable:     # a pooling window follows, approximately,
                out.append(0)                     # but never asks for a coarser input
                continue
            if round_dilation and self.dilatable:
                out.append(lim)
                continue
            taps = (d if self.dilatable else 1) if k > 1 else 0
            out.append(math.gcd(taps, p, lim))
        return Pair(*out)

    def size_bound(self, layer, in_shapes):
        """Whether the weight shapes depend on the input's spatial size (InnerProduct on a
        map): param_shapes asked with the real input and with one a pixel larger."""
        if not in_shapes or any(s is None or None in s for s in in_shapes):
            in_shapes = [(1, 1, 3, 3)] * max(len(in_shapes), 1)
        grown = [tuple(s[:2]) + tuple(d + 1 for d in s[2:]) for s in in_shapes]
        try:
            return self.param_shapes(layer, in_shapes) != self.param_shapes(layer, grown)
        except (SurgeryError, Unknown, ArithmeticError, IndexError, ValueError):
            return False

    def collapses_to_point(self, layer, out_shapes, bottoms):
        """Whether the output is 1x1 whatever the map size (global pooling); asked on two
        stand-in sizes when the real ones are unknown."""
        if out_shapes and all(s is not None and None not in s for s in out_shapes):
            return all(len(s) == 4 and s[2] == s[3] == 1 for s in out_shapes)
        try:
            runs = [self.out_shapes(layer, [(1, 1, n, n)] * bottoms) for n in (5, 9)]
        except (SurgeryError, Unknown, ArithmeticError, IndexError, ValueError):
            return False
        return all(len(s) == 4 and tuple(s[2:]) == (1, 1) for run in runs for s in run)

    def init_of(self, layer):
        """Initialiser names (keys of surgery.weights.initweights.INITIALISERS), one per param blob."""
        return self.init

    def moment_of(self, layer):
        """(name, options): the rule in surgery.weights.initweights.MOMENTS that carries per-channel
        mean and variance through this layer, with the settings of the layer it needs."""
        return self.moment, {}

    # -- other layers for the same arithmetic (transform/bvlc.py, engines/prepare.py) --------

    def bvlc_form(self, layer, in_shapes=None):
        """Layers of BVLC Caffe's own types that compute exactly what `layer` computes (up
        to float rounding order), in run order, writing its tops; the one that keeps its
        name takes the place of its weights. None when the type is BVLC's, or a fork's
        with no such form. `in_shapes`: its bottoms' shapes when known (a form that must
        name a channel count needs them). `form_blobs` says what their weights are."""
        return None

    def form_blobs(self, layer, form, shapes):
        """{name of a layer of `form`: its blobs as a weights.plan list (Copied, Reshaped,
        New)}, made from `layer`'s blobs, whose shapes in the weights file are `shapes`
        (None when the file has no layer of its name: only blobs made from nothing, New,
        can be given then). A form layer not named keeps the blobs of the layer of its
        name unchanged."""
        return {}

    def for_engine(self, layer, engine):
        """What `engine` ("caffe": BVLC Caffe with Python layers; "opencv": OpenCV DNN)
        runs in place of `layer` to compute what it computes: a list of LayerParameter
        (empty: the layer only writes or scores, and is left out of the run), or None to
        run it as it is. By default its exact BVLC form. A returned Input or Interp that
        gives no size takes its sizes from the analysis of the original (`with_sizes`)."""
        return self.bvlc_form(layer)

    def with_sizes(self, layer, in_shapes, out_shapes):
        """`layer` with the sizes it would otherwise compute at run time written out, from
        the analysed shapes (of the layer it replaces, for a layer `for_engine` made):
        engines/prepare.py asks it of every layer that runs."""
        return layer


class UnknownRule(LayerRule):
    """Any type the registry does not know: inference stops here."""

    def out_shapes(self, layer, in_shapes):
        raise Unknown(f"type '{layer.type}' is not in the registry{type_hint(layer.type)}")


def type_hint(type_string):
    """'; did you mean "Convolution"?' for a near-miss of a known type, else ''."""
    import difflib

    close = difflib.get_close_matches(type_string, known_types(), n=1, cutoff=0.8)
    return f'; did you mean "{close[0]}"?' if close else ""


class Pointwise(LayerRule):
    """Every top has the shape of bottom 0 (in-place capable)."""

    types = ("ReLU", "ELU", "Sigmoid", "TanH", "Power", "AbsVal", "BNLL", "Dropout",
             "Swish", "Threshold", "Exp", "Log", "LRN", "MVN", "Softmax", "Mish",
             "HardSigmoid", "Sign")
    fork_types = ("Mish", "HardSigmoid", "Sign")
    role = Role.POINTWISE
    moment = "keep"

    def moment_of(self, layer):
        if layer.type == "ReLU":
            return "relu", {"slope": layer.relu_param.negative_slope}
        return self.moment, {}

    def out_shapes(self, layer, in_shapes):
        return [tuple(in_shapes[0]) for _ in layer.top]


class ReLU6(Pointwise):
    """MobileNet forks' ReLU6, min(max(x, 0), 6): exactly BVLC's Clip{min 0, max 6}. (The
    forks' negative_slope variant is a field the schema lacks: a layer that sets it holds
    an unknown field, and such a layer is never rewritten.) OpenCV has ReLU6 itself and
    no Clip, so it runs the layer as it is."""

    types = ("ReLU6",)
    fork_types = types

    def bvlc_form(self, layer, in_shapes=None):
        clip = _form(layer, "Clip")
        clip.clip_param.min, clip.clip_param.max = 0.0, 6.0
        return [clip]

    def for_engine(self, layer, engine):
        return None if engine == "opencv" else self.bvlc_form(layer)


class Clip(Pointwise):
    """BVLC Clip: max(min, min(x, max)). OpenCV's importer lacks it; its ReLU6 is the
    same arithmetic for the bounds 0 and 6 (what `bvlc` makes of a ReLU6)."""

    types = ("Clip",)

    def for_engine(self, layer, engine):
        p = layer.clip_param
        if engine == "opencv" and (p.min, p.max) == (0.0, 6.0):
            return [_form(layer, "ReLU6")]
        return None


class Affine(Pointwise):
    """Per-element multiply-add layers: one op per output element."""

    types = ()

    def flops(self, layer, in_shapes, out_shapes):
        return count(out_shapes[0])


class Split(Pointwise):
    types = ("Split",)


class PReLU(Affine):
    """Slopes (C) or (1) when channel_shared."""

    types = ("PReLU",)
    init = ("slope",)

    def param_shapes(self, layer, in_shapes):
        if layer.prelu_param.channel_shared:
            return [(1,)]
        shape = in_shapes[0]
        return [(shape[1] if len(shape) > 1 else 1,)]


class BatchNorm(Affine):
    """BVLC BatchNorm: mean (C), variance (C), moving-average factor (1)."""

    types = ("BatchNorm",)
    frozen_param_specs = 3   # mean, variance, moving-average factor: never learned
    init = ("bn_mean", "bn_var", "ones")   # the scale factor 1 leaves the stats unscaled

    def moment_of(self, layer):
        return "batchnorm", {"eps": layer.batch_norm_param.eps}

    def param_shapes(self, layer, in_shapes):
        shape = in_shapes[0]
        c = shape[1] if len(shape) > 1 else 1
        return [(c,), (c,), (1,)]

    def fine_tuned(self, layer, *, train):
        """Frozen: the stored statistics in both phases (`use_global_stats`). `train`: batch
        statistics in TRAIN, so the moving averages follow the new data. The three blobs
        are statistics, never learned by the solver, either way."""
        new = _with_param_specs(layer, 3, lr_mult=0, decay_mult=0)
        if train:
            new.batch_norm_param.ClearField("use_global_stats")
        else:
            new.batch_norm_param.use_global_stats = True
        return new

    def fillers(self, layer):
        """Caffe zero-fills the three blobs; identity statistics (mean 0, variance 1,
        factor 1) make an untrained BatchNorm pass its input through."""
        return [_constant(0.0), _constant(1.0), _constant(1.0)]

    normalizes = True

    @staticmethod
    def _global_stats(layer, phase):
        """Caffe's LayerSetUp: the stored statistics at TEST, the batch's at TRAIN, unless
        use_global_stats is written (then it decides, in either phase)."""
        p = layer.batch_norm_param
        return p.use_global_stats if p.HasField("use_global_stats") else phase == "TEST"

    def channel_affine(self, layer, phase="TEST"):
        batch = "" if self._global_stats(layer, phase) else (
            f"it normalises with each batch's own statistics in {phase} (use_global_stats "
            f"{'false' if layer.batch_norm_param.HasField('use_global_stats') else 'unset'})")
        return ChannelAffine(mean=0, var=1, factor=2, eps=layer.batch_norm_param.eps, batch=batch)

    def training_updates(self, layer):
        """Caffe forces its lr_mult to 0; only the statistics can change, in TRAIN."""
        if self._global_stats(layer, "TRAIN"):
            return ""
        return "TRAIN updates its mean and variance (use_global_stats is not true)"

    def as_scale(self, layer):
        return _as_scale(layer, "batch_norm_param")


class BN(Affine):
    """Fork 'BN'. Two dialects share the type name:
    PSPNet (bn_param slope_filler/bias_filler/frozen): 4 blobs (1,C,1,1) = slope, bias, mean, var.
    SegNet/ENet (bn_param scale_filler/shift_filler/bn_mode): 2 blobs (1,C,1,1) = scale, shift.
    The dialect is read from which bn_param fields the layer sets; with none set, PSPNet."""

    types = ("BN",)
    fork_types = types
    SEGNET_FIELDS = ("scale_filler", "shift_filler", "bn_mode")
    init = ("gamma", "small", "bn_mean", "bn_var")   # PSPNet's order; SegNet's two match too

    def moment_of(self, layer):
        return "bn_fork", {"eps": field(sub(layer, "bn_param"), "eps", 1e-5)}

    def _segnet(self, layer):
        bn = field(layer, "bn_param")
        return bn is not None and any(has_field(bn, f) for f in self.SEGNET_FIELDS)

    def param_shapes(self, layer, in_shapes):
        c = in_shapes[0][1]
        blob = (1, c, 1, 1)
        return [blob, blob] if self._segnet(layer) else [blob, blob, blob, blob]

    normalizes = True
    INFERENCE = 1    # SegNet's BNMode: LEARN = 0 normalises with the batch, INFERENCE = 1 does not

    def channel_affine(self, layer, phase="TEST"):
        """PSPNet: scale·(x−mean)/sqrt(var+eps)+shift, eps from bn_param (default 1e-5),
        stored statistics at TEST or when frozen (its cuDNN engine clamps eps to at least
        1e-5; the CPU layer does not). SegNet: x·scale+shift in INFERENCE mode; LEARN
        normalises with the batch's statistics in every phase."""
        bn = sub(layer, "bn_param")
        if self._segnet(layer):
            if field(bn, "bn_mode", 0) == self.INFERENCE:
                return ChannelAffine(scale=0, shift=1)
            return ChannelAffine(scale=0, shift=1, batch=(
                "SegNet's bn_mode LEARN normalises with each batch's own statistics, at TEST "
                "too (bn_mode: INFERENCE uses the stored scale and shift)"))
        stored = field(bn, "frozen", False) or phase == "TEST"
        return ChannelAffine(scale=0, shift=1, mean=2, var=3, eps=field(bn, "eps", 1e-5),
                             batch="" if stored else
                             f"it normalises with each batch's statistics in {phase} "
                             "(bn_param.frozen is false)")

    def training_updates(self, layer):
        if self._segnet(layer):
            return _learned(layer, 2)
        if field(sub(layer, "bn_param"), "frozen", False):
            return ""       # the fork forces every lr_mult to 0 and keeps its statistics
        return "TRAIN updates its statistics and learns its scale and shift (bn_param.frozen is false)"

    def as_scale(self, layer):
        return _as_scale(layer, "bn_param")

    def bvlc_form(self, layer, in_shapes=None):
        """The fixed map `channel_affine` reads (hszhao/PSPNet and caffe-segnet
        bn_layer.cpp) in BVLC layers. PSPNet's (x - mean) * (var + eps)^-0.5 * slope +
        bias: BVLC's BatchNorm (stored statistics, eps inside the root as there) then a
        Scale with a bias, in place on its top; the Scale carries the slope and bias specs
        (lr 0 when frozen, as the fork forces). SegNet's INFERENCE x * scale + shift: one
        Scale with a bias, bit for bit. SegNet's LEARN mode normalises with the live batch's
        statistics, which no BVLC layer does: None."""
        affine = self.channel_affine(layer, "TEST")
        if affine.batch:
            return None
        if affine.var is None:
            scale = _form(layer, "Scale")
            scale.param.extend(layer.param)
            scale.scale_param.bias_term = True
            return [scale]
        norm = _form(layer, "BatchNorm")
        norm.batch_norm_param.use_global_stats = True
        if affine.eps != norm.batch_norm_param.eps:
            norm.batch_norm_param.eps = affine.eps
        scale = _form(layer, "Scale", name=f"{layer.name}_scale", bottoms=layer.top[:1],
                      tops=layer.top[:1])
        if field(sub(layer, "bn_param"), "frozen", False):
            for _ in range(2):
                scale.param.add(lr_mult=0, decay_mult=0)
        else:
            scale.param.extend(layer.param[:2])
        scale.scale_param.bias_term = True
        return [norm, scale]

    def form_blobs(self, layer, form, shapes):
        """BVLC checks blob shapes exactly on load, so the fork's (1, C, 1, 1) blobs go in
        as (C,): BatchNorm's mean and variance with a moving-average factor 1 (statistics
        used as stored), the Scale's scale and shift."""
        from .weights.plan import New, Reshaped     # late: io imports this module

        affine = self.channel_affine(layer, "TEST")
        if affine.batch or shapes is None:   # no BVLC form (its Python layer reads the
            return {}                        # fork's blobs as they are), or no blobs to read
        used = [i for i in affine[:4] if i is not None]
        if len(shapes) <= max(used):
            raise _err(layer, f"its weights hold {len(shapes)} blobs; this BN reads blob "
                              f"{max(used)}")
        flat = (count(shapes[affine.scale]),)
        scale = [Reshaped(affine.scale, flat), Reshaped(affine.shift, flat)]
        if affine.var is None:
            return {form[0].name: scale}
        return {form[0].name: [Reshaped(affine.mean, flat), Reshaped(affine.var, flat),
                               New((1,), filler=_constant(1.0))],
                form[1].name: scale}

    def for_engine(self, layer, engine):
        form = self.bvlc_form(layer)
        if form is None and engine == "caffe":    # SegNet LEARN: the batch statistics
            return [_python_form(layer, "BatchBN", {})]
        return form


def _with_param_specs(layer, blobs, *, lr_mult, decay_mult):
    """A copy of `layer` with exactly `blobs` param specs carrying these multipliers; the
    names of specs it had are kept (weight sharing)."""
    new = type(layer)()
    new.CopyFrom(layer)
    names = [spec.name for spec in layer.param]
    del new.param[:]
    for i in range(blobs):
        spec = new.param.add()
        if i < len(names) and names[i]:
            spec.name = names[i]
        spec.lr_mult, spec.decay_mult = lr_mult, decay_mult
    return new


def _constant(value):
    from .caffe_pb2 import FillerParameter
    return FillerParameter(type="constant", value=value)


def _learned(layer, blobs):
    """Why a layer's first `blobs` blobs are learned ("" when every lr_mult is 0); a blob
    with no `param` spec has lr_mult 1."""
    mults = [layer.param[i].lr_mult if i < len(layer.param) else 1.0 for i in range(blobs)]
    learned = [i for i, m in enumerate(mults) if m != 0]
    if not learned:
        return ""
    return f"TRAIN learns its blob(s) {', '.join(map(str, learned))} (lr_mult not 0)"


def _as_scale(layer, param):
    """A normaliser rewritten as the one Scale (with bias) that computes its fixed map: the
    same name, bottom, top and phase rules; its own parameter block and param specs go
    (a Scale has two blobs, and Caffe refuses more param specs than blobs)."""
    new = type(layer)()
    new.CopyFrom(layer)
    new.type = Scale.types[0]
    if param in new.DESCRIPTOR.fields_by_name:
        new.ClearField(param)
    del new.param[:]
    new.scale_param.bias_term = True
    return new


def _broadcast_shape(layer, shape, axis, num_axes):
    axis = canonical_axis(layer, axis, max(len(shape), 1)) if shape else 0
    end = len(shape) if num_axes == -1 else axis + num_axes
    if num_axes < -1 or end > len(shape):
        raise _err(layer, f"num_axes {num_axes} does not fit a {len(shape)}-axis input")
    return tuple(shape[axis:end])


class Scale(Affine):
    """One bottom: learned scale of shape in[axis:axis+num_axes] (+ bias of the same shape
    if bias_term). Two bottoms: the scale is bottom 1, so only the optional bias is a param,
    shaped like bottom 1 (Caffe builds it with num_axes = bottom 1's axis count)."""

    types = ("Scale",)
    init = ("gamma", "small")
    moment = "affine"

    def init_of(self, layer):
        return ("small",) if len(layer.bottom) > 1 else self.init   # only the bias is a param

    def moment_of(self, layer):
        return ("keep" if len(layer.bottom) > 1 else self.moment), {}

    def out_shapes(self, layer, in_shapes):
        if len(in_shapes) > 1:
            self._check_second(layer, in_shapes, layer.scale_param.axis)
        return [tuple(in_shapes[0])]

    @staticmethod
    def _check_second(layer, in_shapes, axis):
        a, b = in_shapes[0], in_shapes[1]
        start = canonical_axis(layer, axis, len(a)) if a else 0
        if tuple(a[start:start + len(b)]) != tuple(b):
            raise _err(layer, f"second bottom {tuple(b)} does not match {tuple(a)} from axis {axis}")

    def param_shapes(self, layer, in_shapes):
        p = layer.scale_param
        if len(in_shapes) > 1:
            return [tuple(in_shapes[1])] if p.bias_term else []
        shape = _broadcast_shape(layer, in_shapes[0], p.axis, p.num_axes)
        return [shape, shape] if p.bias_term else [shape]

    def channel_affine(self, layer, phase="TEST"):
        """γ·x (+ β) per channel, when it has one bottom and scales axis 1 alone."""
        p = layer.scale_param
        if len(layer.bottom) != 1 or p.axis != 1 or p.num_axes != 1:
            return None
        return ChannelAffine(scale=0, shift=1 if p.bias_term else None)

    def training_updates(self, layer):
        if len(layer.bottom) != 1:
            return ""
        return _learned(layer, 2 if layer.scale_param.bias_term else 1)

    def with_bias_term(self, layer):
        new = type(layer)()
        new.CopyFrom(layer)
        new.scale_param.bias_term = True
        return new
    def fine_tuned(self, layer, *, train):
        """A one-bottom Scale (BatchNorm's learned scale and shift): frozen, or learned at the
        base rate without weight decay. A two-bottom Scale multiplies blobs: not a norm."""
        if len(layer.bottom) > 1:
            return None
        blobs = 2 if layer.scale_param.bias_term else 1
        return _with_param_specs(layer, blobs, lr_mult=1 if train else 0, decay_mult=0)

    def fillers(self, layer):
        """Caffe's defaults: scale 1 when scale_param has no filler, bias 0."""
        p = layer.scale_param
        scale = p.filler if p.HasField("filler") else _constant(1.0)
        bias = p.bias_filler if p.HasField("bias_filler") else _constant(0.0)
        if len(layer.bottom) > 1:
            return [bias] if p.bias_term else []
        return [scale, bias] if p.bias_term else [scale]


class Bias(Affine):
    """One bottom: bias in[axis:axis+num_axes]; two bottoms: none."""

    types = ("Bias",)
    init = ("small",)

    def out_shapes(self, layer, in_shapes):
        if len(in_shapes) > 1:
            Scale._check_second(layer, in_shapes, layer.bias_param.axis)
        return [tuple(in_shapes[0])]

    def param_shapes(self, layer, in_shapes):
        if len(in_shapes) > 1:
            return []
        p = layer.bias_param
        return [_broadcast_shape(layer, in_shapes[0], p.axis, p.num_axes)]


class Normalize(Affine):
    """SSD Normalize: one scale blob, a scalar () when channel_shared, else (C)."""

    types = ("Normalize",)
    fork_types = types
    init = ("norm_scale",)

    def moment_of(self, layer):
        return "l2norm", {"across_spatial": field(sub(layer, "norm_param"), "across_spatial", True)}

    def param_shapes(self, layer, in_shapes):
        shared = field(sub(layer, "norm_param"), "channel_shared", True)
        return [()] if shared else [(in_shapes[0][1],)]

    def for_engine(self, layer, engine):
        """No BVLC layer sums squares across channels and broadcasts the root back: a
        Python layer in Caffe (its scale blob loads by name); OpenCV has Normalize."""
        if engine != "caffe":
            return None
        return [_python_form(layer, "Normalize", _set_fields(sub(layer, "norm_param")))]


class ShuffleChannel(Pointwise):
    types = ("ShuffleChannel",)
    fork_types = types

    def out_shapes(self, layer, in_shapes):
        group = field(sub(layer, "shuffle_channel_param"), "group", 1) or 1
        if in_shapes[0][1] % group:
            raise _err(layer, f"{in_shapes[0][1]} channels do not split into {group} groups")
        return [tuple(in_shapes[0])]

    def for_engine(self, layer, engine):
        """A Python layer in Caffe; OpenCV has ShuffleChannel (the same permutation)."""
        if engine != "caffe":
            return None
        group = field(sub(layer, "shuffle_channel_param"), "group", 1)
        return [_python_form(layer, "ShuffleChannel", {"group": group})]


# ---------------------------------------------------------------------------
# Sliding windows
# ---------------------------------------------------------------------------

def _conv_group(cp, name, default, layer):
    """Resolve kernel/stride/pad from the repeated or the _h/_w form (never both)."""
    rep = list(getattr(cp, name))
    h_name, w_name = f"{name}_h", f"{name}_w"
    if name == "kernel_size":
        h_name, w_name = "kernel_h", "kernel_w"
    has_h, has_w = has_field(cp, h_name), has_field(cp, w_name)
    if has_h or has_w:
        if not (has_h and has_w) and name != "pad":  # Caffe lets a missing pad_h/pad_w be 0
            raise _err(layer, f"{h_name} and {w_name} must be given together")
        if rep:
            raise _err(layer, f"{name} cannot be mixed with {h_name}/{w_name}")
        return Pair(getattr(cp, h_name), getattr(cp, w_name))
    if not rep:
        if default is None:
            raise _err(layer, "kernel_size (or kernel_h and kernel_w) is required")
        return Pair(default, default)
    if len(rep) > 2:
        raise _err(layer, f"{name} has {len(rep)} values; only 2-D windows are supported")
    return Pair.of(rep)


def _put_repeated(cp, name, value, default, prefer_hw):
    """Write a Pair back in the form the file used (see with_window)."""
    rep = getattr(cp, name)
    h_name, w_name = ("kernel_h", "kernel_w") if name == "kernel_size" else (f"{name}_h", f"{name}_w")
    if has_field(cp, h_name) or has_field(cp, w_name):
        setattr(cp, h_name, value.h)
        setattr(cp, w_name, value.w)
        return
    if len(rep) == 0:
        if default is not None and value == Pair(default, default):
            return
        if prefer_hw or value.h != value.w:
            # The form Caffe files use (builder.window_fields): _h/_w for two different
            # values, or when the file's kernel already uses _h/_w.
            setattr(cp, h_name, value.h)
            setattr(cp, w_name, value.w)
        else:
            rep.append(value.h)
        return
    values = [value.h] if (value.h == value.w and len(rep) == 1) else [value.h, value.w]
    del rep[:]
    rep.extend(values)


class Convolution(LayerRule):
    """Convolution: weight (num_output, C/group, kh, kw), bias (num_output) unless bias_term false."""

    types = ("Convolution",)
    role = Role.WINDOW
    dilatable = True
    init = ("he", "small")
    moment = "linear"

    def pad_is_neutral(self, layer):
        return True

    @memo_by("convolution_param")
    def window(self, layer):
        cp = layer.convolution_param
        dil = list(cp.dilation)
        if len(dil) > 2:
            raise _err(layer, f"dilation has {len(dil)} values; only 2-D windows are supported")
        w = Window(_conv_group(cp, "kernel_size", None, layer), _conv_group(cp, "stride", 1, layer),
                   _conv_group(cp, "pad", 0, layer), Pair.of(dil) if dil else Pair(1, 1))
        if min(w.kernel) < 1 or min(w.stride) < 1 or min(w.dilation) < 1:
            raise _err(layer, f"kernel, stride and dilation must be positive, got {tuple(w)}")
        return w

    def with_window(self, layer, window):
        """A copy with `window` written in the file's own form: _h/_w stays _h/_w (and a
        field the file lacked takes the _h/_w form when the kernel uses it), one repeated
        value stays one value when h == w, defaults are not added needlessly, and a
        dilation brought back to 1 (a coarsening undoing a dilation) is dropped unless the
        file wrote 1 itself, so a round trip gives back the original text.
        Dilation is only ever the repeated field (Caffe has no dilation_h/w)."""
        new = type(layer)()
        new.CopyFrom(layer)
        cp = new.convolution_param
        window = Window(*(Pair.of(v) for v in window))
        prefer_hw = has_field(cp, "kernel_h")
        _put_repeated(cp, "kernel_size", window.kernel, None, prefer_hw)
        _put_repeated(cp, "stride", window.stride, 1, prefer_hw)
        _put_repeated(cp, "pad", window.pad, 0, prefer_hw)
        dil = cp.dilation
        d = window.dilation
        if len(dil) and d == Pair(1, 1) and Pair.of(list(dil)) != d:
            del dil[:]         # back to 1, which the file did not write: drop the field
        elif len(dil) or d != Pair(1, 1):
            values = [d.h] if (d.h == d.w and len(dil) <= 1) else [d.h, d.w]
            del dil[:]
            dil.extend(values)
        return new

    def _channels_out(self, layer, c_in):
        cp = layer.convolution_param
        if cp.num_output <= 0:
            raise _err(layer, "num_output must be positive")
        return cp.num_output

    def _check_axis(self, layer):
        if layer.convolution_param.axis != 1:
            raise Unknown("convolution over a channel axis other than 1 is not handled")

    def out_shapes(self, layer, in_shapes):
        self._check_axis(layer)
        w = self.window(layer)
        outs = []
        for shape in in_shapes:
            n, c, h, wd = _spatial4(layer, shape)
            if shape != in_shapes[0]:
                raise _err(layer, "all bottoms of a convolution must have the same shape")
            self._check_groups(layer, c)
            size = [self._size(layer, s, k, st, p, d) for s, k, st, p, d in
                    zip((h, wd), w.kernel, w.stride, w.pad, w.dilation)]
            outs.append(_positive(layer, (n, self._channels_out(layer, c), *size)))
        return outs

    def _size(self, layer, size, k, s, p, d):
        return conv_out_size(size, k, s, p, d)

    def _check_groups(self, layer, c_in):
        cp = layer.convolution_param
        group = cp.group
        if group < 1:
            raise _err(layer, "group must be positive")
        if c_in % group:
            raise _err(layer, f"input channels {c_in} are not divisible by group {group}")
        if cp.num_output % group:
            raise _err(layer, f"num_output {cp.num_output} is not divisible by group {group}")

    def param_shapes(self, layer, in_shapes):
        cp = layer.convolution_param
        k = self.window(layer).kernel
        c_in = in_shapes[0][1]
        shapes = [(cp.num_output, c_in // cp.group, k.h, k.w)]
        return shapes + [(cp.num_output,)] if cp.bias_term else shapes

    def flops(self, layer, in_shapes, out_shapes):
        k = self.window(layer).kernel
        per_out = in_shapes[0][1] // layer.convolution_param.group * k.h * k.w
        return sum(count(s) for s in out_shapes) * per_out

    def fillers(self, layer):
        cp = layer.convolution_param
        return [cp.weight_filler] + ([cp.bias_filler] if cp.bias_term else [])

    def output_layout(self, layer):
        """Weight (num_output, C_in/group, kh, kw): output channel = row."""
        if layer.convolution_param.axis != 1:
            return None
        return WeightLayout(axis=0, groups=1, rank=4)

    def with_bias_term(self, layer):
        new = type(layer)()
        new.CopyFrom(layer)
        new.convolution_param.bias_term = True
        return new


class ConvolutionDepthwise(Convolution):
    """Depthwise fork: output channels = input channels whatever num_output says;
    weight (C, 1, kh, kw), bias (C). It reads _h/_w only when both are given."""

    types = ("ConvolutionDepthwise", "DepthwiseConvolution")
    fork_types = types

    def _channels_out(self, layer, c_in):
        return c_in

    def _check_groups(self, layer, c_in):
        pass

    def bvlc_form(self, layer, in_shapes=None):
        """A Convolution with one group per channel: the same weight (C, 1, kh, kw) and
        bias (C,). The fork ignores num_output (its output has the input's C channels), so
        the form takes num_output as C: real files set it so; where they do not, the
        weights no longer fit and the check says so."""
        conv = type(layer)()
        conv.CopyFrom(layer)
        conv.type = Convolution.types[0]
        conv.convolution_param.group = conv.convolution_param.num_output
        return [conv]

    def param_shapes(self, layer, in_shapes):
        k = self.window(layer).kernel
        c = in_shapes[0][1]
        shapes = [(c, 1, k.h, k.w)]
        return shapes + [(c,)] if layer.convolution_param.bias_term else shapes

    def flops(self, layer, in_shapes, out_shapes):
        k = self.window(layer).kernel
        return count(out_shapes[0]) * k.h * k.w


class Deconvolution(Convolution):
    """Transposed convolution: out = s*(in-1) + extent - 2p; weight (C_in, num_output/group, kh, kw).
    Role resample: its output grid is finer, so geometry stops here."""

    types = ("Deconvolution",)
    role = Role.RESAMPLE
    fits_joins = True
    init = ("deconv", "small")
    moment = "default"

    def grid_window(self, layer):
        return None

    def _size(self, layer, size, k, s, p, d):
        return deconv_out_size(size, k, s, p, d)

    def param_shapes(self, layer, in_shapes):
        cp = layer.convolution_param
        k = self.window(layer).kernel
        shapes = [(in_shapes[0][1], cp.num_output // cp.group, k.h, k.w)]
        return shapes + [(cp.num_output,)] if cp.bias_term else shapes

    def flops(self, layer, in_shapes, out_shapes):
        cp = layer.convolution_param
        k = self.window(layer).kernel
        return count(in_shapes[0]) * (cp.num_output // cp.group) * k.h * k.w

    def coarsen_limit(self, layer, limit_out, *, narrow=False, round_dilation=False):
        return Pair(0, 0)       # an upsampler follows any grid (regrid below), adapted

    def init_of(self, layer):
        """A fixed upsampler (weights never learned: `lr_mult: 0`, or a bilinear filler)
        holds the bilinear kernel in every published model (FCN's upscore, Dilation's
        ctx_upsample): see initweights' "upsampler"."""
        cp = layer.convolution_param
        frozen = len(layer.param) > 0 and layer.param[0].HasField("lr_mult") \
            and layer.param[0].lr_mult == 0
        if frozen or cp.weight_filler.type == "bilinear":
            return "upsampler", "zero"
        return self.init

    def moment_of(self, layer):
        """The settings a fixed upsampler's bilinear kernel needs (initweights' "upsampler")."""
        if self.init_of(layer) == self.init:
            return self.moment, {}
        cp = layer.convolution_param
        return self.moment, {"stride": tuple(self.window(layer).stride), "group": cp.group,
                             "every_slot": cp.weight_filler.type == "bilinear"}

    def output_layout(self, layer):
        """Weight (C_in, num_output/group, kh, kw): the output channel is on axis 1, within
        the group its row belongs to."""
        cp = layer.convolution_param
        if cp.axis != 1:
            return None
        return WeightLayout(axis=1, groups=max(cp.group, 1), rank=4)

    def new_weights(self, before, after):
        """Bilinear upsampling weights belong to their stride and kernel."""
        return before.kernel != after.kernel or before.stride != after.stride

    def resized_weights(self, old, new, open_reader):
        """The weight blob of `new`, whose kernel a conversion changed, from `old`'s, same
        channels, one input channel at a time. At the same stride the kernel only gained
        zero taps around it (to shift its output), so any weights keep their values.
        At a new stride, every (input, output) channel slot holding old's bilinear kernel
        gets new's and a zero slot stays zero (FCN's class-to-itself upscore, Dilation's
        grouped ctx_upsample); learned weights have no such rule: SurgeryError."""
        import numpy as np

        from .weights.fillers import upsampling_kernel

        before, after = self.window(old), self.window(new)
        with open_reader() as reader:
            blob, native = reader.blob, reader.native
            taps = before.kernel.h * before.kernel.w
            slots = blob.count // taps
            per_row = max(1, slots // max(1, blob.shape[0] if blob.shape else 1))
            shape = tuple(blob.shape[:-2]) + tuple(after.kernel)
            grown = [a - b for a, b in zip(after.kernel, before.kernel)]
            if before.stride == after.stride and all(g >= 0 and g % 2 == 0 for g in grown):
                def padded():
                    with open_reader() as again:
                        for start in range(0, slots, per_row):
                            n = min(per_row, slots - start)
                            rows = again.read(start * taps, n * taps).reshape(n, *before.kernel)
                            yield np.pad(rows, [(0, 0)] + [(g // 2, g // 2) for g in grown])
                return shape, padded
            ref = upsampling_kernel(before.stride, before.kernel).reshape(-1)
            mask = np.zeros(slots, bool)
            for start in range(0, slots, per_row):
                rows = reader.read(start * taps, min(per_row, slots - start) * taps)
                rows = rows.reshape(-1, taps)
                kernel = np.abs(rows - ref).max(axis=1) <= 1e-4
                if not np.all(kernel | (np.abs(rows).max(axis=1) == 0)):
                    raise SurgeryError(
                        f"its weights are not the bilinear upsampling kernel of "
                        f"{before.kernel.h}x{before.kernel.w} taps at stride {before.stride.h} "
                        "(learned?), so no kernel of the new size keeps their meaning; stop "
                        "before it with --cut-after BLOB", layer=old.name)
                mask[start:start + len(rows)] = kernel
        new_ref = upsampling_kernel(after.stride, after.kernel).reshape(-1)

        def bilinear():
            for start in range(0, slots, per_row):
                yield (mask[start:start + per_row, None] * new_ref).astype(native)
        return shape, bilinear

    def regrid(self, layer, step):
        """An upsampling Deconvolution lands on the grid it had, or on the grid of the blob
        it joins: its stride follows the input's new stride, a bilinear kernel of the new
        factor replaces the old one (regrid.upsampler_regrid; weights: resized_weights)."""
        return upsampler_regrid(self, layer, step)


class Pooling(LayerRule):
    """Pooling: scalar kernel_size/stride/pad or their _h/_w forms, no dilation.
    CEIL rounding by default; `round_mode: FLOOR` or the fork's `ceil_mode: false` floor.
    Global pooling has no window (window() is None) and role "collapse".
    A MAX pooling may have a second top, the argmax mask, shaped like the output."""

    types = ("Pooling",)
    role = Role.WINDOW

    def role_of(self, layer):
        return Role.COLLAPSE if layer.pooling_param.global_pooling else Role.WINDOW

    def moment_of(self, layer):
        if layer.pooling_param.pool != layer.pooling_param.MAX:
            return "keep", {}   # AVE keeps the mean; its variance is left as is
        win = self.window(layer)
        return "max_pool", {"kernel": None if win is None else win.kernel}

    def pad_is_neutral(self, layer):
        return layer.pooling_param.pool == 0   # MAX ignores padding; AVE counts it

    def is_global(self, layer):
        return bool(layer.pooling_param.global_pooling)

    def with_global(self, layer):
        """A copy pooling over the whole map (Caffe refuses kernel/stride/pad with it)."""
        new = type(layer)()
        new.CopyFrom(layer)
        pp = new.pooling_param
        for name in ("kernel_size", "kernel_h", "kernel_w", "stride", "stride_h", "stride_w",
                     "pad", "pad_h", "pad_w"):
            pp.ClearField(name)
        pp.global_pooling = True
        return new

    def rounds_down(self, layer):
        pp = layer.pooling_param
        return pp.round_mode == 1 or (has_field(pp, "ceil_mode") and not pp.ceil_mode)

    def bvlc_form(self, layer, in_shapes=None):
        """The fork field `ceil_mode` (BVLC PR 3057: DenseNet, ResNeXt files) as BVLC's
        `round_mode`: false is FLOOR, true the default CEIL."""
        if not has_field(layer.pooling_param, "ceil_mode"):
            return None
        return [self._rounding(layer, fork=False)]

    def for_engine(self, layer, engine):
        """OpenCV's Caffe schema has the fork's ceil_mode and not round_mode (a round_mode
        makes it drop the whole pooling_param): it gets ceil_mode."""
        if engine != "opencv":
            return self.bvlc_form(layer)
        if not layer.pooling_param.HasField("round_mode"):
            return None
        return [self._rounding(layer, fork=True)]

    def with_sizes(self, layer, in_shapes, out_shapes):
        """A window wider than its padded input that gives one output (dilate keeps a
        PSPNet one-bin pool at the map's scale): Caffe clips it to the input, OpenCV
        refuses it; the window of exactly the padded input computes the same."""
        win = self.window(layer)
        shape = in_shapes[0] if in_shapes else None
        out = out_shapes[0] if out_shapes else None
        if win is None or shape is None or out is None or len(shape) != 4 or \
                None in tuple(shape) + tuple(out):
            return layer
        kernel = Pair(*(min(k, n + 2 * p) if o == 1 else k
                        for k, n, p, o in zip(win.kernel, shape[2:], win.pad, out[2:])))
        if kernel == win.kernel:
            return layer
        return self.with_window(layer, win._replace(kernel=kernel))

    def _rounding(self, layer, *, fork):
        floor = self.rounds_down(layer)
        new = type(layer)()
        new.CopyFrom(layer)
        pp = new.pooling_param
        pp.ClearField("round_mode")
        pp.ClearField("ceil_mode")
        if floor and fork:
            pp.ceil_mode = False
        elif floor:
            pp.round_mode = pp.FLOOR
        return new

    @staticmethod
    def _scalar_group(pp, layer, name, h_name, w_name, default):
        has_h, has_w = has_field(pp, h_name), has_field(pp, w_name)
        if has_h or has_w:
            if not (has_h and has_w) and name != "pad":
                raise _err(layer, f"{h_name} and {w_name} must be given together")
            if has_field(pp, name):
                raise _err(layer, f"{name} cannot be mixed with {h_name}/{w_name}")
            return Pair(getattr(pp, h_name), getattr(pp, w_name))
        if has_field(pp, name) or default is not None:
            value = getattr(pp, name) if has_field(pp, name) else default
            return Pair(value, value)
        raise _err(layer, "pooling needs kernel_size (or kernel_h and kernel_w) unless global_pooling")

    @memo_by("pooling_param")
    def window(self, layer):
        pp = layer.pooling_param
        if pp.global_pooling:
            return None
        w = Window(self._scalar_group(pp, layer, "kernel_size", "kernel_h", "kernel_w", None),
                   self._scalar_group(pp, layer, "stride", "stride_h", "stride_w", 1),
                   self._scalar_group(pp, layer, "pad", "pad_h", "pad_w", 0), Pair(1, 1))
        if min(w.kernel) < 1 or min(w.stride) < 1:
            raise _err(layer, "pooling kernel and stride must be positive")
        if w.pad.h >= w.kernel.h or w.pad.w >= w.kernel.w:
            raise _err(layer, f"pad {tuple(w.pad)} must be smaller than kernel {tuple(w.kernel)}")
        return w

    def with_window(self, layer, window):
        """Scalar form when h == w (unless the file used _h/_w), _h/_w otherwise."""
        window = Window(*(Pair.of(v) for v in window))
        if window.dilation != Pair(1, 1):
            raise _err(layer, f"pooling has no dilation field; cannot set dilation {tuple(window.dilation)}")
        if layer.pooling_param.global_pooling:
            raise _err(layer, "global pooling has no window to set")
        new = type(layer)()
        new.CopyFrom(layer)
        pp = new.pooling_param
        for name, h_name, w_name, value, default in (
                ("kernel_size", "kernel_h", "kernel_w", window.kernel, None),
                ("stride", "stride_h", "stride_w", window.stride, 1),
                ("pad", "pad_h", "pad_w", window.pad, 0)):
            used_hw = has_field(pp, h_name) or has_field(pp, w_name)
            if used_hw or value.h != value.w:
                pp.ClearField(name)
                setattr(pp, h_name, value.h)
                setattr(pp, w_name, value.w)
            elif has_field(pp, name) or value.h != default:
                setattr(pp, name, value.h)
        return new

    def out_shapes(self, layer, in_shapes):
        n, c, h, w = _spatial4(layer, in_shapes[0])
        pp = layer.pooling_param
        if pp.global_pooling:
            stride = self._scalar_group(pp, layer, "stride", "stride_h", "stride_w", 1)
            pad = self._scalar_group(pp, layer, "pad", "pad_h", "pad_w", 0)
            if stride != Pair(1, 1) or pad != Pair(0, 0):
                raise _err(layer, "global pooling takes only pad 0 and stride 1")
            out = (n, c, 1, 1)
        else:
            win = self.window(layer)
            if max(win.pad) and pp.pool not in (0, 1):
                raise _err(layer, "padding is only implemented for MAX and AVE pooling")
            ceil = not self.rounds_down(layer)
            out = _positive(layer, (n, c) + tuple(
                pool_out_size(s, k, st, p, ceil=ceil)
                for s, k, st, p in zip((h, w), win.kernel, win.stride, win.pad)))
        if len(layer.top) > 2 or (len(layer.top) == 2 and pp.pool != 0):
            raise _err(layer, "only MAX pooling may have a second (mask) top")
        return [out] * len(layer.top)

    def flops(self, layer, in_shapes, out_shapes):
        win = self.window(layer)
        per = in_shapes[0][2] * in_shapes[0][3] if win is None else win.kernel.h * win.kernel.w
        return count(out_shapes[0]) * per


# ---------------------------------------------------------------------------
# Joins, shape plumbing
# ---------------------------------------------------------------------------

class Eltwise(LayerRule):
    types = ("Eltwise",)
    role = Role.JOIN

    def moment_of(self, layer):
        p = layer.eltwise_param
        op = {p.PROD: "prod", p.MAX: "max"}.get(p.operation, "sum")
        return "eltwise", {"op": op, "coeff": list(p.coeff)}

    def out_shapes(self, layer, in_shapes):
        first = tuple(in_shapes[0])
        for name, shape in zip(layer.bottom[1:], in_shapes[1:]):
            if tuple(shape) != first:
                raise _err(layer, f"bottom '{name}' has shape {tuple(shape)} but "
                                  f"'{layer.bottom[0]}' has {first}")
        coeff = layer.eltwise_param.coeff
        if len(coeff) and len(coeff) != len(in_shapes):
            raise _err(layer, f"{len(coeff)} coeff values for {len(in_shapes)} bottoms")
        return [first]

    def flops(self, layer, in_shapes, out_shapes):
        return count(out_shapes[0]) * max(len(in_shapes) - 1, 1)


class Axpy(LayerRule):
    """SENet fork: top = a * x + y with a (N, C[,1,1]) channel weights; x and y must align."""

    types = ("Axpy",)
    fork_types = types
    role = Role.JOIN

    def grid_bottoms(self, layer):
        return (1, 2)

    def bvlc_form(self, layer, in_shapes=None):
        """a*x + y in BVLC layers: the weights a reshaped to (N, C), a Scale of x by them
        along axes 0-1 (BVLC's two-bottom Scale), and an Eltwise sum with y that keeps the
        layer's name and top. None when the layer writes in place over one of its inputs
        (an Eltwise sum over its own input clears it first) or does not have three bottoms."""
        if len(layer.bottom) != 3 or len(layer.top) != 1 or layer.top[0] in layer.bottom:
            return None
        a, x, y = layer.bottom
        weights = _form(layer, "Reshape", name=f"{layer.name}_a", bottoms=[a],
                        tops=[f"{layer.name}_a"])
        weights.reshape_param.shape.dim.extend([0, 0])
        scaled = _form(layer, "Scale", name=f"{layer.name}_ax",
                       bottoms=[x, f"{layer.name}_a"], tops=[f"{layer.name}_ax"])
        scaled.scale_param.axis = 0
        total = _form(layer, "Eltwise", bottoms=[f"{layer.name}_ax", y])
        return [weights, scaled, total]

    def for_engine(self, layer, engine):
        """A Python layer in Caffe. OpenCV's importer computes a*bottom[2] + bottom[1], the
        two operands swapped: fed (a, y, x) it computes SENet's a*x + y."""
        if engine == "caffe":
            return [_python_form(layer, "Axpy", {})]
        swapped = type(layer)()
        swapped.CopyFrom(layer)
        if len(layer.bottom) == 3:
            swapped.bottom[1], swapped.bottom[2] = layer.bottom[2], layer.bottom[1]
        return [swapped]

    def out_shapes(self, layer, in_shapes):
        if len(in_shapes) != 3:
            raise _err(layer, "Axpy takes three bottoms (a, x, y)")
        a, x, y = (tuple(s) for s in in_shapes)
        if x != y:
            raise _err(layer, f"x {x} and y {y} differ")
        if a[:2] != x[:2] or any(d != 1 for d in a[2:]):
            raise _err(layer, f"scale {a} does not match x {x} as (N, C, 1, 1)")
        return [x]

    def flops(self, layer, in_shapes, out_shapes):
        return count(out_shapes[0])


def _concat_axis(layer, ndim):
    cp = layer.concat_param
    axis = cp.concat_dim if has_field(cp, "concat_dim") else cp.axis
    return canonical_axis(layer, axis, ndim)


class Concat(LayerRule):
    types = ("Concat",)
    role = Role.JOIN

    def role_of(self, layer):
        cp = layer.concat_param
        axis = cp.concat_dim if has_field(cp, "concat_dim") else cp.axis
        return Role.JOIN if axis == 1 else Role.RESAMPLE

    def moment_of(self, layer):
        return ("concat" if self.joins(layer) else "default"), {}

    def out_shapes(self, layer, in_shapes):
        first = tuple(in_shapes[0])
        axis = _concat_axis(layer, len(first))
        total = 0
        for name, shape in zip(layer.bottom, in_shapes):
            shape = tuple(shape)
            if len(shape) != len(first) or shape[:axis] + shape[axis + 1:] != first[:axis] + first[axis + 1:]:
                raise _err(layer, f"bottom '{name}' has shape {shape}, which does not match "
                                  f"{first} outside axis {axis}")
            total += shape[axis]
        return [first[:axis] + (total,) + first[axis + 1:]]


class Slice(LayerRule):
    types = ("Slice",)
    role = Role.POINTWISE

    def _axis_value(self, layer):
        sp = layer.slice_param
        return sp.slice_dim if has_field(sp, "slice_dim") else sp.axis

    def role_of(self, layer):
        return Role.POINTWISE if self._axis_value(layer) == 1 else Role.RESAMPLE

    def out_shapes(self, layer, in_shapes):
        shape = tuple(in_shapes[0])
        axis = canonical_axis(layer, self._axis_value(layer), len(shape))
        dim, tops = shape[axis], len(layer.top)
        points = list(layer.slice_param.slice_point)
        if points:
            if len(points) != tops - 1:
                raise _err(layer, f"{len(points)} slice_point values for {tops} tops (need {tops - 1})")
            bounds = [0] + points + [dim]
            sizes = [b - a for a, b in zip(bounds, bounds[1:])]
            if any(s <= 0 for s in sizes):
                raise _err(layer, f"slice points {points} do not increase within size {dim}")
        else:
            if dim % tops:
                raise _err(layer, f"axis {axis} of size {dim} does not split evenly into {tops} tops")
            sizes = [dim // tops] * tops
        return [shape[:axis] + (s,) + shape[axis + 1:] for s in sizes]


def _listed(step, what="lists"):
    """How a layer that turns a map into a list answers for a map on another grid: its
    settings do not depend on the map size, its output lists the new map's positions
    (more of them over a denser map), off the grid: ADAPTED, and what reads the list
    sees the original's grid (a fully connected layer sized for the original list is
    caught by dilate's weight check)."""
    if step.grid_in.identity:
        return Regrid(grid=SAME)
    f = step.grid_in.factor
    more = f.h * f.w
    amount = f"{more} times as many" if more > 1 else f"1/{1 / more} as many"
    return Regrid(grid=SAME, status=ADAPTED, note=(
        f"{what} the positions of the map on its new grid ({amount}); its settings do not "
        "depend on the map size (adapted)"))


class Flatten(LayerRule):
    """Flatten: a map becomes a list (SSD's per-position predictions), see `_listed`."""

    types = ("Flatten",)
    role = Role.COLLAPSE
    view = True

    def regrid(self, layer, step):
        return _listed(step)

    def follows_grid(self, layer):
        return True

    def out_shapes(self, layer, in_shapes):
        shape = tuple(in_shapes[0])
        fp = layer.flatten_param
        start = canonical_axis(layer, fp.axis, len(shape))
        end = canonical_axis(layer, fp.end_axis, len(shape))
        return [shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]]


class Reshape(LayerRule):
    """dim 0 copies the input extent at that position, one -1 is inferred; axis/num_axes
    choose the replaced span (Caffe's rules). A Reshape that leaves the spatial layout to
    Caffe's 0 and -1 keeps the grid (`layout`); any other depends on the map size."""

    types = ("Reshape",)
    role = Role.COLLAPSE
    view = True

    @staticmethod
    def layout(layer):
        """What the dims do to the spatial axes of an (N, C, H, W) input: "same" when they
        copy them (dims (0, c, 0, 0) with c 0 or -1, or a span that ends before axis 2 and
        keeps its axis count), "rows" when they only regroup the channels into blocks of
        rows, dims (0, k, -1, 0) with k > 0 (py-faster-rcnn's RPN stacks its anchors along
        the height: each block of rows is the map on its own grid, and the reshape back
        restores it); None otherwise."""
        rp = layer.reshape_param
        dims = [int(d) for d in rp.shape.dim]
        if rp.axis < 0:
            return None
        if rp.num_axes != -1:
            return "same" if rp.axis + rp.num_axes <= 2 and len(dims) == rp.num_axes else None
        if rp.axis != 0 or len(dims) != 4 or dims[0] != 0 or dims[3] != 0:
            return None
        if dims[2] == 0 and dims[1] in (0, -1) or dims[2] == -1 and dims[1] == 0:
            return "same"
        return "rows" if dims[2] == -1 and dims[1] > 0 else None

    def role_of(self, layer):
        return Role.POINTWISE if self.layout(layer) else Role.COLLAPSE

    def grid_window(self, layer):
        """Rows that hold blocks of the map are not image rows: geometry stops there (the
        walk follows the grid through the blocks, `layout`)."""
        return None if self.layout(layer) == "rows" else super().grid_window(layer)

    def out_shapes(self, layer, in_shapes):
        shape = tuple(in_shapes[0])
        rp = layer.reshape_param
        dims = [int(d) for d in rp.shape.dim]
        nd = len(shape)
        start = rp.axis if rp.axis >= 0 else nd + rp.axis + 1
        if not 0 <= start <= nd:
            raise _err(layer, f"axis {rp.axis} is out of range for a {nd}-axis input")
        end = nd if rp.num_axes == -1 else start + rp.num_axes
        if rp.num_axes < -1 or end > nd:
            raise _err(layer, f"num_axes {rp.num_axes} does not fit a {nd}-axis input")
        new = []
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= nd:
                    raise _err(layer, f"dim {i} copies input axis {start + i}, which does not exist")
                new.append(shape[start + i])
            elif d < -1:
                raise _err(layer, f"dim {d} is not allowed (use -1 to infer, 0 to copy)")
            else:
                new.append(d)
        if new.count(-1) > 1:
            raise _err(layer, "at most one dim may be -1")
        total = math.prod(shape[start:end])
        known = math.prod(d for d in new if d != -1)
        if -1 in new:
            if known == 0 or total % known:
                raise _err(layer, f"cannot infer -1: {total} elements do not divide by {known}")
            new[new.index(-1)] = total // known
        elif known != total:
            raise _err(layer, f"reshape to {tuple(new)} changes the element count {total}")
        return [shape[:start] + tuple(new) + shape[end:]]


class Permute(LayerRule):
    """SSD Permute: the given order, then the unnamed axes in their order."""

    types = ("Permute",)
    fork_types = types
    role = Role.COLLAPSE

    def regrid(self, layer, step):
        """An order that keeps the spatial axes in place keeps the grid; one that moves
        them (SSD puts them before the channels, to flatten each position's predictions)
        turns the map into a list of positions (`_listed`)."""
        if self._keeps_map(layer):
            return Regrid(grid=step.grid_in)
        return _listed(step, "reorders")

    @staticmethod
    def _keeps_map(layer):
        order = [int(o) for o in sub(layer, "permute_param").order]
        order += [i for i in range(4) if i not in order]
        return order[2:4] == [2, 3]

    def follows_grid(self, layer):
        return not self._keeps_map(layer)

    def role_of(self, layer):
        return Role.POINTWISE if self._keeps_map(layer) else Role.COLLAPSE

    def out_shapes(self, layer, in_shapes):
        shape = tuple(in_shapes[0])
        order = [int(o) for o in sub(layer, "permute_param").order]
        if len(set(order)) != len(order) or any(not 0 <= o < len(shape) for o in order):
            raise _err(layer, f"order {order} is not a permutation of {len(shape)} axes")
        order += [i for i in range(len(shape)) if i not in order]
        return [tuple(shape[o] for o in order)]

    def for_engine(self, layer, engine):
        if engine != "caffe":
            return None           # OpenCV has Permute
        return [_python_form(layer, "Permute", _set_fields(sub(layer, "permute_param")))]


class Crop(LayerRule):
    """Crop bottom 0 to bottom 1's extents from `axis` on, at `offset` (one value or one per axis).
    Geometry: a shift by offset input pixels (a 1x1 window with negative pad)."""

    types = ("Crop",)
    role = Role.RESAMPLE
    shifts_only = True

    def _offsets(self, layer, ndim):
        cp = layer.crop_param
        start = canonical_axis(layer, cp.axis, ndim)
        n = ndim - start
        offs = list(cp.offset)
        if len(offs) == 0:
            offs = [0] * n
        elif len(offs) == 1:
            offs = offs * n
        elif len(offs) != n:
            raise _err(layer, f"{len(offs)} offsets for {n} cropped axes")
        return start, offs

    def out_shapes(self, layer, in_shapes):
        a, ref = tuple(in_shapes[0]), tuple(in_shapes[1])
        if len(a) != len(ref):
            raise _err(layer, f"bottoms {a} and {ref} differ in rank")
        start, offs = self._offsets(layer, len(a))
        out = list(a)
        for i, off in enumerate(offs):
            axis = start + i
            if off + ref[axis] > a[axis]:
                raise _err(layer, f"crop of {ref[axis]} at offset {off} exceeds size {a[axis]} on axis {axis}")
            out[axis] = ref[axis]
        return [tuple(out)]

    def grid_window(self, layer):
        start, offs = self._offsets(layer, 4)
        spatial = ([0, 0] + offs)[-2:] if start >= 2 else offs[2 - start:4 - start]
        return Window(Pair(1, 1), Pair(1, 1), Pair(-spatial[0], -spatial[1]), Pair(1, 1))

    def grid_bottoms(self, layer):
        return (0,)

    def regrid(self, layer, step):
        """Crop lines a blob up with another (FCN's skips, the final crop to the image): its
        offsets follow the grid its input moved to, so its output lands where it did, or on
        the grid of the blob it joins (ADAPTED with the upsampler before it)."""
        ndim = len(step.in_shapes[0]) if step.in_shapes and step.in_shapes[0] else 4
        start, offs = self._offsets(layer, ndim)
        if start > ndim - 2:
            return Regrid(grid=step.grid_in) if step.grid_in.identity else \
                Regrid(grid=step.grid_in, issue="a Crop of one spatial axis cannot follow the grid")
        spatial = offs[ndim - 2 - start:]
        new, grid, issue = crop_regrid(spatial, step)
        if issue or new is None:
            return Regrid(grid=grid, issue=issue and f"Crop offset: {issue}")
        values = offs[:ndim - 2 - start] + list(new)
        layer2 = type(layer)()
        layer2.CopyFrom(layer)
        del layer2.crop_param.offset[:]
        layer2.crop_param.offset.extend(values[:1] if len(set(values)) == 1 and
                                        len(layer.crop_param.offset) <= 1 else values)
        return Regrid(layer2, grid, ADAPTED, f"offset {tuple(spatial)} -> {tuple(new)}: lands on "
                                             "the grid of the blob it lines up with (adapted)")


class Interp(LayerRule):
    """DeepLab v2 / PSPNet Interp. Effective input = in + pad_beg + pad_end (pads <= 0).
    A second bottom gives the size; else shrink only: (eff-1)/s+1; zoom only: eff+(eff-1)(z-1);
    height+width; shrink then zoom."""

    types = ("Interp",)
    fork_types = types
    role = Role.RESAMPLE
    fits_joins = True

    def out_shapes(self, layer, in_shapes):
        n, c, h, w = _spatial4(layer, in_shapes[0])
        ip = sub(layer, "interp_param")
        pad_beg, pad_end = field(ip, "pad_beg", 0), field(ip, "pad_end", 0)
        if pad_beg > 0 or pad_end > 0:
            raise _err(layer, "Interp only supports pad_beg/pad_end <= 0 (cropping)")
        eff = [s + pad_beg + pad_end for s in (h, w)]
        shrink, zoom = has_field(ip, "shrink_factor"), has_field(ip, "zoom_factor")
        sized = has_field(ip, "height") and has_field(ip, "width")
        if len(in_shapes) > 1:
            if shrink or zoom or has_field(ip, "height") or has_field(ip, "width"):
                raise _err(layer, "Interp with a second bottom takes no size parameters")
            out = tuple(in_shapes[1][2:4])
        elif shrink and not zoom:
            out = tuple((e - 1) // ip.shrink_factor + 1 for e in eff)
        elif zoom and not shrink:
            out = tuple(e + (e - 1) * (ip.zoom_factor - 1) for e in eff)
        elif sized:
            out = (ip.height, ip.width)
        elif shrink and zoom:
            out = tuple((e - 1) // ip.shrink_factor + 1 for e in eff)
            out = tuple(o + (o - 1) * (ip.zoom_factor - 1) for o in out)
        else:
            raise _err(layer, "Interp needs zoom_factor, shrink_factor, height+width or a second bottom")
        if min(ip.shrink_factor if shrink else 1, ip.zoom_factor if zoom else 1) < 1:
            raise _err(layer, "zoom_factor and shrink_factor must be >= 1")
        return [_positive(layer, (n, c) + out)]

    def grid_bottoms(self, layer):
        return (0,)

    def bvlc_form(self, layer, in_shapes=None):
        """A zoom by a whole factor z and nothing else (DeepLab's and PSPNet's last
        upsampling) is a fixed Deconvolution: each channel on its own (group = channels),
        stride z, a bilinear kernel of 2z-1 taps and pad z-1. Output z*(in-1)+1 as the
        Interp's, and output z*i+r = (1-r/z)*x[i] + (r/z)*x[i+1] per axis, which is the
        Interp's corner-aligned bilinear sampling at ratio (in-1)/(out-1) = 1/z. Its
        weights are made (`form_blobs`); no `param` spec is added (the file keeps its
        layout), so a net fine-tuned from it should freeze them. The channel count comes
        from `in_shapes`: None when it is not known, and for any other Interp (a shrink,
        a size, a crop, a second bottom: ratios no fixed kernel gives)."""
        ip = sub(layer, "interp_param")
        if len(layer.bottom) != 1 or len(layer.top) != 1 or not has_field(ip, "zoom_factor") \
                or any(has_field(ip, f) for f in ("shrink_factor", "height", "width")) \
                or field(ip, "pad_beg", 0) or field(ip, "pad_end", 0):
            return None
        shape = in_shapes[0] if in_shapes else None
        z = ip.zoom_factor
        if z < 2 or shape is None or len(shape) != 4 or not isinstance(shape[1], int):
            return None
        return [_fixed_deconvolution(layer, shape[1], kernel=2 * z - 1, stride=z, pad=z - 1)]

    def form_blobs(self, layer, form, shapes):
        """The Deconvolution's weights: the bilinear kernel for every channel,
        (C, 1, 2z-1, 2z-1); the Interp had no blobs of its own to read."""
        from .weights.fillers import upsampling_kernel

        return _fixed_deconvolution_weights(
            form, lambda z, k: upsampling_kernel((z, z), (k, k)))

    def for_engine(self, layer, engine):
        """Caffe: a Python layer with the fork's arithmetic (every case). OpenCV has an
        Interp of its own (bilinear, corners aligned) that reads height/width and
        zoom_factor only: a shrink, or a second bottom, becomes the height/width they
        give (`with_sizes`), which is the same resize; a crop (pad_beg/pad_end) it cannot do."""
        ip = sub(layer, "interp_param")
        if engine == "caffe":
            return [_python_form(layer, "Interp", _set_fields(ip))]
        if field(ip, "pad_beg", 0) or field(ip, "pad_end", 0):
            raise _err(layer, "OpenCV's Interp ignores pad_beg/pad_end, so it would resize "
                              "the uncropped map; use --engine caffe")
        sized = has_field(ip, "height") and has_field(ip, "width")
        if len(layer.bottom) == 1 and not has_field(ip, "shrink_factor") and \
                sized != has_field(ip, "zoom_factor"):
            return None
        resized = type(layer)()
        resized.CopyFrom(layer)
        del resized.bottom[1:]
        resized.ClearField("interp_param")
        return [resized]

    def with_sizes(self, layer, in_shapes, out_shapes):
        if layer.HasField("interp_param") or not out_shapes or out_shapes[0] is None:
            return layer
        new = type(layer)()
        new.CopyFrom(layer)
        new.interp_param.height, new.interp_param.width = out_shapes[0][2:4]
        return new

    def coarsen_limit(self, layer, limit_out, *, narrow=False, round_dilation=False):
        return Pair(0, 0)       # it follows any grid (regrid below), adapted

    def regrid(self, layer, step):
        """Interp puts a blob on the grid of the image, the label or another branch; after a
        conversion it must land there again (ADAPTED: resampling is not exact). Its wanted
        output grid is the original's (a final zoom back to image size) unless the pass
        names another (a label shrink that must follow the scores), or a size."""
        grid, size = step.wanted
        if step.grid_in.identity and grid is None and size is None:
            return Regrid(grid=step.grid_in)
        grid = grid or SAME
        if len(layer.bottom) > 1:
            return Regrid(grid=grid, status=ADAPTED,
                          note="resizes to its second bottom on the new grid (adapted)")
        ip = sub(layer, "interp_param")
        new = type(layer)()
        new.CopyFrom(layer)
        nip = new.interp_param
        if has_field(ip, "height") and has_field(ip, "width") and not (
                has_field(ip, "zoom_factor") or has_field(ip, "shrink_factor")):
            if size is None:
                return Regrid(grid=grid, status=ADAPTED, note=(
                    f"keeps its fixed size {ip.height}x{ip.width} over a map on another grid"))
            nip.height, nip.width = size
            return Regrid(new, grid, ADAPTED, f"size {ip.height}x{ip.width} -> {size[0]}x{size[1]}, "
                                               "the size of the blob it meets (adapted)")
        old = Fraction(field(ip, "zoom_factor", 1), field(ip, "shrink_factor", 1))
        ratios = {old * g / f for g, f in zip(grid.factor, step.grid_in.factor)}
        if len(ratios) != 1:
            return Regrid(grid=grid, issue="Interp has one factor for both axes, but the grids "
                                           "it joins differ per axis")
        ratio, = ratios
        if ratio == old:
            # Both sides moved together (DeepLab's multi-scale fusion: a branch's scores
            # brought back to the main grid): the same factors still join them, over maps
            # on another grid (adapted: interpolating other samples).
            return Regrid(grid=grid, status=ADAPTED,
                          note=f"keeps {_interp_factors(ip)}: the blobs it joins moved "
                               "together (adapted)")
        nip.ClearField("zoom_factor")
        nip.ClearField("shrink_factor")
        if ratio.denominator != 1:      # shrink first, then zoom (DeepLab's order)
            nip.shrink_factor = ratio.denominator
        if ratio.numerator != 1 or (ratio == 1 and has_field(ip, "zoom_factor")):
            nip.zoom_factor = ratio.numerator
        if size is not None and step.in_shapes and step.in_shapes[0] is not None \
                and has_field(nip, "shrink_factor") and not has_field(nip, "zoom_factor"):
            # The label it shrinks must come out with the scores' size: crop its far end.
            end = {(want - 1) * nip.shrink_factor + 1 - have - field(ip, "pad_beg", 0)
                   for want, have in zip(size, step.in_shapes[0][2:])}
            if len(end) == 1 and next(iter(end)) <= 0 and next(iter(end)) != field(ip, "pad_end", 0):
                nip.pad_end = end.pop()
        before = _interp_factors(ip)
        after = _interp_factors(nip)
        if before == after:
            return Regrid(grid=grid)
        where = "back on the grid it had" if grid.identity else "on the grid of the blob it meets"
        return Regrid(new, grid, ADAPTED, f"{before} -> {after}: lands {where} (adapted)")


def _interp_factors(ip):
    parts = [f"{name} {field(ip, name)}" for name in ("shrink_factor", "zoom_factor", "pad_end")
             if has_field(ip, name) and field(ip, name)]
    return ", ".join(parts) or "no factor"


class Upsample(LayerRule):
    """SegNet Upsample (max-unpooling with the pool mask as bottom 1): upsample_h/w when both
    are set, else in*scale - pad_out (scale default 2, or scale_h/scale_w)."""

    types = ("Upsample",)
    fork_types = types
    role = Role.RESAMPLE

    def out_shapes(self, layer, in_shapes):
        n, c, h, w = _spatial4(layer, in_shapes[0])
        up = sub(layer, "upsample_param")
        if len(in_shapes) > 1 and tuple(in_shapes[1]) != tuple(in_shapes[0]):
            raise _err(layer, f"mask {tuple(in_shapes[1])} differs from data {tuple(in_shapes[0])}")
        if has_field(up, "upsample_h") and has_field(up, "upsample_w"):
            out = (up.upsample_h, up.upsample_w)
        else:
            if has_field(up, "scale_h") or has_field(up, "scale_w"):
                sh, sw = field(up, "scale_h", 2), field(up, "scale_w", 2)
            else:
                sh = sw = field(up, "scale", 2)
            out = (h * sh - int(bool(field(up, "pad_out_h", False))),
                   w * sw - int(bool(field(up, "pad_out_w", False))))
        return [_positive(layer, (n, c) + tuple(out))]

    def bvlc_form(self, layer, in_shapes=None):
        """The YOLO forks' one-bottom Upsample (nearest: y[h, w] = x[h // s, w // s]) is a
        fixed Deconvolution: one group per channel, kernel and stride s, no pad, every
        weight 1, so each output pixel is its one input pixel times 1, bit for bit. Only
        for one `scale` (or equal scale_h and scale_w) and no output size or trim; the
        channel count comes from `in_shapes`. SegNet's two-bottom Upsample scatters by the
        pooling mask, which no fixed layer does: None."""
        up = sub(layer, "upsample_param")
        if len(layer.bottom) != 1 or len(layer.top) != 1 or any(
                has_field(up, f) for f in ("upsample_h", "upsample_w", "pad_out_h", "pad_out_w")):
            return None
        if has_field(up, "scale_h") or has_field(up, "scale_w"):
            scale = field(up, "scale_h", 2)
            if field(up, "scale_w", 2) != scale:
                return None
        else:
            scale = field(up, "scale", 2)
        shape = in_shapes[0] if in_shapes else None
        if scale < 1 or shape is None or len(shape) != 4 or not isinstance(shape[1], int):
            return None
        return [_fixed_deconvolution(layer, shape[1], kernel=scale, stride=scale, pad=0)]

    def form_blobs(self, layer, form, shapes):
        """The Deconvolution's weights: ones, (C, 1, s, s)."""
        import numpy as np

        return _fixed_deconvolution_weights(form, lambda s, k: np.ones((k, k), np.float32))

    def for_engine(self, layer, engine):
        """Scattering by the pooling mask has no BVLC form: a Python layer in Caffe (which
        also runs the one-bottom nearest Upsample of the YOLO forks). OpenCV has neither."""
        if engine != "caffe":
            return None
        return [_python_form(layer, "Upsample", _set_fields(sub(layer, "upsample_param")))]


class Reorg(LayerRule):
    """YOLO v2's passthrough (caffe-yolo ports of Darknet's reorg): stride s moves each
    s x s block of pixels into channels, C x H x W -> C*s*s x H/s x W/s (H and W must
    divide), or back with `reverse`. Darknet's element order mixes channels and
    positions, so an output pixel's channels come from different places of the input: no
    grid, like a resampler; only the shapes are known."""

    types = ("Reorg",)
    fork_types = types
    role = Role.RESAMPLE

    def out_shapes(self, layer, in_shapes):
        n, c, h, w = _spatial4(layer, in_shapes[0])
        rp = sub(layer, "reorg_param")
        s = field(rp, "stride", 2)
        if s < 1:
            raise _err(layer, f"stride {s} is not positive")
        if field(rp, "reverse", False):
            if c % (s * s):
                raise _err(layer, f"{c} channels do not divide by stride {s} squared")
            return [(n, c // (s * s), h * s, w * s)]
        if h % s or w % s:
            raise _err(layer, f"its input {h}x{w} does not divide by stride {s}")
        return [(n, c * s * s, h // s, w // s)]


class InnerProduct(LayerRule):
    """Flattens from `axis`: weight (num_output, K) or (K, num_output) when transpose; bias (num_output)."""

    types = ("InnerProduct",)
    role = Role.COLLAPSE
    fully_connected = True

    def init_of(self, layer):
        return ("he_transposed" if layer.inner_product_param.transpose else "he"), "small"

    def moment_of(self, layer):
        return "linear", {"transposed": bool(layer.inner_product_param.transpose)}

    def _split(self, layer, shape):
        axis = canonical_axis(layer, layer.inner_product_param.axis, len(shape))
        return shape[:axis], math.prod(shape[axis:])

    def out_shapes(self, layer, in_shapes):
        p = layer.inner_product_param
        if p.num_output <= 0:
            raise _err(layer, "num_output must be positive")
        lead, _ = self._split(layer, tuple(in_shapes[0]))
        return [tuple(lead) + (p.num_output,)]

    def param_shapes(self, layer, in_shapes):
        p = layer.inner_product_param
        _, k = self._split(layer, tuple(in_shapes[0]))
        weight = (k, p.num_output) if p.transpose else (p.num_output, k)
        return [weight, (p.num_output,)] if p.bias_term else [weight]

    def flops(self, layer, in_shapes, out_shapes):
        _, k = self._split(layer, tuple(in_shapes[0]))
        return count(out_shapes[0]) * k

    def output_layout(self, layer):
        """Weight (num_output, K), or (K, num_output) when transpose; only an axis-1 layer
        puts its outputs where a BatchNorm after it normalises."""
        p = layer.inner_product_param
        if p.axis != 1:
            return None
        return WeightLayout(axis=1 if p.transpose else 0, groups=1, rank=2)

    def with_bias_term(self, layer):
        new = type(layer)()
        new.CopyFrom(layer)
        new.inner_product_param.bias_term = True
        return new

    def as_convolution(self, layer, name, bottom, window, num_output):
        """The Convolution computing this layer on its map (fcn): same param specs,
        bias term and fillers, the kernel written by Convolution.with_window."""
        new = type(layer)()
        new.CopyFrom(layer)
        ipp = layer.inner_product_param
        new.ClearField("inner_product_param")
        new.name, new.type = name, Convolution.types[0]
        del new.bottom[:]
        new.bottom.append(bottom)
        cp = new.convolution_param
        cp.num_output = num_output
        if ipp.HasField("bias_term"):
            cp.bias_term = ipp.bias_term
        for filler in ("weight_filler", "bias_filler"):
            if ipp.HasField(filler):
                getattr(cp, filler).CopyFrom(getattr(ipp, filler))
        return _RULES[new.type].with_window(new, window)


class Embed(LayerRule):
    types = ("Embed",)
    role = Role.COLLAPSE
    init = ("small", "small")

    def out_shapes(self, layer, in_shapes):
        return [tuple(in_shapes[0]) + (layer.embed_param.num_output,)]

    def param_shapes(self, layer, in_shapes):
        p = layer.embed_param
        shapes = [(p.input_dim, p.num_output)]
        return shapes + [(p.num_output,)] if p.bias_term else shapes


class Tile(LayerRule):
    """Copies along one axis. DeepLab v3's image pooling tiles a 1x1 map back to the
    trunk's size (along H, then W): it follows the grid of the blob it meets."""

    types = ("Tile",)
    role = Role.RESAMPLE
    fits_joins = True

    def out_shapes(self, layer, in_shapes):
        shape = list(in_shapes[0])
        axis = canonical_axis(layer, layer.tile_param.axis, len(shape))
        shape[axis] *= layer.tile_param.tiles
        return [tuple(shape)]

    def grid_bottoms(self, layer):
        return (0,)

    def coarsen_limit(self, layer, limit_out, *, narrow=False, round_dilation=False):
        return Pair(0, 0)       # it follows any grid (regrid below)

    def regrid(self, layer, step):
        """Tiling a 1x1 map to the size of the blob it meets is the same constant on any
        grid: its count becomes that size on its axis (ADAPTED: a size, as Interp's)."""
        grid, size = step.wanted
        if size is None:
            return super().regrid(layer, step)
        shape = step.in_shapes[0] if step.in_shapes else None
        axis = canonical_axis(layer, layer.tile_param.axis, len(shape) if shape else 4)
        if shape is None or axis not in (2, 3) or shape[axis] != 1:
            return Regrid(grid=grid or SAME, issue="Tile copies a map that is not 1 pixel "
                                                   "along its axis; its count has no rewrite")
        tiles = size[axis - 2]
        if tiles == layer.tile_param.tiles:
            return Regrid(grid=grid or SAME)
        new = type(layer)()
        new.CopyFrom(layer)
        new.tile_param.tiles = tiles
        return Regrid(new, grid or SAME, ADAPTED, f"tiles {layer.tile_param.tiles} -> {tiles}: "
                                                  "the size of the blob it meets (adapted)")


class Reduction(LayerRule):
    types = ("Reduction",)
    role = Role.COLLAPSE

    def out_shapes(self, layer, in_shapes):
        shape = tuple(in_shapes[0])
        return [shape[:canonical_axis(layer, layer.reduction_param.axis, len(shape))]]


class ArgMax(LayerRule):
    types = ("ArgMax",)
    role = Role.COLLAPSE

    def out_shapes(self, layer, in_shapes):
        shape = list(in_shapes[0])
        p = layer.argmax_param
        if has_field(p, "axis"):
            shape[canonical_axis(layer, p.axis, len(shape))] = p.top_k
            return [tuple(shape)]
        return [(shape[0], 2 if p.out_max_val else 1, p.top_k)]


# ---------------------------------------------------------------------------
# Detection heads: settings that encode the stride of the map they read
# ---------------------------------------------------------------------------

class PriorBox(LayerRule):
    """SSD PriorBox: (1, 2, H*W*num_priors*4); num_priors = len(ratios)*len(min_size) + len(max_size),
    ratios = {1} plus each new aspect_ratio (and 1/ratio when flip)."""

    types = ("PriorBox",)
    fork_types = types
    role = Role.COLLAPSE

    def out_shapes(self, layer, in_shapes):
        _, _, h, w = _spatial4(layer, in_shapes[0])
        pp = sub(layer, "prior_box_param")
        ratios = [1.0]
        for ar in field(pp, "aspect_ratio", []):
            if all(abs(ar - r) >= 1e-6 for r in ratios):
                ratios.append(ar)
                if field(pp, "flip", True):
                    ratios.append(1.0 / ar)
        mins, maxs = list(field(pp, "min_size", [])), list(field(pp, "max_size", []))
        if not mins:
            raise _err(layer, "PriorBox needs min_size")
        priors = len(ratios) * len(mins) + len(maxs)
        return [(1, 2, h * w * priors * 4)]

    def follows_grid(self, layer):
        return True

    def regrid(self, layer, step):
        """Prior centres sit at (x + offset) * step image pixels, x the cell of the source
        map (SSD). The converted map holds the original's cell i at cell o + f*i (its
        grid), so step / f and offset * f - o put the original's priors exactly where
        they were, on the cells that hold the original's features, and new priors on the
        cells between: the detector keeps every original prior, with the loc/conf it had
        (the trunk and the mbox convolutions being exact). One rule whether the step was
        the stride (8 ... 64) or the image size over the map size (SSD300's 100 and 300).
        Sizes and aspect ratios stay (ADAPTED: more priors). Without a step, the layer
        takes image size / map size by itself: unchanged, its priors spread evenly over
        the new map."""
        if step.grid_in.identity:
            return Regrid(grid=SAME)
        pp = sub(layer, "prior_box_param")
        if has_field(pp, "step_h") or has_field(pp, "step_w"):
            names, old = ("step_h", "step_w"), Pair(pp.step_h, pp.step_w)
        elif has_field(pp, "step"):
            names, old = ("step",), Pair(pp.step, pp.step)
        else:
            return Regrid(grid=SAME, status=ADAPTED, note=(
                "no step: the layer takes image size / map size, so its priors spread over "
                "the new map by themselves; sizes and aspect ratios stay (adapted)"))
        (fh, fw), (oh, ow) = step.grid_in
        offsets = {Fraction(pp.offset) * fh - oh, Fraction(pp.offset) * fw - ow}
        if len(offsets) != 1:
            return Regrid(grid=SAME, issue="one offset serves both axes, but the map moved "
                                           "by different factors or offsets per axis")
        offset = float(offsets.pop())
        values = Pair(float(Fraction(old.h) / fh), float(Fraction(old.w) / fw))
        new = type(layer)()
        new.CopyFrom(layer)
        npp = new.prior_box_param
        if names == ("step",) and values.h == values.w:
            npp.step = values.h
        else:
            npp.ClearField("step")
            npp.step_h, npp.step_w = values
        npp.offset = offset
        shown = lambda pair: "/".join(f"{v:g}" for v in dict.fromkeys(pair))
        return Regrid(new, SAME, ADAPTED, (
            f"step {shown(old)} -> {shown(values)}, offset {pp.offset:g} -> {offset:g}: the "
            "original's priors stay where they were, on the cells that hold its features, "
            "and the cells between get priors between; sizes and aspect ratios stay "
            "(adapted)"))


def _close(a, b):
    return abs(float(a) - float(b)) <= 1e-5 * max(1.0, abs(float(b)))


def _one_factor(step, setting, grid_out=SAME):
    """(factor, None) when both axes of the layer's input moved by one factor, else
    (None, the Regrid that stops the run): one `setting` serves both axes."""
    f = step.grid_in.factor
    if f.h == f.w:
        return f.h, None
    return None, Regrid(grid=grid_out, issue=f"one {setting} serves both axes, but the map "
                                             "moved by different factors per axis")


def _new_stride(step):
    """The stride the input now has, from the original's and the factor; None unknown."""
    if step.geometry_in is None or step.geometry_in.stride.h != step.geometry_in.stride.w:
        return None
    return Fraction(step.geometry_in.stride.h) / step.grid_in.factor.h


class RoiPooling(LayerRule):
    """Region-of-interest pooling: each box of bottom 1 (rows of batch index, x1, y1, x2,
    y2 in image pixels) is pooled from the map in bottom 0 into a fixed grid of bins:
    (R, C, pooled_h, pooled_w); R is the number of boxes. `spatial_scale` maps image
    pixels onto the map (1/stride). What follows sees the bins, never the map, so its
    weights (fc6 on the pooled 7x7) do not depend on the map size.
    Faster R-CNN's ROIPooling (MAX per bin) and the ROIAlign ports."""

    types = ("ROIPooling", "ROIAlign")
    fork_types = types
    role = Role.COLLAPSE
    PARAMS = {"ROIPooling": "roi_pooling_param", "ROIAlign": "roi_align_param"}

    def param(self, layer):
        return self.PARAMS[layer.type]

    def follows_grid(self, layer):
        return True

    def _boxes(self, layer, in_shapes):
        if len(in_shapes) != 2:
            raise _err(layer, f"{layer.type} takes two bottoms (the map, the boxes)")
        boxes = tuple(in_shapes[1])
        if len(boxes) < 2 or boxes[1] != 5 or any(d != 1 for d in boxes[2:]):
            raise _err(layer, f"the boxes {boxes} are not rows of (batch, x1, y1, x2, y2)")
        return boxes[0]

    def out_shapes(self, layer, in_shapes):
        p = sub(layer, self.param(layer))
        return [(self._boxes(layer, in_shapes), in_shapes[0][1], p.pooled_h, p.pooled_w)]

    def regrid(self, layer, step):
        """spatial_scale follows the map it reads: times the grid factor, i.e. 1/the new
        stride where it was 1/stride (1/16 becomes 1/8 on a map twice as dense). The bins
        then cover the same image regions over a denser map: ADAPTED. Its output is per
        box, off the image grid."""
        if step.grid_in.identity:
            return Regrid(grid=SAME)
        f, stop = _one_factor(step, "spatial_scale")
        if stop:
            return stop
        param = self.param(layer)
        old = getattr(sub(layer, param), "spatial_scale")
        value = float(Fraction(old) * f)
        new = type(layer)()
        new.CopyFrom(layer)
        getattr(new, param).spatial_scale = value
        note = f"spatial_scale {old:g} -> {value:g}"
        stride = _new_stride(step)
        if stride is not None:
            note += f" = 1/{stride}, the new stride of '{layer.bottom[0]}'"
            if not _close(old * step.geometry_in.stride.h, 1):
                note += f" (it was not 1/{step.geometry_in.stride.h} before: scaled with the map)"
        where = "denser" if f > 1 else "coarser"
        return Regrid(new, SAME, ADAPTED, note + ": image boxes land on the new map, each bin "
                                                 f"pools a {where} map (adapted)")


class PSROIPooling(RoiPooling):
    """R-FCN's position-sensitive RoI pooling: bin (i, j) of output channel c averages
    channel (c*group + i)*group + j of the map over its part of the box:
    (R, output_dim, group_size, group_size), the map having output_dim*group_size^2
    channels."""

    types = ("PSROIPooling",)
    fork_types = types
    PARAMS = {"PSROIPooling": "psroi_pooling_param"}

    def out_shapes(self, layer, in_shapes):
        p = sub(layer, "psroi_pooling_param")
        boxes = self._boxes(layer, in_shapes)
        if p.output_dim <= 0 or p.group_size <= 0:
            raise _err(layer, "output_dim and group_size must be positive")
        if in_shapes[0][1] != p.output_dim * p.group_size ** 2:
            raise _err(layer, f"the map has {in_shapes[0][1]} channels, not output_dim x "
                              f"group_size^2 = {p.output_dim * p.group_size ** 2}")
        return [(boxes, p.output_dim, p.group_size, p.group_size)]


def feat_stride_regrid(layer, step, old, write, *, grid_out=SAME):
    """An RPN's feat_stride (anchors every feat_stride image pixels, one set per cell of
    the score map) follows the map: divided by the grid factor, i.e. the new stride.
    `write(new_value)` gives the rewritten layer. The anchors keep their sizes (base size
    and scales are in image pixels) but are denser: ADAPTED."""
    if step.grid_in.identity:
        return Regrid(grid=grid_out)
    f, stop = _one_factor(step, "feat_stride", grid_out)
    if stop:
        return stop
    value = Fraction(old) / f
    if value.denominator != 1 or value < 1:
        return Regrid(grid=grid_out, issue=(f"feat_stride {old} on a map {f} times as dense "
                                            "is not a whole number of pixels"))
    value = int(value)
    density = f * f
    amount = f"{density} times as many" if density >= 1 else f"1/{1 / density} as many"
    return Regrid(write(value), grid_out, ADAPTED, (
        f"feat_stride {old} -> {value}: anchors every {value} image pixels instead of {old}, "
        f"{amount} (anchor density changes; their sizes stay) (adapted)"))


class Proposal(LayerRule):
    """OpenCV DNN's Proposal, py-faster-rcnn's proposal step as a layer. Bottoms: the
    fg/bg scores (1, 2A, H, W), the box deltas (1, 4A, H, W) and im_info (rows, cols,
    scale); tops: rois (post_nms_topn, 5) and scores (post_nms_topn, 1), rows past the
    boxes found being zero. proposal_param.feat_stride is the stride of the score map."""

    types = ("Proposal",)
    fork_types = types
    role = Role.COLLAPSE

    def follows_grid(self, layer):
        return True

    def grid_bottoms(self, layer):
        return (0, 1)     # scores and deltas: one map

    def out_shapes(self, layer, in_shapes):
        n = sub(layer, "proposal_param").post_nms_topn
        return [(n, 5), (n, 1)][:len(layer.top)]

    def regrid(self, layer, step):
        def write(value):
            new = type(layer)()
            new.CopyFrom(layer)
            new.proposal_param.feat_stride = value
            return new
        return feat_stride_regrid(layer, step, sub(layer, "proposal_param").feat_stride, write)

    def input_values(self, layer, bottom, inputs):
        return _im_info(bottom, inputs)


def _im_info(bottom, inputs):
    """py-faster-rcnn's im_info (its third bottom): the image's rows, cols and the scale
    it was resized by (1), from the net's image input."""
    images = [s for s in inputs.values() if s is not None and len(s) == 4]
    if bottom != 2 or len(images) != 1:
        return None
    _, _, h, w = images[0]
    return [[h, w, 1.0]]


# ---------------------------------------------------------------------------
# Sources and sinks
# ---------------------------------------------------------------------------

class Source(LayerRule):
    role = Role.SOURCE

    def grid_window(self, layer):
        return IDENTITY

    def tops_from_data(self, layer, data):
        """All top shapes once top 0 (the image batch) is known, e.g. from --input-shape."""
        return None


class Reader(Source):
    """A layer that reads data from files or a database: an engine run feeds an Input of
    the same tops instead (their sizes from the analysis or --input-shape; tops after
    the first are labels)."""

    def for_engine(self, layer, engine):
        return [_input_form(layer)]


class ImageReader(Reader):
    """Readers whose tops are (data, label (N,))."""

    def tops_from_data(self, layer, data):
        return [tuple(data), (data[0],)][:len(layer.top)]


class Input(Source):
    """input_param.shape: one shape per top, or one shared by all tops."""

    types = ("Input",)

    def out_shapes(self, layer, in_shapes):
        shapes = [_blob_shape(s) for s in layer.input_param.shape]
        return _per_top(layer, shapes, "input_param { shape }")

    def with_sizes(self, layer, in_shapes, out_shapes):
        """An Input made from a data layer: one shape per top, as analysed."""
        if len(layer.input_param.shape):
            return layer
        unknown = [top for top, shape in zip(layer.top, out_shapes)
                   if shape is None or None in shape]
        if unknown:
            raise _err(layer, f"the size of its top '{unknown[0]}' is unknown; give it with "
                              f"--input-shape {unknown[0]}=N,C,H,W")
        new = type(layer)()
        new.CopyFrom(layer)
        for shape in out_shapes:
            new.input_param.shape.add().dim.extend(shape)
        return new


def _per_top(layer, shapes, what):
    tops = len(layer.top)
    if not shapes:
        raise Unknown(f"no {what}")
    if len(shapes) == 1:
        return shapes * tops
    if len(shapes) != tops:
        raise _err(layer, f"{len(shapes)} shapes for {tops} tops")
    return shapes


class DummyData(Source):
    types = ("DummyData",)

    def out_shapes(self, layer, in_shapes):
        p = layer.dummy_data_param
        shapes = [_blob_shape(s) for s in p.shape]
        if not shapes and len(p.num):
            legacy = list(zip(p.num, p.channels, p.height, p.width))
            if len(legacy) != len(p.num):
                raise _err(layer, "num/channels/height/width must have equal counts")
            shapes = [tuple(s) for s in legacy]
        return _per_top(layer, shapes, "dummy_data_param shape")


def _image_source(layer, batch, channels, height, width):
    """(data, label[, ...]) for image-reading layers; transform crop_size overrides the size."""
    crop = layer.transform_param.crop_size if layer.HasField("transform_param") else 0
    if crop:
        height = width = crop
    if not batch or not channels or not height or not width:
        raise Unknown("the image size depends on the data files")
    return batch, channels, height, width


class MemoryData(ImageReader):
    types = ("MemoryData",)

    def out_shapes(self, layer, in_shapes):
        p = layer.memory_data_param
        data = _image_source(layer, p.batch_size, p.channels, p.height, p.width)
        return [data, (p.batch_size,)][:len(layer.top)]


class ImageData(ImageReader):
    """ImageData / WindowData: colour decides C, new_height/new_width or crop_size decide H, W."""

    types = ("ImageData", "WindowData")

    def out_shapes(self, layer, in_shapes):
        if layer.type == "WindowData":
            p = layer.window_data_param
            crop = p.crop_size or layer.transform_param.crop_size
            data = _image_source(layer, p.batch_size, 3, crop, crop)
        else:
            p = layer.image_data_param
            data = _image_source(layer, p.batch_size, 3 if p.is_color else 1, p.new_height, p.new_width)
        return [data, (data[0],)][:len(layer.top)]


class SegData(Reader):
    """DeepLab ImageSegData / SegNet DenseImageData: (N,3,H,W) image, (N,1,H,W) label,
    DeepLab's optional third top data_dim (N,1,1,2)."""

    types = ("ImageSegData", "DenseImageData")
    fork_types = types

    def out_shapes(self, layer, in_shapes):
        name = "image_data_param" if layer.type == "ImageSegData" else "dense_image_data_param"
        p = sub(layer, name)
        color = field(p, "is_color", True)
        data = _image_source(layer, field(p, "batch_size", 1), 3 if color else 1,
                             field(p, "new_height", 0), field(p, "new_width", 0))
        return self.tops_from_data(layer, data)

    def tops_from_data(self, layer, data):
        n, h, w = data[0], data[-2], data[-1]
        return [tuple(data), (n, 1, h, w), (n, 1, 1, 2)][:len(layer.top)]


class DataLayer(ImageReader):
    """DB/HDF5/annotated readers: the image size lives in the data, so only --input-shape helps.
    The label top (N,) is known from batch_size."""

    types = ("Data", "HDF5Data", "AnnotatedData")
    fork_types = ("AnnotatedData",)

    def out_shapes(self, layer, in_shapes):
        raise Unknown(f"a '{layer.type}' layer reads its sizes from the data")


class ScoreOrWrite(LayerRule):
    """A layer that only scores (losses, accuracies) or writes out (MatWrite, HDF5Output,
    Silence): an engine run leaves it out."""

    role = Role.SINK

    def for_engine(self, layer, engine):
        return []


class Loss(ScoreOrWrite):
    """Losses: top 0 is a scalar (); SoftmaxWithLoss may add the probabilities as top 1."""

    types = ("EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
             "InfogainLoss", "MultinomialLogisticLoss", "ContrastiveLoss", "SmoothL1Loss",
             "MultiBoxLoss")
    fork_types = ("SmoothL1Loss", "MultiBoxLoss")

    def out_shapes(self, layer, in_shapes):
        # Caffe adds an anonymous loss top when none is listed.
        return ([()] + [tuple(in_shapes[0])] * (len(layer.top) - 1))[:len(layer.top)]


def _check_labels(layer, in_shapes, axis):
    """Caffe's rule for a class-score layer with a label bottom: one label per prediction,
    i.e. the label's count is the scores' count without the class axis (a segmentation
    label must have the scores' size)."""
    if len(in_shapes) < 2 or any(s is None or None in s for s in in_shapes[:2]):
        return
    scores, label = tuple(in_shapes[0]), tuple(in_shapes[1])
    axis = canonical_axis(layer, axis, len(scores))
    predictions = count(scores) // scores[axis] if scores[axis] else 0
    if predictions != count(label):
        raise _err(layer, f"the label {label} does not give one label per prediction of the "
                          f"scores {scores} (Caffe refuses it)")


class SoftmaxLoss(Loss):
    """SoftmaxWithLoss: like any loss, and its label must match the scores."""

    types = ("SoftmaxWithLoss",)
    fork_types = ()

    def out_shapes(self, layer, in_shapes):
        _check_labels(layer, in_shapes, layer.softmax_param.axis if layer.HasField("softmax_param") else 1)
        return super().out_shapes(layer, in_shapes)


class Accuracy(ScoreOrWrite):
    """Accuracy: (), plus per-class accuracies (num_classes) as an optional second top."""

    types = ("Accuracy",)

    def out_shapes(self, layer, in_shapes):
        shape = tuple(in_shapes[0])
        _check_labels(layer, in_shapes, layer.accuracy_param.axis)
        classes = shape[canonical_axis(layer, layer.accuracy_param.axis, len(shape))]
        return [(), (classes,)][:len(layer.top)]


class SegAccuracy(ScoreOrWrite):
    """DeepLab SegAccuracy: label (N,1,H,W) must match the scores' grid; top (1,1,1,3) holds
    pixel accuracy, mean recall and mean IoU."""

    types = ("SegAccuracy",)
    fork_types = types

    def out_shapes(self, layer, in_shapes):
        scores, label = tuple(in_shapes[0]), tuple(in_shapes[1])
        if len(scores) != 4 or len(label) != 4 or label[1] != 1 or \
                (scores[0], scores[2], scores[3]) != (label[0], label[2], label[3]):
            raise _err(layer, f"label {label} does not fit scores {scores} as (N, 1, H, W)")
        return [(1, 1, 1, 3)][:len(layer.top)]


class Silence(ScoreOrWrite):
    types = ("Silence", "MatWrite", "HDF5Output")
    fork_types = ("MatWrite",)

    def out_shapes(self, layer, in_shapes):
        return [None] * len(layer.top) if layer.top else []


class RuntimeSink(LayerRule):
    """Outputs whose size is decided at run time (detections, proposals)."""

    types = ("DetectionOutput", "DetectionEvaluate")
    fork_types = types
    role = Role.SINK

    def out_shapes(self, layer, in_shapes):
        raise Unknown(f"'{layer.type}' output size is decided at run time")


# ---------------------------------------------------------------------------
# Layers made for another layer's arithmetic (bvlc_form, for_engine)
# ---------------------------------------------------------------------------

# The Caffe Python module holding the fork layers (surgery/engines/pylayers/forklayers.py;
# the caffe engine puts its folder on the pycaffe child's path).
FORK_MODULE = "forklayers"


def _form(layer, type_, *, name=None, bottoms=None, tops=None):
    """A layer of `type_` in `layer`'s place: its name, bottoms, tops and phase rules."""
    new = type(layer)()
    new.name, new.type = name or layer.name, type_
    new.bottom.extend(layer.bottom if bottoms is None else bottoms)
    new.top.extend(layer.top if tops is None else tops)
    new.include.extend(layer.include)
    new.exclude.extend(layer.exclude)
    if layer.HasField("phase"):
        new.phase = layer.phase
    return new


def _fixed_deconvolution(layer, channels, *, kernel, stride, pad):
    """`layer` as a Deconvolution that resamples each of its `channels` on its own with a
    fixed kernel (no bias); `_fixed_deconvolution_weights` makes the kernel."""
    deconv = _form(layer, "Deconvolution")
    cp = deconv.convolution_param
    cp.num_output = cp.group = channels
    cp.kernel_size.append(kernel)
    cp.stride.append(stride)
    if pad:
        cp.pad.append(pad)
    cp.bias_term = False
    return deconv


def _fixed_deconvolution_weights(form, kernel_of):
    """{name: [New]}: the weights of a `_fixed_deconvolution` form, `kernel_of(stride,
    taps)` (a taps x taps float32 array) for every channel; {} for any other form (the
    layer's Python form in a verify run)."""
    import numpy as np

    from .weights.plan import New

    if form[0].type != "Deconvolution":
        return {}
    cp = form[0].convolution_param
    c, k = cp.num_output, cp.kernel_size[0]
    values = np.broadcast_to(kernel_of(cp.stride[0], k), (c, 1, k, k)).reshape(-1)
    return {form[0].name: [New((c, 1, k, k), pieces=[values])]}


def _input_form(layer):
    """An Input with `layer`'s tops; its shapes come from `Input.with_sizes`."""
    return _form(layer, "Input", bottoms=())


def _python_form(layer, cls, params):
    """`layer` as the Python layer `cls` of FORK_MODULE, the fork's parameters as JSON."""
    import json

    new = _form(layer, "Python")
    p = new.python_param
    p.module, p.layer, p.param_str = FORK_MODULE, cls, json.dumps(params, sort_keys=True)
    return new


def _set_fields(message):
    """{field: value} of what a parameter message sets explicitly (the forks test has_),
    sub-messages (fillers) aside."""
    return {fd.name: list(value) if fd.is_repeated else value
            for fd, value in message.ListFields() if fd.message_type is None}


# ---------------------------------------------------------------------------
# Caffe's Python layer: the well-known py-faster-rcnn modules
# ---------------------------------------------------------------------------

class PythonLayer(LayerRule):
    """Caffe's `Python` layer: what it computes is the user's module
    (python_param.module and .layer). The well-known py-faster-rcnn layers are described
    by the rule of their module (`PYTHON_MODULES`, the module matched by its last
    dotted components); any other module is unknown, as a type the registry lacks. One
    of an unknown module with no bottoms is a data layer (FCN's VOC readers): an engine
    run feeds an Input of the same tops instead."""

    types = ("Python",)

    def module(self, layer):
        """The rule of this layer's module, or None: also when its param_str lacks a key
        the module needs (a proposal layer that names no feat_stride stays unknown)."""
        p = layer.python_param
        for (module, cls), rule in PYTHON_MODULES.items():
            if p.layer == cls and (p.module == module or p.module.endswith("." + module)):
                given = _param_str(layer)
                needed = all(isinstance(given.get(key), int) and given[key] > 0
                             for key in rule.requires)
                return rule if needed else None
        return None

    def _ask(self, layer, name, *args):
        rule = self.module(layer)
        return getattr(rule if rule is not None else super(), name)(layer, *args)

    def role_of(self, layer):
        rule = self.module(layer)
        return rule.role_of(layer) if rule is not None else Role.UNKNOWN

    def out_shapes(self, layer, in_shapes):
        if self.module(layer) is None:
            p = layer.python_param
            raise Unknown(f"Python layer of module '{p.module}' ({p.layer}): its outputs are "
                          "defined by user code")
        return self._ask(layer, "out_shapes", in_shapes)

    def grid_bottoms(self, layer):
        return self._ask(layer, "grid_bottoms")

    def grid_window(self, layer):
        return self._ask(layer, "grid_window")

    def regrid(self, layer, step):
        return self._ask(layer, "regrid", step)

    def follows_grid(self, layer):
        return self._ask(layer, "follows_grid")

    def for_engine(self, layer, engine):
        if self.module(layer) is None and not layer.bottom:
            return [_input_form(layer)]
        return self._ask(layer, "for_engine", engine)

    def input_values(self, layer, bottom, inputs):
        return self._ask(layer, "input_values", bottom, inputs)

    def tops_from_data(self, layer, data):
        rule = self.module(layer)
        return rule.tops_from_data(layer, data) if isinstance(rule, Source) else None


def _param_str(layer):
    """The mapping of a Python layer's param_str (surgery.param_str); {} when unreadable."""
    from . import param_str

    try:
        return param_str.read(layer.python_param.param_str)
    except SurgeryError:
        return {}


def _param_str_regrid(layer, step, *, grid_out=SAME):
    """feat_stride inside param_str follows the map (feat_stride_regrid), the text edited
    in place: only that number changes, quotes and the other keys stay."""
    from . import param_str

    def write(value):
        new = type(layer)()
        new.CopyFrom(layer)
        new.python_param.param_str = param_str.replace(layer.python_param.param_str,
                                                       "feat_stride", value)
        return new
    return feat_stride_regrid(layer, step, _param_str(layer)["feat_stride"], write,
                              grid_out=grid_out)


class RpnProposal(LayerRule):
    """py-faster-rcnn's `rpn.proposal_layer.ProposalLayer`: anchors every feat_stride
    pixels over the score map, decoded, clipped, NMS; tops rois (R, 5) (batch index, x1,
    y1, x2, y2 in image pixels) and optionally scores (R, 1), R decided at run time.
    OpenCV runs it as its own Proposal layer (`for_engine`)."""

    role = Role.COLLAPSE
    requires = ("feat_stride",)
    # py-faster-rcnn's defaults: generate_anchors (base 16, ratios 0.5/1/2, scales 8/16/32)
    # and cfg.TEST (RPN_PRE_NMS_TOP_N 6000, RPN_POST_NMS_TOP_N 300, RPN_NMS_THRESH 0.7,
    # RPN_MIN_SIZE 16).
    DEFAULTS = {"base_size": 16, "min_size": 16, "ratio": [0.5, 1.0, 2.0],
                "scale": [8.0, 16.0, 32.0], "pre_nms_topn": 6000, "post_nms_topn": 300,
                "nms_thresh": 0.7}
    KEYS = {"ratio": "ratios", "scale": "scales"}    # param_str spellings of forks

    def follows_grid(self, layer):
        return True

    def grid_bottoms(self, layer):
        return (0, 1)

    def out_shapes(self, layer, in_shapes):
        return [(None, 5), (None, 1)][:len(layer.top)]     # None: R boxes, found at run time

    def regrid(self, layer, step):
        return _param_str_regrid(layer, step)

    def input_values(self, layer, bottom, inputs):
        return _im_info(bottom, inputs)

    def for_engine(self, layer, engine):
        """OpenCV has no Python layers; its samples swap this one for OpenCV's Proposal
        with the same name, bottoms and tops, every setting given (OpenCV reads ratio and
        scale without defaults): feat_stride (and ratios, scales, base_size where a fork
        gives them) from param_str, py-faster-rcnn's defaults for the rest."""
        if engine != "opencv":
            return None
        given = _param_str(layer)
        new = type(layer)()
        new.name = layer.name
        new.type = Proposal.types[0]
        new.bottom.extend(layer.bottom)
        new.top.extend(layer.top)
        new.include.extend(layer.include)
        new.exclude.extend(layer.exclude)
        pp = new.proposal_param
        pp.feat_stride = given["feat_stride"]
        for name, default in self.DEFAULTS.items():
            value = given.get(self.KEYS.get(name, name), default)
            if isinstance(default, list):
                getattr(pp, name).extend(float(v) for v in value)
            else:
                setattr(pp, name, value)
        return [new]


class RpnAnchorTarget(LayerRule):
    """py-faster-rcnn's `rpn.anchor_target_layer.AnchorTargetLayer` (training): for each
    anchor of each cell of the score map (bottom 0, 2A channels), its label and box
    targets: rpn_labels (1, 1, A*H, W) (the anchors stacked along the height, as the
    RPN's Reshape stacks the scores) and three (1, 4A, H, W) blobs, on the score map's
    grid. Its feat_stride follows that grid."""

    role = Role.COLLAPSE
    requires = ("feat_stride",)

    def follows_grid(self, layer):
        return True

    def out_shapes(self, layer, in_shapes):
        _, c, h, w = _spatial4(layer, in_shapes[0])
        if c % 2:
            raise _err(layer, f"the scores have {c} channels, not 2 per anchor")
        a = c // 2
        return [(1, 1, a * h, w)] + [(1, 4 * a, h, w)] * (len(layer.top) - 1)

    def regrid(self, layer, step):
        return _param_str_regrid(layer, step, grid_out=step.grid_in)


class RpnProposalTarget(LayerRule):
    """py-faster-rcnn's `rpn.proposal_target_layer.ProposalTargetLayer` (training):
    samples boxes and their targets, per box: rois (R, 5), labels (R,), bbox_targets,
    bbox_inside_weights, bbox_outside_weights (R, 4K), K = num_classes in param_str."""

    role = Role.COLLAPSE
    requires = ("num_classes",)

    def out_shapes(self, layer, in_shapes):
        k = _param_str(layer)["num_classes"]
        return ([(None, 5), (None,)] + [(None, 4 * k)] * 3)[:len(layer.top)]


class RoIData(Source):
    """py-faster-rcnn's `roi_data_layer.layer.RoIDataLayer`: the training images and their
    boxes. End to end (three tops): data (the image batch; its size is the data's, so
    --input-shape gives it), im_info (1, 3), gt_boxes (G, 5); Fast R-CNN (six tops):
    data, rois (R, 5), labels (R,) and three (R, 4K) box-target blobs."""

    requires = ()

    def out_shapes(self, layer, in_shapes):
        raise Unknown("its image size is the data's; give --input-shape")

    def tops_from_data(self, layer, data):
        if len(layer.top) <= 3:
            return [tuple(data), (1, 3), (None, 5)][:len(layer.top)]
        k = _param_str(layer).get("num_classes")
        targets = [(None, 4 * k)] * 3 if isinstance(k, int) else [None] * 3
        return [tuple(data), (None, 5), (None,)] + targets[:len(layer.top) - 3]


PYTHON_MODULES = {
    ("rpn.proposal_layer", "ProposalLayer"): RpnProposal(),
    ("rpn.anchor_target_layer", "AnchorTargetLayer"): RpnAnchorTarget(),
    ("rpn.proposal_target_layer", "ProposalTargetLayer"): RpnProposalTarget(),
    ("roi_data_layer.layer", "RoIDataLayer"): RoIData(),
}


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------

_RULES = {}
UNKNOWN = UnknownRule()


def register(rule):
    """Add a rule instance for each of its types (later registrations win)."""
    for type_name in rule.types:
        _RULES[type_name] = rule
    return rule


for _cls in (Pointwise, ReLU6, Clip, Split, PReLU, BatchNorm, BN, Scale, Bias,
             Normalize, ShuffleChannel, Convolution, ConvolutionDepthwise, Deconvolution, Pooling, Eltwise, Axpy, Concat,
             Slice, Flatten, Reshape, Permute, Crop, Interp, Upsample, Reorg, InnerProduct, Embed, Tile,
             Reduction, ArgMax, PriorBox, RoiPooling, PSROIPooling, Proposal, PythonLayer, Input,
             DummyData, MemoryData, ImageData, SegData, DataLayer, Loss, SoftmaxLoss, Accuracy,
             SegAccuracy, Silence, RuntimeSink):
    register(_cls())


def rule_for(type_string):
    """The rule for a Caffe type string; the 'unknown' rule when none is registered."""
    return _RULES.get(type_string, UNKNOWN)


def known_types():
    return sorted(_RULES)


# Parameter blocks whose values decide a layer's output shape, its window or its weight
# shapes. Something the schema lacks inside one (a fork's field or enum value) makes the
# layer opaque, and a near miss of a real field there is refused as a typo (io/netfile.py).
# Left out on purpose: data-source blocks (data_param, image_data_param, transform_param,
# ...), whose sizes --input-shape overrides, and blocks that leave shapes alone
# (loss_param, accuracy_param, eltwise_param, dropout_param, ...).
SHAPE_PARAMS = frozenset({
    "convolution_param", "pooling_param", "inner_product_param", "interp_param", "crop_param",
    "upsample_param", "input_param", "dummy_data_param", "reshape_param", "flatten_param",
    "slice_param", "concat_param", "scale_param", "bias_param", "embed_param", "prelu_param",
    "norm_param", "bn_param", "roi_pooling_param", "psroi_pooling_param", "prior_box_param",
    "permute_param", "tile_param", "reduction_param", "argmax_param", "shuffle_channel_param",
    "spp_param", "roi_align_param", "proposal_param", "python_param", "reorg_param",
})
