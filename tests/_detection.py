"""Detection nets of the published structures, built here for the tests (never copied):
py-faster-rcnn's VGG16 and ZF end-to-end nets (test and train), py-R-FCN's ResNet-101
(test and train) and SSD300 (deploy and train). Layer names, types, bottoms/tops and the
stride-related settings follow the published files (see /work/notes/detection.md);
`width` shrinks every channel count so the tests run fast.
"""

from surgery.builder import NetBuilder
from surgery.models.resnet import resnet

FEAT_STRIDE = "'feat_stride': 16"


def _ch(channels, width):
    return max(1, int(round(channels * width)))


def _header(b, size, *, im_info=True):
    """The old-style `input:` header the published test nets use."""
    net = b.net
    for name, dims in (("data", (1, 3, size, size)), ("im_info", (1, 3))):
        if name == "im_info" and not im_info:
            continue
        net.input.append(name)
        net.input_shape.add().dim.extend(dims)


def _python(b, name, bottoms, tops, module, cls, param_str):
    return b.layer("Python", name, bottoms, tops,
                   python_param={"module": module, "layer": cls, "param_str": param_str})


def _loss(b, type_, name, bottoms, top, **params):
    return b.layer(type_, name, bottoms, [top], **params)


def _vgg_trunk(b, width):
    x = "data"
    stages = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
    for stage, (channels, count) in enumerate(stages, start=1):
        for i in range(1, count + 1):
            x = b.conv(f"conv{stage}_{i}", x, num_output=_ch(channels, width), kernel=3, pad=1)
            b.relu(f"relu{stage}_{i}", x)
        if stage < 5:           # no pool5: RoI pooling takes its place
            x = b.pool(f"pool{stage}", x, kernel=2, stride=2)
    return x


def _zf_trunk(b, width):
    lrn = {"local_size": 3, "alpha": 0.00005, "beta": 0.75, "norm_region": "WITHIN_CHANNEL"}
    b.conv("conv1", "data", num_output=_ch(96, width), kernel=7, stride=2, pad=3)
    b.relu("relu1", "conv1")
    b.layer("LRN", "norm1", ["conv1"], ["norm1"], lrn_param=lrn)
    b.pool("pool1", "norm1", kernel=3, stride=2, pad=1)
    b.conv("conv2", "pool1", num_output=_ch(256, width), kernel=5, stride=2, pad=2)
    b.relu("relu2", "conv2")
    b.layer("LRN", "norm2", ["conv2"], ["norm2"], lrn_param=lrn)
    x = b.pool("pool2", "norm2", kernel=3, stride=2, pad=1)
    for i, channels in ((3, 384), (4, 384), (5, 256)):
        x = b.conv(f"conv{i}", x, num_output=_ch(channels, width), kernel=3, pad=1)
        b.relu(f"relu{i}", x)
    return x


def _rpn(b, trunk, channels, *, train, anchors=9, param_str=FEAT_STRIDE):
    b.conv("rpn_conv/3x3", trunk, num_output=channels, kernel=3, pad=1, top="rpn/output")
    b.relu("rpn_relu/3x3", "rpn/output")
    b.conv("rpn_cls_score", "rpn/output", num_output=2 * anchors, kernel=1)
    b.conv("rpn_bbox_pred", "rpn/output", num_output=4 * anchors, kernel=1)
    b.layer("Reshape", "rpn_cls_score_reshape", ["rpn_cls_score"], ["rpn_cls_score_reshape"],
            reshape_param={"shape": {"dim": [0, 2, -1, 0]}})
    if train:
        _python(b, "rpn-data", ["rpn_cls_score", "gt_boxes", "im_info", "data"],
                ["rpn_labels", "rpn_bbox_targets", "rpn_bbox_inside_weights",
                 "rpn_bbox_outside_weights"], "rpn.anchor_target_layer", "AnchorTargetLayer",
                param_str)
        _loss(b, "SoftmaxWithLoss", "rpn_loss_cls", ["rpn_cls_score_reshape", "rpn_labels"],
              "rpn_cls_loss", propagate_down=[True, False], loss_weight=[1],
              loss_param={"ignore_label": -1, "normalize": True})
        _loss(b, "SmoothL1Loss", "rpn_loss_bbox",
              ["rpn_bbox_pred", "rpn_bbox_targets", "rpn_bbox_inside_weights",
               "rpn_bbox_outside_weights"], "rpn_loss_bbox", loss_weight=[1],
              smooth_l1_loss_param={"sigma": 3.0})
    b.layer("Softmax", "rpn_cls_prob", ["rpn_cls_score_reshape"], ["rpn_cls_prob"])
    b.layer("Reshape", "rpn_cls_prob_reshape", ["rpn_cls_prob"], ["rpn_cls_prob_reshape"],
            reshape_param={"shape": {"dim": [0, 2 * anchors, -1, 0]}})
    rois = "rpn_rois" if train else "rois"
    _python(b, "proposal", ["rpn_cls_prob_reshape", "rpn_bbox_pred", "im_info"], [rois],
            "rpn.proposal_layer", "ProposalLayer", param_str)
    if train:
        _python(b, "roi-data", ["rpn_rois", "gt_boxes"],
                ["rois", "labels", "bbox_targets", "bbox_inside_weights", "bbox_outside_weights"],
                "rpn.proposal_target_layer", "ProposalTargetLayer", "'num_classes': 21")


