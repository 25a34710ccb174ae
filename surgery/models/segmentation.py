"""Segmentation nets shaped like the published PSPNet and DeepLab v2 files, generated so
tests and benchmarks can build them at any width and input size (the published files are
not all in the corpus; their structure is in NOTES.md §2c/§2e).

- `pspnet(50 | 101)`: PSPNet's deploy files: deep stem, fork `BN` layers, dilated res4/res5
  (2/4), the pyramid pooling head with `Interp` back to the map, `Interp zoom_factor 8`.
  PSPNet-50 strides stage 3 on its 1x1 reduce, PSPNet-101 on its 3x3.
- `deeplab_v2_vgg()`: DeepLab v2's VGG-16 ASPP-L test net: ImageSegData, pool4/pool5
  3x3 stride 1, conv5 dilation 2, four fc6 branches (rates 6/12/18/24) summed, the zoom-8
  Interp, MatWrite and a Silence of the label.
- `deeplab_v2_resnet(101)`: DeepLab v2's multi-scale (MSC) ResNet test net (or train net,
  `phase="TRAIN"`): the image at scales 1, 0.75 (shrink 4, zoom 3) and 0.5 (shrink 2), one
  MSRA trunk per scale sharing weights through `param { name }`, ASPP per scale, the
  branch scores brought back to the main grid (zoom 4 shrink 3, zoom 2) and fused by
  Eltwise MAX; the train net's labels shrunk by 8 and 16.
"""

from ..builder import NetBuilder
from .resnet import BLOCKS, _block_names, _ch

LIST = "${EXP}/list/${TEST_SET}.txt"   # as the templates write it (a string: kept)


def _psp_unit(b, name, bottom, *, num_output, kernel, stride=1, pad=0, dilation=1, relu=True):
    """conv (no bias) -> BN -> ReLU, in place, named as PSPNet names them."""
    b.conv(name, bottom, num_output=num_output, kernel=kernel, stride=stride, pad=pad,
           dilation=dilation, bias=False)
    b.bn_fork(f"{name}/bn", name)
    if relu:
        b.relu(f"{name}/relu", name)
    return name


def pspnet(depth=50, *, width=1.0, input_size=473, num_classes=21, bins=(1, 2, 3, 6),
           name=None):
    """PSPNet-50 or -101 at output stride 8 as in its deploy files."""
    b = NetBuilder(name or f"pspnet{depth}")
    x = b.input("data", (1, 3, input_size, input_size))
    x = _psp_unit(b, "conv1_1_3x3_s2", x, num_output=_ch(64, width), kernel=3, stride=2, pad=1)
    x = _psp_unit(b, "conv1_2_3x3", x, num_output=_ch(64, width), kernel=3, pad=1)
    x = _psp_unit(b, "conv1_3_3x3", x, num_output=_ch(128, width), kernel=3, pad=1)
    x = b.pool("pool1_3x3_s2", x, kernel=3, stride=2, pad=1)
    dilations = {4: 2, 5: 4}
    for stage, count in zip((2, 3, 4, 5), BLOCKS[depth]):
        mid, out = _ch(64 * 2 ** (stage - 2), width), _ch(256 * 2 ** (stage - 2), width)
        d = dilations.get(stage, 1)
        for i in range(1, count + 1):
            tag = f"conv{stage}_{i}"
            stride = 2 if (stage == 3 and i == 1) else 1
            s1, s3 = (stride, 1) if depth == 50 else (1, stride)
            y = _psp_unit(b, f"{tag}_1x1_reduce", x, num_output=mid, kernel=1, stride=s1)
            y = _psp_unit(b, f"{tag}_3x3", y, num_output=mid, kernel=3, stride=s3, pad=d,
                          dilation=d)
            y = _psp_unit(b, f"{tag}_1x1_increase", y, num_output=out, kernel=1, relu=False)
            shortcut = _psp_unit(b, f"{tag}_1x1_proj", x, num_output=out, kernel=1,
                                 stride=stride, relu=False) if i == 1 else x
            x = b.eltwise(tag, [shortcut, y])
            b.relu(f"{tag}/relu", x)
    size = _psp_map(input_size)
    branches = []
    for level in sorted(bins, reverse=True):
        k = size // level
        p = b.pool(f"conv5_3_pool{level}", x, kernel=k, stride=k, method="AVE")
        p = _psp_unit(b, f"conv5_3_pool{level}_conv", p, num_output=_ch(512, width), kernel=1)
        branches.append(b.interp(f"conv5_3_pool{level}_interp", p, height=size, width=size))
    y = b.concat("conv5_3_concat", [x] + branches)
    y = _psp_unit(b, "conv5_4", y, num_output=_ch(512, width), kernel=3, pad=1)
    b.dropout("conv5_4_dropout", y, ratio=0.1)
    y = b.conv("conv6", y, num_output=num_classes, kernel=1)
    b.interp("conv6_interp", y, zoom_factor=8)
    return b.net


