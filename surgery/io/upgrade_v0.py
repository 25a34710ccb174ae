"""Caffe's oldest net format (V0) brought to V1, step for step as Caffe's own upgrader.

A V0 net wraps each layer's settings in `layers { layer { name type ... } bottom top }`:
string types ("conv", "pool", "innerproduct") and flat fields (num_output, kernelsize,
meanfile, ...). Padding was a layer of its own. Caffe upgrades such a net in two steps,
and so does this module:

1. `merge_padding_layers`: a "padding" layer disappears; the conv or pool layer that
   reads its output takes its `pad` and reads the padding layer's input instead.
2. `upgrade_v0_net`: each V0 layer becomes a V1 `layers` entry (enum type, fields moved
   into their `*_param` blocks). Of the net-level fields, Caffe keeps only name, input,
   input_dim and force_backward.

Where Caffe's upgrader stops (an unknown type, a padding layer feeding anything but one
conv/pool input) or reports a failed upgrade (a field that does not belong to the
layer's type, which it drops), this raises a SurgeryError naming the layer. What Caffe
drops without a word (new_num/new_channels, fields beside the V0 block, other net-level
fields) is dropped here too, with a note.
"""

from .. import caffe_pb2
from ..errors import SurgeryError

PADDING = "padding"

# V0 type string -> V1 enum name (Caffe knows exactly these).
V0_TYPES = {
    "accuracy": "ACCURACY",
    "bnll": "BNLL",
    "concat": "CONCAT",
    "conv": "CONVOLUTION",
    "data": "DATA",
    "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL",
    "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING",
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT",
    "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

_ANY = "*"
_DATA_SOURCES = ("data", "hdf5_data", "images", "window_data")
_WEIGHTED = ("conv", "innerproduct")

# V0 type -> the V1 block its own fields go to.
_BLOCK = {
    "conv": "convolution_param", "innerproduct": "inner_product_param",
    "pool": "pooling_param", "dropout": "dropout_param", "lrn": "lrn_param",
    "concat": "concat_param", "data": "data_param", "hdf5_data": "hdf5_data_param",
    "images": "image_data_param", "window_data": "window_data_param",
    "infogain_loss": "infogain_loss_param", "hdf5_output": "hdf5_output_param",
}


def _per_type(field, types):
    return {t: f"{_BLOCK[t]}.{field}" for t in types}


# V0 field -> {V0 type (or _ANY): "block.field" in the V1 layer}. A field set on a type
# missing from its entry is one Caffe's upgrader cannot place.
V0_FIELDS = {
    "num_output": _per_type("num_output", _WEIGHTED),
    "biasterm": _per_type("bias_term", _WEIGHTED),
    "weight_filler": _per_type("weight_filler", _WEIGHTED),
    "bias_filler": _per_type("bias_filler", _WEIGHTED),
    "pad": _per_type("pad", ("conv", "pool")),
    "kernelsize": _per_type("kernel_size", ("conv", "pool")),
    "group": _per_type("group", ("conv",)),
    "stride": _per_type("stride", ("conv", "pool")),
    "pool": _per_type("pool", ("pool",)),
    "dropout_ratio": _per_type("dropout_ratio", ("dropout",)),
    "local_size": _per_type("local_size", ("lrn",)),
    "alpha": _per_type("alpha", ("lrn",)),
    "beta": _per_type("beta", ("lrn",)),
    "k": _per_type("k", ("lrn",)),
    "source": _per_type("source", _DATA_SOURCES + ("infogain_loss",)),
    "batchsize": _per_type("batch_size", _DATA_SOURCES),
    "rand_skip": _per_type("rand_skip", ("data", "images")),
    "shuffle_images": _per_type("shuffle", ("images",)),
    "new_height": _per_type("new_height", ("images",)),
    "new_width": _per_type("new_width", ("images",)),
    "concat_dim": _per_type("concat_dim", ("concat",)),
    "det_fg_threshold": _per_type("fg_threshold", ("window_data",)),
    "det_bg_threshold": _per_type("bg_threshold", ("window_data",)),
    "det_fg_fraction": _per_type("fg_fraction", ("window_data",)),
    "det_context_pad": _per_type("context_pad", ("window_data",)),
    "det_crop_mode": _per_type("crop_mode", ("window_data",)),
    "hdf5_output_param": {"hdf5_output": "hdf5_output_param"},
    "scale": {_ANY: "transform_param.scale"},
    "meanfile": {_ANY: "transform_param.mean_file"},
    "cropsize": {_ANY: "transform_param.crop_size"},
    "mirror": {_ANY: "transform_param.mirror"},
    "blobs": {_ANY: "blobs"},
    "blobs_lr": {_ANY: "blobs_lr"},
    "weight_decay": {_ANY: "weight_decay"},
}
# V0 fields Caffe's upgrader has no place for; it drops them without a word.
V0_UNPLACED = ("new_num", "new_channels")
# Net-level fields Caffe keeps from a V0 net (besides the layers).
_NET_KEPT = ("name", "layers", "input", "input_dim", "force_backward")
# What a V0 `layers` entry carries outside its V0 block that Caffe keeps.
_CONNECTION_KEPT = ("layer", "bottom", "top")


def is_v0(net):
    """Caffe's test: some `layers` entry has a nested V0 `layer` block."""
    return any(entry.HasField("layer") for entry in net.layers)


def _name(entry, index):
    return entry.layer.name or entry.name or f"#{index}"


def merge_padding_layers(net):
    """(V0 net without padding layers, indices of the padding layers merged into a reader):
    Caffe's UpgradeV0PaddingLayers. Every padding layer goes; one that no layer reads goes
    without a trace. The input message is not changed; a second call finds nothing to do."""
    new = type(net)()
    new.CopyFrom(net)
    del new.layers[:]
    written_by = {blob: None for blob in net.input}   # blob -> index of its last writer
    merged = set()
    for index, entry in enumerate(net.layers):
        kind = entry.layer.type
        if kind != PADDING:
            new.layers.add().CopyFrom(entry)
        for slot, blob in enumerate(entry.bottom):
            if blob not in written_by:
                raise SurgeryError(f"bottom '{blob}' is neither a net input nor the top of an "
                                   "earlier layer", layer=_name(entry, index))
            source_index = written_by[blob]
            if source_index is None:
                continue
            source = net.layers[source_index]
            if source.layer.type != PADDING:
                continue
            _check_padding_reader(entry, index, source, source_index)
            target = new.layers[-1]
            target.layer.pad = source.layer.pad
            target.bottom[slot] = source.bottom[0]
            merged.add(source_index)
        for blob in entry.top:
            written_by[blob] = index
    return new, merged


def _check_padding_reader(entry, index, source, source_index):
    """Caffe's conditions for folding a padding layer into the layer that reads it."""
    pad_name = _name(source, source_index)
    if entry.layer.type not in ("conv", "pool"):
        raise SurgeryError(f"reads the output of padding layer '{pad_name}', but only a 'conv' "
                           f"or 'pool' layer can take over its pad (this is a "
                           f"'{entry.layer.type}' layer); Caffe's upgrader stops here too",
                           layer=_name(entry, index))
    if len(entry.bottom) != 1:
        raise SurgeryError(f"reads padding layer '{pad_name}' and has {len(entry.bottom)} "
                           "bottoms; a padding layer can only be merged into a layer with one",
                           layer=_name(entry, index))
    if len(source.bottom) != 1 or len(source.top) != 1:
        raise SurgeryError(f"has {len(source.bottom)} bottom(s) and {len(source.top)} top(s); "
                           "a padding layer must have exactly one of each",
                           layer=pad_name)


def upgrade_v0_net(net):
    """(V1 net, notes): Caffe's UpgradeV0Net, padding merge included."""
    for index, entry in enumerate(net.layers):
        if not entry.HasField("layer"):
            raise SurgeryError("is a V1 layer in a V0 net (other `layers` entries nest a V0 "
                               "`layer { }` block); write every layer in one format",
                               layer=entry.name or f"#{index}")
    padded, merged = merge_padding_layers(net)
    notes = []
    if merged:
        notes.append(f"V0 net: merged {_count(len(merged), 'padding layer')} into the "
                     "conv/pool layers that read them (their pad moved there)")
    unread = len(net.layers) - len(padded.layers) - len(merged)
    if unread:
        notes.append(f"V0 net: removed {_count(unread, 'padding layer')} whose output no "
                     "layer reads, as Caffe does")
    new = caffe_pb2.NetParameter()
    dropped = sorted({f.name for f, _ in padded.ListFields() if f.name not in _NET_KEPT})
    for name in _NET_KEPT:
        if name != "layers" and _is_set(padded, name):
            _copy(padded, name, new, name)
    unplaced = set()
    for index, entry in enumerate(padded.layers):
        new.layers.append(_v0_layer(entry, index, unplaced))
    notes.append(f"converted {_count(len(padded.layers), 'V0 layer')} "
                 "(`layers { layer { ... } }`) to V1 `layers` entries")
    if unplaced:
        notes.append(f"dropped {', '.join(sorted(unplaced))}, which Caffe's V0 upgrade also "
                     "drops (no V1 field holds them)")
    if dropped:
        notes.append(f"dropped the net-level field(s) {', '.join(dropped)}: Caffe's V0 upgrade "
                     "keeps only name, input, input_dim and force_backward")
    return new, notes


def _v0_layer(entry, index, unplaced):
    v0 = entry.layer
    name = _name(entry, index)
    extra = [f.name for f, _ in entry.ListFields() if f.name not in _CONNECTION_KEPT]
    if extra:
        unplaced.update(f"`{field}` beside a V0 block" for field in extra)
    layer = caffe_pb2.V1LayerParameter()
    layer.bottom.extend(entry.bottom)
    layer.top.extend(entry.top)
    kind = v0.type
    for field, value in v0.ListFields():
        if field.name == "name":
            layer.name = value
        elif field.name == "type":
            if value not in V0_TYPES:
                raise SurgeryError(f"V0 layer type '{value}' is not one Caffe's upgrader knows "
                                   f"({', '.join(sorted(V0_TYPES))})", layer=name)
            layer.type = caffe_pb2.V1LayerParameter.LayerType.Value(V0_TYPES[value])
        elif field.name in V0_UNPLACED:
            unplaced.add(f"`{field.name}`")
        else:
            targets = V0_FIELDS[field.name]
            target = targets.get(kind, targets.get(_ANY))
            if target is None:
                raise SurgeryError(f"V0 field `{field.name}` does not belong to a '{kind}' "
                                   "layer; Caffe's upgrader would drop it and report a failed "
                                   "upgrade. Remove it", layer=name)
            _put(layer, target, field, value, name)
    return layer


def _put(layer, path, field, value, layer_name):
    """Store a V0 value at `path` ("block.field") of a V1 layer, as Caffe's setters do."""
    *blocks, last = path.split(".")
    holder = layer
    for block in blocks:
        holder = getattr(holder, block)
    target = holder.DESCRIPTOR.fields_by_name[last]
    if target.enum_type is not None:                      # pool: same names in both enums
        value = target.enum_type.values_by_name[field.enum_type.values_by_number[value].name].number
    try:
        if field.is_repeated:
            getattr(holder, last).extend(value)
        elif target.is_repeated:
            getattr(holder, last).append(value)
        elif target.message_type is not None:
            getattr(holder, last).CopyFrom(value)
        else:
            setattr(holder, last, value)
    except (TypeError, ValueError) as exc:
        raise SurgeryError(f"V0 field `{field.name}` does not fit {path}: {exc}",
                           layer=layer_name) from None


def _is_set(message, name):
    fd = message.DESCRIPTOR.fields_by_name[name]
    return len(getattr(message, name)) > 0 if fd.is_repeated else message.HasField(name)


def _copy(source, name, target, target_name):
    fd = source.DESCRIPTOR.fields_by_name[name]
    if fd.is_repeated:
        getattr(target, target_name).extend(getattr(source, name))
    else:
        setattr(target, target_name, getattr(source, name))


def _count(number, noun):
    return f"{number} {noun}{'' if number == 1 else 's'}"
