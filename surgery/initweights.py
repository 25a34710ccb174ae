"""Random weights with exactly the shapes a net needs, for numeric checks without a download.

Activations must stay O(1) through deep nets, so that an error measured
relative to the output means the same at every depth. Convolutions are
He-initialised (they keep the second moment through a ReLU), and BatchNorm
statistics are set near the per-channel mean and variance its input is
expected to have, which we predict through the net as the weights are drawn
(a data-free LSUV). A residual sum then grows slowly with depth instead of
doubling per block.

Each layer draws from its own stream seeded by (seed, layer name), so two nets
that share layer names get the same weights wherever the shapes agree.
"""

import zlib

import numpy as np

from .analysis import analyse
from .errors import SurgeryError
from .io.atomic import guard_output
from .io.caffemodel import write_caffemodel


def _fan_in(shape):
    """Inputs feeding one output: C_in/group * kh * kw for convolutions, C for fc."""
    return max(1, int(np.prod(shape[1:]))) if len(shape) > 1 else 1


# Blob initialisers: (rng, shape, stats) -> array, where stats = (mean, var) per
# channel of the layer's (first) input, as predicted so far.
def _he(rng, shape, stats):
    return rng.normal(0.0, np.sqrt(2.0 / _fan_in(shape)), size=shape)


def _deconv(rng, shape, stats):
    # Deconvolution weights are (C_in, C_out/group, kh, kw).
    fan_in = max(1, shape[0] * int(np.prod(shape[2:])))
    return rng.normal(0.0, np.sqrt(1.0 / fan_in), size=shape)


def _small(rng, shape, stats):
    return rng.normal(0.0, 0.05, size=shape)


def _bn_mean(rng, shape, stats):
    """The input's own channel means, off by a tenth of a standard deviation."""
    mean, var = _fit(stats, shape)
    return mean + 0.1 * np.sqrt(var) * rng.normal(size=shape)


def _bn_var(rng, shape, stats):
    """Near the input's own channel variances, so BatchNorm really normalises."""
    return _fit(stats, shape)[1] * rng.uniform(0.5, 1.5, size=shape)


def _ones(rng, shape, stats):
    return np.ones(shape)


def _gamma(rng, shape, stats):
    return rng.uniform(0.8, 1.2, size=shape)


def _slope(rng, shape, stats):
    return rng.uniform(0.1, 0.3, size=shape)


def _fit(stats, shape):
    """Channel stats reshaped to a param blob's shape (scalar means when they disagree)."""
    mean, var = stats
    if mean.size == int(np.prod(shape)):
        return mean.reshape(shape), var.reshape(shape)
    return np.full(shape, mean.mean()), np.full(shape, var.mean())


# Per layer type: one initialiser per param blob, in Caffe's blob order.
# Types not listed get `DEFAULT` for every blob.
INIT = {
    "Convolution": (_he, _small),
    "ConvolutionDepthwise": (_he, _small),
    "InnerProduct": (_he, _small),
    "Deconvolution": (_deconv, _small),
    "BatchNorm": (_bn_mean, _bn_var, _ones),  # mean, variance, scale factor (1 = unscaled)
    "BN": (_gamma, _small, _bn_mean, _bn_var),  # PSPNet/SegNet fork: slope, bias, mean, var
    "Scale": (_gamma, _small),
    "Bias": (_small,),
    "PReLU": (_slope,),
    "Embed": (_small,),
}
DEFAULT = _small


