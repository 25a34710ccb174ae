"""Write a changed net as a minimal edit of the file it was loaded from.

Passes return a new (upgraded) NetParameter. This module finds what differs from the
net the file describes (layers removed, fields set or cleared, net-level settings) and
applies exactly those edits to the lossless Document, so every unchanged line stays
byte-identical: comments, layout, `${NAME}` placeholders and fields the schema does not
know all survive. The edits are made in the file's own dialect: a V1 `layers { }` file
stays V1, an `input:` header stays a header, and a file that spells dilation as
DeepLab v1's `hole` gets `hole`. The edited text is then loaded again exactly as the
input was; it must give the new net, the same placeholders and the same unknown
fields, or the canonical protobuf text is written instead (with a note), unless that
would lose a placeholder or an unknown field, which is refused. (A layer block no edit
touched holds the tokens it was loaded from, so only the edited blocks are bound again.) A V0 net, whose layers
Caffe's upgrade merges and rebuilds, always gets the canonical text, with a note.
"""

from google.protobuf.descriptor import FieldDescriptor

from ..errors import SurgeryError
from .. import caffe_pb2
from .binding import bind
from .document import Document
from .hole import as_hole, has_hole
from .message import copy_except
from .netfile import rebind
from .prototxt import format_prototxt
from .tokens import Message
from .upgrade import upgrade_net
from .upgrade_v0 import is_v0

MESSAGE = FieldDescriptor.TYPE_MESSAGE
_HEADER_FIELDS = ("layer", "layers", "input", "input_dim", "input_shape")
_CURRENT = caffe_pb2.LayerParameter.DESCRIPTOR


class _Fallback(Exception):
    """The change cannot be written as a minimal edit."""


def render(loaded, new, *, canonical=False):
    """(text, note): `new` written as an edit of `loaded` (a NetFile), or canonical text.

    `note` says why the canonical form was written when it was not asked for."""
    if canonical:
        refuse_lossy(loaded, "--canonical writes protobuf's own formatting", unknown_fields=False)
        return format_prototxt(new), _dropped_note(loaded)
    if new == loaded.net:
        return loaded.text, None
    try:
        return minimal_edit(loaded, new), None
    except _Fallback as exc:
        reason = f"could not keep the file's layout ({exc})"
        refuse_lossy(loaded, reason)
        return format_prototxt(new), f"{reason}; wrote canonical form"


def refuse_lossy(loaded, why, *, unknown_fields=True):
    """SurgeryError when canonical text would lose a numeric placeholder (or, unless
    unknown_fields is False, a field the schema does not know)."""
    numeric = loaded.numeric_placeholders
    if numeric:
        first = numeric[0]
        line, col = loaded.position(first)
        raise SurgeryError(f"template placeholder {first.text} ({len(numeric)} in a number "
                           f"field in all) would be lost: {why}; substitute the placeholders "
                           "first", file=loaded.path, line=line, col=col)
    if unknown_fields and loaded.binding.unknown_fields:
        uf = loaded.binding.unknown_fields[0]
        raise SurgeryError(f"unknown {uf.what} would be lost: {why}",
                           file=uf.file, line=uf.line, col=uf.col)


def _dropped_note(loaded):
    unknown = loaded.binding.unknown_fields
    if not unknown:
        return None
    first = unknown[0]
    return (f"--canonical dropped {len(unknown)} field(s) or value(s) the schema does not "
            f"know (first the {first.what} at {first.file}:{first.line})")


def minimal_edit(loaded, new):
    """The file's text with exactly the edits that turn `loaded.net` into `new`.

    The loaded document is edited in place (it is parsed again only if an earlier
    render already edited it)."""
    if is_v0(loaded.original):
        raise _Fallback("a V0 net (`layers { layer { ... } }`) has no way to write the "
                        "upgraded layers' fields")
    doc = loaded.document
    if doc.edited:
        doc = Document.parse(loaded.text, loaded.path)
    written = list(loaded.original.layers) or list(loaded.original.layer)
    nodes = doc.layers()
    if len(nodes) != len(written):
        raise _Fallback("the file's layer blocks do not match the parsed net")
    added = len(loaded.net.layer) - len(written)   # 1 when an input header became a layer
    if added not in (0, 1):
        raise _Fallback("the upgrade changed the number of layers")
    if added and (not len(new.layer) or new.layer[0] != loaded.net.layer[0]):
        raise _Fallback("the input header's layer changed")
    header_edited = _edit_net_fields(doc, loaded.net, new)
    uses_hole = any(has_hole(layer) for layer in written)
    removed, edited = _edit_layers(doc, nodes, written, list(loaded.net.layer[added:]),
                                   list(new.layer[added:]), uses_hole)
    if header_edited:
        _check_reload(loaded, doc, new, removed)
    else:
        _check_reload_layers(loaded, doc, new, nodes, edited)
    return doc.to_text()


