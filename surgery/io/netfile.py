"""Load a net prototxt once, keeping everything the commands need to edit it losslessly.

`load_net(path)` reads the file into a lossless `Document`, binds it to the schema
(placeholders and fields the schema lacks are recorded, not fatal), and runs the
legacy upgrade. The result carries the upgraded net for analysis, the net as written
and the document for output, and the facts analysis must not guess: which layer
fields hold a `${NAME}` placeholder where a number is needed, and which layers have
an unknown field that may change their geometry.

A field the schema lacks is a warning (a fork nobody described to us), reported once
per field name; with `strict=True` it is an error. A name one slip away from a field
of the same message (`dilaton`) is taken for a typo and is always an error.
"""

import difflib
import os
from typing import NamedTuple

from google.protobuf import descriptor as _d

from ..analysis import Unknowns
from ..errors import SurgeryError
from .binding import GEOMETRY_PARAMS
from .document import Document
from .prototxt import _first_keyword, _has_content, _unknown_field, parse_prototxt, read_text
from .upgrade_v0 import is_v0

_STRING = (_d.FieldDescriptor.TYPE_STRING, _d.FieldDescriptor.TYPE_BYTES)
_TYPO_CUTOFF = 0.8


class NetFile(NamedTuple):
    path: str
    text: str             # the file as written
    document: object      # the lossless Document (edit it, then to_text())
    binding: object       # binding.Binding: nodes, placeholders, unknown fields
    original: object      # NetParameter as written (legacy forms kept)
    net: object           # upgraded NetParameter, for analysis and passes
    notes: list           # what the upgrade changed
    warnings: list        # one line per unknown field name, with FILE:LINE:COL
    unknowns: Unknowns    # what analysis must treat as unknown

    @property
    def placeholders(self):
        """[Placeholder(path, text)] in file order (paths index the as-written message)."""
        return self.binding.placeholders

    @property
    def numeric_placeholders(self):
        """Placeholders in number/enum/bool fields: left unset in `net`."""
        return [p for p in self.binding.placeholders if not _is_string(self.original, p.path)]

    @property
    def upgraded(self):
        return bool(self.notes)

    def position(self, placeholder):
        """(line, col) of a placeholder's value, (None, None) if it cannot be found."""
        node = self.binding.nodes.get(placeholder.path)
        for value in (node.values if node is not None else ()):
            if value.text == placeholder.text:
                return value.tokens[0].line, value.tokens[0].col
        return None, None


def load_net(path, *, strict=False):
    """Read, bind and upgrade a net prototxt; SurgeryError with FILE:LINE:COL on bad input."""
    path = os.fspath(path)
    return load_text(read_text(path), path, strict=strict)


def load_text(text, path="<string>", *, strict=False):
    """`load_net` for text already read (`path` names it in messages)."""
    from .upgrade import MixedLayerFormats, upgrade_net  # late, as in prototxt.py

    if not _has_content(text):
        raise SurgeryError("file is empty (nothing but whitespace or comments)", file=path)
    doc = Document.parse(text, path)
    try:
        original, binding = doc.to_message()
    except SurgeryError as exc:
        raise _with_hint(exc, text, path) from None
    refuse_typos(binding, original, strict)
    try:
        net, notes = upgrade_net(original)
    except MixedLayerFormats as exc:
        exc.file = path
        exc.line, exc.col = _first_keyword(text, "layers") or (None, None)
        raise
    except SurgeryError as exc:
        exc.file = exc.file or path
        raise
    _refuse_v0_placeholders(binding, original, path)
    warnings = unknown_field_warnings(binding)
    unknowns = _unknowns(binding, original, net)
    return NetFile(path, text, doc, binding, original, net, notes, warnings, unknowns)


def _refuse_v0_placeholders(binding, original, path):
    """A number placeholder in a V0 net: its layers are renumbered and regrouped by the
    upgrade, so analysis could not tell which upgraded field stays open."""
    if not is_v0(original):
        return
    for ph in binding.placeholders:
        if not _is_string(original, ph.path):
            node = binding.nodes.get(ph.path)
            token = node.values[0].tokens[0] if node is not None and node.values else None
            raise SurgeryError(f"template placeholder {ph.text} in a number field of a V0 net; "
                               "substitute it before using this net",
                               file=path, line=getattr(token, "line", None),
                               col=getattr(token, "col", None))


