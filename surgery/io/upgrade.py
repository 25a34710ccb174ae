"""Bring legacy nets to the current format, step for step as Caffe's own upgrader.

`upgrade_net` runs the steps of Caffe's UpgradeNetAsNeeded, in its order, each only when
the net needs it: V0 -> V1 (padding layers merged; see upgrade_v0.py), the V1 data-layer
transform fields, V1 `layers` -> `layer` with string types and `param` specs, the
net-level input header -> an Input layer, and the BatchNorm `param` specs. Then one step
Caffe does not have: DeepLab v1's `hole` (its name for dilation; surgery.io.hole). Every step that changes
something adds a note, so the user sees what changed.
"""

from .. import caffe_pb2
from ..errors import SurgeryError
from ..layers import rule_for
from .upgrade_v0 import is_v0, upgrade_v0_net
from .hole import hole_to_dilation
from .message import set_field
from .v1types import V1_TYPE_BY_NAME

# Old data-layer fields Caffe moves into transform_param: V1 layers of these types only,
# from their own parameter block.
_DATA_PARAMS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param",
                "WINDOW_DATA": "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

# V1 fields that do not copy across by name.
_PARAM_SPEC_SOURCES = {
    "param": "name",
    "blob_share_mode": "share_mode",
    "blobs_lr": "lr_mult",
    "weight_decay": "decay_mult",
}


class MixedLayerFormats(SurgeryError):
    """Both ``layer`` and ``layers`` present; the loader adds the file position."""


def upgrade_net(net, *, in_place=False):
    """Return ``(upgraded copy, notes)``: Caffe's steps, then DeepLab's `hole`. The input
    message is never changed, unless `in_place` (a scratch net the caller owns: no copy
    of it is made)."""
    new, notes = upgrade_as_caffe(net, in_place=in_place)
    hole_to_dilation(new, notes)
    return new, notes


def upgrade_as_caffe(net, *, in_place=False):
    """``(upgraded copy, notes)`` from Caffe's UpgradeNetAsNeeded steps alone, without the
    `hole` step Caffe does not have: what Caffe's own upgrader gives."""
    if in_place:
        new = net
    else:
        new = type(net)()
        new.CopyFrom(net)
    notes = []
    if len(new.layer) and len(new.layers):
        raise MixedLayerFormats(
            f"mixes `layer` ({_count(len(new.layer), 'entry')}) and the legacy `layers` "
            f"({_count(len(new.layers), 'entry')}); Caffe would silently drop one set. "
            "Write every layer in one form (`layer {` with string types is current)"
        )
    if is_v0(new):
        new, v0_notes = upgrade_v0_net(new)
        notes.extend(v0_notes)
    _upgrade_data_transform(new, notes)
    if len(new.layers):
        _upgrade_v1(new, notes)
    _upgrade_input(new, notes)
    _upgrade_batch_norm(new, notes)
    return new, notes


def _count(number, noun):
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{number} {noun if number == 1 else plural}"


# --------------------------------------------------------------------------
# V1 layers


def _upgrade_data_transform(net, notes):
    """Caffe's UpgradeNetDataTransformation: scale/mean_file/crop_size/mirror of a V1
    Data, ImageData or WindowData layer move from its own block into transform_param.

    As in Caffe, once any layer needs it, every layer of those types gets both blocks
    (empty ones included), so the result equals Caffe's message for message."""
    found = [(old, getattr(old, _DATA_PARAMS[name]))
             for old in net.layers
             if (name := caffe_pb2.V1LayerParameter.LayerType.Name(old.type)) in _DATA_PARAMS]
    if not any(block.HasField(f) for _, block in found for f in _TRANSFORM_FIELDS):
        return
    moved = 0
    for old, block in found:
        block.SetInParent()
        old.transform_param.SetInParent()
        for name in _TRANSFORM_FIELDS:
            if block.HasField(name):
                setattr(old.transform_param, name, getattr(block, name))
                block.ClearField(name)
                moved += 1
    notes.append(f"moved {moved} legacy data-layer field(s) (scale/mean_file/crop_size/mirror) "
                 "into transform_param")


def _upgrade_v1(net, notes):
    converted = [_convert_v1_layer(old) for old in net.layers]
    net.ClearField("layers")
    net.layer.extend(converted)
    lr = sum(1 for old in converted if len(old.param))
    note = f"converted {len(converted)} V1 `layers` entries to `layer` with string types"
    if lr:
        note += f" ({lr} with blobs_lr/weight_decay/param names turned into `param {{ }}` specs)"
    notes.append(note)