# Moment propagation: (layer, blobs, [(mean, var) per bottom], out_channels) ->
# (mean, var) per output channel, assuming independent inputs and Gaussian
# pre-activations. Rough, but it keeps BatchNorm centring what it receives.
def _m_linear(layer, blobs, ins, channels):
    mean, var = ins[0]
    w = blobs[0].astype(np.float64)
    n = w.shape[0]
    per_group = max(1, w.shape[1] if w.ndim == 4 else mean.size)
    w = w.reshape(n, per_group, -1) if w.size % (n * per_group) == 0 else w.reshape(n, 1, -1)
    groups = max(1, mean.size // w.shape[1]) if mean.size % w.shape[1] == 0 else 0
    if not groups or n % groups:
        return _m_default(layer, blobs, ins, channels)
    out_m, out_v = np.empty(n), np.empty(n)
    for g in range(groups):
        rows = slice(g * n // groups, (g + 1) * n // groups)
        cols = slice(g * w.shape[1], (g + 1) * w.shape[1])
        out_m[rows] = np.einsum("nck,c->n", w[rows], mean[cols])
        out_v[rows] = np.einsum("nck,c->n", np.square(w[rows]), var[cols])
    if len(blobs) > 1:
        out_m += blobs[1].reshape(-1)[:n]
    return out_m, out_v


def _m_batchnorm(layer, blobs, ins, channels):
    mean, var = ins[0]
    factor = float(blobs[2].reshape(-1)[0]) if len(blobs) > 2 else 1.0
    factor = 1.0 / factor if factor else 0.0  # Caffe divides the stored stats by it
    s_mean, s_var = _fit((blobs[0] * factor, blobs[1] * factor), mean.shape)
    eps = layer.batch_norm_param.eps if layer.HasField("batch_norm_param") else 1e-5
    return (mean - s_mean) / np.sqrt(s_var + eps), var / (s_var + eps)


def _m_affine(layer, blobs, ins, channels):
    mean, var = ins[0]
    if not blobs:
        return mean, var
    gamma = _fit((blobs[0], blobs[0]), mean.shape)[0]
    beta = _fit((blobs[1], blobs[1]), mean.shape)[0] if len(blobs) > 1 else 0.0
    return mean * gamma + beta, var * np.square(gamma)


def _m_relu(layer, blobs, ins, channels):
    from math import erf, exp, pi, sqrt

    mean, var = ins[0]
    out_m, out_v = np.empty_like(mean), np.empty_like(var)
    for i, (m, v) in enumerate(zip(mean, var)):
        s = sqrt(max(v, 1e-12))
        a = m / s
        cdf, pdf = 0.5 * (1 + erf(a / sqrt(2))), exp(-a * a / 2) / sqrt(2 * pi)
        e1 = m * cdf + s * pdf
        e2 = (m * m + v) * cdf + m * s * pdf
        out_m[i], out_v[i] = e1, max(e2 - e1 * e1, 1e-12)
    return out_m, out_v


def _m_pool(layer, blobs, ins, channels):
    mean, var = ins[0]
    p = layer.pooling_param
    if p.pool == 0 and not p.global_pooling:  # MAX: the max of a window sits above the mean
        return mean + 0.8 * np.sqrt(var), var * 0.5
    return mean, var


def _m_eltwise(layer, blobs, ins, channels):
    means, variances = [m for m, _ in ins], [v for _, v in ins]
    op = layer.eltwise_param.operation  # SUM unless set
    if op == 0:  # PROD
        m = np.prod(means, axis=0)
        return m, np.prod([v + x * x for x, v in zip(means, variances)], axis=0) - m * m
    if op == 2:  # MAX
        return np.max(means, axis=0), np.max(variances, axis=0)
    coeffs = list(layer.eltwise_param.coeff) or [1.0] * len(ins)
    return (sum(c * m for c, m in zip(coeffs, means)),
            sum(c * c * v for c, v in zip(coeffs, variances)))


def _m_concat(layer, blobs, ins, channels):
    return np.concatenate([m for m, _ in ins]), np.concatenate([v for _, v in ins])


def _m_default(layer, blobs, ins, channels):
    """Pointwise layers keep their input's stats; anything else gets averaged stats."""
    if ins and ins[0][0].size == channels:
        return ins[0]
    mean = float(np.mean([m.mean() for m, _ in ins])) if ins else 0.0
    var = float(np.mean([v.mean() for _, v in ins])) if ins else 1.0
    return np.full(channels, mean), np.full(channels, var)


MOMENT = {
    "Convolution": _m_linear,
    "ConvolutionDepthwise": _m_linear,
    "InnerProduct": _m_linear,
    "BatchNorm": _m_batchnorm,
    "Scale": _m_affine,
    "ReLU": _m_relu,
    "Pooling": _m_pool,
    "Eltwise": _m_eltwise,
    "Concat": _m_concat,
}


def _channels(shape):
    return int(shape[1]) if shape is not None and len(shape) >= 2 else 1


def random_weights(net, *, seed=0, input_shapes=None, phase="TEST"):
    """[{name, type, blobs}] for every layer of `net` (in `phase`) that has params."""
    analysis = analyse(net, input_shapes=input_shapes, phase=phase)
    stats = {}
    layers = []
    for node in analysis.graph.nodes:
        ins = [stats.get(b) or (np.zeros(_channels(analysis.shapes.get(b))),
                                np.ones(_channels(analysis.shapes.get(b)))) for b in node.bottoms]
        shapes = analysis.param_shapes.get(node.name) or []
        if any(shape is None for shape in shapes):
            cause = analysis.unknown_causes().get(node.name)
            if cause is None or cause.source == node.name:
                raise SurgeryError("cannot tell this layer's weight shapes (its input size is "
                                   "unknown); give the input size with --input-shape",
                                   layer=node.name)
            raise SurgeryError(f"{cause.reason}; the weight shapes after it are unknown",
                               layer=cause.source)
        rng = np.random.default_rng([seed, zlib.crc32(node.name.encode("utf-8"))])
        inits = INIT.get(node.type, ())
        first = ins[0] if ins else (np.zeros(1), np.ones(1))
        blobs = [np.asarray((inits[i] if i < len(inits) else DEFAULT)(rng, tuple(shape), first),
                            dtype=np.float32) for i, shape in enumerate(shapes)]
        if blobs:
            layers.append({"name": node.name, "type": node.type, "blobs": blobs})
        if not node.tops:
            continue
        channels = _channels(analysis.shapes.get(node.tops[0]))
        try:
            mean, var = MOMENT.get(node.type, _m_default)(node.layer, blobs, ins, channels)
        except (IndexError, ValueError):  # params of an unexpected form: keep going
            mean, var = _m_default(node.layer, blobs, ins, channels)
        mean, var = np.asarray(mean, dtype=np.float64), np.maximum(np.asarray(var, np.float64), 1e-12)
        if mean.size != channels:
            mean, var = np.full(channels, mean.mean()), np.full(channels, var.mean())
        for top in node.tops:
            stats[top] = (mean, var)
    return layers


def init_weights(net, path, *, seed=0, input_shapes=None, inputs=()):
    """Write random weights for `net` to the caffemodel `path`; returns the layer list.

    `inputs` are the files the net came from, which `path` must not overwrite."""
    guard_output(str(path), inputs)
    layers = random_weights(net, seed=seed, input_shapes=input_shapes)
    write_caffemodel(str(path), layers, name=net.name or None)
    return layers
