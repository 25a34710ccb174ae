"""Nets and trained-looking weights for the fold tests (tests/test_fold*.py).

Trained weights differ from fresh ones where a fold can go wrong: BVLC BatchNorm stores
mean and variance times a moving-average factor (999.98 here, 0 for one layer: Caffe then
uses zero statistics), eps is set per layer (1e-3, 9.999e-6, the default 1e-5), and
γ, β, mean and variance are all far from 1 and 0.
"""

import numpy as np

from surgery import caffe_pb2
from surgery.builder import NetBuilder
from surgery.io.netfile import load_prototxt
from surgery.io.prototxt import save_prototxt
from surgery.weights.initweights import init_weights

FACTOR = 999.98
EPS = (1e-3, 9.999e-6, None)      # cycled over the BatchNorm layers; None: Caffe's 1e-5

# Every case fold handles, on BVLC layers only, small enough for a quick Caffe run.
ZOO = """name: "fold-zoo"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
  batch_norm_param { use_global_stats: true eps: 0.001 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 group: 2 bias_term: false } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "bn2" batch_norm_param { eps: 9.999e-06 } }
layer { name: "scale2" type: "Scale" bottom: "bn2" top: "scale2" }
layer { name: "relu2" type: "ReLU" bottom: "scale2" top: "scale2" }
layer { name: "conv3" type: "Convolution" bottom: "scale2" top: "conv3"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 group: 8 bias_term: false } }
layer { name: "bn3" type: "BatchNorm" bottom: "conv3" top: "conv3" }
layer { name: "scale3" type: "Scale" bottom: "conv3" top: "conv3" scale_param { bias_term: true } }
layer { name: "up4" type: "Deconvolution" bottom: "conv3" top: "up4"
  convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 bias_term: false } }
layer { name: "bn4" type: "BatchNorm" bottom: "up4" top: "up4" batch_norm_param { eps: 0.001 } }
layer { name: "scale4" type: "Scale" bottom: "up4" top: "up4" scale_param { bias_term: true } }
layer { name: "conv5" type: "Convolution" bottom: "up4" top: "conv5"
  convolution_param { num_output: 6 kernel_size: 1 } }
layer { name: "bn5" type: "BatchNorm" bottom: "conv5" top: "bn5" }
layer { name: "scale5" type: "Scale" bottom: "bn5" top: "bn5" scale_param { bias_term: true } }
layer { name: "sum5" type: "Eltwise" bottom: "conv5" bottom: "bn5" top: "sum5" }
layer { name: "bn6" type: "BatchNorm" bottom: "sum5" top: "bn6" }
layer { name: "scale6" type: "Scale" bottom: "bn6" top: "bn6" scale_param { bias_term: true } }
layer { name: "relu6" type: "ReLU" bottom: "bn6" top: "bn6" }
layer { name: "conv6" type: "Convolution" bottom: "bn6" top: "conv6"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "pool7" type: "Pooling" bottom: "conv6" top: "pool7"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "bn7" type: "BatchNorm" bottom: "pool7" top: "pool7" batch_norm_param { eps: 0.001 } }
layer { name: "fc8" type: "InnerProduct" bottom: "pool7" top: "fc8" inner_product_param { num_output: 10 } }
layer { name: "bn8" type: "BatchNorm" bottom: "fc8" top: "fc8" }
layer { name: "scale8" type: "Scale" bottom: "fc8" top: "fc8" scale_param { bias_term: true } }
layer { name: "fc9" type: "InnerProduct" bottom: "fc8" top: "fc9"
  inner_product_param { num_output: 5 transpose: true bias_term: false } }
layer { name: "bn9" type: "BatchNorm" bottom: "fc9" top: "fc9" }
layer { name: "scale9" type: "Scale" bottom: "fc9" top: "fc9" scale_param { bias_term: true } }
layer { name: "bn10" type: "BatchNorm" bottom: "up4" top: "bn10" batch_norm_param { use_global_stats: false } }
"""
# What fold must do with ZOO: {layer that absorbs: (removed...)}, and what it leaves.
ZOO_FOLDS = {"conv1": ("bn1", "scale1"), "conv2": ("bn2", "scale2"), "conv3": ("bn3", "scale3"),
             "up4": ("bn4", "scale4"), "scale5": ("bn5",), "scale6": ("bn6",), "bn7": (),
             "fc8": ("bn8", "scale8"), "fc9": ("bn9", "scale9")}
