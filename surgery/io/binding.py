"""Bind a parsed prototxt tree to the protobuf schema.

Produces the message `google.protobuf.text_format.Parse` would, but keeps
going where Parse stops: a field the schema lacks, or an enum value it lacks
(a fork's own mode), is recorded, left unset in the message and kept in the
document verbatim; a `${NAME}` placeholder is recorded and either kept
literally (string fields) or left unset (numbers, enums, bools).
Scalar conversion reuses protobuf's own public helpers so values agree
exactly with Parse.
"""

from typing import NamedTuple, Optional

from google.protobuf import descriptor as _d
from google.protobuf import text_encoding, text_format

from ..errors import SurgeryError
from ..layers import SHAPE_PARAMS
from .tokens import Message, Value

_SIGNED32 = (_d.FieldDescriptor.TYPE_INT32, _d.FieldDescriptor.TYPE_SINT32,
             _d.FieldDescriptor.TYPE_SFIXED32)
_SIGNED64 = (_d.FieldDescriptor.TYPE_INT64, _d.FieldDescriptor.TYPE_SINT64,
             _d.FieldDescriptor.TYPE_SFIXED64)
_UNSIGNED32 = (_d.FieldDescriptor.TYPE_UINT32, _d.FieldDescriptor.TYPE_FIXED32)
_UNSIGNED64 = (_d.FieldDescriptor.TYPE_UINT64, _d.FieldDescriptor.TYPE_FIXED64)
_FLOATS = (_d.FieldDescriptor.TYPE_FLOAT, _d.FieldDescriptor.TYPE_DOUBLE)
_STRINGS = (_d.FieldDescriptor.TYPE_STRING, _d.FieldDescriptor.TYPE_BYTES)
_LAYER_KEYS = ("layer", "layers")


class Placeholder(NamedTuple):
    """A field whose value is or contains `${...}`; path locates the field."""
    path: tuple
    text: str


class UnknownField(NamedTuple):
    """A field the schema does not know, or (`value` set) a known enum field holding a
    value the schema does not know; kept verbatim in the document, unset in the message."""
    file: str
    line: int
    col: int
    name: str
    message_type: str    # full name of the enclosing message, e.g. caffe.ConvolutionParameter
    path: tuple          # path of the enclosing message
    layer: Optional[str]
    value: Optional[str] = None

    @property
    def what(self):
        """'field `x` in caffe.M' or 'value `X` of caffe.M.field'."""
        if self.value is None:
            return f"field `{self.name}` in {self.message_type}"
        return f"value `{self.value}` of {self.message_type}.{self.name}"

    def __str__(self):
        return f"{self.file}:{self.line}:{self.col}: unknown {self.what}"


class Binding:
    """What `Document.to_message` learned besides the message itself."""

    def __init__(self, message, root=None, filename=None):
        self.message = message
        self.placeholders = []     # [Placeholder(path, text)]
        self.unknown_fields = []   # [UnknownField]
        self.placeholder_nodes = {}   # path -> Field node, for each placeholder
        self._root, self._filename, self._nodes = root, filename, None

    @property
    def nodes(self):
        """{path: Field node it came from}, for every field; found when first asked (by
        binding the tree again), since holding a node per field would hold the whole
        token tree. A placeholder's node is the one bound."""
        if self._nodes is None:
            nodes = {}
            if self._root is not None:
                scratch = type(self.message)()
                _Binder(Binding(scratch), self._filename, False, nodes).message(
                    self._root, scratch, ())
            nodes.update(self.placeholder_nodes)
            self._nodes = nodes
        return self._nodes

    def layer_name(self, path):
        """Name of the layer a path lies in (None outside layers)."""
        if len(path) >= 2 and path[0] in _LAYER_KEYS:
            layers = getattr(self.message, path[0], None)
            if layers is not None and path[1] < len(layers):
                return layers[path[1]].name
        return None

    def placeholders_by_layer(self):
        """{layer name or None: [(path inside the layer, text)]}."""
        out = {}
        for ph in self.placeholders:
            name = self.layer_name(ph.path)
            sub = ph.path[2:] if name is not None else ph.path
            out.setdefault(name, []).append((sub, ph.text))
        return out

    def geometry_unknown_layers(self):
        """Layers with unknown fields or values in a block that decides shapes, in order."""
        names = []
        for uf in self.unknown_fields:
            if uf.layer is not None and in_shape_params(uf.path):
                if uf.layer not in names:
                    names.append(uf.layer)
        return names


