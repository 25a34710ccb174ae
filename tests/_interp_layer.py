"""DeepLab's `Interp` as a Python layer, so that real BVLC Caffe can run the nets that use it.

BVLC Caffe has no Interp (DeepLab v2's and PSPNet's forks add it). The tests swap each
Interp of a net for `type: "Python" python_param { module: "_interp_layer" layer:
"Interp" param_str: "<json of interp_param>" }` and run the net in the Caffe child.

The fork's rule (interp_layer.cpp, caffe_cpu_interp2): the effective input is the input
cropped by pad_beg/pad_end (<= 0); the output size is set by shrink_factor (then
zoom_factor) or height/width; output pixel j samples input coordinate
-pad_beg + j * (eff - 1) / (out - 1) bilinearly, corners aligned. Here that is one matrix
per axis (out = A_h x A_w^T), so the backward pass is its transpose. Imports only numpy
and caffe: it runs under the interpreter pycaffe was built for.
"""

import json

import numpy as np

import caffe


def _size(eff, p):
    if p.get("height") and p.get("width") and not (p.get("shrink_factor") or
                                                   p.get("zoom_factor")):
        return None
    out = (eff - 1) // p.get("shrink_factor", 1) + 1
    return out + (out - 1) * (p.get("zoom_factor", 1) - 1)


def matrix(size_in, pad_beg, pad_end, size_out):
    """(size_out, size_in): the fork's bilinear sampling along one axis."""
    eff = size_in + pad_beg + pad_end
    a = np.zeros((size_out, size_in))
    ratio = (eff - 1) / (size_out - 1) if size_out > 1 else 0.0
    for j in range(size_out):
        x = -pad_beg + j * ratio
        i = min(int(np.floor(x)), size_in - 1)
        t = x - i
        a[j, i] += 1 - t
        if t > 0:
            a[j, i + 1] += t
    return a


class Interp(caffe.Layer):
    def setup(self, bottom, top):
        self.p = json.loads(self.param_str)

    def reshape(self, bottom, top):
        n, c, h, w = bottom[0].data.shape
        beg, end = self.p.get("pad_beg", 0), self.p.get("pad_end", 0)
        sizes = [_size(s + beg + end, self.p) for s in (h, w)]
        if sizes[0] is None:
            sizes = [self.p["height"], self.p["width"]]
        self.ah = matrix(h, beg, end, sizes[0])
        self.aw = matrix(w, beg, end, sizes[1])
        top[0].reshape(n, c, sizes[0], sizes[1])

    def forward(self, bottom, top):
        top[0].data[...] = np.einsum("jh,nchw,kw->ncjk", self.ah, bottom[0].data, self.aw)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = np.einsum("jh,ncjk,kw->nchw", self.ah, top[0].diff, self.aw)
