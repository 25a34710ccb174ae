"""A prototxt document that survives editing byte for byte.

Pipelines keep prototxts in version control, full of comments, and DeepLab's
are shell templates (`num_output: ${NUM_LABELS}`). Reading them with protobuf
and printing them back loses all of that. A `Document` keeps the lossless
token tree from `tokens.py`; `to_message` binds it to the schema; the edit
methods change only the tokens they must, so every untouched line of the
output is identical to the input.
"""

import functools
import re

from google.protobuf import descriptor as _d
from google.protobuf import text_encoding

from ..errors import SurgeryError
from . import binding as _binding
from .inputs import read_input
from .quickbind import QuickBinder
from .tokens import (LazyField, Message, Source, Token, Value, parse_fields, parse_tokens,
                     scan_blocks)

_LAYER_KEYS = ("layer", "layers")
_TRIVIA = re.compile(r"(?:[ \t\r\n\f\v\ufeff]+|\#[^\n]*)*")


class Raw(str):
    """A value written exactly as given: an enum name, `${NAME}`, `-inf`..."""


def _schema():
    try:
        from .. import caffe_pb2
    except ImportError:  # schema not generated yet: edits still work, untyped
        return None
    return caffe_pb2


def _net_type():
    pb = _schema()
    if pb is None:
        raise SurgeryError("the Caffe schema (surgery/caffe_pb2.py) is missing; "
                           "run tools/compile_proto.py")
    return pb.NetParameter


