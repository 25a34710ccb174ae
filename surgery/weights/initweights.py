"""Random weights with exactly the shapes a net needs, for numeric checks without a download.

Activations must stay O(1) through deep nets, so that an error measured relative to the
output means the same at every depth. We predict the per-channel mean and variance of
every blob through the net as the weights are drawn (a data-free LSUV), starting from a
standard-normal input, and use the prediction twice:
- a linear layer (Convolution, InnerProduct) draws N(0, 2 / (fan_in * E[x^2])), where
  E[x^2] is its input's predicted second moment: He's rule, measured on the real input
  instead of assumed, so a max pooling or a residual sum that grew the input is undone;
- BatchNorm statistics are set near the mean and variance its input is predicted to have.
The prediction must be close for this to work: a max pooling is the maximum of its
window (of the rectified Gaussian a ReLU left, when it did), not the mean.

Which initialiser each param blob gets, and which moment rule a layer follows, is a fact
of the layer type and lives in the registry (`LayerRule.init_of`, `LayerRule.moment_of`);
this module holds the numbers.

Weights are drawn and written in pieces of at most `CHUNK` values, so any model size
needs bounded memory. Each layer draws from its own stream seeded by (seed, layer name),
one blob after the other, so two nets that share layer names get the same weights
wherever the shapes and the predicted input moments agree, and the piece size never
changes a value (numpy's generators give the same stream in pieces as in one call).
"""

import functools
import math
import zlib
from typing import NamedTuple, Optional

import numpy as np

from ..analysis.analyse import analyse
from ..errors import SurgeryError
from . import writer
from .fillers import upsampling_kernel
from .plan import LayerWeights, New, WeightPlan

CHUNK = 1 << 20   # values drawn at a time: 4 MB of float32
HE_GAIN = 2.0     # E[y^2] of a linear layer's output; a ReLU after it halves it back to 1
SMALL = 0.05      # std of biases and of blobs nothing better is known for


class Moments(NamedTuple):
    """Per-channel mean and variance of a blob, and its shape where a Gaussian would be
    wrong: `pre` = (mean, var) of the Gaussian this blob is the ReLU of; `mix` = (mean,
    var, mean2, var2) when it is the ReLU of N(mean, var) plus an independent
    N(mean2, var2), which is what a residual sum is. Max pooling and the ReLU after a
    residual sum need the shape: with two moments alone a ResNet-152's prediction drifts
    with every block, the drift compounds, and its last blocks reached a std of 154."""

    mean: np.ndarray
    var: np.ndarray
    pre: Optional[tuple] = None
    mix: Optional[tuple] = None

    @property
    def second(self):
        """E[x^2] per channel."""
        return self.var + np.square(self.mean)


def _unit(channels):
    return Moments(np.zeros(channels), np.ones(channels))


class _Context(NamedTuple):
    first: Moments        # of the layer's first bottom
    in_shape: tuple       # of the layer's first bottom (None when it has none)
    options: dict         # from the registry's moment_of
    chunk: int


# ---------------------------------------------------------------------------
# Initialisers: (rng, shape, ctx) -> iterator of float32 pieces, in C order
# ---------------------------------------------------------------------------

def _count(shape):
    return int(np.prod(shape, dtype=np.int64))


def _normal(rng, shape, sigma, chunk):
    count, sigma = _count(shape), np.float32(sigma)
    for start in range(0, count, chunk):
        piece = rng.standard_normal(min(chunk, count - start), dtype=np.float32)
        piece *= sigma
        yield piece


def _uniform(rng, shape, low, high, chunk):
    count = _count(shape)
    for start in range(0, count, chunk):
        yield rng.uniform(low, high, size=min(chunk, count - start)).astype(np.float32)


def _he_sigma(fan_in, ctx, gain=HE_GAIN):
    second = float(np.mean(ctx.first.second)) if ctx.first.mean.size else 1.0
    return math.sqrt(gain / (max(1, fan_in) * max(second, 1e-12)))


