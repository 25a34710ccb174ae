"""Small nets of the published DeepLab v2 multi-scale (MSC) structure, written here.

The published ResNet-101 MSC train and test nets (deeplab-public-ver2, exper/voc12 res101)
are not in ../shared/corpus; these have their structure at a size a test can run:
DeepLab's stem (a stride-2 conv, then pool1 k3 s2 pad 1), the stride on the 1x1 convs of
the first block of stage 3, stage 4 dilated 2 and stage 5 dilated 4 (output stride 8),
BatchNorm + Scale frozen in place, an ASPP head of four 3x3 convs at rates 6/12/18/24
summed, and three scales: `data_res075` = Interp shrink 4 zoom 3 of the image and
`data_res05` = Interp shrink 2, each with its own trunk and head sharing the main one's
weights through `param { name }` (the suffix goes at the end of a trunk name and before
`_cK` in the head). Branch scores come back to the main grid with Interp zoom 4 shrink 3
and zoom 2 and are fused by Eltwise MAX. The train net shrinks the label by 8 (main, 0.75
and fused losses) and by 16 (the 0.5 loss, on the branch's own scores); the test net ends
in Interp zoom 8.

At crop 65 (8k+1) the maps are 9 / 7 / 5 at output stride 8, 5 / 4 / 3 at 16 and
17 / 13 / 9 at 4, and every fusion Interp lands on the main map.
"""

SCALES = ("", "_res075", "_res05")
RATES = (6, 12, 18, 24)


def _conv(name, bottom, top, weights, *, num_output, kernel, stride=1, pad=0, dilation=1,
          bias=False):
    params = f'param {{ name: "{weights}_w" lr_mult: 1 }}'
    if bias:
        params += f' param {{ name: "{weights}_b" lr_mult: 2 decay_mult: 0 }}'
    dil = f" dilation: {dilation}" if dilation > 1 else ""
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}" '
            f'{params} convolution_param {{ num_output: {num_output} kernel_size: {kernel} '
            f'stride: {stride} pad: {pad}{dil} bias_term: {"true" if bias else "false"} }} }}\n')


def _bn(name, blob, s, *, relu=True):
    out = (f'layer {{ name: "bn_{name}{s}" type: "BatchNorm" bottom: "{blob}" top: "{blob}" '
           + "".join(f'param {{ name: "bn_{name}_{i}" lr_mult: 0 }} ' for i in range(3))
           + 'batch_norm_param { use_global_stats: true } }\n'
           f'layer {{ name: "scale_{name}{s}" type: "Scale" bottom: "{blob}" top: "{blob}" '
           + "".join(f'param {{ name: "scale_{name}_{i}" lr_mult: 0 }} ' for i in range(2))
           + 'scale_param { bias_term: true } }\n')
    if relu:
        out += f'layer {{ name: "{name}_relu{s}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'
    return out


def _block(name, bottom, s, *, width, stride=1, dilation=1, project):
    """A bottleneck: 1x1 (the stride), 3x3 (the dilation), 1x1, summed with the shortcut."""
    t = lambda part: f"{name}_{part}{s}"
    out = _conv(t("branch2a"), bottom, t("branch2a"), f"{name}_branch2a", num_output=width,
                kernel=1, stride=stride) + _bn(f"{name}_branch2a", t("branch2a"), s)
    out += _conv(t("branch2b"), t("branch2a"), t("branch2b"), f"{name}_branch2b",
                 num_output=width, kernel=3, pad=dilation, dilation=dilation)
    out += _bn(f"{name}_branch2b", t("branch2b"), s)
    out += _conv(t("branch2c"), t("branch2b"), t("branch2c"), f"{name}_branch2c",
                 num_output=2 * width, kernel=1) + _bn(f"{name}_branch2c", t("branch2c"), s,
                                                       relu=False)
    short = bottom
    if project:
        short = t("branch1")
        out += _conv(short, bottom, short, f"{name}_branch1", num_output=2 * width, kernel=1,
                     stride=stride) + _bn(f"{name}_branch1", short, s, relu=False)
    out += (f'layer {{ name: "{name}{s}" type: "Eltwise" bottom: "{short}" bottom: '
            f'"{t("branch2c")}" top: "{name}{s}" }}\n'
            f'layer {{ name: "{name}_relu{s}" type: "ReLU" bottom: "{name}{s}" '
            f'top: "{name}{s}" }}\n')
    return out


