"""The forks' BN at TEST as a BVLC Caffe Python layer, from their formulas (docs in
/work/notes/forks.md): PSPNet, 4 blobs (1,C,1,1) scale, shift, mean, var:
y = ((x - mean) * (var + eps)^-0.5) * scale + shift; SegNet in INFERENCE mode, 2 blobs:
y = x * scale + shift. It lets real Caffe run a net with fork BN before it is folded.
param_str: "{'eps': 1e-05, 'blobs': 4}"."""

import ast

import caffe
import numpy as np


class ForkBN(caffe.Layer):
    def setup(self, bottom, top):
        params = ast.literal_eval(self.param_str or "{}")
        self.eps = np.float32(params.get("eps", 1e-5))
        self.count = int(params.get("blobs", 4))
        if len(self.blobs) == 0:
            for _ in range(self.count):
                self.blobs.add_blob(1, bottom[0].data.shape[1], 1, 1)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        scale, shift = (self.blobs[i].data.reshape(1, -1, 1, 1) for i in (0, 1))
        if self.count == 4:
            mean, var = (self.blobs[i].data.reshape(1, -1, 1, 1) for i in (2, 3))
            y = ((x - mean) * np.power(var + self.eps, np.float32(-0.5))) * scale + shift
        else:
            y = x * scale + shift
        top[0].data[...] = y

    def backward(self, top, propagate_down, bottom):
        pass