def in_shape_params(path):
    """Whether a path lies inside a parameter block that decides geometry or weight shapes."""
    return any(p in SHAPE_PARAMS for p in path if isinstance(p, str))


def bind(root, message, *, filename, strict=False):
    """Fill `message` from the tree rooted at `root`; return the Binding."""
    binder = Binder(message, root, filename, strict)
    binder.message(root, message, ())
    return binder.finish()


class Binder:
    """Binds the top-level fields of a message one at a time (`field`), as a file is read
    part by part (io/document.read_bound); `finish` gives the Binding."""

    def __init__(self, message, root, filename, strict=False):
        self.binding = Binding(message, root, filename)
        self.binder = _Binder(self.binding, filename, strict)
        self.counts = {}

    def field(self, field):
        message = self.binding.message
        self.binder.field(field, message.DESCRIPTOR, message, (), self.counts)

    def message(self, node, message, path):
        self.binder.message(node, message, path)

    def finish(self):
        binding = self.binding
        # Unknown fields inside layers are attributed once layer names are known.
        binding.unknown_fields = [uf._replace(layer=binding.layer_name(uf.path))
                                  for uf in binding.unknown_fields]
        return binding


class _Binder:
    def __init__(self, binding, filename, strict, nodes=None):
        self.b = binding
        self.filename = filename
        self.strict = strict
        self.nodes = nodes     # path -> Field node for every field, when asked for
        self.scalars = {}      # (field, word or literal) -> value, converted once per file

    def error(self, msg, tok):
        return SurgeryError(msg, file=self.filename, line=tok.line, col=tok.col)

    def message(self, node, msg, path):
        desc = msg.DESCRIPTOR
        counts = {}
        for field in node.fields:
            self.field(field, desc, msg, path, counts)

    def field(self, field, desc, msg, path, counts):
        fd = desc.fields_by_name.get(field.key)
        if fd is None:
            self.unknown(field, desc, path)
        elif fd.cpp_type == _d.FieldDescriptor.CPPTYPE_MESSAGE:
            self.message_field(field, fd, msg, path, counts)
        else:
            self.scalar_field(field, fd, msg, path, counts)

    def unknown(self, field, desc, path):
        tok = field.name
        if self.strict:
            raise self.error(f"unknown field `{field.key}` in {desc.full_name}", tok)
        self.b.unknown_fields.append(UnknownField(
            self.filename, tok.line, tok.col, field.key, desc.full_name, path, None))

    def message_field(self, field, fd, msg, path, counts):
        if not field.is_message:
            raise self.error(f"field `{fd.name}` is a message: expected `{{`", field.name)
        if field.is_list and not fd.is_repeated:
            raise self.error(f"field `{fd.name}` is not repeated: list `[...]` not allowed",
                             field.name)
        for part in field.parts:
            if isinstance(part, Value):
                raise self.error(f"field `{fd.name}` is a message: expected `{{`",
                                 part.tokens[0])
            if not isinstance(part, Message):
                continue
            if fd.is_repeated:
                index = counts.get(fd.name, 0)
                counts[fd.name] = index + 1
                sub = getattr(msg, fd.name).add()
                sub_path = path + (fd.name, index)
            else:
                if msg.HasField(fd.name):
                    raise self.error(f"field `{fd.name}` given twice in "
                                     f"{msg.DESCRIPTOR.full_name}", field.name)
                sub = getattr(msg, fd.name)
                sub.SetInParent()
                sub_path = path + (fd.name,)
            if self.nodes is not None:
                self.nodes[sub_path] = field
            self.message(part, sub, sub_path)

    def scalar_field(self, field, fd, msg, path, counts):
        values = field.parts
        if len(values) != 1 or type(values[0]) is not Value:    # not the plain `name: value`
            if field.is_message:
                raise self.error(f"field `{fd.name}` is not a message: expected `:` and a "
                                 "value", field.name)
            values = field.values
            if field.is_list and not fd.is_repeated:
                raise self.error(f"field `{fd.name}` is not repeated: list `[...]` not "
                                 "allowed", field.name)
        for value in values:
            if fd.is_repeated:
                index = counts.get(fd.name, 0)
                vpath = path + (fd.name, index)
            else:
                vpath = path + (fd.name,)
            tokens = value.tokens
            # A value met before in this field (a type, an enum word, a kernel size): no
            # placeholder (none is cached), a known enum value, already converted.
            converted = self.scalars.get((fd, tokens[0].text)) if len(tokens) == 1 else None
            if converted is None:
                if value.has_placeholder:
                    self.b.placeholders.append(Placeholder(vpath, value.text))
                    self.b.placeholder_nodes[vpath] = field
                    if fd.type != _d.FieldDescriptor.TYPE_STRING:
                        continue    # a number/enum/bool we cannot know yet: leave unset
                    converted = self.convert(value, fd, msg) if value.is_string else value.text
                elif self.unknown_value(value, fd, msg, path):
                    continue
                else:
                    converted = self.convert(value, fd, msg)
            if fd.is_repeated:
                getattr(msg, fd.name).append(converted)
                counts[fd.name] = index + 1
            else:
                if msg.HasField(fd.name):
                    raise self.error(f"field `{fd.name}` given twice in "
                                     f"{msg.DESCRIPTOR.full_name}", field.name)
                setattr(msg, fd.name, converted)
            if self.nodes is not None:
                self.nodes[vpath] = field

    def unknown_value(self, value, fd, msg, path):
        """Record an enum value the schema lacks (a fork's mode) instead of failing; True
        when recorded. A quoted string is a plain error, as Parse would make it."""
        if fd.type != _d.FieldDescriptor.TYPE_ENUM or value.is_string or len(value.tokens) != 1:
            return False
        tok = value.tokens[0]
        if (fd, tok.text) in self.scalars:
            return False
        try:
            text_format.ParseEnum(fd, tok.text)
            return False
        except ValueError:
            pass
        desc = msg.DESCRIPTOR
        if self.strict:
            raise self.error(f"unknown value `{tok.text}` of {desc.full_name}.{fd.name}", tok)
        self.b.unknown_fields.append(UnknownField(
            self.filename, tok.line, tok.col, fd.name, desc.full_name, path, None, tok.text))
        return True

    def convert(self, value, fd, msg):
        """Text -> Python value exactly as text_format would convert it."""
        tok = value.tokens[0]
        t = fd.type
        try:
            if t in _STRINGS:
                if not value.is_string:
                    raise ValueError(f"expected a quoted string, found {tok.text}")
                raw = b"".join(_unescape(x.text[1:-1]) for x in value.tokens)
                raw = raw if t == _d.FieldDescriptor.TYPE_BYTES else raw.decode("utf-8")
                if len(value.tokens) == 1 and not value.has_placeholder:
                    self.scalars[(fd, tok.text)] = raw
                return raw
            if value.is_string or len(value.tokens) != 1:
                raise ValueError(f"expected a {_type_name(fd)}, found a string")
            text = tok.text
            key = (fd, text)
            if key not in self.scalars:     # the same few words recur all over a file
                self.scalars[key] = _scalar(fd, text)
            return self.scalars[key]
        except (ValueError, UnicodeDecodeError) as exc:
            raise self.error(f"bad value for {msg.DESCRIPTOR.full_name}.{fd.name}: {exc}",
                             tok) from None