def _data_layer(b, *, classes=21):
    _python(b, "input-data", [], ["data", "im_info", "gt_boxes"], "roi_data_layer.layer",
            "RoIDataLayer", f"'num_classes': {classes}")


def faster_rcnn(trunk="vgg16", *, train=False, width=1.0, fc_width=4096, input_size=224,
                num_classes=21, param_str=FEAT_STRIDE):
    """py-faster-rcnn's end-to-end net: the trunk, the RPN, the Python proposal layer,
    ROIPooling (spatial_scale 1/16) and the fc6/fc7 R-CNN head."""
    b = NetBuilder(f"{trunk.upper()}")
    if train:
        _data_layer(b, classes=num_classes)
    else:
        _header(b, input_size)
    feature = _vgg_trunk(b, width) if trunk == "vgg16" else _zf_trunk(b, width)
    rpn_channels = _ch(512 if trunk == "vgg16" else 256, width)
    _rpn(b, feature, rpn_channels, train=train, param_str=param_str)
    pooled = 7 if trunk == "vgg16" else 6
    pool = "pool5" if trunk == "vgg16" else "roi_pool_conv5"
    b.layer("ROIPooling", "roi_pool5" if trunk == "vgg16" else "roi_pool_conv5",
            [feature, "rois"], [pool],
            roi_pooling_param={"pooled_w": pooled, "pooled_h": pooled, "spatial_scale": 0.0625})
    x = pool
    for i in (6, 7):
        x = b.fc(f"fc{i}", x, num_output=fc_width)
        b.relu(f"relu{i}", x)
        b.layer("Dropout", f"drop{i}", [x], [x], dropout_param={"dropout_ratio": 0.5})
    b.fc("cls_score", x, num_output=num_classes)
    b.fc("bbox_pred", x, num_output=4 * num_classes)
    if train:
        _loss(b, "SoftmaxWithLoss", "loss_cls", ["cls_score", "labels"], "loss_cls",
              propagate_down=[True, False], loss_weight=[1])
        _loss(b, "SmoothL1Loss", "loss_bbox",
              ["bbox_pred", "bbox_targets", "bbox_inside_weights", "bbox_outside_weights"],
              "loss_bbox", loss_weight=[1])
    else:
        b.softmax("cls_prob", "cls_score")
    return b.net