def _edit_net_fields(doc, old, new):
    edits = _field_edits(old, new, skip=_HEADER_FIELDS)
    for path, value in edits:
        if value is None:
            raise _Fallback(f"net-level field '{path}' was removed")
        doc.set_top_field(path, value)
    return bool(edits)


def _edit_layers(doc, nodes, written, old_layers, new_layers, uses_hole):
    """Apply layer removals, insertions and field edits; returns the indices of the
    removed layers and of the layers whose fields were edited. A new layer whose name the
    file does not have, met where the file's next layer is still to come, is inserted
    after the previous one."""
    j, removed, edited = 0, set(), set()
    old_names = {layer.name for layer in old_layers}
    new_names = {layer.name for layer in new_layers}
    v1 = bool(written) and written[0].DESCRIPTOR.name != _CURRENT.name
    anchor = None
    for i, (node, as_written, old) in enumerate(zip(nodes, written, old_layers)):
        while j < len(new_layers) and new_layers[j].name not in old_names and \
                old.name in new_names and new_layers[j].name != old.name:
            anchor = _insert(doc, anchor, new_layers[j], v1)
            j += 1
        new = new_layers[j] if j < len(new_layers) else None
        replaced = new is not None and old.name not in new_names and new.name not in old_names
        if new is None or (new.name != old.name and not replaced):
            doc.remove_layer(node)
            removed.add(i)
            continue
        # Same name, or a layer rewritten in place under a new name (fc6 -> fc6-conv).
        j += 1
        anchor = node
        if new == old:
            continue
        edited.add(i)
        for path, value in _field_edits(old, new):
            for wpath, wvalue in _in_dialect(as_written, path, value, uses_hole):
                if wvalue is None:
                    doc.remove_field(node, wpath)
                else:
                    doc.set_field(node, wpath, wvalue)
    while j < len(new_layers) and new_layers[j].name not in old_names:
        anchor = _insert(doc, anchor, new_layers[j], v1)
        j += 1
    if j != len(new_layers):
        raise _Fallback("layers were reordered")
    return removed, edited


def _insert(doc, anchor, layer, v1):
    """Write a new layer after `anchor` (a layer node), indented like the file."""
    if anchor is None:
        raise _Fallback("a layer was added before the first one")
    if v1:
        raise _Fallback("a layer was added to a V1 file")
    net = caffe_pb2.NetParameter()
    net.layer.add().CopyFrom(layer)
    text = format_prototxt(net)
    if doc.indent_unit != "  ":
        text = "\n".join(_reindent(line, doc.indent_unit) for line in text.split("\n"))
    before = len(doc.layers())
    doc.add_layer_after(anchor, text)
    return doc.layers()[doc.layers().index(anchor) + 1] if len(doc.layers()) > before else anchor


