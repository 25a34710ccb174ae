"""Load a net prototxt once, keeping everything the commands need to edit it losslessly.

`load_net(path)` reads the file into a lossless `Document`, binds it to the schema
(placeholders and fields the schema lacks are recorded, not fatal), and runs the
legacy upgrade. The result carries the upgraded net for analysis, the net as written
and the document for output, and the facts analysis must not guess: which layer
fields hold a `${NAME}` placeholder where a number is needed, and which layers have
an unknown field that may change their geometry.

A field the schema lacks, or an enum value it lacks, is a warning (a fork nobody
described to us), reported once per name; with `strict=True` it is an error. Inside a
block that decides geometry or weight shapes (`layers.SHAPE_PARAMS`) it makes the layer
opaque, and a name one slip away from a real field or value there (`kernel_sise`) is
taken for a typo and refused (one slip: a letter added, dropped, changed or swapped;
a looser likeness, YOLO's `region_param` beside `reduction_param`, is only named in the
warning); elsewhere (loss, data, transform, test-time parameters)
the near miss is named in the warning and the file loads. Where the graph itself
depends on it (phase rules, layer wiring, a V1 layer type) a near miss, or any unknown
value, is an error.
"""

import os
from typing import NamedTuple

from google.protobuf import descriptor as _d

from ..errors import SurgeryError
from ..layers import SHAPE_PARAMS
from ..unknowns import Unknowns
from .binding import in_shape_params
from .document import Document
from .hole import upgraded_path
from .prototxt import (_first_keyword, _has_content, _unknown_enum, _unknown_field,
                       enum_near_misses, parse_prototxt, read_text)
from .upgrade_v0 import is_v0

_STRING = (_d.FieldDescriptor.TYPE_STRING, _d.FieldDescriptor.TYPE_BYTES)
_TYPO_CUTOFF = 0.8
# Fields that decide which layers a phase has and how they connect, and the blocks made
# of such fields: a near miss of one, or a value the schema lacks in one, would silently
# change the graph.
_GRAPH_FIELDS = frozenset({"name", "type", "bottom", "top", "include", "exclude", "phase",
                           "layer", "layers", "input", "input_dim", "input_shape", "state"})
_GRAPH_BLOCKS = frozenset({"include", "exclude", "state", "input_shape"})


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
    doc, original, binding = Document.read_bound(
        text, path, bind_hint=lambda exc: _with_hint(exc, text, path))
    refuse_unknowns(binding, original, strict)
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
    warnings = unknown_field_warnings(binding, original)
    unknowns = _unknowns(binding, original, net)
    return NetFile(path, text, doc, binding, original, net, notes, warnings, unknowns)


def load_prototxt(path, *, upgrade=True):
    """Read and parse a net prototxt; bring legacy forms up to date unless upgrade=False.

    Upgraded loading is `load_net`, the one loader every command uses, so templates and
    fork fields load here too (use load_net for its warnings and unknowns)."""
    if not upgrade:
        path = os.fspath(path)
        return parse_prototxt(read_text(path), path)
    return load_net(path).net


def rebind(loaded, doc):
    """`loaded` as an edited document binds and upgrades (no re-scan of its text); the
    typo guard and warnings already ran on the file itself."""
    from .upgrade import upgrade_net

    original, binding = doc.to_message()
    net, notes = upgrade_net(original)
    return loaded._replace(document=doc, binding=binding, original=original, net=net,
                           notes=notes, unknowns=_unknowns(binding, original, net))


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


def refuse_unknowns(binding, message, strict):
    """SurgeryError for what the schema lacks and must not be kept (module docstring):
    with strict everything; else a solver's fields in a file with no layers (a solver
    passed as a net), an unknown value the graph depends on, and a near miss where the
    graph or shapes depend on it."""
    solver_fields = message.DESCRIPTOR.file.message_types_by_name["SolverParameter"].fields_by_name
    layerless = (message.DESCRIPTOR.name == "NetParameter"
                 and not len(message.layer) and not len(message.layers))
    for uf in binding.unknown_fields:
        if layerless and not uf.path and uf.name in solver_fields and uf.value is None:
            raise SurgeryError(_unknown_field(uf.message_type, uf.name),
                               file=uf.file, line=uf.line, col=uf.col)
        explained = _explain(uf, message)
        near = _near_miss(uf, message)
        slip = near is not None and one_slip(uf.name if uf.value is None else uf.value, near)
        if strict:
            if not near:
                kind = "fields" if uf.value is None else "values"
                explained += f" (--strict refuses {kind} the schema does not know)"
        elif uf.value is not None and _decides_graph(uf):
            explained += "; it decides which layers the net has, so it cannot be kept"
        elif not (slip and (_decides_shapes(uf, near) or _in_solver(message))):
            continue
        raise SurgeryError(explained, file=uf.file, line=uf.line, col=uf.col)


