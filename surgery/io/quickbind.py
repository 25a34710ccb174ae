"""The common layer block bound straight from its text, without tokens or a tree.

Nearly every layer block of a real net is plain: field names the schema knows, `:`,
numbers, enum words and simple quoted strings, and `{ }`. Reading such a block through
the lossless tokens (io/tokens.py) and the tree (io/binding.py) builds a token per
word and a node per field only to bind them and let them go, since the document keeps
the block as its text (a LazyField). `QuickBinder.block` binds it from the text
directly, converting values with the binder's own helpers and cache, and gives up
(None, nothing bound) at the first thing that is not plain: a placeholder, a field or
enum value the schema lacks, a list, `<>` brackets, a separator, an escaped or
concatenated string, a value the schema refuses, a field given twice, deep nesting.
The caller then reads that block the lossless way, which gives exactly the message,
records and errors it always did. A block bound here is one the lossless reading binds
to the same message with nothing to record, so both ways agree (tests/test_quickbind.py).
"""

import re

from google.protobuf import descriptor as _d

from .binding import _STRINGS, _scalar
from .tokens import MAX_DEPTH, LazyField

# One step of a block, after its trivia: a field's name with its `:` (if any) and either
# its value (a word, or a string with no escape) or the `{` of its block; or a `}`.
_TRIVIA_RE = r"(?:[ \t\r\n\f\v\ufeff]++|\#[^\n]*+)*+"
_STEP = re.compile(rf"""
    {_TRIVIA_RE}
    (?:
        ([A-Za-z_]\w*+) {_TRIVIA_RE} (?:(:) {_TRIVIA_RE})?
        (?:([\w.+\-]++|"[^"\\\n]*+"|'[^'\\\n]*+')|(\{{))
      | (\}})
    )""", re.VERBOSE)
# The rest of a token's line (its trail, io/tokens.py), and trivia up to the next token.
_TRAIL = re.compile(r"[ \t\r\f\v\ufeff]*+(?:\#[^\n]*+)?\n?")
_TRIVIA = re.compile(_TRIVIA_RE)
_MESSAGE = _d.FieldDescriptor.CPPTYPE_MESSAGE
_KEYS = ("layer", "layers")


class _NotPlain(Exception):
    """The block is not plain: read it the lossless way."""


class QuickBinder:
    """Binds plain top-level layer blocks of `source` (a tokens.Source) into the message
    of `binder` (an io.binding.Binder), sharing its converted values and its count of
    layers."""

    def __init__(self, binder, source):
        self.binder = binder
        self.source = source
        self.message = binder.binding.message
        self.scalars = binder.binder.scalars

    def block(self, start):
        """The LazyField of the plain layer block whose text (its leading trivia first)
        starts at `start`, bound into the message; None when it is not one."""
        text = self.source.text
        steps = _STEP.finditer(text, start)
        first = next(steps, None)
        if first is None or first.start() != start or first.group(1) not in _KEYS or \
                first.group(4) is None:
            return None
        key = first.group(1)
        fd = self.message.DESCRIPTOR.fields_by_name.get(key)
        if fd is None or fd.cpp_type != _MESSAGE or not fd.is_repeated:
            return None
        layers = getattr(self.message, key)
        layer = layers.add()
        try:
            end = self._fill(layer, steps, first.end())
        except (_NotPlain, ValueError, TypeError):
            del layers[-1]
            return None
        after = _TRIVIA.match(text, end).end()
        if after < len(text) and text[after] in ",;":     # a separator: the lossless way
            del layers[-1]
            return None
        counts = self.binder.counts
        counts[key] = counts.get(key, 0) + 1
        lazy = LazyField.__new__(LazyField)
        lazy.span = (self.source, start, end, key)
        return lazy

    def _fill(self, msg, steps, pos):
        """Bind the body of a block whose `{` ends at `pos` into `msg`; the end of the
        closing brace's line."""
        stack = []
        fields = msg.DESCRIPTOR.fields_by_name
        scalars = self.scalars
        for m in steps:
            if m.start() != pos:
                raise _NotPlain()
            pos = m.end()
            name, colon, value, opened, closed = m.groups()
            if closed is not None:
                if not stack:
                    return _TRAIL.match(self.source.text, pos).end()
                msg, fields = stack.pop()
                continue
            fd = fields.get(name)
            if fd is None:
                raise _NotPlain()
            if opened is not None:
                if fd.cpp_type != _MESSAGE or len(stack) >= MAX_DEPTH - 2:
                    raise _NotPlain()
                if fd.is_repeated:
                    sub = getattr(msg, name).add()
                else:
                    if msg.HasField(name):
                        raise _NotPlain()
                    sub = getattr(msg, name)
                    sub.SetInParent()
                stack.append((msg, fields))
                msg, fields = sub, sub.DESCRIPTOR.fields_by_name
                continue
            if colon is None or fd.cpp_type == _MESSAGE:
                raise _NotPlain()
            converted = scalars.get((fd, value))
            if converted is None:
                converted = scalars[(fd, value)] = _convert(fd, value)
            if fd.is_repeated:
                getattr(msg, name).append(converted)
            elif msg.HasField(name):
                raise _NotPlain()
            else:
                setattr(msg, name, converted)
        raise _NotPlain()       # the text ends inside the block


def _convert(fd, value):
    """A plain value as the binder converts it (ValueError where it would not)."""
    string = value[0] in "\"'"
    if fd.type in _STRINGS:
        if not string or "${" in value:        # a placeholder is recorded
            raise _NotPlain()
        raw = value[1:-1].encode("utf-8")
        return raw if fd.type == _d.FieldDescriptor.TYPE_BYTES else raw.decode("utf-8")
    if string:
        raise _NotPlain()
    return _scalar(fd, value)
