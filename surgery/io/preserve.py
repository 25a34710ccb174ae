"""Write a changed net as a minimal edit of its source file.

Passes return a new NetParameter; this module finds what differs from the net the file
describes (layers removed, fields set or cleared) and applies exactly those edits to the
lossless Document, so unchanged lines stay byte-identical and comments survive. If the
file needed a legacy upgrade, or the edited text would not parse back to the new net,
the canonical protobuf text is written instead and the caller is told why.
"""

import difflib

from google.protobuf.descriptor import FieldDescriptor

from ..errors import SurgeryError
from .document import Document
from .prototxt import format_prototxt, parse_prototxt

MESSAGE = FieldDescriptor.TYPE_MESSAGE


def _field_edits(old, new, prefix=""):
    """(path, value or None) for every leaf that differs; None means remove."""
    edits = []
    for fd in new.DESCRIPTOR.fields:
        path = prefix + fd.name
        a, b = getattr(old, fd.name), getattr(new, fd.name)
        if fd.is_repeated:
            if list(a) == list(b):
                continue
            if fd.type == MESSAGE:
                raise _Fallback(f"repeated message field '{path}' changed")
            edits.append((path, list(b) if len(b) else None))
        elif fd.type == MESSAGE:
            if old.HasField(fd.name) and not new.HasField(fd.name):
                edits.append((path, None))
            elif new.HasField(fd.name) and a != b:
                edits.extend(_field_edits(a, b, path + "."))
        elif old.HasField(fd.name) != new.HasField(fd.name) or a != b:
            edits.append((path, b if new.HasField(fd.name) else None))
    return edits


class _Fallback(Exception):
    """The change cannot be written as a minimal edit."""


def _edit(doc, old_layers, new_layers):
    nodes = doc.layers()
    if len(nodes) != len(old_layers):
        raise _Fallback("the file's layer blocks do not match the parsed net")
    j = 0
    for i, old in enumerate(old_layers):
        new = new_layers[j] if j < len(new_layers) else None
        if new is None or new.name != old.name:
            doc.remove_layer(nodes[i])
            continue
        j += 1
        if new == old:
            continue
        for path, value in _field_edits(old, new):
            if value is None:
                doc.remove_field(nodes[i], path)
            else:
                doc.set_field(nodes[i], path, value)
    if j != len(new_layers):
        raise _Fallback("layers were added or reordered")


def _header_only_upgrade(as_written, original, new):
    """The layer lists to edit when the only upgrade was `input:` header -> Input layer."""
    if len(as_written.layers) or not len(as_written.input) or len(original.layer) != len(as_written.layer) + 1:
        return None
    if list(original.layer[1:]) != list(as_written.layer) or not len(new.layer) or new.layer[0] != original.layer[0]:
        return None
    return list(original.layer[1:]), list(new.layer[1:])


def _net_fields_equal(a, b):
    return all(getattr(a, fd.name) == getattr(b, fd.name)
               for fd in a.DESCRIPTOR.fields if fd.name not in ("layer", "layers"))


def render(path, original, new, *, canonical=False):
    """(text, note): the new net as text, a minimal edit of `path` unless impossible.

    `original` is the net as loaded (after any upgrade); `note` explains a fallback."""
    if canonical:
        return format_prototxt(new), None
    doc = Document.load(path)
    as_written, binding = doc.to_message()
    if binding.placeholders or binding.unknown_fields:
        raise SurgeryError("templates and unknown fields need the format-preserving loader",
                           file=str(path))
    if as_written == original:
        if not _net_fields_equal(original, new):
            return format_prototxt(new), "net-level fields changed; wrote canonical form"
        layers = list(original.layer), list(new.layer)
        expected = new
    else:
        layers = _header_only_upgrade(as_written, original, new)
        if layers is None:
            return format_prototxt(new), ("the input used a legacy format, so the output is the "
                                          "upgraded net in canonical form")
        expected = type(new)()
        expected.CopyFrom(as_written)
        del expected.layer[:]
        expected.layer.extend(layers[1])
    try:
        _edit(doc, *layers)
        text = doc.to_text()
        if parse_prototxt(text, str(path)) != expected:
            raise _Fallback("the edited text did not parse back to the new net")
    except (_Fallback, SurgeryError) as exc:
        return format_prototxt(new), f"could not keep the file's layout ({exc}); wrote canonical form"
    return text, None


def unified_diff(path, before, after, out_name):
    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                        fromfile=str(path), tofile=str(out_name)))