class Document:
    """Lossless prototxt. `Document.parse(text, filename)`; `to_text()` round-trips."""

    def __init__(self, root, eof, filename, newline, *, message_type=None, indent_unit=None):
        self.root = root
        self.eof = eof
        self.filename = filename
        self.newline = newline
        self.message_type = message_type
        self.indent_unit = indent_unit or _detect_indent_unit(root)
        self._index = None
        self.edited = False      # set by every edit: the tree no longer matches the file

    @functools.cached_property
    def quote(self):
        """The quote character most of the file's strings use (asked only by an edit
        that writes a new string)."""
        return _detect_quote(self.root)

    @classmethod
    def parse(cls, text, filename="<string>", *, message_type=None):
        root, eof = parse_tokens(text, filename)
        newline = "\r\n" if "\r\n" in text else "\n"
        return cls(root, eof, filename, newline, message_type=message_type)

    @classmethod
    def load(cls, path, *, message_type=None):
        try:
            text = read_input(path, "prototxt").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SurgeryError(f"cannot read prototxt: {exc}", file=str(path)) from None
        return cls.parse(text, str(path), message_type=message_type)

    def to_text(self):
        parts = []
        add = parts.append
        for field in self.root.fields:
            if type(field) is LazyField:        # a block as read: its own text
                add(field.text)
                continue
            for tok in field.tokens():
                add(tok.lead)
                add(tok.text)
                add(tok.trail)
        add(self.eof.lead)
        return "".join(parts)

    # -- schema -------------------------------------------------------------

    @classmethod
    def read_bound(cls, text, filename="<string>", *, message_type=None, strict=False,
                   bind_hint=None):
        """(Document, message, Binding): `parse` then `to_message`, a part of the file at
        a time (io/tokens.scan_blocks): each top-level block is bound as soon as it is
        read and then kept as its text only (a LazyField), unless it holds a placeholder
        or a field the schema lacks, whose tokens are asked for later. A plain layer block
        is bound straight from its text (io/quickbind.py). A net's token tree (most of
        the memory of reading it) never exists whole. Errors come as the whole-file
        reading gives them: the scanner's first wherever it is, then the parser's, then
        the binder's (through `bind_hint`, when given)."""
        message = (message_type or _net_type())()
        root = Message(None, [], None)
        binder = _binding.Binder(message, root, filename, strict)
        found = binder.binding
        source = Source(text)
        quick = QuickBinder(binder, source)
        parse_error = bind_error = indent = None
        fields = root.fields
        pos = 0
        while True:
            if indent is not None and bind_error is None:
                lazy = quick.block(pos)
                if lazy is not None:
                    fields.append(lazy)
                    pos = lazy.span[2]
                    continue
            part = next(scan_blocks(text, filename, start=pos, source=source))
            last = part[-1]
            try:
                new = parse_fields(part, filename)
            except SurgeryError as exc:
                parse_error = exc
                break
            for field in new:
                if bind_error is None:
                    marks = (len(found.placeholders), len(found.unknown_fields))
                    try:
                        binder.field(field)
                    except SurgeryError as exc:
                        bind_error = exc
                if indent is None:
                    indent = _indent_in(field)
                if bind_error is None and field.key in _LAYER_KEYS and field.is_message and \
                        marks == (len(found.placeholders), len(found.unknown_fields)):
                    field = LazyField.of(field)
                fields.append(field)
            if last.kind == "eof":
                break
            pos = last.pos + len(last.text) + len(last.trail)
        if parse_error is not None:
            for _ in scan_blocks(text, filename, start=pos, source=source):
                pass        # a bad character later in the file is reported first
            raise parse_error
        if bind_error is not None:
            raise bind_hint(bind_error) if bind_hint else bind_error
        newline = "\r\n" if "\r\n" in text else "\n"
        doc = cls(root, last, filename, newline, message_type=message_type,
                  indent_unit=indent or "  ")
        return doc, message, binder.finish()

    def _message_type(self, message_type=None):
        if message_type is not None:
            return message_type
        if self.message_type is not None:
            return self.message_type
        return _net_type()

    def to_message(self, message_type=None, *, strict=False):
        """(message, Binding): the message text_format.Parse would give, plus
        where each field came from, placeholders and unknown fields."""
        msg = self._message_type(message_type)()
        found = _binding.bind(self.root, msg, filename=self.filename, strict=strict)
        return msg, found

    def _descriptor(self, msg_desc, comps):
        """Field descriptor at comps below msg_desc, or None when unknown."""
        fd = None
        for name, _ in comps:
            if msg_desc is None:
                return None
            fd = msg_desc.fields_by_name.get(name)
            if fd is None:
                return None
            msg_desc = fd.message_type
        return fd

    def _layer_descriptor(self, layer_field):
        try:
            net = self._message_type().DESCRIPTOR
        except SurgeryError:
            return None
        fd = net.fields_by_name.get(layer_field.key)
        return fd.message_type if fd is not None else None

    # -- layers -------------------------------------------------------------

    def layers(self):
        """Top-level `layer {}` / V1 `layers {}` field nodes, in order."""
        return [f for f in self.root.fields if f.key in _LAYER_KEYS and f.is_message]

    def layer_names(self):
        return [_layer_name(f) for f in self.layers()]

    def find_layer(self, layer):
        """The layer node called `layer` (or `layer` itself if it is a node)."""
        if not isinstance(layer, str):
            return layer
        found = self._layer_index().get(layer, [])
        if not found:
            raise SurgeryError(f"no layer named '{layer}'", file=self.filename, layer=layer)
        if len(found) > 1:
            lines = ", ".join(str(f.name.line) for f in found)
            raise SurgeryError(f"{len(found)} layers share this name (lines {lines}); "
                               "pass the layer node instead", file=self.filename, layer=layer)
        return found[0]

    def _layer_index(self):
        if self._index is None:
            self._index = {}
            for f in self.layers():
                self._index.setdefault(_layer_name(f), []).append(f)
        return self._index

    # -- edits --------------------------------------------------------------

    def set_field(self, layer, path, value):
        """Set `path` (e.g. "convolution_param.dilation") under a layer to a
        scalar or list, rewriting existing values in place and creating
        missing fields/blocks with the indentation of their siblings."""
        self.edited = True
        node = self.find_layer(layer)
        self._set(node.messages[0], path, value, self._layer_descriptor(node), top=False,
                  layer=node)

    def set_top_field(self, path, value):
        """Set a net-level field (e.g. "name", "input_dim")."""
        self.edited = True
        try:
            desc = self._message_type().DESCRIPTOR
        except SurgeryError:
            desc = None
        self._set(self.root, path, value, desc, top=True)

    def remove_field(self, layer, path):
        """Remove every entry of `path` under a layer; True if anything went."""
        self.edited = True
        node = self.find_layer(layer)
        comps = _split_path(path)
        parent = self._walk(node.messages[0], comps[:-1], layer=node)
        if parent is None:
            return False
        name, index = comps[-1]
        fields = parent.find(name)
        if index is not None:
            fields = fields[index:index + 1]
        for f in fields:
            self._remove_field_node(parent, f)
        return bool(fields)

    def remove_layer(self, layer):
        """Remove a whole layer block (comments above it stay)."""
        self.edited = True
        node = self.find_layer(layer)
        self._remove_field_node(self.root, node)
        self._index = None

    def rename_layer(self, old, new):
        self.edited = True
        node = self.find_layer(old)
        if new != old and new in self._layer_index():
            raise SurgeryError(f"cannot rename to '{new}': that name is taken",
                               file=self.filename, layer=old)
        names = node.messages[0].find("name")
        if not names:
            raise SurgeryError("layer has no name field", file=self.filename, layer=old)
        value = names[0].values[0]
        _replace_value(value, self._format(new, None, value.tokens[0]))
        self._index = None

    def add_layer_after(self, layer, text_block):
        """Insert prototxt text (one or more `layer { ... }` blocks) after a layer."""
        self.edited = True
        anchor = self.find_layer(layer)
        root, eof = parse_tokens(text_block, "<inserted layer text>")
        if not root.fields:
            raise SurgeryError("no layer in the text to insert", layer=layer)
        _forget_positions(root)
        last = root.fields[-1].last()
        last.trail = (last.trail + eof.lead).rstrip() + self.newline
        end = anchor.last()
        if not end.trail.endswith("\n"):
            end.trail = end.trail.rstrip(" \t") + self.newline
        i = self.root.fields.index(anchor)
        self.root.fields[i + 1:i + 1] = root.fields
        self._index = None

    # -- edit machinery -----------------------------------------------------

    def _walk(self, msg, comps, *, layer=None):
        """Follow message components; None (or raise) when one is missing."""
        for name, index in comps:
            subs = [m for f in msg.find(name) for m in f.messages]
            if index is not None:
                subs = subs[index:index + 1]
            if len(subs) > 1:
                where = _layer_name(layer) if layer is not None else None
                raise SurgeryError(f"`{name}` occurs {len(subs)} times; say which, "
                                   f"e.g. {name}[0]", file=self.filename, layer=where)
            if not subs:
                return None
            msg = subs[0]
        return msg

    def _set(self, msg, path, value, desc, *, top, layer=None):
        comps = _split_path(path)
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        fd = self._descriptor(desc, comps)
        # Deepest existing message on the path; the rest is created as text.
        depth = 0
        for name, index in comps[:-1]:
            nxt = self._walk(msg, [(name, index)], layer=layer)
            if nxt is None:
                break
            msg = nxt
            depth += 1
        rest = comps[depth:]
        if any(index is not None for _, index in rest[:-1]):
            raise SurgeryError(f"cannot create an indexed block in path '{path}'",
                               file=self.filename)
        if len(rest) > 1:
            texts = [self._format(v, fd, None) for v in values]
            self._insert_new(msg, [n for n, _ in rest], texts, top=top)
            return
        name = rest[0][0]
        fields = msg.find(name)
        if any(f.is_message for f in fields):
            raise SurgeryError(f"`{name}` is a message, not a value", file=self.filename)
        entries = [(f, v) for f in fields for v in f.values]
        like = entries[0][1].tokens[0] if entries else None
        texts = [self._format(v, fd, like) for v in values]
        for (field, val), text in zip(entries, texts):
            _replace_value(val, text)
        for field, val in reversed(entries[len(texts):]):
            if len(field.values) > 1:
                _remove_list_value(field, val)
            else:
                self._remove_field_node(msg, field)
        missing = texts[len(entries):]
        if not missing:
            return
        if entries:
            field, val = entries[-1]
            if field.is_list:
                for text in missing:
                    _append_list_value(field, text)
                return
            after = field
        else:
            after = None
        self._insert_new(msg, [name], missing, after=after, top=top)

    def _insert_new(self, msg, names, texts, *, after=None, top=False):
        """Insert `names[0] { names[1] { ... names[-1]: v } }` into msg."""
        fields = msg.fields
        if after is None and top:
            # Net-level settings go with the header, not after the last layer.
            header = [f for f in fields if f.key not in _LAYER_KEYS]
            after = header[-1] if header else None
            if after is None and fields:
                self._insert_before_first(msg, names, texts)
                return
        elif after is None and fields:
            after = fields[-1]
        if after is not None:
            i = fields.index(after)
            multiline = after.last().trail.endswith("\n")
            indent = self._indent_of(msg, i) if multiline else ""
        else:
            i = -1
            multiline = msg.open is None or msg.open.trail.endswith("\n")
            indent = self._empty_indent(msg) if multiline else ""
        new = self._fragment(names, texts, indent, multiline)
        if multiline:
            new[0].first().lead = indent
            new[-1].last().trail = self.newline
        else:
            prev = after.last() if after is not None else msg.open
            new[0].first().lead = "" if prev.trail else " "
            new[-1].last().trail = prev.trail if (after is not None and prev.trail) else " "
        fields[i + 1:i + 1] = new

    def _insert_before_first(self, msg, names, texts):
        first = msg.fields[0].first()
        new = self._fragment(names, texts, "", True)
        new[0].first().lead = first.lead
        new[-1].last().trail = self.newline
        first.lead = first.lead[first.lead.rfind("\n") + 1:]
        msg.fields[0:0] = new

    def _fragment(self, names, texts, indent, multiline):
        """Parse generated text for new fields; returns their nodes."""
        nl, unit = self.newline, self.indent_unit
        if not multiline:
            inner = " ".join(f"{names[-1]}: {t}" for t in texts)
            for name in reversed(names[:-1]):
                inner = f"{name} {{ {inner} }}"
            text = inner
        else:
            depth = len(names) - 1
            pad = indent + unit * depth
            lines = [f"{pad if k else ''}{names[-1]}: {t}" for k, t in enumerate(texts)]
            if depth == 0:
                text = nl.join(lines)
            else:
                opens = [f"{indent + unit * d if d else ''}{n} {{" for d, n in enumerate(names[:-1])]
                lines[0] = pad + lines[0]
                closes = [f"{indent + unit * d}}}" for d in reversed(range(depth))]
                text = nl.join(opens + lines + closes)
        root, _ = parse_tokens(text, "<generated>")
        _forget_positions(root)
        return root.fields

    def _indent_of(self, msg, i):
        """Indentation of the line field i starts on (siblings share it)."""
        for j in range(i, -1, -1):
            if self._starts_line(msg, j):
                lead = msg.fields[j].first().lead
                return lead[lead.rfind("\n") + 1:]
        return self._empty_indent(msg)

    def _empty_indent(self, msg):
        if msg.close is None:
            return ""
        lead = msg.close.lead
        return lead[lead.rfind("\n") + 1:] + self.indent_unit

    def _starts_line(self, msg, i):
        prev = msg.fields[i - 1].last() if i > 0 else msg.open
        return prev is None or prev.trail.endswith("\n")

    def _remove_field_node(self, msg, field):
        """Drop a field's tokens, keeping comments above it and the layout around it.
        A block kept as its text (LazyField) is read for its tokens only where one of them
        changes: removing a run of blocks reads none of them in the common case."""
        i = msg.fields.index(field)
        before = msg.fields[i - 1] if i > 0 else None
        after = msg.fields[i + 1] if i + 1 < len(msg.fields) else None
        if after is not None:
            nxt = None if type(after) is LazyField else after.first()
        else:
            nxt = msg.close if msg.close is not None else self.eof
        next_lead = _lead(after) if nxt is None else nxt.lead
        lead = _lead(field)
        if before is None:
            starts = msg.open is None or msg.open.trail.endswith("\n")
        else:
            starts = _ends_line(before)
        ends = _ends_line(field) or (nxt is self.eof and not nxt.lead)
        if starts and ends:
            keep = lead[:lead.rfind("\n") + 1].splitlines(True)
            comments = [line for line in keep if line.strip()]
            # The block's own separator line goes with it unless nothing else separates.
            blank_after = any(not line.strip() for line in next_lead.split("\n")[:-1])
            if any(not line.strip() for line in keep) and not blank_after:
                comments.insert(0, self.newline)
            if comments:
                nxt = nxt or after.first()
                nxt.lead = "".join(comments) + nxt.lead
        elif ends:
            prev = before.last() if before is not None else msg.open
            tail = field.last().trail.lstrip(" \t")
            prev.trail = prev.trail.rstrip(" \t") + (" " + tail if tail.startswith("#") else tail)
        else:
            nxt = nxt or after.first()
            nxt.lead = lead + nxt.lead
        del msg.fields[i]

    def _format(self, value, fd, like):
        """Python value -> token text, quoted or bare as the schema/file says."""
        if isinstance(value, Raw):
            return str(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            if value.is_integer() and like is not None and re.fullmatch(r"[-+]?\d+", like.text):
                return str(int(value))      # `step: 64` stays a whole number: `step: 32`
            return repr(value)
        if not isinstance(value, str):
            raise SurgeryError(f"cannot write a {type(value).__name__} into a prototxt")
        if fd is not None and fd.type == _d.FieldDescriptor.TYPE_ENUM:
            if value not in fd.enum_type.values_by_name:
                raise SurgeryError(f"{value!r} is not a {fd.enum_type.full_name} value")
            return value
        if fd is None and like is not None and like.kind != "str":
            return value
        if like is not None and like.kind == "str":
            return _requote(like.text, value)
        return _quote(value, self.quote)


def _layer_name(field):
    names = field.messages[0].find("name")
    if not names or not names[0].values:
        return None
    value = names[0].values[0]
    if not value.is_string:
        return value.text
    return "".join(_unquote(t.text) for t in value.tokens)


def _unquote(text):
    try:
        return text_encoding.CUnescape(text[1:-1]).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return text[1:-1]


def _quote(value, quote):
    out = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f"{quote}{out}{quote}"


# One character of a string literal's body: an escape sequence or a plain character.
_UNIT = re.compile(r"\\(?:[0-7]{1,3}|x[0-9a-fA-F]{1,2}|.)|[^\\]", re.S)


def _requote(old, value):
    """`value` as a string literal written like the literal `old`: the same quote, and
    where `value` begins and ends as the old value did, the old literal's own characters
    (its escapes, say `\\'` in a param_str, included); only the changed middle is
    written anew."""
    quote, body = old[0], old[1:-1]
    units = [(m.group(0), _unquote(quote + m.group(0) + quote)) for m in _UNIT.finditer(body)]
    if "".join(plain for _, plain in units) != _unquote(old):
        return _quote(value, quote)     # a unit that does not decode alone (UTF-8 bytes)
    head = 0
    while head < len(units) and value.startswith(
            "".join(plain for _, plain in units[:head + 1])):
        head += 1
    start = len("".join(plain for _, plain in units[:head]))
    tail = 0
    while tail < len(units) - head and value[start:].endswith(
            "".join(plain for _, plain in units[len(units) - tail - 1:])):
        tail += 1
    kept_tail = units[len(units) - tail:] if tail else []
    end = len(value) - len("".join(plain for _, plain in kept_tail))
    middle = _quote(value[start:end], quote)[1:-1]
    return (quote + "".join(raw for raw, _ in units[:head]) + middle +
            "".join(raw for raw, _ in kept_tail) + quote)


def _kind(text):
    if text[:1] in "\"'":
        return "str"
    return "placeholder" if "${" in text else "word"


def _replace_value(value, text):
    old = value.tokens
    value.tokens = [Token(_kind(text), text, lead=old[0].lead, trail=old[-1].trail)]


def _remove_list_value(field, value):
    """Remove one entry of `key: [a, b, c]` and one neighbouring comma."""
    parts = field.parts
    j = parts.index(value)
    if parts[j + 1].text == ",":        # not the last entry: drop it and its comma
        following = parts[j + 2]
        first = following.tokens[0] if isinstance(following, Value) else following.open
        first.lead = value.tokens[0].lead
        del parts[j:j + 2]
    else:                               # last entry: drop the comma before it
        before = parts[j - 2]
        end = before.tokens[-1] if isinstance(before, Value) else before.close
        end.trail = value.tokens[-1].trail
        del parts[j - 1:j + 1]


def _append_list_value(field, text):
    parts = field.parts
    last = parts[-2]                    # parts[-1] is ']'
    end = last.tokens[-1]
    comma = Token("punct", ",", trail=" ")
    new = Token(_kind(text), text)
    if end.trail.endswith("\n"):        # one entry per line: keep that layout
        lead = last.tokens[0].lead
        comma.trail, end.trail = end.trail, ""
        new.lead = lead[lead.rfind("\n") + 1:]
        new.trail = "\r\n" if comma.trail.endswith("\r\n") else "\n"
    else:
        new.trail, end.trail = end.trail, ""
    parts[-1:-1] = [comma, Value([new])]


def _split_path(path):
    """"a.b[1].c" -> [("a", None), ("b", 1), ("c", None)]."""
    comps = []
    for piece in path.split("."):
        name, _, rest = piece.partition("[")
        index = int(rest.rstrip("]")) if rest else None
        if not name:
            raise SurgeryError(f"bad field path '{path}'")
        comps.append((name, index))
    return comps


def _forget_positions(root):
    """Tokens made by an edit have no place in the original file."""
    for tok in root.tokens():
        tok.pos = None


def _detect_indent_unit(root):
    """The file's indentation step: a tab, or the spaces its first block uses."""
    for field in root.fields:
        unit = _indent_in(field)
        if unit is not None:
            return unit
    return "  "


def _lead(field):
    """The trivia before a field's first token (blank lines, comments, indentation)."""
    if type(field) is LazyField:
        text = field.text
        return text[:_TRIVIA.match(text).end()]
    return field.first().lead


def _ends_line(field):
    """Whether the trail of a field's last token ends its line."""
    if type(field) is LazyField:       # its text ends with that trail
        return field.text.endswith("\n")
    return field.last().trail.endswith("\n")


def _indent_in(field):
    """The indentation step a block shows, None when it shows none (one line, empty)."""
    for msg in field.messages:
        if msg.open.trail.endswith("\n") and msg.fields:
            outer = field.first().lead
            outer = outer[outer.rfind("\n") + 1:]
            inner = msg.fields[0].first().lead
            inner = inner[inner.rfind("\n") + 1:]
            if inner.startswith(outer) and len(inner) > len(outer):
                return inner[len(outer):]
    return None


def _detect_quote(root):
    """The quote character most strings in the file use. (Strings are only ever values,
    so the walk visits fields and values, not every token.)"""
    counts = {'"': 0, "'": 0}
    stack = [root]
    while stack:
        for field in stack.pop().fields:
            for part in field.parts:
                if isinstance(part, Message):
                    stack.append(part)
                elif isinstance(part, Value) and part.tokens[0].kind == "str":
                    for tok in part.tokens:
                        counts[tok.text[0]] += 1
    return "'" if counts["'"] > counts['"'] else '"'