def _he(rng, shape, ctx):
    """Rows are outputs: the fan-in is the rest of the shape."""
    fan_in = _count(shape[1:]) if len(shape) > 1 else 1
    return _normal(rng, shape, _he_sigma(fan_in, ctx), ctx.chunk)


def _he_transposed(rng, shape, ctx):
    """InnerProduct with transpose: the weight is (K, num_output)."""
    return _normal(rng, shape, _he_sigma(shape[0], ctx), ctx.chunk)


def _deconv(rng, shape, ctx):
    """Deconvolution weights are (C_in, C_out/group, kh, kw)."""
    fan_in = shape[0] * _count(shape[2:]) if len(shape) > 1 else 1
    return _normal(rng, shape, _he_sigma(fan_in, ctx, gain=1.0), ctx.chunk)


def _upsampler(rng, shape, ctx):
    """A fixed upsampler's weights (C_in, C_out/group, kh, kw): the bilinear kernel of its
    stride where input channel i feeds output channel i (FCN's class-to-itself diagonal
    with one group, every slot with one channel per group), zeros elsewhere; in every
    slot when the file asks for Caffe's bilinear filler."""
    c_in, per_group = shape[0], shape[1]
    groups = max(1, ctx.options.get("group", 1))
    kernel = upsampling_kernel(ctx.options["stride"], shape[2:])
    i, j = np.meshgrid(np.arange(c_in), np.arange(per_group), indexing="ij")
    feeds_itself = (i // max(1, c_in // groups)) * per_group + j == i
    mask = np.ones_like(feeds_itself) if ctx.options.get("every_slot") else feeds_itself
    for start in range(c_in):       # one input channel's slots at a time
        yield (mask[start][:, None, None] * kernel).astype(np.float32).reshape(-1)


def _zero(rng, shape, ctx):
    count = _count(shape)
    for start in range(0, count, ctx.chunk):
        yield np.zeros(min(ctx.chunk, count - start), np.float32)


def _small(rng, shape, ctx):
    return _normal(rng, shape, SMALL, ctx.chunk)


def _whole(values):
    """A per-channel blob, small enough to make at once."""
    yield np.asarray(values, dtype=np.float32).reshape(-1)


def _bn_mean(rng, shape, ctx):
    """The input's own channel means, off by a tenth of a standard deviation."""
    mean, var = _fit(ctx.first, shape)
    return _whole(mean + 0.1 * np.sqrt(var) * rng.normal(size=shape))


def _bn_var(rng, shape, ctx):
    """Near the input's own channel variances, so BatchNorm really normalises."""
    return _whole(_fit(ctx.first, shape)[1] * rng.uniform(0.5, 1.5, size=shape))


def _ones(rng, shape, ctx):
    count = _count(shape)
    for start in range(0, count, ctx.chunk):
        yield np.ones(min(ctx.chunk, count - start), np.float32)


def _gamma(rng, shape, ctx):
    return _uniform(rng, shape, 0.8, 1.2, ctx.chunk)


def _slope(rng, shape, ctx):
    return _uniform(rng, shape, 0.1, 0.3, ctx.chunk)


def _norm_scale(rng, shape, ctx):
    """SSD Normalize divides by the L2 norm over channels (and positions): scale it back."""
    n = ctx.first.mean.size
    if ctx.options.get("across_spatial", True) and ctx.in_shape and len(ctx.in_shape) == 4:
        n *= ctx.in_shape[2] * ctx.in_shape[3]
    return _whole(math.sqrt(max(n, 1)) * rng.uniform(0.8, 1.2, size=shape))


def _fit(stats, shape):
    """Channel stats reshaped to a param blob's shape (scalar means when they disagree)."""
    mean, var = stats.mean, stats.var
    if mean.size == _count(shape):
        return mean.reshape(shape), var.reshape(shape)
    return np.full(shape, mean.mean()), np.full(shape, var.mean())


INITIALISERS = {
    "he": _he, "he_transposed": _he_transposed, "deconv": _deconv, "small": _small,
    "upsampler": _upsampler, "zero": _zero,
    "bn_mean": _bn_mean, "bn_var": _bn_var, "ones": _ones, "gamma": _gamma,
    "slope": _slope, "norm_scale": _norm_scale,
}


# ---------------------------------------------------------------------------
# Moment rules: objects that see each param blob's pieces as they are drawn, then give
# the layer's output Moments. Inputs are assumed independent, pre-activations Gaussian:
# rough, but it keeps BatchNorm centring what it receives.
# ---------------------------------------------------------------------------

class _Rule:
    """A rule that needs no param values: its function gets an empty blob list."""

    needs_blobs = False

    def __init__(self, fn, node, ins, ctx, channels, shapes):
        self.fn, self.node, self.ins, self.ctx, self.channels = fn, node, ins, ctx, channels
        self.shapes = shapes
        self.blobs = [[] for _ in shapes]

    def observe(self, index, start, values):
        if self.needs_blobs:
            self.blobs[index].append(values)

    def result(self):
        blobs = []
        if self.needs_blobs:
            blobs = [np.concatenate(parts).astype(np.float64).reshape(shape) if parts
                     else np.zeros(shape) for parts, shape in zip(self.blobs, self.shapes)]
        return self.fn(self.ins, blobs, self.ctx, self.channels)


class _WholeBlobs(_Rule):
    """A rule that reads its (per-channel, small) param blobs whole."""

    needs_blobs = True


def _m_default(ins, blobs, ctx, channels):
    """Pointwise layers keep their input's stats; anything else gets averaged stats."""
    if ins and ins[0].mean.size == channels:
        return ins[0]
    mean = float(np.mean([m.mean.mean() for m in ins])) if ins else 0.0
    var = float(np.mean([m.var.mean() for m in ins])) if ins else 1.0
    return Moments(np.full(channels, mean), np.full(channels, var))


def _m_batchnorm(ins, blobs, ctx, channels):
    mean, var = ins[0].mean, ins[0].var
    factor = float(blobs[2].reshape(-1)[0]) if len(blobs) > 2 else 1.0
    factor = 1.0 / factor if factor else 0.0  # Caffe divides the stored stats by it
    s_mean, s_var = _fit(Moments(blobs[0] * factor, blobs[1] * factor), mean.shape)
    eps = ctx.options.get("eps", 1e-5)
    return Moments((mean - s_mean) / np.sqrt(s_var + eps), var / (s_var + eps))


def _m_affine(ins, blobs, ctx, channels):
    mean, var = ins[0].mean, ins[0].var
    if not blobs:
        return ins[0]
    gamma = _fit(Moments(blobs[0], blobs[0]), mean.shape)[0]
    beta = _fit(Moments(blobs[1], blobs[1]), mean.shape)[0] if len(blobs) > 1 else 0.0
    return Moments(mean * gamma + beta, var * np.square(gamma))


def _m_bn_fork(ins, blobs, ctx, channels):
    """PSPNet's BN: slope * (x - mean) / sqrt(var + eps) + bias; SegNet's: scale, shift."""
    if len(blobs) >= 4:
        mean, var = ins[0].mean, ins[0].var
        s_mean, s_var = _fit(Moments(blobs[2], blobs[3]), mean.shape)
        eps = ctx.options.get("eps", 1e-5)
        ins = [Moments((mean - s_mean) / np.sqrt(s_var + eps), var / (s_var + eps))]
    return _m_affine(ins, blobs[:2], ctx, channels)


def _m_l2norm(ins, blobs, ctx, channels):
    first = ins[0]
    n = 1
    if ctx.options.get("across_spatial", True) and ctx.in_shape and len(ctx.in_shape) == 4:
        n = ctx.in_shape[2] * ctx.in_shape[3]
    norm = math.sqrt(max(float(np.sum(first.second)) * n, 1e-12))
    scale = _fit(Moments(blobs[0], blobs[0]), first.mean.shape)[0] if blobs else 1.0
    return Moments(first.mean * scale / norm, first.var * np.square(scale / norm))


def _erf(x):
    """Abramowitz and Stegun 7.1.26 (error below 1.5e-7), vectorised."""
    x = np.asarray(x, dtype=np.float64)
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                          + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


def _phi(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _cdf(z):
    return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))


