"""Fork layers as Caffe Python layers, so real BVLC Caffe (built WITH_PYTHON_LAYER) runs
nets that use them: DeepLab v2 / PSPNet `Interp`, SegNet `Upsample` (and the YOLO-style
nearest one of the same name), SENet `Axpy`, ShuffleNet `ShuffleChannel`, SSD
`Normalize` and `Permute`, and SegNet's `BN` in its LEARN mode (batch statistics).

Each layer is the fork's own arithmetic, written from the fork's source (the formulas
are in docs/engines.md): float32 throughout, in the fork's order of operations, so where
the fork does no summation (Interp, Upsample, ShuffleChannel, Permute) the values are
bit for bit the fork's CPU values. The numeric functions are plain numpy and are tested
on their own (tests/test_forklayers.py); the Caffe classes wrap them.

`surgery.layers` declares the layers (`type: "Python"`, `python_param { module:
"forklayers" layer: CLASS param_str: JSON }`), the JSON holding the fork's parameters
that the file sets explicitly (the fork tests `has_` fields, so a field written with its
default value still counts). Standalone on purpose: this file runs inside the pycaffe
child under the interpreter pycaffe was built for, which has numpy and caffe and nothing
of caffe-surgery.
"""

import json

import numpy as np

F32 = np.float32


# --------------------------------------------------------------------------- Interp