def _explain(uf, message):
    """The loader's one-line explanation (did-you-mean, where a field belongs)."""
    if uf.value is None:
        return _unknown_field(uf.message_type, uf.name)
    return _unknown_enum(_enum_of(uf, message).full_name, uf.value)


def _enum_of(uf, message):
    return _message_descriptor(message.DESCRIPTOR, uf.path).fields_by_name[uf.name].enum_type


def _near_miss(uf, message):
    """The real field or enum name one slip away from an unknown one, or None."""
    desc = _message_descriptor(message.DESCRIPTOR, uf.path)
    if desc is None:
        return None
    if uf.value is None:
        import difflib  # only for a field the schema lacks: most files have none

        close = difflib.get_close_matches(uf.name, list(desc.fields_by_name), n=1,
                                          cutoff=_TYPO_CUTOFF)
    else:
        close = enum_near_misses(_enum_of(uf, message), uf.value, n=1)
    return close[0] if close else None


def one_slip(written, known):
    """Whether `written` is `known` with one slip of the keyboard: a letter added, dropped,
    changed or swapped with the next, or the case changed (`kernel_sise`, `pooling_parm`,
    `MAXX`, `max`). What the typo guard refuses; a looser likeness is only named in the
    warning, since fork fields often resemble real ones: YOLO's `region_param` is not a
    slip of `reduction_param`, nor R-FCN's `psroi_pooling_param` of `roi_pooling_param`."""
    a, b = written.lower(), known.lower()
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        return a[i + 1:] == b[i + 1:] or (a[i:i + 2] == b[i:i + 2][::-1] and a[i + 2:] == b[i + 2:])
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    return longer[i + 1:] == shorter[i:]


def _in_solver(message):
    """A solver's near misses are errors: a misspelt setting (solver_typ, base_lrr) would
    silently train with the default."""
    return message.DESCRIPTOR.name == "SolverParameter"


def _blocks(path):
    return {p for p in path if isinstance(p, str)}


def _decides_graph(uf):
    return uf.name in _GRAPH_FIELDS or bool(_blocks(uf.path) & _GRAPH_BLOCKS)


def _decides_shapes(uf, near):
    """Whether an unknown name whose near miss is `near` sits where the graph, a window
    or a weight shape depends on it: inside such a block, or as a layer/net field that
    resembles one."""
    if in_shape_params(uf.path) or _blocks(uf.path) & _GRAPH_BLOCKS:
        return True
    top_level = not uf.path or (len(uf.path) == 2 and uf.path[0] in ("layer", "layers"))
    return top_level and uf.value is None and near in (SHAPE_PARAMS | _GRAPH_FIELDS)


def unknown_field_warnings(binding, message):
    """One line per unknown field name or value (its first occurrence, with the count),
    naming a near miss when there is one."""
    seen = {}
    for uf in binding.unknown_fields:
        seen.setdefault((uf.name, uf.value), []).append(uf)
    lines = []
    for found in seen.values():
        first = found[0]
        more = f" ({len(found)} times)" if len(found) > 1 else ""
        near = _near_miss(first, message)
        hint = f" (did you mean `{near}`?)" if near else ""
        what = "kept verbatim"
        if any(in_shape_params(uf.path) for uf in found):
            what += "; the geometry and weight shapes of the layers holding it are unknown"
        lines.append(f"{first.file}:{first.line}:{first.col}: unknown {first.what}{more}"
                     f"{hint}: {what}")
    return lines


def _unknowns(binding, original, net):
    """Unknowns keyed by layer name: numeric placeholder fields and opaque layers."""
    values, opaque = {}, {}
    for ph in binding.placeholders:
        name = binding.layer_name(ph.path)
        if name is None or _is_string(original, ph.path):
            continue
        values.setdefault(name, set()).add(upgraded_path(ph.path[2:]))
    for uf in binding.unknown_fields:
        if uf.layer is not None and in_shape_params(uf.path):
            opaque.setdefault(uf.layer, f"unknown {uf.what} ({uf.file}:{uf.line}:{uf.col}) "
                                        "may change its geometry or weight shapes")
    return Unknowns({k: frozenset(v) for k, v in values.items()}, opaque)


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