def _cdf_exact(z):
    """For the tables: exact far into the tails, where _cdf's absolute error is not small."""
    return 0.5 * np.vectorize(math.erfc, otypes=[float])(-np.asarray(z) / math.sqrt(2.0))


def _relu_moments(mean, var, cdf=_cdf):
    """E[max(x, 0)] and E[max(x, 0)^2] for x ~ N(mean, var), elementwise."""
    s = np.sqrt(np.maximum(var, 1e-12))
    a = mean / s
    c, pdf = np.clip(cdf(a), 0.0, 1.0), _phi(a)
    e1 = np.maximum(mean * c + s * pdf, 0.0)
    return e1, np.maximum((mean * mean + var) * c + mean * s * pdf, e1 * e1)


# The ReLU of N(a, 1) for a on a grid: E1^2 / E2 rises from 0 to 1 with a, so a rectified
# Gaussian with given first and second moments is found by interpolation.
_A_GRID = np.linspace(-8.0, 8.0, 3201)
_E1, _E2 = _relu_moments(_A_GRID, np.ones_like(_A_GRID), _cdf_exact)
_RATIO = _E1 * _E1 / _E2


def _rectified_fit(e1, e2):
    """(mean, var) of the Gaussian whose ReLU has moments e1 = E[y], e2 = E[y^2]."""
    ratio = np.clip(e1 * e1 / np.maximum(e2, 1e-24), _RATIO[0], _RATIO[-1])
    a = np.interp(ratio, _RATIO, _A_GRID)
    scale2 = e2 / np.interp(a, _A_GRID, _E2)
    return a * np.sqrt(scale2), scale2