def _with_hint(exc, text, path):
    """The text_format loader's explanation (did-you-mean, V1 enum types) when it
    fails at the same place; else the document's own error."""
    try:
        parse_prototxt(text, path)
    except SurgeryError as other:
        if other.line == exc.line and "placeholder" not in other.message:
            return other
    return exc


def refuse_typos(binding, message, strict):
    """Strict: every unknown field is an error. Otherwise only near-misses of a real field,
    and a file with no layers whose unknown fields are a solver's (a solver passed as a net)."""
    solver_fields = message.DESCRIPTOR.file.message_types_by_name["SolverParameter"].fields_by_name
    layerless = (message.DESCRIPTOR.name == "NetParameter"
                 and not len(message.layer) and not len(message.layers))
    for uf in binding.unknown_fields:
        if layerless and not uf.path and uf.name in solver_fields:
            raise SurgeryError(_unknown_field(uf.message_type, uf.name),
                               file=uf.file, line=uf.line, col=uf.col)
        desc = _message_descriptor(message.DESCRIPTOR, uf.path)
        names = list(desc.fields_by_name) if desc is not None else []
        typo = difflib.get_close_matches(uf.name, names, n=1, cutoff=_TYPO_CUTOFF)
        if strict or typo:
            explained = _unknown_field(uf.message_type, uf.name)
            if strict and not typo:
                explained += " (--strict refuses fields the schema does not know)"
            raise SurgeryError(explained, file=uf.file, line=uf.line, col=uf.col)


def unknown_field_warnings(binding):
    """One line per unknown field name (its first occurrence, with the count)."""
    seen = {}
    for uf in binding.unknown_fields:
        seen.setdefault(uf.name, []).append(uf)
    lines = []
    for name, found in seen.items():
        first = found[0]
        more = f" ({len(found)} times)" if len(found) > 1 else ""
        what = "kept verbatim"
        if any(_in_geometry(uf.path) for uf in found):
            what += "; the geometry of the layers holding it is unknown"
        lines.append(f"{first.file}:{first.line}:{first.col}: unknown field `{name}` in "
                     f"{first.message_type}{more}: {what}")
    return lines


def _in_geometry(path):
    return any(p in GEOMETRY_PARAMS for p in path if isinstance(p, str))


def _unknowns(binding, original, net):
    """Unknowns keyed by layer name: numeric placeholder fields and opaque layers."""
    values, opaque = {}, {}
    for ph in binding.placeholders:
        name = binding.layer_name(ph.path)
        if name is None or _is_string(original, ph.path):
            continue
        values.setdefault(name, set()).add(_upgraded_path(ph.path[2:]))
    for uf in binding.unknown_fields:
        if uf.layer is not None and _in_geometry(uf.path):
            opaque.setdefault(uf.layer, f"unknown field `{uf.name}` in {uf.message_type} "
                                        f"({uf.file}:{uf.line}:{uf.col}) may change its geometry")
    return Unknowns({k: frozenset(v) for k, v in values.items()}, opaque)


def _upgraded_path(path):
    """A path inside a layer, as the upgraded layer spells it (DeepLab `hole` is `dilation`)."""
    if path[:1] == ("convolution_param",) and len(path) > 1 and str(path[1]).startswith("hole"):
        return ("convolution_param", "dilation")
    return tuple(path)


def _message_descriptor(desc, path):
    for comp in path:
        if isinstance(comp, int):
            continue
        fd = desc.fields_by_name.get(comp)
        if fd is None or fd.message_type is None:
            return None
        desc = fd.message_type
    return desc


def _is_string(message, path):
    """Whether the field at `path` (a path of the as-written message) holds text."""
    comps = list(path)
    if isinstance(comps[-1], int):
        comps.pop()
    desc = _message_descriptor(message.DESCRIPTOR, comps[:-1])
    fd = desc.fields_by_name.get(comps[-1]) if desc is not None else None
    return fd is not None and fd.type in _STRING