def rfcn(*, train=False, width=1.0, input_size=224, num_classes=21, group=7):
    """py-R-FCN's ResNet-101 (class-agnostic boxes): MSRA ResNet-101 whose res5 is already
    dilated (stride 1 on res5a, dilation 2 on the res5 3x3s: stride 16), the RPN on
    res4b22, conv_new_1 + position-sensitive score maps on res5c, PSROIPooling
    (spatial_scale 1/16) and the AVE votes."""
    base = resnet(101, width=width, input_size=input_size)
    b = NetBuilder("ResNet-101")
    if train:
        _data_layer(b, classes=2)
    else:
        _header(b, input_size)
    for new in b.copy_layers(base, until="pool5", skip_types={"Input"}):
        cp = new.convolution_param
        if new.name in ("res5a_branch1", "res5a_branch2a"):
            del cp.stride[:]
        elif new.name.startswith("res5") and new.name.endswith("_branch2b"):
            del cp.pad[:]
            cp.pad.append(2)
            cp.dilation.append(2)
    _rpn(b, "res4b22", _ch(512, width), train=train)
    b.conv("conv_new_1", "res5c", num_output=_ch(1024, width), kernel=1)
    b.relu("conv_new_1_relu", "conv_new_1")
    b.conv("rfcn_cls", "conv_new_1", num_output=num_classes * group * group, kernel=1)
    b.conv("rfcn_bbox", "conv_new_1", num_output=8 * group * group, kernel=1)
    for name, bottom, dim, top in (("psroipooled_cls_rois", "rfcn_cls", num_classes, "psroipooled_cls_rois"),
                                   ("psroipooled_loc_rois", "rfcn_bbox", 8, "psroipooled_loc_rois")):
        b.layer("PSROIPooling", name, [bottom, "rois"], [top],
                psroi_pooling_param={"spatial_scale": 0.0625, "output_dim": dim,
                                     "group_size": group})
    b.pool("ave_cls_score_rois", "psroipooled_cls_rois", kernel=group, stride=group,
           method="AVE", top="cls_score")
    b.pool("ave_bbox_pred_rois", "psroipooled_loc_rois", kernel=group, stride=group,
           method="AVE", top="bbox_pred" if train else "bbox_pred_pre")
    if train:
        _loss(b, "SoftmaxWithLoss", "loss", ["cls_score", "labels"], "loss_cls",
              propagate_down=[True, False])
        b.layer("Accuracy", "accuarcy", ["cls_score", "labels"], ["accuarcy"],
                propagate_down=[False, False])
        _loss(b, "SmoothL1LossOHEM", "loss_bbox", ["bbox_pred", "bbox_targets",
                                                   "bbox_inside_weights"], "loss_bbox",
              loss_weight=[1], loss_param={"pre_fixed_normalizer": 128})
        b.layer("Silence", "silence", ["bbox_outside_weights"], [])
    else:
        b.softmax("cls_prob", "cls_score", top="cls_prob_pre")
        b.layer("Reshape", "cls_prob_reshape", ["cls_prob_pre"], ["cls_prob"],
                reshape_param={"shape": {"dim": [-1, num_classes]}})
        b.layer("Reshape", "bbox_pred_reshape", ["bbox_pred_pre"], ["bbox_pred"],
                reshape_param={"shape": {"dim": [-1, 8]}})
    return b.net


# (source, min_size, max_size, aspect ratios, step) of SSD300's six prediction sources.
SSD_SOURCES = (("conv4_3_norm", 30, 60, (2,), 8), ("fc7", 60, 111, (2, 3), 16),
               ("conv6_2", 111, 162, (2, 3), 32), ("conv7_2", 162, 213, (2, 3), 64),
               ("conv8_2", 213, 264, (2,), 100), ("conv9_2", 264, 315, (2,), 300))