_LEGENDRE = np.polynomial.legendre.leggauss(24)


def _relu_of_mix(mu1, var1, mu2, var2):
    """E[y] and E[y^2] for y = max(max(g, 0) + h, 0), g ~ N(mu1, var1), h ~ N(mu2, var2):
    the mass at g <= 0 in closed form, the rest by 24-point Gauss-Legendre over the
    standardised g from the kink to 8 (smooth there; relative error about 1e-7)."""
    s1 = np.sqrt(np.maximum(var1, 1e-12))
    a = mu1 / s1
    lo = np.minimum(-a, 8.0)[:, None]
    nodes, weights = _LEGENDRE
    g = lo + (8.0 - lo) * (nodes + 1) / 2
    w = weights * (8.0 - lo) / 2 * _phi(g)
    e1, e2 = _relu_moments(mu1[:, None] + s1[:, None] * g + mu2[:, None], var2[:, None])
    z1, z2 = _relu_moments(mu2, var2)
    p0 = _cdf(-a)
    return p0 * z1 + (e1 * w).sum(axis=1), p0 * z2 + (e2 * w).sum(axis=1)


def _m_relu(ins, blobs, ctx, channels):
    """Moments of max(x, 0) + slope * min(x, 0): exact for a Gaussian x, by quadrature
    over the rectified part for a residual sum; the result is recorded as a rectified
    Gaussian with the same two moments."""
    first = ins[0]
    mean, var = first.mean, first.var
    slope = float(ctx.options.get("slope", 0.0))
    if first.pre is not None and not slope:
        return first                       # already rectified: ReLU changes nothing
    if first.mix is not None and not slope:
        e1, e2 = _relu_of_mix(*first.mix)
    else:
        e1, e2 = _relu_moments(mean, var)
    if slope:
        e1 = e1 + slope * (mean - e1)
        e2 = e2 + slope * slope * (mean * mean + var - e2)
        return Moments(e1, np.maximum(e2 - e1 * e1, 1e-12))
    return Moments(e1, np.maximum(e2 - e1 * e1, 1e-12), pre=_rectified_fit(e1, e2))


