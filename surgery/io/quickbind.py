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

# One token after its trivia: a word, `{`, `}` or `:`, or a string with no escape.
_TOKEN = re.compile(r"""
    (?:[ \t\r\n\f\v\ufeff]++|\#[^\n]*+)*+
    (?:([\w.+\-]++)|([{}:])|("[^"\\\n]*+"|'[^'\\\n]*+'))""", re.VERBOSE)
# The rest of a token's line (its trail, io/tokens.py), and trivia up to the next token.
_TRAIL = re.compile(r"[ \t\r\f\v\ufeff]*+(?:\#[^\n]*+)?\n?")
_TRIVIA = re.compile(r"(?:[ \t\r\n\f\v\ufeff]++|\#[^\n]*+)*+")
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
        tokens = _TOKEN.finditer(text, start)
        first = next(tokens, None)
        key = first and first.group(1)
        if key not in _KEYS or first.start() != start:
            return None
        fd = self.message.DESCRIPTOR.fields_by_name.get(key)
        if fd is None or fd.cpp_type != _MESSAGE or not fd.is_repeated:
            return None
        layers = getattr(self.message, key)
        layer = layers.add()
        try:
            end = self._fill(layer, tokens, first.end())
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

    def _fill(self, msg, tokens, pos):
        """Bind `{ ... }` (an optional `:` first) into `msg`; the end of the closing
        brace's line."""
        stack = []
        fields = msg.DESCRIPTOR.fields_by_name
        fd, colon, opened = None, False, False
        scalars = self.scalars
        for m in tokens:
            if m.start() != pos:
                raise _NotPlain()
            pos = m.end()
            word, punct, string = m.groups()
            if not opened:      # the block's own `:` and `{`
                if punct == ":" and not colon:
                    colon = True
                    continue
                if punct != "{":
                    raise _NotPlain()
                opened, colon = True, False
                continue
            if fd is None:              # a field name, or the end of a message
                if word is not None:
                    fd = fields.get(word)
                    if fd is None:
                        raise _NotPlain()
                    continue
                if punct != "}":
                    raise _NotPlain()
                if not stack:
                    return _TRAIL.match(self.source.text, pos).end()
                msg, fields = stack.pop()
                continue
            if punct == ":" and not colon:
                colon = True
                continue
            if punct == "{":
                if fd.cpp_type != _MESSAGE or len(stack) >= MAX_DEPTH - 2:
                    raise _NotPlain()
                if fd.is_repeated:
                    sub = getattr(msg, fd.name).add()
                else:
                    if msg.HasField(fd.name):
                        raise _NotPlain()
                    sub = getattr(msg, fd.name)
                    sub.SetInParent()
                stack.append((msg, fields))
                msg, fields = sub, sub.DESCRIPTOR.fields_by_name
            elif colon and punct is None and fd.cpp_type != _MESSAGE:
                value = word if word is not None else string
                converted = scalars.get((fd, value))
                if converted is None:
                    converted = scalars[(fd, value)] = _convert(fd, word, string)
                if fd.is_repeated:
                    getattr(msg, fd.name).append(converted)
                elif msg.HasField(fd.name):
                    raise _NotPlain()
                else:
                    setattr(msg, fd.name, converted)
            else:
                raise _NotPlain()
            fd, colon = None, False
        raise _NotPlain()       # the text ends inside the block


def _convert(fd, word, string):
    """A plain value as the binder converts it (ValueError where it would not)."""
    if fd.type in _STRINGS:
        if string is None or "${" in string:        # a placeholder is recorded
            raise _NotPlain()
        raw = string[1:-1].encode("utf-8")
        return raw if fd.type == _d.FieldDescriptor.TYPE_BYTES else raw.decode("utf-8")
    if string is not None:
        raise _NotPlain()
    return _scalar(fd, word)