ZOO_LEFT = ("conv5", "bn10")
ZOO_BLOBS = ("conv1", "scale2", "conv3", "up4", "sum5", "conv6", "pool7", "fc8", "fc9", "bn10")
ZERO_FACTOR = ("bn7",)     # stored statistics times 0: Caffe normalises with mean 0, var 0


def with_eps(net):
    """A copy of `net` whose BatchNorm layers cycle through EPS (others keep theirs)."""
    new = caffe_pb2.NetParameter()
    new.CopyFrom(net)
    i = 0
    for layer in new.layer:
        if layer.type == "BatchNorm" and not layer.batch_norm_param.HasField("eps"):
            eps = EPS[i % len(EPS)]
            i += 1
            if eps is not None:
                layer.batch_norm_param.eps = eps
    return new


def trained_weights(proto, out, *, seed=0, zero=ZERO_FACTOR):
    """Write weights for the net at `proto` that look trained (module docstring)."""
    net = load_prototxt(str(proto))
    init_weights(net, str(out), seed=seed)
    model = caffe_pb2.NetParameter.FromString(open(out, "rb").read())
    rng = np.random.default_rng(seed + 1)
    types = {layer.name: layer.type for layer in net.layer}
    for layer in model.layer:
        kind = types.get(layer.name, layer.type)
        if kind not in ("BatchNorm", "Scale", "BN"):
            continue
        blobs = [np.array(b.data, np.float32) for b in layer.blobs]
        if kind == "BatchNorm":
            f = 0.0 if layer.name in zero else FACTOR
            if f == 0:     # what is stored no longer matters: make it wrong if used
                blobs[0] = rng.normal(3, 1, blobs[0].shape).astype(np.float32)
                blobs[1] = rng.uniform(5, 9, blobs[1].shape).astype(np.float32)
            else:
                blobs[0], blobs[1] = blobs[0] * np.float32(f), blobs[1] * np.float32(f)
            blobs[2] = np.array([f], np.float32)
        elif kind == "Scale":
            blobs[0] = rng.uniform(0.5, 1.5, blobs[0].shape).astype(np.float32)
            if len(blobs) > 1:
                blobs[1] = rng.normal(0, 0.3, blobs[1].shape).astype(np.float32)
        elif kind == "BN" and len(blobs) == 4:
            blobs[0] = rng.uniform(0.5, 1.5, blobs[0].shape).astype(np.float32)
            blobs[1] = rng.normal(0, 0.3, blobs[1].shape).astype(np.float32)
            blobs[2] = blobs[2] + rng.normal(0, 0.2, blobs[2].shape).astype(np.float32)
        elif kind == "BN":
            blobs[0] = rng.uniform(0.5, 1.5, blobs[0].shape).astype(np.float32)
            blobs[1] = rng.normal(0, 0.3, blobs[1].shape).astype(np.float32)
        for blob, values in zip(layer.blobs, blobs):
            del blob.data[:]
            blob.data.extend(values.tolist())
    open(out, "wb").write(model.SerializeToString())
    return out


def write_net(net, path):
    save_prototxt(net, str(path))
    return path