def _scalar(fd, text):
    """A number, bool or enum word -> its value, exactly as text_format converts it."""
    t = fd.type
    if t in _SIGNED32:
        return text_format.ParseInteger(text, is_signed=True, is_long=False)
    if t in _SIGNED64:
        return text_format.ParseInteger(text, is_signed=True, is_long=True)
    if t in _UNSIGNED32:
        return text_format.ParseInteger(text, is_signed=False, is_long=False)
    if t in _UNSIGNED64:
        return text_format.ParseInteger(text, is_signed=False, is_long=True)
    if t in _FLOATS:
        return text_format.ParseFloat(text)
    if t == _d.FieldDescriptor.TYPE_BOOL:
        return text_format.ParseBool(text)
    if t == _d.FieldDescriptor.TYPE_ENUM:
        return text_format.ParseEnum(fd, text)
    raise ValueError(f"unsupported field type for `{fd.name}`")


def _unescape(body):
    """text_encoding.CUnescape(body); a body without a backslash (nearly every name,
    type and blob) is its own UTF-8 bytes, which is what CUnescape returns for it."""
    return text_encoding.CUnescape(body) if "\\" in body else body.encode("utf-8")


def _type_name(fd):
    if fd.type == _d.FieldDescriptor.TYPE_ENUM:
        return f"{fd.enum_type.full_name} name"
    if fd.type in _FLOATS:
        return "number"
    if fd.type == _d.FieldDescriptor.TYPE_BOOL:
        return "true/false"
    return "integer"
