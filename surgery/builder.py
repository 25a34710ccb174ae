"""Build a Caffe NetParameter from Python with short, readable helpers.

Parameters go through the protobuf descriptors (`layer(..., convolution_param=
dict(num_output=64, kernel_size=[7]))`), so the schema is the only field list:
a misspelt field fails loudly instead of being silently dropped.
"""

from google.protobuf.descriptor import FieldDescriptor

from . import caffe_pb2
from .errors import SurgeryError


def fill(message, values, *, where=None):
    """Set fields of a protobuf message from a dict (nested dicts for messages,
    lists for repeated fields, enum value names as strings)."""
    for key, value in values.items():
        field = message.DESCRIPTOR.fields_by_name.get(key)
        if field is None:
            raise SurgeryError(f"{message.DESCRIPTOR.name} has no field '{key}'", layer=where)
        if field.is_repeated:
            items = value if isinstance(value, (list, tuple)) else [value]
            target = getattr(message, key)
            for item in items:
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    fill(target.add(), item, where=where)
                else:
                    target.append(_scalar(field, item, where))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            fill(getattr(message, key), value, where=where)
        else:
            setattr(message, key, _scalar(field, value, where))
    return message


def _scalar(field, value, where):
    if field.type == FieldDescriptor.TYPE_ENUM and isinstance(value, str):
        enum_value = field.enum_type.values_by_name.get(value)
        if enum_value is None:
            raise SurgeryError(f"'{value}' is not a value of {field.enum_type.name}", layer=where)
        return enum_value.number
    return value


def _pair(value):
    """(h, w) from an int or a 2-sequence."""
    if isinstance(value, int):
        return value, value
    h, w = value
    return int(h), int(w)


def window_fields(*, kernel, stride=1, pad=0):
    """Kernel/stride/pad in the form Caffe files use: the repeated scalar form
    when square, the `_h/_w` form when the two axes differ. Defaults are omitted
    except the kernel, so generated files read like hand-written ones."""
    fields = {}
    for base, value, default in (("kernel", kernel, None), ("pad", pad, 0), ("stride", stride, 1)):
        h, w = _pair(value)
        if h == w:
            if h != default:
                fields[f"{base}_size" if base == "kernel" else base] = h
        else:
            fields[f"{base}_h"] = h
            fields[f"{base}_w"] = w
    return fields


def _repeated(fields):
    """ConvolutionParameter's kernel_size/stride/pad are repeated fields."""
    return {k: ([v] if k in ("kernel_size", "stride", "pad") else v) for k, v in fields.items()}