_MAX_GRID = np.linspace(-9.0, 9.0, 3601)


@functools.lru_cache(maxsize=64)
def _max_of(n):
    """Tail integrals of the maximum T of n standard normals, on _MAX_GRID:
    C_k(t) = E[T^k; T > t] for k = 0, 1, 2."""
    t = _MAX_GRID
    cdf = _cdf_exact(t)
    density = n * _phi(t) * cdf ** (n - 1)
    step = t[1] - t[0]
    tails = []
    for k in range(3):
        f = density * t ** k * step
        tails.append(np.cumsum(f[::-1])[::-1])
    return tails


def _m_max_pool(ins, blobs, ctx, channels):
    """The maximum of a window of n values, each drawn from the input's distribution
    (spatial correlation is ignored): exact for a Gaussian, and for the ReLU of one the
    maximum is the ReLU of the Gaussians' maximum."""
    first = ins[0]
    kernel = ctx.options.get("kernel")
    shape = ctx.in_shape
    if kernel is None:   # global: the whole map
        n = shape[2] * shape[3] if shape and len(shape) == 4 else 1
    else:
        n = kernel[0] * kernel[1]
        if shape and len(shape) == 4:
            n = min(kernel[0], shape[2]) * min(kernel[1], shape[3])
    if n <= 1:
        return first
    c0, c1, c2 = _max_of(n)
    mean, var = first.pre if first.pre is not None else (first.mean, first.var)
    s = np.sqrt(np.maximum(var, 1e-12))
    if first.pre is None:   # Gaussian: mean + s*E[T], var s^2 Var[T]
        e1 = mean + s * c1[0]
        return Moments(e1, var * max(c2[0] - c1[0] ** 2, 1e-6))
    a = mean / s          # relu(mean + s*T) = s * (a + T) where T > -a
    t0, t1, t2 = (np.interp(-a, _MAX_GRID, c) for c in (c0, c1, c2))
    e1 = s * (a * t0 + t1)
    e2 = var * (a * a * t0 + 2 * a * t1 + t2)
    return Moments(e1, np.maximum(e2 - e1 * e1, 1e-12))


def _m_eltwise(ins, blobs, ctx, channels):
    means, variances = [m.mean for m in ins], [m.var for m in ins]
    op = ctx.options.get("op", "sum")
    if op == "prod":
        m = np.prod(means, axis=0)
        return Moments(m, np.prod([v + x * x for x, v in zip(means, variances)], axis=0) - m * m)
    if op == "max":
        return Moments(np.max(means, axis=0), np.max(variances, axis=0))
    coeffs = ctx.options.get("coeff") or [1.0] * len(ins)
    mean = sum(c * m for c, m in zip(coeffs, means))
    var = sum(c * c * v for c, v in zip(coeffs, variances))
    # Keep the widest rectified input's shape; the rest is treated as one Gaussian.
    rectified = [(c * c * m.var.mean(), i) for i, (c, m) in enumerate(zip(coeffs, ins))
                 if m.pre is not None and c > 0]
    if not rectified:
        return Moments(mean, var)
    i = max(rectified)[1]
    c, pre = coeffs[i], ins[i].pre
    part_m, part_v = c * ins[i].mean, c * c * ins[i].var
    return Moments(mean, var, mix=(c * pre[0], c * c * pre[1], mean - part_m,
                                   np.maximum(var - part_v, 1e-12)))


def _m_concat(ins, blobs, ctx, channels):
    pre = None
    if all(m.pre is not None for m in ins):
        pre = (np.concatenate([m.pre[0] for m in ins]), np.concatenate([m.pre[1] for m in ins]))
    return Moments(np.concatenate([m.mean for m in ins]),
                   np.concatenate([m.var for m in ins]), pre)