def _psp_map(size):
    """The map size at output stride 8: conv 3x3/2 pad 1, CEIL pool 3x3/2 pad 1, stride 2."""
    size = (size - 1) // 2 + 1
    size = -(-(size - 1) // 2) + 1
    return (size - 1) // 2 + 1


def _test_tail(b, scores, name):
    """DeepLab's test tail: the scores zoomed 8x to the image and written out; the label
    and data_dim silenced."""
    up = b.interp(f"{name}_interp", scores, zoom_factor=8)
    b.mat_write(f"{name}_mat", up, prefix=f"${{FEATURE_DIR}}/${{TEST_SET}}/{name}/",
                source="${EXP}/list/${TEST_SET}_id.txt")
    b.silence("silence", ["label", "data_dim"])
    return up


def deeplab_v2_vgg(*, width=1.0, fc_width=1024, crop=513, num_classes=21,
                   rates=(6, 12, 18, 24)):
    """DeepLab v2 VGG-16 ASPP-L test net (exper/voc12/config/vgg16/test.prototxt's layout)."""
    b = NetBuilder("deeplab_v2_vgg16")
    x = b.seg_data("data", ["data", "label", "data_dim"], crop=crop, source=LIST,
                   phase="TEST")
    stages = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
    for stage, (channels, count) in enumerate(stages, start=1):
        d = 2 if stage == 5 else 1
        for i in range(1, count + 1):
            x = b.conv(f"conv{stage}_{i}", x, num_output=_ch(channels, width), kernel=3,
                       pad=d, dilation=d)
            b.relu(f"relu{stage}_{i}", x)
        x = b.pool(f"pool{stage}", x, kernel=3, stride=2 if stage < 4 else 1, pad=1)
    scores = []
    for i, rate in enumerate(rates, start=1):
        y = b.conv(f"fc6_{i}", x, num_output=_ch(fc_width, width), kernel=3, pad=rate,
                   dilation=rate)
        b.relu(f"relu6_{i}", y)
        b.dropout(f"drop6_{i}", y)
        y = b.conv(f"fc7_{i}", y, num_output=_ch(fc_width, width), kernel=1)
        b.relu(f"relu7_{i}", y)
        b.dropout(f"drop7_{i}", y)
        scores.append(b.conv(f"fc8_voc12_{i}", y, num_output=num_classes, kernel=1))
    _test_tail(b, b.eltwise("fc8_voc12", scores), "fc8")
    return b.net


def _shared(name, count, lr=1):
    return [{"name": f"{name}_{i}", "lr_mult": lr} for i in range(count)]


def _msra_unit(b, suffix, name, bn, scale, bottom, *, num_output, kernel, stride=1, pad=0,
               dilation=1, relu=None):
    """An MSRA conv -> BatchNorm -> Scale [-> ReLU] unit of one scale's trunk: names and
    blobs get the scale's suffix, param specs keep the full-scale names (shared weights)."""
    top = name + suffix
    b.conv(top, bottom, num_output=num_output, kernel=kernel, stride=stride, pad=pad,
           dilation=dilation, bias=False, param=_shared(name, 1))
    b.bn(bn + suffix, top, param=_shared(bn, 3, lr=0))
    b.scale(scale + suffix, top, param=_shared(scale, 2, lr=0))
    if relu:
        b.relu(relu + suffix, top)
    return top


def _msra_trunk(b, depth, suffix, data, width):
    """One scale's ResNet trunk as DeepLab v2 has it: pool1 pad 1, stride 2 only in res3a
    (on the 1x1s), res4 3x3s dilation 2, res5 dilation 4."""
    x = _msra_unit(b, suffix, "conv1", "bn_conv1", "scale_conv1", data,
                   num_output=_ch(64, width), kernel=7, stride=2, pad=3, relu="conv1_relu")
    x = b.pool("pool1" + suffix, x, kernel=3, stride=2, pad=1)
    for stage, count in zip((2, 3, 4, 5), BLOCKS[depth]):
        mid = _ch(64 * 2 ** (stage - 2), width)
        d = {4: 2, 5: 4}.get(stage, 1)
        for i, block in enumerate(_block_names(depth, stage, count)):
            tag = f"{stage}{block}"
            stride = 2 if (stage == 3 and i == 0) else 1

            def unit(branch, bottom, channels, kernel, unit_stride=1, dil=1, relu=True):
                return _msra_unit(b, suffix, f"res{tag}_branch{branch}", f"bn{tag}_branch{branch}",
                                  f"scale{tag}_branch{branch}", bottom, num_output=channels,
                                  kernel=kernel, stride=unit_stride, pad=dil * (kernel // 2),
                                  dilation=dil, relu=f"res{tag}_branch{branch}_relu" if relu else None)

            shortcut = unit("1", x, 4 * mid, 1, stride, relu=False) if i == 0 else x
            y = unit("2a", x, mid, 1, stride)
            y = unit("2b", y, mid, 3, dil=d)
            y = unit("2c", y, 4 * mid, 1, relu=False)
            x = b.eltwise(f"res{tag}" + suffix, [shortcut, y])
            b.relu(f"res{tag}_relu" + suffix, x)
    return x


def deeplab_v2_resnet(depth=101, *, width=1.0, crop=513, num_classes=21,
                      rates=(6, 12, 18, 24), phase="TEST"):
    """DeepLab v2 ResNet multi-scale test net (the official MSC layout, NOTES §2e), or
    with phase="TRAIN" its train net: the label shrunk by 8 (the main, 0.75 and fused
    losses; the 0.75 loss reads its scores brought back to the main grid) and by 16 (the
    0.5 loss, on that branch's own scores), four SoftmaxWithLoss and a SegAccuracy."""
    b = NetBuilder(f"deeplab_v2_res{depth}_msc")
    tops = ["data", "label", "data_dim"] if phase == "TEST" else ["data", "label"]
    data = b.seg_data("data", tops, crop=crop, source=LIST, phase=phase)
    inputs = {"": data,
              "_res075": b.interp("data_res075", data, shrink_factor=4, zoom_factor=3),
              "_res05": b.interp("data_res05", data, shrink_factor=2)}
    trunks = {suffix: _msra_trunk(b, depth, suffix, image, width)
              for suffix, image in inputs.items()}      # the file's order: trunks, then ASPPs
    scores = {}
    for suffix, trunk in trunks.items():
        branch = "fc1_voc12" + suffix
        aspp = [b.conv(f"{branch}_c{k}", trunk, num_output=num_classes, kernel=3, pad=rate,
                       dilation=rate, param=[{"name": f"fc1_voc12_c{k}_w"},
                                             {"name": f"fc1_voc12_c{k}_b"}])
                for k, rate in enumerate(rates)]
        scores[suffix] = b.eltwise(branch, aspp, operation="SUM")
    back = {"": scores[""],
            "_res075": b.interp("fc1_voc12_res075_interp", scores["_res075"], zoom_factor=4,
                                shrink_factor=3),
            "_res05": b.interp("fc1_voc12_res05_interp", scores["_res05"], zoom_factor=2)}
    fused = b.eltwise("fc_fusion", list(back.values()), operation="MAX")
    if phase == "TEST":
        _test_tail(b, fused, "fc1")
        return b.net
    label = b.interp("label_shrink", "label", shrink_factor=8)
    label16 = b.interp("label_shrink16", "label", shrink_factor=16)
    for name, score, target in (("loss", fused, label), ("loss_res1", back[""], label),
                                ("loss_res075", back["_res075"], label),
                                ("loss_res05", scores["_res05"], label16)):
        b.softmax_loss(name, score, target, ignore_label=255, include=[{"phase": "TRAIN"}])
    b.seg_accuracy("accuracy", fused, label, ignore_label=255, top="accuracy")
    return b.net