def mobilenet_v2(*, size=32, width=8):
    """A MobileNet v2-like net: inverted residuals (1x1 expand, 3x3 depthwise as a
    Convolution with group = channels, 1x1 linear projection), each followed by BN +
    Scale, residual sums where the shape allows."""
    b = NetBuilder("MobileNetV2-like")
    b.input("data", (1, 3, size, size))
    b.conv("conv1", "data", num_output=width, kernel=3, stride=2, pad=1, bias=False)
    b.bn_scale("conv1", bn="conv1_bn", scale="conv1_scale", relu="conv1_relu")
    x, c = "conv1", width
    for i, (t, out, stride) in enumerate(((1, 8, 1), (6, 12, 2), (6, 12, 1), (6, 16, 2),
                                          (6, 16, 1))):
        name, hidden = f"block{i}", c * t
        y = x
        if t != 1:
            y = b.conv(f"{name}_expand", y, num_output=hidden, kernel=1, bias=False)
            b.bn_scale(y, bn=f"{name}_expand_bn", scale=f"{name}_expand_scale",
                       relu=f"{name}_expand_relu")
        y = b.conv(f"{name}_dw", y, num_output=hidden, kernel=3, stride=stride, pad=1,
                   bias=False, group=hidden)
        b.bn_scale(y, bn=f"{name}_dw_bn", scale=f"{name}_dw_scale", relu=f"{name}_dw_relu")
        y = b.conv(f"{name}_project", y, num_output=out, kernel=1, bias=False)
        b.bn_scale(y, bn=f"{name}_project_bn", scale=f"{name}_project_scale")
        if stride == 1 and out == c:
            y = b.eltwise(f"{name}_sum", [x, y])
        x, c = y, out
    return b.net


def densenet(*, size=16, growth=6, layers=3):
    """A DenseNet-style block: BN + Scale + ReLU *before* each convolution (nothing to fold
    into), outputs concatenated; then a transition BN-ReLU-conv-pool."""
    b = NetBuilder("DenseNet-like")
    b.input("data", (1, 3, size, size))
    x = b.conv("conv0", "data", num_output=2 * growth, kernel=3, pad=1, bias=False)
    for i in range(layers):
        bn = f"block_{i}_bn"
        b.layer("BatchNorm", bn, [x], [bn])
        b.layer("Scale", f"block_{i}_scale", [bn], [bn], scale_param={"bias_term": True})
        b.relu(f"block_{i}_relu", bn)
        y = b.conv(f"block_{i}_conv", bn, num_output=growth, kernel=3, pad=1, bias=False)
        x = b.concat(f"block_{i}_concat", [x, y])
    b.layer("BatchNorm", "trans_bn", [x], ["trans_bn"])
    b.layer("Scale", "trans_scale", ["trans_bn"], ["trans_bn"], scale_param={"bias_term": True})
    b.relu("trans_relu", "trans_bn")
    b.conv("trans_conv", "trans_bn", num_output=growth, kernel=1, bias=False)
    b.pool("trans_pool", "trans_conv", kernel=2, stride=2, method="AVE")
    return b.net


# Runs under the Caffe build's own interpreter (tests/_caffe.py): both nets on one seeded
# input; prints {blob: relative error} for every blob named on the command line.
COMPARE = r"""
import json, sys
import numpy as np
import caffe
caffe.set_mode_cpu()
orig_proto, orig_w, new_proto, new_w, *blobs = sys.argv[1:]
a = caffe.Net(orig_proto, orig_w, caffe.TEST)
b = caffe.Net(new_proto, new_w, caffe.TEST)
rng = np.random.default_rng(0)
for name in a.inputs:
    x = rng.standard_normal(a.blobs[name].data.shape).astype(np.float32)
    a.blobs[name].data[...] = x
    b.blobs[name].data[...] = x
a.forward()
b.forward()
out = {}
for blob in blobs:
    want, got = a.blobs[blob].data.astype(np.float64), b.blobs[blob].data.astype(np.float64)
    out[blob] = float(np.abs(want - got).max() / max(np.abs(want).max(), 1e-30))
print(json.dumps(out))
"""