class NetBuilder:
    """Append layers in order; `net` is the NetParameter being built."""

    def __init__(self, name=None):
        self.net = caffe_pb2.NetParameter()
        if name:
            self.net.name = name

    def layer(self, type, name, bottoms=(), tops=None, **params):
        """Add any layer. `tops` defaults to [name]; `params` are LayerParameter fields."""
        layer = self.net.layer.add()
        layer.name = name
        layer.type = type
        layer.bottom.extend([bottoms] if isinstance(bottoms, str) else bottoms)
        if tops is None:
            tops = [name]
        layer.top.extend([tops] if isinstance(tops, str) else tops)
        fill(layer, params, where=name)
        return layer

    def copy_layers(self, net, *, until, skip_types=()):
        """Copy `net`'s layers, in order, up to the one named `until` (not included),
        leaving out those of `skip_types`; returns the copies (to edit in place)."""
        copies = []
        for layer in net.layer:
            if layer.name == until:
                break
            if layer.type in skip_types:
                continue
            copy = self.net.layer.add()
            copy.CopyFrom(layer)
            copies.append(copy)
        return copies

    def input(self, name, shape, *, layer_name=None):
        """An Input layer (deploy style) producing blob `name` with `shape`."""
        self.layer("Input", layer_name or name, (), [name],
                   input_param={"shape": [{"dim": list(shape)}]})
        return name

    def conv(self, name, bottom, *, num_output, kernel, stride=1, pad=0, dilation=1,
             group=1, bias=True, top=None, type="Convolution", **fields):
        """A convolution; square windows use `kernel_size`, others `kernel_h/kernel_w`.
        `fields`: other LayerParameter fields (param specs, phase rules)."""
        params = {"num_output": num_output}
        params.update(_repeated(window_fields(kernel=kernel, stride=stride, pad=pad)))
        dh, dw = _pair(dilation)
        if (dh, dw) != (1, 1):
            params["dilation"] = [dh] if dh == dw else [dh, dw]
        if group != 1:
            params["group"] = group
        if not bias:
            params["bias_term"] = False
        top = top or name
        self.layer(type, name, [bottom], [top], convolution_param=params, **fields)
        return top

    def bn(self, name, blob, **fields):
        """Inference BatchNorm in place (stats from the weights file)."""
        self.layer("BatchNorm", name, [blob], [blob], batch_norm_param={"use_global_stats": True},
                   **fields)
        return blob

    def scale(self, name, blob, *, bias=True, **fields):
        self.layer("Scale", name, [blob], [blob], scale_param={"bias_term": bias}, **fields)
        return blob

    def bn_fork(self, name, blob, *, eps=None):
        """PSPNet's fork BN in place, as its files write it: frozen, with slope and bias
        fillers and four param specs (lr 1 for slope and bias, 0 for the statistics)."""
        params = {"slope_filler": {"type": "constant", "value": 1},
                  "bias_filler": {"type": "constant", "value": 0},
                  "frozen": True, "momentum": 0.95}
        if eps is not None:
            params["eps"] = eps
        specs = [{"lr_mult": m, "decay_mult": m} for m in (1, 1, 0, 0)]
        self.layer("BN", name, [blob], [blob], bn_param=params, param=specs)
        return blob

    def interp(self, name, bottom, *, top=None, **interp_param):
        """DeepLab v2 / PSPNet Interp: zoom_factor, shrink_factor, height/width, pads."""
        top = top or name
        self.layer("Interp", name, [bottom], [top], interp_param=interp_param)
        return top

    def seg_data(self, name, tops, *, crop, source, batch=1, phase=None):
        """DeepLab's ImageSegData reader (image, label[, data_dim]) with a crop."""
        fields = {"transform_param": {"crop_size": crop, "mirror": False,
                                      "mean_value": [104.008, 116.669, 122.675]},
                  "image_data_param": {"source": source, "batch_size": batch,
                                       "label_type": "PIXEL"}}
        if phase:
            fields["include"] = [{"phase": phase}]
        self.layer("ImageSegData", name, (), list(tops), **fields)
        return tops[0]

    def mat_write(self, name, bottom, *, prefix, source):
        """DeepLab's MatWrite: dumps a blob to .mat files (only writes)."""
        self.layer("MatWrite", name, [bottom], [],
                   mat_write_param={"prefix": prefix, "source": source, "strip": 0,
                                    "period": 1}, include=[{"phase": "TEST"}])

    def silence(self, name, bottoms):
        self.layer("Silence", name, list(bottoms), [])

    def relu(self, name, blob):
        self.layer("ReLU", name, [blob], [blob])
        return blob

    def bn_scale(self, blob, *, bn, scale, relu=None):
        """The MSRA/MobileNet in-place chain BatchNorm -> Scale(bias) [-> ReLU]."""
        self.bn(bn, blob)
        self.scale(scale, blob)
        if relu:
            self.relu(relu, blob)
        return blob

    def pool(self, name, bottom, *, kernel=None, stride=1, pad=0, method="MAX",
             global_pooling=False, top=None):
        params = {"pool": method}
        if global_pooling:
            params["global_pooling"] = True
        else:
            params.update(window_fields(kernel=kernel, stride=stride, pad=pad))
        top = top or name
        self.layer("Pooling", name, [bottom], [top], pooling_param=params)
        return top

    def eltwise(self, name, bottoms, *, operation=None, top=None):
        """Eltwise (SUM unless `operation`, e.g. "MAX")."""
        params = {"eltwise_param": {"operation": operation}} if operation else {}
        top = top or name
        self.layer("Eltwise", name, list(bottoms), [top], **params)
        return top

    def concat(self, name, bottoms, *, top=None):
        top = top or name
        self.layer("Concat", name, list(bottoms), [top])
        return top

    def fc(self, name, bottom, *, num_output, top=None):
        top = top or name
        self.layer("InnerProduct", name, [bottom], [top],
                   inner_product_param={"num_output": num_output})
        return top

    def dropout(self, name, blob, *, ratio=0.5):
        self.layer("Dropout", name, [blob], [blob], dropout_param={"dropout_ratio": ratio})
        return blob

    def softmax(self, name, bottom, *, top=None):
        top = top or name
        self.layer("Softmax", name, [bottom], [top])
        return top

    def softmax_loss(self, name, score, label, *, ignore_label=None, **fields):
        """A SoftmaxWithLoss of `score` against `label` (no top: Caffe makes one)."""
        if ignore_label is not None:
            fields["loss_param"] = {"ignore_label": ignore_label}
        self.layer("SoftmaxWithLoss", name, [score, label], [], **fields)

    def seg_accuracy(self, name, score, label, *, ignore_label=None, top=None):
        """DeepLab's SegAccuracy (a fork layer) of `score` against `label`."""
        top = top or name
        fields = {"seg_accuracy_param": {"ignore_label": ignore_label}} \
            if ignore_label is not None else {}
        self.layer("SegAccuracy", name, [score, label], [top], **fields)
        return top