def _convert_v1_layer(old):
    layer = caffe_pb2.LayerParameter()
    targets = layer.DESCRIPTOR.fields_by_name
    name = old.name or None
    for field, value in old.ListFields():
        if field.name == "type":
            layer.type = _type_name(field, value, name)
        elif field.name in _PARAM_SPEC_SOURCES:
            _fill_param_specs(layer, field, value, _PARAM_SPEC_SOURCES[field.name])
        else:
            target = targets.get(field.name)
            if target is None or not _same_kind(field, target):
                raise SurgeryError(
                    f"V1 field `{field.name}` has no counterpart in the current layer format; "
                    "remove it or convert this layer by hand",
                    layer=name,
                )
            set_field(layer, target, value)
    return layer


def _type_name(field, value, layer_name):
    enum_name = field.enum_type.values_by_number[value].name
    try:
        return V1_TYPE_BY_NAME[enum_name]
    except KeyError:
        raise SurgeryError(f"V1 layer type {enum_name} has no known current type name",
                           layer=layer_name) from None


def _fill_param_specs(layer, field, values, spec_field):
    """Caffe pairs blobs_lr/weight_decay/param/blob_share_mode by blob index."""
    for index, value in enumerate(values):
        while len(layer.param) <= index:
            layer.param.add()
        if field.enum_type is not None:  # blob_share_mode: same names in ParamSpec.DimCheckMode
            value = field.enum_type.values_by_number[value].name
        setattr(layer.param[index], spec_field, value)


def _same_kind(source, target):
    if source.is_repeated != target.is_repeated or source.type != target.type:
        return False
    if source.message_type is not None:
        return source.message_type.full_name == target.message_type.full_name
    if source.enum_type is not None:
        return source.enum_type.full_name == target.enum_type.full_name
    return True


# --------------------------------------------------------------------------
# input header


def _upgrade_input(net, notes):
    names = list(net.input)
    dims = list(net.input_dim)
    shapes = list(net.input_shape)
    if not names and not dims and not shapes:
        return
    if not names:
        raise SurgeryError("the net header has input_dim/input_shape but no `input:` name")
    if shapes:
        if len(shapes) != len(names):
            raise SurgeryError(f"the net header names {len(names)} input(s) but gives "
                               f"{len(shapes)} input_shape block(s); give one per input")
        if dims:
            notes.append("net header has both input_shape and input_dim; used input_shape "
                         "as Caffe does and dropped input_dim")
    elif dims:
        if len(dims) != 4 * len(names):
            raise SurgeryError(f"the net header names {len(names)} input(s) but gives "
                               f"{len(dims)} input_dim values; Caffe needs exactly 4 per input")
        shapes = []
        for index in range(len(names)):
            shape = caffe_pb2.BlobShape()
            shape.dim.extend(dims[4 * index: 4 * index + 4])
            shapes.append(shape)
    for field in ("input", "input_dim", "input_shape"):
        net.ClearField(field)
    if not shapes:
        # A bare `input:` (seen in old caffemodels) carries no shape: Caffe just drops it.
        notes.append(f"dropped the shapeless net-level input {', '.join(names)}")
        return
    layer = caffe_pb2.LayerParameter(name="input", type="Input")
    layer.top.extend(names)
    for shape in shapes:
        layer.input_param.shape.add().CopyFrom(shape)
    rest = list(net.layer)
    net.ClearField("layer")
    net.layer.append(layer)
    net.layer.extend(rest)
    described = ", ".join(f"{n} {'x'.join(str(d) for d in s.dim)}" for n, s in zip(names, shapes))
    notes.append(f"net header input ({described}) became an Input layer named 'input'")


# --------------------------------------------------------------------------
# BatchNorm param specs


def _upgrade_batch_norm(net, notes):
    """Caffe's UpgradeNetBatchNorm: a layer that declares exactly as many `param` specs as
    its registry rule freezes (BatchNorm: 3) gets lr_mult 0 and decay_mult 0 in each; the
    specs' other fields stay."""
    frozen = []
    for layer in net.layer:
        count = rule_for(layer.type).frozen_param_specs
        if count is None or len(layer.param) != count:
            continue
        if any(spec.lr_mult != 0 or spec.decay_mult != 0 or not spec.HasField("lr_mult")
               or not spec.HasField("decay_mult") for spec in layer.param):
            frozen.append(layer.name)
        for spec in layer.param:
            spec.lr_mult = 0
            spec.decay_mult = 0
    if frozen:
        shown = ", ".join(f"'{name}'" for name in frozen[:3])
        more = f" and {len(frozen) - 3} more" if len(frozen) > 3 else ""
        notes.append(f"set lr_mult: 0 and decay_mult: 0 in the `param` specs of "
                     f"{_count(len(frozen), 'BatchNorm layer')} ({shown}{more}), as Caffe does: "
                     "their statistics are never learned")