def pspnet_like(*, size=64, width=0.25):
    """A PSPNet-50-like net with the fork's BN: the ResNet-50 trunk with the stride on the
    3x3 (PSPNet's placement), every BatchNorm + Scale pair one `BN` (frozen, eps cycling
    through EPS), then a pyramid-pooling branch (global average, 1x1 conv, BN, ReLU, back
    to the map by Tile: a 1x1 map upsampled is a constant), concatenated with the trunk,
    3x3 conv + BN + ReLU and a 1x1 classifier."""
    from surgery.models.resnet import resnet

    trunk = resnet(50, stride_on="3x3", width=width, input_size=size, name="PSPNet-50-like")
    b = NetBuilder("PSPNet-50-like")
    eps = iter(EPS * 100)
    for copy in b.copy_layers(trunk, until="pool5", skip_types={"Scale"}):
        if copy.type == "BatchNorm":
            _fork_bn(copy, next(eps))
    top = trunk.layer[[l.name for l in trunk.layer].index("pool5") - 1].top[0]
    channels, grid = max(1, int(round(512 * width))), size // 32
    b.pool("psp_pool", top, global_pooling=True, method="AVE")
    b.conv("psp_conv", "psp_pool", num_output=channels // 4, kernel=1, bias=False)
    _fork_bn(b.layer("BN", "psp_conv_bn", ["psp_conv"], ["psp_conv"]), next(eps))
    b.relu("psp_relu", "psp_conv")
    b.layer("Tile", "psp_tile_h", ["psp_conv"], ["psp_tile_h"], tile_param={"axis": 2, "tiles": grid})
    b.layer("Tile", "psp_tile_w", ["psp_tile_h"], ["psp_up"], tile_param={"axis": 3, "tiles": grid})
    b.concat("psp_concat", [top, "psp_up"])
    b.conv("conv5_4", "psp_concat", num_output=channels, kernel=3, pad=1, bias=False)
    _fork_bn(b.layer("BN", "conv5_4_bn", ["conv5_4"], ["conv5_4"]), next(eps))
    b.relu("conv5_4_relu", "conv5_4")
    b.conv("conv6", "conv5_4", num_output=5, kernel=1)
    return b.net


def _fork_bn(layer, eps):
    """`layer` made PSPNet's BN: frozen, its eps, and in place."""
    layer.type = "BN"
    layer.ClearField("batch_norm_param")
    del layer.param[:]
    layer.bn_param.frozen = True
    if eps is not None:
        layer.bn_param.eps = eps
    return layer


def segnet_bn_net():
    """conv -> SegNet BN (bn_mode INFERENCE, y = x*scale + shift) -> ReLU -> conv -> SegNet BN."""
    b = NetBuilder("SegNet-BN")
    b.input("data", (1, 3, 10, 10))
    for i, bottom in ((1, "data"), (2, "conv1")):
        b.conv(f"conv{i}", bottom, num_output=6, kernel=3, pad=1)
        bn = b.layer("BN", f"conv{i}_bn", [f"conv{i}"], [f"conv{i}"])
        bn.bn_param.bn_mode = caffe_pb2.BNParameter.INFERENCE
        b.relu(f"relu{i}", f"conv{i}")
    return b.net


def as_python_bn(net):
    """`net` with every fork BN a Python layer (tests/_fold_forkbn.py) real Caffe can run."""
    new = caffe_pb2.NetParameter()
    new.CopyFrom(net)
    for layer in new.layer:
        if layer.type != "BN":
            continue
        segnet = layer.bn_param.HasField("bn_mode")
        eps = layer.bn_param.eps
        layer.ClearField("bn_param")
        layer.type = "Python"
        layer.python_param.module = "_fold_forkbn"
        layer.python_param.layer = "ForkBN"
        layer.python_param.param_str = repr({"eps": eps, "blobs": 2 if segnet else 4})
    return new