def _reindent(line, unit):
    stripped = line.lstrip(" ")
    return unit * ((len(line) - len(stripped)) // 2) + stripped


def _in_dialect(as_written, path, value, uses_hole):
    """[(path, value)] spelling an edit of the upgraded layer in the file's own form."""
    if path == "convolution_param.dilation" and (uses_hole or has_hole(as_written)):
        return as_hole(as_written, value)
    if as_written.DESCRIPTOR.name != _CURRENT.name:           # a V1 `layers` entry
        head = path.split(".", 1)[0].split("[", 1)[0]
        ours, theirs = _CURRENT.fields_by_name[head], as_written.DESCRIPTOR.fields_by_name.get(head)
        if theirs is None or theirs.type != ours.type or theirs.is_repeated != ours.is_repeated or \
                (ours.message_type is not None and
                 theirs.message_type.full_name != ours.message_type.full_name):
            raise _Fallback(f"'{path}' is written differently in a V1 layer")
    return [(path, value)]


def _field_edits(old, new, prefix="", skip=()):
    """(path, value or None) for every leaf that differs; None means remove. Fields in
    `skip` are left out; so are fields neither message sets (they cannot differ)."""
    edits = []
    present = {fd.name for message in (old, new) for fd, _ in message.ListFields()}
    fields = new.DESCRIPTOR.fields_by_name
    for fd in sorted((fields[name] for name in present), key=lambda fd: fd.index):
        if fd.name in skip:
            continue
        path = prefix + fd.name
        a, b = getattr(old, fd.name), getattr(new, fd.name)
        if fd.is_repeated:
            if list(a) == list(b):
                continue
            if fd.type == MESSAGE:
                if len(b) > len(a):
                    raise _Fallback(f"repeated message field '{path}' grew")
                for i, (x, y) in enumerate(zip(a, b)):
                    if x != y:
                        edits.extend(_field_edits(x, y, f"{path}[{i}]."))
                # entries gone from the end (a BN's four param specs on its BatchNorm): the
                # last first, so the indices of the others hold
                if len(b) < len(a):
                    edits.extend([(path, None)] if not len(b) else
                                 [(f"{path}[{i}]", None) for i in reversed(range(len(b), len(a)))])
                continue
            edits.append((path, list(b) if len(b) else None))
        elif fd.type == MESSAGE:
            if old.HasField(fd.name) and not new.HasField(fd.name):
                edits.append((path, None))
            elif new.HasField(fd.name) and a != b:
                edits.extend(_field_edits(a, b, path + "."))
        elif old.HasField(fd.name) != new.HasField(fd.name) or a != b:
            edits.append((path, b if new.HasField(fd.name) else None))
    return edits


def _check_reload(loaded, doc, new, removed):
    """Bind the edited document as the input was bound: it must give exactly `new`, and
    keep every placeholder and unknown field outside the removed layers. (The tokens of
    the tree are what `to_text` writes, so binding the tree proves what re-reading the
    text would, without scanning it again.)"""
    again = rebind(loaded, doc)
    if again.net != new:
        raise _Fallback("the edited text did not load back to the new net")

    def kept(path):
        return not (len(path) > 1 and path[0] in ("layer", "layers") and path[1] in removed)

    if [p.text for p in again.placeholders] != \
            [p.text for p in loaded.placeholders if kept(p.path)]:
        raise _Fallback("an edit touched a placeholder")
    if [(u.name, u.value) for u in again.binding.unknown_fields] != \
            [(u.name, u.value) for u in loaded.binding.unknown_fields if kept(u.path)]:
        raise _Fallback("an edit touched an unknown field")


def _check_reload_layers(loaded, doc, new, nodes, edited):
    """What `_check_reload` proves, when no net-level field changed, binding only the
    layer blocks that were edited or inserted: every other block holds exactly the tokens
    it was bound from when the file was loaded, so it binds to the same layer, with the
    same placeholders and unknown fields, as before (and `_edit_layers` found that layer
    unchanged in `new`). Each edited block must keep its own placeholders and unknown
    fields, an inserted one has none, and the blocks, upgraded as the input was, must
    make exactly `new`. In `layer` form the upgrade is one layer at a time (the header's
    Input layer aside, which is unchanged), so only the bound blocks are upgraded and
    compared; a V1 file's upgrade looks across layers, so its whole net is."""
    written = list(loaded.original.layers) or list(loaded.original.layer)
    index = {id(node): i for i, node in enumerate(nodes)}
    key = "layers" if len(loaded.original.layers) else "layer"
    blocks = doc.layers()
    added = len(new.layer) - len(blocks)      # the header's Input layer, if any
    if key == "layer" and added != len(loaded.net.layer) - len(written):
        raise _Fallback("the edited text did not load back to the new net")
    picks = []          # (position in blocks, index in the file or None) of each bound
    for k, node in enumerate(blocks):
        i = index.get(id(node))
        if i is None or i in edited:
            picks.append((k, i))
    # One binding of every block bound again (values met before are converted once).
    message = type(loaded.original)()
    found = bind(Message(None, [blocks[k] for k, _ in picks], None), message,
                 filename=doc.filename)
    rebound = getattr(message, key)
    now, before = _by_block(found), _by_block(loaded.binding)
    for n, (k, i) in enumerate(picks):
        # (key, None) for an inserted block: nothing of the file's is in it
        (marks, unknown), (had_marks, had_unknown) = (now.get((key, n), ([], [])),
                                                      before.get((key, i), ([], [])))
        if marks != had_marks:
            raise _Fallback("an edit touched a placeholder")
        if unknown != had_unknown:
            raise _Fallback("an edit touched an unknown field")
    if key == "layer":
        upgraded = upgrade_net(message, in_place=True)[0].layer
        if any(layer != new.layer[added + k] for (k, _), layer in zip(picks, upgraded)):
            raise _Fallback("the edited text did not load back to the new net")
        return
    bound = dict(zip((k for k, _ in picks), rebound))
    again = copy_except(loaded.original, (key,))
    getattr(again, key).extend(bound[k] if k in bound else written[index[id(node)]]
                               for k, node in enumerate(blocks))
    if upgrade_net(again, in_place=True)[0] != new:
        raise _Fallback("the edited text did not load back to the new net")


def _by_block(binding):
    """{(key, index) of a layer block: ([placeholder texts], [(unknown field name, value)])}."""
    out = {}
    for p in binding.placeholders:
        out.setdefault(tuple(p.path[:2]), ([], []))[0].append(p.text)
    for u in binding.unknown_fields:
        out.setdefault(tuple(u.path[:2]), ([], []))[1].append((u.name, u.value))
    return out


def unified_diff(path, before, after, out_name):
    import difflib      # only for --diff

    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                        fromfile=str(path), tofile=str(out_name)))
