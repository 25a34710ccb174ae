"""Values for a param blob from its Caffe FillerParameter, as Caffe's fillers make them.

The registry says which filler each param blob of a layer uses (`rule.fillers(layer)`);
this module holds the numbers. Caffe's formulas (filler.hpp):
- constant: every value `value`;
- gaussian: N(mean, std^2);
- uniform: U(min, max);
- xavier: U(-a, a) with a = sqrt(3 / n);  msra: N(0, 2 / n); n is fan_in = count / shape[0]
  (FAN_IN, the default), fan_out = count / shape[1], or their mean (AVERAGE);
- bilinear (4-D blobs, square kernels): f = ceil(K / 2), c = (2f - 1 - f % 2) / (2f), and
  w[y, x] = (1 - |x / f - c|) (1 - |y / f - c|) for every (output, input) channel pair,
  which upsamples by f when used in a Deconvolution with kernel 2f - f % 2 and stride f.

Random fillers draw from a generator seeded by (seed, layer name, blob index), so one
layer's values never depend on the others; values are made in pieces (`pieces`), so a
large blob streams into a caffemodel without ever being whole in memory.
"""

import math
import zlib

import numpy as np

from ..errors import SurgeryError


def _fans(shape):
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    fan_in = count // shape[0] if shape else 1
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _norm(filler, shape):
    fan_in, fan_out = _fans(shape)
    mode = filler.variance_norm
    if mode == filler.FAN_OUT:
        return fan_out
    if mode == filler.AVERAGE:
        return (fan_in + fan_out) / 2
    return fan_in


def bilinear(shape):
    """Caffe's bilinear filler for a (N, C, K, K) blob."""
    if len(shape) != 4 or shape[2] != shape[3]:
        raise SurgeryError(f"the bilinear filler needs a 4-D blob with a square kernel, got {list(shape)}")
    k = shape[3]
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2 * f)
    axis = 1 - np.abs(np.arange(k) / f - c)
    kernel = np.outer(axis, axis).astype(np.float32)
    return np.broadcast_to(kernel, tuple(shape)).copy()


def upsampling_kernel(stride, size):
    """The 2-D bilinear interpolation kernel of a Deconvolution upsampling by `stride`
    (h, w) with `size` (h, w) taps: w[t] = max(0, 1 - |t - (size-1)/2| / stride) per axis.
    At size 2s - s % 2 it is Caffe's bilinear filler; at the other parity it samples
    half a pixel over (2s taps for an odd s, 2s - 1 for an even one)."""
    axes = [np.maximum(0, 1 - np.abs(np.arange(k) - (k - 1) / 2) / s)
            for s, k in zip(stride, size)]
    return np.outer(*axes).astype(np.float32)


CHUNK = 1 << 20   # values made at a time, so a large blob is never whole in memory


def pieces(filler, shape, *, seed=0, layer="", index=0, chunk=CHUNK):
    """The values of `fill`, as float32 pieces in C order of at most `chunk` values."""
    shape = tuple(int(d) for d in shape)
    kind = filler.type or "constant"
    if kind == "bilinear":
        yield bilinear(shape).reshape(-1)
        return
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    rng = np.random.default_rng([seed, zlib.crc32(layer.encode("utf-8")), index])
    if kind == "constant":
        draw = lambda n: np.full(n, filler.value, np.float32)
    elif kind == "gaussian":
        draw = lambda n: rng.standard_normal(n, dtype=np.float32) * np.float32(filler.std) \
            + np.float32(filler.mean)
    elif kind == "uniform":
        low, high = filler.min, filler.max
        draw = lambda n: (rng.random(n, dtype=np.float32) * np.float32(high - low)
                          + np.float32(low))
    elif kind == "xavier":
        scale = math.sqrt(3.0 / max(_norm(filler, shape), 1))
        draw = lambda n: (rng.random(n, dtype=np.float32) * np.float32(2 * scale)
                          - np.float32(scale))
    elif kind == "msra":
        std = np.float32(math.sqrt(2.0 / max(_norm(filler, shape), 1)))
        draw = lambda n: rng.standard_normal(n, dtype=np.float32) * std
    else:
        raise SurgeryError(f"filler type '{kind}' is not supported (constant, gaussian, "
                           "uniform, xavier, msra, bilinear)", layer=layer or None)
    for start in range(0, count, chunk):
        yield draw(min(chunk, count - start))


def fill(filler, shape, *, seed=0, layer="", index=0):
    """A float32 array of `shape` filled as Caffe's filler `filler` would fill it."""
    shape = tuple(int(d) for d in shape)
    parts = list(pieces(filler, shape, seed=seed, layer=layer, index=index))
    return np.concatenate(parts).reshape(shape) if parts else np.zeros(shape, np.float32)