class _Linear(_Rule):
    """Per output channel: mean = sum(w * mean_in) + bias, var = sum(w^2 * var_in), summed
    over the weight as it is drawn.

    The pieces the weight arrives in may cut rows anywhere, and float sums depend on their
    order, so the values are regrouped into fixed units first: UNIT values of whole rows,
    or UNIT-value segments of a longer row. Each unit is reduced by the same call on the
    same buffer, so the moments, and every weight drawn from them later, are the same
    bytes whatever the piece size."""

    UNIT = 1 << 18

    def __init__(self, fn, node, ins, ctx, channels, shapes):
        super().__init__(fn, node, ins, ctx, channels, shapes)
        self.transposed = bool(ctx.options.get("transposed"))
        self.ok = bool(ins) and bool(shapes) and len(shapes[0]) >= 2
        if not self.ok:
            return
        shape = shapes[0]
        mean, var = ins[0].mean.astype(np.float32), ins[0].var.astype(np.float32)
        self.width = _count(shape[1:])   # a row: one output (one input position if transposed)
        outputs, fan_in = (shape[1], shape[0]) if self.transposed else (shape[0], self.width)
        taps = _count(shape[2:]) if len(shape) == 4 else 1
        per_group = shape[1] if len(shape) == 4 else mean.size   # input channels per group
        if len(shape) == 2 and mean.size and fan_in % mean.size == 0:
            taps = fan_in // mean.size       # InnerProduct on a map: C x H x W
        elif len(shape) == 2:
            self.ok = False
            return
        groups = mean.size // per_group if per_group and mean.size % per_group == 0 else 0
        if not groups or outputs % groups or per_group * taps != fan_in:
            self.ok = False
            return
        # Column means per group: (groups, fan_in), channel c repeated over its taps.
        self.mcol = np.repeat(mean.reshape(groups, per_group), taps, axis=1)
        self.vcol = np.repeat(var.reshape(groups, per_group), taps, axis=1)
        self.per_group_out = outputs // groups
        self.out_m, self.out_v = np.zeros(outputs), np.zeros(outputs)
        self.total = _count(shape)
        self.unit = (self.UNIT // self.width) * self.width if self.width <= self.UNIT else 0
        self.buffer = np.empty(min(self.unit or self.UNIT, self.total), np.float32)
        self.square = np.empty_like(self.buffer)
        self.pos = self.filled = 0   # flat index of buffer[0]; values in the buffer

    def _unit_end(self):
        if self.unit:
            return min(self.pos + self.unit, self.total)
        row, col = divmod(self.pos, self.width)
        return min(row * self.width + (col // self.UNIT + 1) * self.UNIT, (row + 1) * self.width)

    def observe(self, index, start, values):
        if not self.ok:
            return
        if index == 1:
            self.out_m[start:start + values.size] += values
            return
        if index != 0:
            return
        done = 0
        while done < values.size:
            end = self._unit_end()
            take = min(end - self.pos - self.filled, values.size - done)
            self.buffer[self.filled:self.filled + take] = values[done:done + take]
            self.filled += take
            done += take
            if self.pos + self.filled == end:
                self._reduce()
                self.pos, self.filled = end, 0

    def _reduce(self):
        """Add the buffered unit: whole rows, or one segment of a row.

        einsum, not BLAS: one pass in one thread keeps up with the draw, where a threaded
        gemv on a busy machine costs more than drawing the numbers."""
        n = self.filled
        row, col = divmod(self.pos, self.width)
        width = self.width if self.unit else n
        block = self.buffer[:n].reshape(n // width, width)
        square = np.multiply(block, block, out=self.square[:n].reshape(block.shape))
        cols = slice(col, col + width)
        if self.transposed:   # rows are input positions, columns outputs
            m = self.mcol[0, row:row + block.shape[0]]
            v = self.vcol[0, row:row + block.shape[0]]
            self.out_m[cols] += np.einsum("r,rk->k", m, block)
            self.out_v[cols] += np.einsum("r,rk->k", v, square)
            return
        rows = slice(row, row + block.shape[0])
        if self.mcol.shape[0] == 1:
            self.out_m[rows] += np.einsum("rk,k->r", block, self.mcol[0, cols])
            self.out_v[rows] += np.einsum("rk,k->r", square, self.vcol[0, cols])
            return
        group = np.arange(rows.start, rows.stop) // self.per_group_out
        self.out_m[rows] += np.einsum("rk,rk->r", block, self.mcol[group, cols])
        self.out_v[rows] += np.einsum("rk,rk->r", square, self.vcol[group, cols])

    def result(self):
        if not self.ok:
            return _m_default(self.ins, [], self.ctx, self.channels)
        if self.pos != self.total:
            raise RuntimeError(f"layer '{self.node.name}': the weight was not drawn to the end")
        return Moments(self.out_m, self.out_v)


MOMENTS = {
    "default": (_Rule, _m_default), "keep": (_Rule, _m_default), "relu": (_Rule, _m_relu),
    "max_pool": (_Rule, _m_max_pool), "eltwise": (_Rule, _m_eltwise),
    "concat": (_Rule, _m_concat), "linear": (_Linear, None),
    "batchnorm": (_WholeBlobs, _m_batchnorm), "affine": (_WholeBlobs, _m_affine),
    "bn_fork": (_WholeBlobs, _m_bn_fork), "l2norm": (_WholeBlobs, _m_l2norm),
}


# ---------------------------------------------------------------------------
# The walk
# ---------------------------------------------------------------------------

def _channels(shape):
    return int(shape[1]) if shape is not None and len(shape) >= 2 else 1


def _observed(pieces, rule, index):
    start = 0
    for piece in pieces:
        rule.observe(index, start, piece)
        start += piece.size
        yield piece


def _analyses(net, input_shapes, phases):
    """One Analysis per phase, after checking that every weight shape is known and that a
    layer the phases share has the same weight shapes in each."""
    analyses, seen = [], {}
    for phase in phases:
        analysis = analyse(net, input_shapes=input_shapes, phase=phase)
        for node in analysis.graph.nodes:
            shapes = analysis.param_shapes.get(node.name) or []
            if any(shape is None for shape in shapes):
                origins = analysis.unknown_origins()[1].get(node.name) or [node.name]
                if origins[0] == node.name or origins[0] not in analysis.unknown:
                    raise SurgeryError("cannot tell this layer's weight shapes (its input size "
                                       "is unknown); give the input size with --input-shape",
                                       layer=node.name)
                raise SurgeryError(f"{analysis.unknown[origins[0]]}; the weight shapes after "
                                   "it are unknown", layer=origins[0])
            if seen.setdefault(node.name, shapes) != shapes:
                raise SurgeryError("its weight shapes differ between the TEST and TRAIN phases; "
                                   "choose one with --phase", layer=node.name)
        analyses.append(analysis)
    return analyses


def stream_weights(net, *, seed=0, input_shapes=None, chunk=CHUNK, predicted=None,
                   phases=("TEST",)):
    """Yield (name, type, [(shape, pieces)]) for every layer of `net` that has params, in
    each of `phases` (a layer the phases share comes once, from the first).

    `pieces` yields the blob's float32 values in C order, at most `chunk` at a time. Drain
    each blob's pieces, in order, before asking for the next layer: the moments the later
    layers are drawn from are summed from the pieces as they pass. A dict `predicted` is
    filled with each blob's predicted Moments (the last writer's, for in-place chains)."""
    given = set()
    for analysis in _analyses(net, input_shapes, phases):
        for item in _phase_weights(analysis, seed, chunk, predicted, given):
            yield item


def _phase_weights(analysis, seed, chunk, predicted, given):
    stats = {}
    for node in analysis.graph.nodes:
        rule = node.rule
        in_shapes = [analysis.shapes.get(b) for b in node.bottoms]
        ins = [stats.get(b) or _unit(_channels(s)) for b, s in zip(node.bottoms, in_shapes)]
        shapes = [tuple(s) for s in analysis.param_shapes.get(node.name) or []]
        moment, options = rule.moment_of(node.layer)
        ctx = _Context(ins[0] if ins else _unit(1), in_shapes[0] if in_shapes else None,
                       options, max(1, int(chunk)))
        channels = _channels(analysis.shapes.get(node.tops[0])) if node.tops else 1
        kind, fn = MOMENTS[moment]
        tracker = kind(fn, node, ins, ctx, channels, shapes)
        rng = np.random.default_rng([seed, zlib.crc32(node.name.encode("utf-8"))])
        names = rule.init_of(node.layer)
        blobs = []
        for i, shape in enumerate(shapes):
            init = INITIALISERS[names[i] if i < len(names) else "small"]
            blobs.append((shape, _Lazy(init, rng, shape, ctx, tracker, i)))
        if blobs and node.name in given:      # written in an earlier phase: draw it again
            for _shape, lazy in blobs:          # (same seed, same numbers) for the moments
                for _piece in lazy:
                    pass
        elif blobs:
            given.add(node.name)
            yield node.name, node.type, [(shape, iter(lazy)) for shape, lazy in blobs]
            if not all(lazy.done for _shape, lazy in blobs):
                raise RuntimeError(f"layer '{node.name}': a blob was not drawn to the end")
        if not node.tops:
            continue
        try:
            out = tracker.result()
        except (IndexError, ValueError):  # params of an unexpected form: keep going
            out = _m_default(ins, [], ctx, channels)
        mean = np.asarray(out.mean, dtype=np.float64)
        var = np.maximum(np.asarray(out.var, np.float64), 1e-12)
        pre, mix = out.pre, out.mix
        if mean.size != channels or var.size != channels:
            mean, var = np.full(channels, mean.mean()), np.full(channels, var.mean())
            pre = mix = None
        for top in node.tops:
            stats[top] = Moments(mean, var, pre, mix)
            if predicted is not None:
                predicted[top] = stats[top]


class _Lazy:
    """A blob's pieces, drawn only when the writer gets to them (the rng is shared by the
    layer's blobs, so they must be drawn in order)."""

    def __init__(self, init, rng, shape, ctx, tracker, index):
        self.args = init, rng, shape, ctx, tracker, index
        self.done = _count(shape) == 0

    def __iter__(self):
        init, rng, shape, ctx, tracker, index = self.args
        count = 0
        for piece in _observed(init(rng, shape, ctx), tracker, index):
            count += piece.size
            yield piece
        self.done = count == _count(shape)


def random_weights(net, *, seed=0, input_shapes=None, chunk=CHUNK, phases=("TEST",)):
    """[{name, type, blobs}] for every layer of `net` that has params, blobs as float32
    arrays. Holds every weight at once: for large nets, `init_weights` streams instead."""
    layers = []
    for name, type_, blobs in stream_weights(net, seed=seed, input_shapes=input_shapes,
                                             chunk=chunk, phases=phases):
        arrays = []
        for shape, pieces in blobs:
            parts = list(pieces)
            flat = np.concatenate(parts) if parts else np.zeros(0, np.float32)
            arrays.append(flat.reshape(shape))
        layers.append({"name": name, "type": type_, "blobs": arrays})
    return layers


def init_weights(net, path, *, seed=0, input_shapes=None, inputs=(), chunk=CHUNK,
                 phases=("TEST",), outputs=None):
    """Stream random weights for `net` to the caffemodel `path`, in bounded memory
    (staged in `outputs`, an io.atomic.Outputs transaction, when given).

    Returns [{name, type, shapes}] for the layers written. `inputs` are the files the net
    came from, which `path` must not overwrite."""
    written = []

    def layers():
        for name, type_, blobs in stream_weights(net, seed=seed, input_shapes=input_shapes,
                                                 chunk=chunk, phases=phases):
            written.append({"name": name, "type": type_, "shapes": [s for s, _ in blobs]})
            yield LayerWeights(name, tuple(New(s, pieces=p) for s, p in blobs), type=type_)

    writer.write(WeightPlan(add=layers()), path, name=net.name or None, inputs=inputs,
                 outputs=outputs)
    return written