def _trunk(s, classes):
    data = f"data{s}"
    out = _conv(f"conv1{s}", data, f"conv1{s}", "conv1", num_output=4, kernel=3, stride=2,
                pad=1) + _bn("conv1", f"conv1{s}", s)
    out += (f'layer {{ name: "pool1{s}" type: "Pooling" bottom: "conv1{s}" top: "pool1{s}" '
            'pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }\n')
    out += _block("res2a", f"pool1{s}", s, width=4, project=True)
    out += _block("res3a", f"res2a{s}", s, width=4, stride=2, project=True)
    out += _block("res4a", f"res3a{s}", s, width=4, dilation=2, project=True)
    out += _block("res4b", f"res4a{s}", s, width=4, dilation=2, project=False)
    out += _block("res5a", f"res4b{s}", s, width=4, dilation=4, project=True)
    head = f"fc1_voc12{s}"
    for k, rate in enumerate(RATES):
        out += _conv(f"{head}_c{k}", f"res5a{s}", f"{head}_c{k}", f"fc1_voc12_c{k}",
                     num_output=classes, kernel=3, pad=rate, dilation=rate, bias=True)
    out += (f'layer {{ name: "{head}" type: "Eltwise" '
            + "".join(f'bottom: "{head}_c{k}" ' for k in range(len(RATES)))
            + f'top: "{head}" eltwise_param {{ operation: SUM }} }}\n')
    return out


def _interp(name, bottom, **factors):
    fields = " ".join(f"{k}: {v}" for k, v in factors.items())
    return (f'layer {{ name: "{name}" type: "Interp" bottom: "{bottom}" top: "{name}" '
            f'interp_param {{ {fields} }} }}\n')


def msc_net(phase="TEST", *, crop=65, classes=3):
    """The prototxt text of a DeepLab v2 MSC net: "TEST" (deploy-style: Input, final
    zoom) or "TRAIN" (ImageSegData with a label, shrunk labels, one loss per scale and
    one for the fused scores)."""
    if phase == "TEST":
        out = (f'name: "msc-test"\nlayer {{ name: "input" type: "Input" top: "data" '
               f'input_param {{ shape {{ dim: 1 dim: 3 dim: {crop} dim: {crop} }} }} }}\n')
    else:
        out = ('name: "msc-train"\nlayer { name: "data" type: "ImageSegData" top: "data" '
               f'top: "label" include {{ phase: TRAIN }} transform_param {{ mirror: true '
               f'crop_size: {crop} }} image_data_param {{ source: "train.txt" batch_size: 1 '
               'label_type: PIXEL } }\n')
    out += _interp("data_res075", "data", shrink_factor=4, zoom_factor=3)
    out += _interp("data_res05", "data", shrink_factor=2)
    out += "".join(_trunk(s, classes) for s in SCALES)
    out += _interp("fc1_voc12_res075_interp", "fc1_voc12_res075", zoom_factor=4, shrink_factor=3)
    out += _interp("fc1_voc12_res05_interp", "fc1_voc12_res05", zoom_factor=2)
    out += ('layer { name: "fc_fusion" type: "Eltwise" bottom: "fc1_voc12" '
            'bottom: "fc1_voc12_res075_interp" bottom: "fc1_voc12_res05_interp" '
            'top: "fc_fusion" eltwise_param { operation: MAX } }\n')
    if phase == "TEST":
        return out + _interp("fc1_interp", "fc_fusion", zoom_factor=8)
    out += _interp("label_shrink", "label", shrink_factor=8)
    out += _interp("label_shrink16", "label", shrink_factor=16)
    for name, scores, label in (("loss", "fc_fusion", "label_shrink"),
                                ("loss_res1", "fc1_voc12", "label_shrink"),
                                ("loss_res075", "fc1_voc12_res075_interp", "label_shrink"),
                                ("loss_res05", "fc1_voc12_res05", "label_shrink16")):
        out += (f'layer {{ name: "{name}" type: "SoftmaxWithLoss" bottom: "{scores}" '
                f'bottom: "{label}" include {{ phase: TRAIN }} '
                'loss_param { ignore_label: 255 } }\n')
    out += ('layer { name: "accuracy" type: "SegAccuracy" bottom: "fc_fusion" '
            'bottom: "label_shrink" top: "accuracy" seg_accuracy_param { ignore_label: 255 } }\n')
    return out