def ssd300(*, train=False, width=1.0, num_classes=21, input_size=300):
    """weiliu89's SSD300 (VGG16 reduced): pool5 3x3/1, fc6 dilated 6, the extra layers,
    Normalize on conv4_3, and per source the loc/conf convs, Permute, Flatten and
    PriorBox (steps 8, 16, 32, 64, 100, 300); Concat, then MultiBoxLoss (train) or
    Softmax + DetectionOutput (deploy)."""
    b = NetBuilder("VGG_VOC0712_SSD_300x300_" + ("train" if train else "deploy"))
    if train:
        b.layer("AnnotatedData", "data", [], ["data", "label"], include=[{"phase": "TRAIN"}],
                data_param={"source": "trainval_lmdb", "batch_size": 32, "backend": "LMDB"})
    else:
        _header(b, input_size, im_info=False)
    x = "data"
    for stage, (channels, count) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
                                              start=1):
        for i in range(1, count + 1):
            x = b.conv(f"conv{stage}_{i}", x, num_output=_ch(channels, width), kernel=3, pad=1)
            b.relu(f"relu{stage}_{i}", x)
        if stage < 5:
            x = b.pool(f"pool{stage}", x, kernel=2, stride=2)
    b.pool("pool5", x, kernel=3, stride=1, pad=1)
    b.conv("fc6", "pool5", num_output=_ch(1024, width), kernel=3, pad=6, dilation=6)
    b.relu("relu6", "fc6")
    b.conv("fc7", "fc6", num_output=_ch(1024, width), kernel=1)
    b.relu("relu7", "fc7")
    x = "fc7"
    for n, (c1, c2, stride, pad) in ((6, (256, 512, 2, 1)), (7, (128, 256, 2, 1)),
                                     (8, (128, 256, 1, 0)), (9, (128, 256, 1, 0))):
        b.conv(f"conv{n}_1", x, num_output=_ch(c1, width), kernel=1)
        b.relu(f"conv{n}_1_relu", f"conv{n}_1")
        x = b.conv(f"conv{n}_2", f"conv{n}_1", num_output=_ch(c2, width), kernel=3,
                   stride=stride, pad=pad)
        b.relu(f"conv{n}_2_relu", x)
    b.layer("Normalize", "conv4_3_norm", ["conv4_3"], ["conv4_3_norm"],
            norm_param={"across_spatial": False, "channel_shared": False,
                        "scale_filler": {"type": "constant", "value": 20}})
    locs, confs, priors = [], [], []
    for source, low, high, ratios, step in SSD_SOURCES:
        per = 2 + 2 * len(ratios)
        for kind, outputs, out in (("loc", 4 * per, locs), ("conf", num_classes * per, confs)):
            name = f"{source}_mbox_{kind}"
            b.conv(name, source, num_output=outputs, kernel=3, pad=1)
            b.layer("Permute", f"{name}_perm", [name], [f"{name}_perm"],
                    permute_param={"order": [0, 2, 3, 1]})
            b.layer("Flatten", f"{name}_flat", [f"{name}_perm"], [f"{name}_flat"],
                    flatten_param={"axis": 1})
            out.append(f"{name}_flat")
        name = f"{source}_mbox_priorbox"
        b.layer("PriorBox", name, [source, "data"], [name],
                prior_box_param={"min_size": [low], "max_size": [high],
                                 "aspect_ratio": list(ratios), "flip": True, "clip": False,
                                 "variance": [0.1, 0.1, 0.2, 0.2], "step": step,
                                 "offset": 0.5})
        priors.append(name)
    b.layer("Concat", "mbox_loc", locs, ["mbox_loc"], concat_param={"axis": 1})
    b.layer("Concat", "mbox_conf", confs, ["mbox_conf"], concat_param={"axis": 1})
    b.layer("Concat", "mbox_priorbox", priors, ["mbox_priorbox"], concat_param={"axis": 2})
    if train:
        b.layer("MultiBoxLoss", "mbox_loss", ["mbox_loc", "mbox_conf", "mbox_priorbox", "label"],
                ["mbox_loss"], include=[{"phase": "TRAIN"}],
                propagate_down=[True, True, False, False],
                loss_param={"normalization": "VALID"},
                multibox_loss_param={"loc_loss_type": "SMOOTH_L1", "conf_loss_type": "SOFTMAX",
                                     "loc_weight": 1.0, "num_classes": num_classes,
                                     "share_location": True, "match_type": "PER_PREDICTION",
                                     "overlap_threshold": 0.5, "use_prior_for_matching": True,
                                     "background_label_id": 0, "use_difficult_gt": True,
                                     "neg_pos_ratio": 3.0, "neg_overlap": 0.5,
                                     "code_type": "CENTER_SIZE",
                                     "mining_type": "MAX_NEGATIVE"})
    else:
        b.layer("Reshape", "mbox_conf_reshape", ["mbox_conf"], ["mbox_conf_reshape"],
                reshape_param={"shape": {"dim": [0, -1, num_classes]}})
        b.layer("Softmax", "mbox_conf_softmax", ["mbox_conf_reshape"], ["mbox_conf_softmax"],
                softmax_param={"axis": 2})
        b.layer("Flatten", "mbox_conf_flatten", ["mbox_conf_softmax"], ["mbox_conf_flatten"],
                flatten_param={"axis": 1})
        b.layer("DetectionOutput", "detection_out", ["mbox_loc", "mbox_conf_flatten",
                                                     "mbox_priorbox"], ["detection_out"],
                include=[{"phase": "TEST"}],
                detection_output_param={"num_classes": num_classes, "share_location": True,
                                        "background_label_id": 0,
                                        "nms_param": {"nms_threshold": 0.45, "top_k": 400},
                                        "code_type": "CENTER_SIZE", "keep_top_k": 200,
                                        "confidence_threshold": 0.01})
    return b.net
