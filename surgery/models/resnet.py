"""MSRA ResNet-50/101/152 as in the authors' deploy files, and a stride-on-3x3 variant.

Layer names follow the MSRA release (`res4b22_branch2b`, `bn4b22_branch2b`,
`scale4b22_branch2b`, `res4b22_branch2b_relu`), so DeepLab/PSPNet-style weight
files line up by name.
"""

from ..builder import NetBuilder

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def _block_names(depth, stage, count):
    """MSRA naming: letters (a, b, c...), except stages 3-4 of the deep nets,
    which are a, b1, b2, ..."""
    if depth > 50 and stage in (3, 4):
        return ["a"] + [f"b{i}" for i in range(1, count)]
    return [chr(ord("a") + i) for i in range(count)]


def _ch(channels, width):
    return max(1, int(round(channels * width)))


def resnet(depth=50, *, stride_on="1x1", width=1.0, input_size=224, num_classes=1000,
           name=None, blocks=None):
    """A deploy-style ResNet with bottleneck blocks.

    stride_on="1x1" puts the stage stride on `branch2a` and `branch1` (MSRA);
    "3x3" puts it on `branch2b` (ResNet v1.5 / PSPNet placement). `blocks` (four
    counts, one per stage) makes a deeper or shallower net of the same kind, named as
    ResNet-`depth` is (the scaling benchmark's nets of thousands of layers).
    """
    if blocks is None and depth not in BLOCKS:
        raise ValueError(f"no ResNet-{depth}; choose one of {sorted(BLOCKS)}")
    if blocks is not None and (len(blocks) != 4 or min(blocks) < 1):
        raise ValueError("blocks gives four positive counts, one per stage")
    if stride_on not in ("1x1", "3x3"):
        raise ValueError("stride_on must be '1x1' or '3x3'")
    b = NetBuilder(name or f"ResNet-{depth}")
    b.input("data", (1, 3, input_size, input_size))
    # The MSRA ResNet-50 conv1 has a bias; the 101/152 files turn it off.
    b.conv("conv1", "data", num_output=_ch(64, width), kernel=7, stride=2, pad=3, bias=depth == 50)
    b.bn_scale("conv1", bn="bn_conv1", scale="scale_conv1", relu="conv1_relu")
    x = b.pool("pool1", "conv1", kernel=3, stride=2)
    for stage, count in zip((2, 3, 4, 5), blocks or BLOCKS[depth]):
        mid = _ch(64 * 2 ** (stage - 2), width)
        for i, block in enumerate(_block_names(depth, stage, count)):
            stride = 2 if (i == 0 and stage > 2) else 1
            x = _bottleneck(b, x, f"{stage}{block}", mid=mid, out=4 * mid, stride=stride,
                            project=i == 0, stride_on=stride_on)
    spatial = max(1, input_size // 32)  # 7 at 224, as in the MSRA files
    b.pool("pool5", x, kernel=spatial, stride=1, method="AVE")
    b.fc(f"fc{num_classes}", "pool5", num_output=num_classes)
    b.softmax("prob", f"fc{num_classes}")
    return b.net


def _bottleneck(b, x, tag, *, mid, out, stride, project, stride_on):
    def unit(branch, bottom, channels, kernel, unit_stride, relu):
        top = f"res{tag}_branch{branch}"
        b.conv(top, bottom, num_output=channels, kernel=kernel, stride=unit_stride,
               pad=kernel // 2, bias=False)
        b.bn_scale(top, bn=f"bn{tag}_branch{branch}", scale=f"scale{tag}_branch{branch}",
                   relu=f"{top}_relu" if relu else None)
        return top

    shortcut = unit("1", x, out, 1, stride, False) if project else x
    s1, s3 = (stride, 1) if stride_on == "1x1" else (1, stride)
    y = unit("2a", x, mid, 1, s1, True)
    y = unit("2b", y, mid, 3, s3, True)
    y = unit("2c", y, out, 1, 1, False)
    top = b.eltwise(f"res{tag}", [shortcut, y])
    b.relu(f"res{tag}_relu", top)
    return top