def interp_size(height, width, params, second=None):
    """(out_h, out_w) of DeepLab v2 / PSPNet's Interp, by its rules in their order:
    shrink only, zoom only, height and width, shrink then zoom, the second bottom's size.
    Sizes count the effective input, cropped by pad_beg/pad_end (both <= 0)."""
    pad_beg, pad_end = params.get("pad_beg", 0), params.get("pad_end", 0)
    if pad_beg > 0 or pad_end > 0:
        raise ValueError("Interp: only pad_beg/pad_end <= 0 (cropping) are supported")
    eff = (height + pad_beg + pad_end, width + pad_beg + pad_end)
    shrink, zoom = params.get("shrink_factor"), params.get("zoom_factor")
    if shrink is not None and zoom is None:
        out = tuple((e - 1) // shrink + 1 for e in eff)
    elif zoom is not None and shrink is None:
        out = tuple(e + (e - 1) * (zoom - 1) for e in eff)
    elif "height" in params and "width" in params:
        out = (params["height"], params["width"])
    elif shrink is not None and zoom is not None:
        small = tuple((e - 1) // shrink + 1 for e in eff)
        out = tuple(s + (s - 1) * (zoom - 1) for s in small)
    elif second is not None:
        out = tuple(second)
    else:
        raise ValueError("Interp: give zoom_factor, shrink_factor, height and width, "
                         "or a second bottom")
    if min(eff) < 1 or min(out) < 1:
        raise ValueError(f"Interp: input {height}x{width} gives no output ({out})")
    return out


def _taps(size_in, size_out):
    """Per output position: (first source index, step to the second, its weight, the
    first's weight), all as the fork computes them in float32 (corners aligned)."""
    ratio = F32(size_in - 1) / F32(size_out - 1) if size_out > 1 else F32(0)
    where = ratio * np.arange(size_out, dtype=F32)          # f32 products, as in C
    first = where.astype(np.int64)                           # C's int(): truncation
    step = (first < size_in - 1).astype(np.int64)            # the last row repeats itself
    far = (where - first.astype(F32)).astype(F32)
    near = (F32(1) - far).astype(F32)
    return first, step, far, near


def interp(x, params, second=None):
    """Bilinear resize with corners aligned, of the window that pad_beg/pad_end leave
    (its origin is (-pad_beg, -pad_beg) on both axes, as in the fork):
        y = l0*(m0*X[h,w] + m1*X[h,w+dw]) + l1*(m0*X[h+dh,w] + m1*X[h+dh,w+dw])
    in float32, in that order. Equal sizes copy the window."""
    x = np.asarray(x, dtype=F32)
    n, c, height, width = x.shape
    out_h, out_w = interp_size(height, width, params, second)
    pad_beg, pad_end = params.get("pad_beg", 0), params.get("pad_end", 0)
    h_in, w_in = height + pad_beg + pad_end, width + pad_beg + pad_end
    window = x[:, :, -pad_beg:-pad_beg + h_in, -pad_beg:-pad_beg + w_in]
    if (h_in, w_in) == (out_h, out_w):
        return window.copy()
    h1, dh, l1, l0 = _taps(h_in, out_h)
    w1, dw, m1, m0 = _taps(w_in, out_w)
    rows0, rows1 = window[:, :, h1, :], window[:, :, h1 + dh, :]
    a, b = rows0[:, :, :, w1], rows0[:, :, :, w1 + dw]
    d, e = rows1[:, :, :, w1], rows1[:, :, :, w1 + dw]
    l0, l1 = l0[:, None], l1[:, None]
    top = m0 * a + m1 * b
    bottom = m0 * d + m1 * e
    return (l0 * top + l1 * bottom).astype(F32, copy=False)


# --------------------------------------------------------------------------- Upsample

def upsample_size(height, width, params):
    """SegNet Upsample's output size: upsample_h/upsample_w when both are set, else the
    input times scale_h/scale_w (both) or scale (default 2), minus pad_out_h/pad_out_w."""
    if "upsample_h" in params and "upsample_w" in params:
        return params["upsample_h"], params["upsample_w"]
    if "scale_h" in params and "scale_w" in params:
        sh, sw = params["scale_h"], params["scale_w"]
    else:
        sh = sw = params.get("scale", 2)
    return (height * sh - int(bool(params.get("pad_out_h", False))),
            width * sw - int(bool(params.get("pad_out_w", False))))


def unpool(x, mask, out_h, out_w):
    """SegNet's max-unpooling: a zero map with each input value written at the flat
    position its mask gives (the pooling input's `h*W + w`, truncated from float), within
    its own (n, c) plane; of two values for one position the later in raster order wins."""
    x = np.asarray(x, dtype=F32)
    n, c, height, width = x.shape
    plane = out_h * out_w
    index = np.asarray(mask, dtype=F32).reshape(n * c, height * width).astype(np.int64)
    if index.size and (index.min() < 0 or index.max() >= plane):
        raise ValueError(f"Upsample: a mask index lies outside the {out_h}x{out_w} output")
    flat = (index + (np.arange(n * c, dtype=np.int64) * plane)[:, None]).reshape(-1)
    values = x.reshape(-1)
    # keep each position's last writer: unique over the reversed order finds it first
    _, last = np.unique(flat[::-1], return_index=True)
    keep = flat.size - 1 - last
    out = np.zeros(n * c * plane, dtype=F32)
    out[flat[keep]] = values[keep]
    return out.reshape(n, c, out_h, out_w)


def nearest_upsample(x, scale):
    """The YOLO forks' one-bottom Upsample: y[h, w] = x[h // s, w // s]."""
    x = np.asarray(x, dtype=F32)
    return np.repeat(np.repeat(x, scale, axis=2), scale, axis=3)


# --------------------------------------------------------------------------- the others

def axpy(a, x, y):
    """SENet's Axpy: a*x + y, with a one value per (n, c)."""
    a = np.asarray(a, dtype=F32).reshape(x.shape[0], x.shape[1], 1, 1)
    return (a * np.asarray(x, dtype=F32) + np.asarray(y, dtype=F32)).astype(F32, copy=False)


def shuffle_channel(x, group):
    """ShuffleNet's channel shuffle: channels as (group, C/group), transposed, flattened;
    output channel o is input channel (o % group)*(C/group) + o // group."""
    n, c = x.shape[:2]
    if group < 1 or c % group:
        raise ValueError(f"ShuffleChannel: {c} channels do not split into {group} groups")
    rest = x.shape[2:]
    grouped = np.asarray(x, dtype=F32).reshape(n, group, c // group, *rest)
    return np.ascontiguousarray(grouped.swapaxes(1, 2)).reshape(x.shape)


def permute(x, order):
    """SSD's Permute: the given axes first, then the others in their order."""
    order = list(order) + [i for i in range(x.ndim) if i not in order]
    return np.ascontiguousarray(np.transpose(np.asarray(x, dtype=F32), order))


def normalize(x, scale, across_spatial=True, channel_shared=True, eps=1e-10):
    """SSD's Normalize: x / sqrt(sum of squares + eps) times the scale; the sum runs over
    C, H, W of each image (across_spatial) or over C at each position; eps inside the root."""
    x = np.asarray(x, dtype=F32)
    squares = x * x
    if across_spatial:
        total = squares.reshape(x.shape[0], -1).sum(axis=1, dtype=F32).reshape(-1, 1, 1, 1)
    else:
        total = squares.sum(axis=1, keepdims=True, dtype=F32)
    y = x / np.sqrt(total + F32(eps)).astype(F32)
    scale = np.asarray(scale, dtype=F32)
    s = scale.reshape(()) if channel_shared else scale.reshape(1, -1, 1, 1)
    return (y * s).astype(F32, copy=False)


def batch_bn(x, scale, shift, eps=1e-9):
    """SegNet/ENet `BN` in LEARN mode, which normalises with the statistics of the batch
    it is given, at test time too: mean E[x] and variance E[x^2] - mean^2 over (N, H, W),
    y = (x - mean) / sqrt(var + eps) * scale + shift (eps is fixed at 1e-9 in the fork)."""
    x = np.asarray(x, dtype=F32)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.sum(axis=(0, 2, 3), keepdims=True, dtype=F32) / F32(m)
    var = (x * x).sum(axis=(0, 2, 3), keepdims=True, dtype=F32) / F32(m) - mean * mean
    y = (x - mean) / np.sqrt(var + F32(eps))
    return (y * np.asarray(scale, F32).reshape(1, -1, 1, 1)
            + np.asarray(shift, F32).reshape(1, -1, 1, 1)).astype(F32, copy=False)


# --------------------------------------------------------------------------- Caffe layers

try:
    import caffe
except ImportError:         # the numeric functions above work without it
    caffe = None

if caffe is not None:

    class _ForkLayer(caffe.Layer):
        """Reads the fork's parameters from param_str (JSON); inference only."""

        def setup(self, bottom, top):
            self.params = json.loads(self.param_str or "{}")

        def backward(self, top, propagate_down, bottom):
            pass

    class Interp(_ForkLayer):
        def _size(self, bottom):
            second = tuple(bottom[1].data.shape[2:]) if len(bottom) > 1 else None
            return interp_size(bottom[0].data.shape[2], bottom[0].data.shape[3], self.params,
                               second)

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape[:2], *self._size(bottom))

        def forward(self, bottom, top):
            second = tuple(bottom[1].data.shape[2:]) if len(bottom) > 1 else None
            top[0].data[...] = interp(bottom[0].data, self.params, second)

    class Upsample(_ForkLayer):
        def reshape(self, bottom, top):
            n, c, h, w = bottom[0].data.shape
            if len(bottom) > 1:
                top[0].reshape(n, c, *upsample_size(h, w, self.params))
            else:
                s = self.params.get("scale", 2)
                top[0].reshape(n, c, h * s, w * s)

        def forward(self, bottom, top):
            if len(bottom) > 1:
                top[0].data[...] = unpool(bottom[0].data, bottom[1].data, *top[0].data.shape[2:])
            else:
                top[0].data[...] = nearest_upsample(bottom[0].data, self.params.get("scale", 2))

    class Axpy(_ForkLayer):
        def reshape(self, bottom, top):
            top[0].reshape(*bottom[1].data.shape)

        def forward(self, bottom, top):
            top[0].data[...] = axpy(bottom[0].data, bottom[1].data, bottom[2].data)

    class ShuffleChannel(_ForkLayer):
        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            top[0].data[...] = shuffle_channel(bottom[0].data, self.params.get("group", 1))

    class Permute(_ForkLayer):
        def _order(self, ndim):
            order = list(self.params.get("order", []))
            return order + [i for i in range(ndim) if i not in order]

        def reshape(self, bottom, top):
            shape = bottom[0].data.shape
            top[0].reshape(*[shape[i] for i in self._order(len(shape))])

        def forward(self, bottom, top):
            top[0].data[...] = permute(bottom[0].data, self._order(bottom[0].data.ndim))

    class Normalize(_ForkLayer):
        """One scale blob: () when channel_shared, else (C,); the weights fill it."""

        def setup(self, bottom, top):
            super().setup(bottom, top)
            shared = self.params.get("channel_shared", True)
            if len(self.blobs) == 0:
                self.blobs.add_blob(*(() if shared else (bottom[0].data.shape[1],)))
                self.blobs[0].data[...] = 1

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            p = self.params
            top[0].data[...] = normalize(bottom[0].data, self.blobs[0].data,
                                         p.get("across_spatial", True),
                                         p.get("channel_shared", True), p.get("eps", 1e-10))

    class BatchBN(_ForkLayer):
        """SegNet `BN`, LEARN mode: blobs scale and shift, each (1, C, 1, 1)."""

        def setup(self, bottom, top):
            super().setup(bottom, top)
            if len(self.blobs) == 0:
                for value in (1, 0):
                    self.blobs.add_blob(1, bottom[0].data.shape[1], 1, 1)
                    self.blobs[len(self.blobs) - 1].data[...] = value

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            top[0].data[...] = batch_bn(bottom[0].data, self.blobs[0].data, self.blobs[1].data)
