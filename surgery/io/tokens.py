"""Lossless scanner and syntax tree for the protobuf text format.

protobuf's own parser drops comments and refuses the `${NAME}` placeholders
of shell-templated configs, so edits made through it rewrite whole files.
Here every character of the input belongs to exactly one token: its text, its
`lead` (blank lines, own-line comments and indentation before it) or its
`trail` (spaces and a trailing comment after it, up to and including the end
of its line). Joining lead + text + trail over all tokens gives the input
back byte for byte, and an edit only touches the tokens it changes.

The tree is deliberately small: a `Message` holds `Field`s; a `Field` holds
its name token, an optional `:`, its `parts` (value groups, sub-messages and
list punctuation, in source order) and an optional `,`/`;` separator.
Nothing here knows the Caffe schema; `binding.py` adds that.
"""

import bisect
import re
import sys

from ..errors import SurgeryError

# One match per token: the trivia before it, then the token itself. The trivia comes in
# two groups: the rest of the previous token's line (its trail: spaces, a comment, the
# newline) and what leads to this one (blank lines, own-line comments, indentation).
# Words cover identifiers, numbers (1e-4, -inf, 0x1f) and `${NAME}`
# placeholders, bare or glued to other word characters (fc8_${EXP}).
# Quantifiers are possessive where Python has them (3.11): no token needs
# backtracking, and the scan is faster; older Pythons match the same greedily.
_TOKEN_PATTERN = (
    r"""
    (?P<trail>[ \t\r\f\v\ufeff]*+(?:\#[^\n]*+)?\n?)
    (?P<lead>(?:[ \t\r\n\f\v\ufeff]++|\#[^\n]*+)*+)
    (?:
        (?P<word>(?:[\w.+\-]++|\$\{[^{}\s]*+\})++)
      | (?P<punct>[{}<>\[\]:,;])
      | (?P<str>"(?:[^"\\\n]|\\.)*+"|'(?:[^'\\\n]|\\.)*+')
      | (?P<end>\Z)
    )"""
)


def greedy(pattern):
    """`pattern` without possessive quantifiers, for Pythons before 3.11."""
    return pattern.replace("++", "+").replace("*+", "*")


_TOKEN_RE = re.compile(_TOKEN_PATTERN if sys.version_info >= (3, 11) else greedy(_TOKEN_PATTERN),
                       re.VERBOSE)
_IDENT_RE = re.compile(r"[A-Za-z_]\w*\Z")
_CLOSERS = {"{": "}", "<": ">"}


class Token:
    """One token with its source position: 0-based char `pos` in `source` (a Source),
    and the 1-based `line` and `col` found from it when asked (only messages ask)."""

    __slots__ = ("kind", "text", "pos", "source", "lead", "trail")

    def __init__(self, kind, text, pos=None, source=None, lead="", trail=""):
        self.kind = kind        # "str" | "word" | "placeholder" | "punct" | "eof"
        self.text = text
        self.pos = pos          # None for tokens created by an edit
        self.source = source
        self.lead = lead
        self.trail = trail

    @property
    def line(self):
        return None if self.pos is None else self.source.line_col(self.pos)[0]

    @property
    def col(self):
        return None if self.pos is None else self.source.line_col(self.pos)[1]

    def __repr__(self):
        return f"Token({self.kind}, {self.text!r}, {self.line}:{self.col})"


class Value:
    """One scalar value: a word, a placeholder, or adjacent string literals."""

    __slots__ = ("tokens",)

    def __init__(self, tokens):
        self.tokens = tokens

    @property
    def text(self):
        """The value as written, without trivia ("a" 'b' stays two literals)."""
        return " ".join(t.text for t in self.tokens)

    @property
    def is_string(self):
        return self.tokens[0].kind == "str"

    @property
    def has_placeholder(self):
        tokens = self.tokens
        if len(tokens) == 1:
            return "${" in tokens[0].text
        return any("${" in t.text for t in tokens)


class Message:
    """A `{ ... }` or `< ... >` body (the root has no braces)."""

    __slots__ = ("open", "fields", "close")

    def __init__(self, open_, fields, close):
        self.open = open_
        self.fields = fields
        self.close = close

    def tokens(self):
        """Every token of the body, in source order (a list: no generator per level)."""
        out = []
        self.collect(out.append)
        return out

    def collect(self, add):
        if self.open is not None:
            add(self.open)
        for field in self.fields:
            field.collect(add)
        if self.close is not None:
            add(self.close)

    def find(self, name):
        """All direct child fields called `name`, in source order."""
        return [f for f in self.fields if f.name.text == name]


class Field:
    """`name[:] value`, `name[:] {...}` or `name: [v, ...]`, plus separator."""

    __slots__ = ("name", "colon", "parts", "sep", "span")     # span: see LazyField

    def __init__(self, name, colon, parts, sep=None):
        self.name = name
        self.colon = colon
        self.parts = parts      # Token ('[' ',' ']') | Value | Message
        self.sep = sep

    @property
    def key(self):
        return self.name.text

    @property
    def values(self):
        return [p for p in self.parts if isinstance(p, Value)]

    @property
    def messages(self):
        return [p for p in self.parts if isinstance(p, Message)]

    @property
    def is_message(self):
        return any(isinstance(p, Message) for p in self.parts)

    @property
    def is_list(self):
        return bool(self.parts) and isinstance(self.parts[0], Token)

    def tokens(self):
        out = []
        self.collect(out.append)
        return out

    def collect(self, add):
        add(self.name)
        if self.colon is not None:
            add(self.colon)
        for part in self.parts:
            kind = type(part)
            if kind is Value:
                for tok in part.tokens:
                    add(tok)
            elif kind is Token:
                add(part)
            else:
                part.collect(add)
        if self.sep is not None:
            add(self.sep)

    def first(self):
        return self.name

    def last(self):
        if self.sep is not None:
            return self.sep
        part = self.parts[-1]
        if isinstance(part, Token):
            return part
        if isinstance(part, Value):
            return part.tokens[-1]
        return part.close


class LazyField(Field):
    """A top-level block kept as the text it was read from, `span` = (Source, start, end,
    key): bound once (io/document.read_bound), then its tokens let go, so a net's token
    tree never exists whole. The first time anything looks inside it, it becomes a
    Field (the same object), with exactly the tokens a reading of that text gives."""

    __slots__ = ()
    is_message = True

    @classmethod
    def of(cls, field):
        """`field`, a message field just scanned, as its text span."""
        first, last = field.first(), field.last()
        lazy = cls.__new__(cls)
        lazy.span = (first.source, first.pos - len(first.lead),
                     last.pos + len(last.text) + len(last.trail), field.key)
        return lazy

    @property
    def key(self):
        return self.span[3]

    @property
    def text(self):
        """The block's text, trivia included (joining every block's gives the file)."""
        source, start, end, _ = self.span
        return source.text[start:end]

    def __getattr__(self, attr):      # only reached for a slot not set: look inside
        if attr not in ("name", "colon", "parts", "sep"):
            raise AttributeError(attr)
        source, start, end, _ = self.span
        field = _Parser(scan(source.text, start=start, end=end, source=source), "").field()
        self.__class__ = Field
        self.name, self.colon, self.parts, self.sep = field.name, field.colon, field.parts, field.sep
        return getattr(self, attr)


class Source:
    """The text tokens were scanned from, to find a position's line and column."""

    __slots__ = ("text", "_starts")

    def __init__(self, text):
        self.text = text
        self._starts = None

    def line_col(self, pos):
        """(1-based line, 1-based column) of char `pos`."""
        if self._starts is None:
            self._starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        line = bisect.bisect_right(self._starts, pos)
        return line, pos - self._starts[line - 1] + 1


def scan(text, filename="<string>", *, start=0, end=None, source=None):
    """Split text (or text[start:end]) into tokens; the last one has kind "eof" and holds
    the tail. Positions are in `text` (whose Source `source` is, when given)."""
    return next(_scan(text, filename, start, end, source, split=False))


def scan_blocks(text, filename="<string>", *, start=0, source=None):
    """`scan`, a part at a time: lists of tokens that each end with a top-level field
    whose brackets close (and the separator after it), the last one with the eof token.
    A part's last token has its trail. A bad character raises when the scan gets there.
    `start`: where a part begins (the end of an earlier one: a scan started there gives
    the parts a scan from the beginning gives from there on)."""
    return _scan(text, filename, start, None, source, split=True)


def _scan(text, filename, start, end, source, split):
    tokens = []
    append = tokens.append
    source = source or Source(text)
    pos = start
    prev = None
    depth = 0
    cut = False        # a top-level field closed: the part ends before the next token
    for m in _TOKEN_RE.finditer(text, start, len(text) if end is None else end):
        if m.start() != pos:
            break
        trail, lead, word, punct, string, _ = m.groups()
        at = pos + len(trail) + len(lead)
        if prev is None:
            lead = trail + lead
        else:
            prev.trail = trail
        pos = m.end()
        if cut and not (punct == "," or punct == ";"):
            yield tokens
            tokens = []
            append = tokens.append
            cut = False
        if word is not None:
            prev = Token("placeholder" if "${" in word else "word", word, at, source, lead)
        elif punct is not None:
            prev = Token("punct", punct, at, source, lead)
            if split:
                if punct in "{<[":
                    depth += 1
                elif punct in "}>]":
                    depth = max(0, depth - 1)
                    cut = depth == 0
        elif string is not None:
            prev = Token("str", string, at, source, lead)
        else:
            append(Token("eof", "", at, source, lead))
            yield tokens
            return
        append(prev)
    _bad_char(text, pos, filename, *source.line_col(pos))


def _bad_char(text, pos, filename, line, col):
    """Raise a located error for the first character no token can start with."""
    m = re.compile(r"(?:[ \t\r\n\f\v\ufeff]+|\#[^\n]*)*").match(text, pos)
    at = m.end()
    skipped = text[pos:at]
    line_start = pos - col + 1
    if "\n" in skipped:
        line += skipped.count("\n")
        line_start = pos + skipped.rfind("\n") + 1
    ch = text[at]
    if ch in "\"'":
        msg = "unterminated string (strings end on the line they start)"
    elif ch == "$":
        msg = "malformed placeholder: expected `${NAME}`"
    else:
        msg = f"unexpected character {ch!r}"
    raise SurgeryError(msg, file=filename, line=line, col=at - line_start + 1)


MAX_DEPTH = 100   # protobuf's own text parser stops at 100 nested messages too


class _Parser:
    """Recursive descent over the token list; builds Message/Field nodes."""

    def __init__(self, tokens, filename):
        self.toks = tokens
        self.i = 0
        self.filename = filename
        self.depth = 0

    def error(self, msg, tok=None):
        tok = tok or self.toks[self.i]
        return SurgeryError(msg, file=self.filename, line=tok.line, col=tok.col)

    def peek(self):
        return self.toks[self.i]

    def take(self):
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at(self, text):
        tok = self.toks[self.i]
        return tok.kind == "punct" and tok.text == text

    def body(self, closer):
        fields = []
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                if closer is None:
                    return fields
                raise self.error(f"missing `{closer}` before end of file")
            if closer is not None and tok.kind == "punct" and tok.text == closer:
                return fields
            fields.append(self.field())

    def message(self):
        open_ = self.take()
        if self.depth >= MAX_DEPTH:
            raise self.error(f"messages nested more than {MAX_DEPTH} deep", open_)
        closer = _CLOSERS[open_.text]
        self.depth += 1
        fields = self.body(closer)
        self.depth -= 1
        return Message(open_, fields, self.take())

    def field(self):
        toks, i = self.toks, self.i
        name = toks[i]
        if name.kind != "word" or not _IDENT_RE.match(name.text):
            shown = name.text or "end of file"
            raise self.error(f"expected a field name, found `{shown}`", name)
        tok = toks[i + 1]
        colon = None
        if tok.kind == "punct" and tok.text == ":":
            colon, tok = tok, toks[i + 2]
            i += 1
        self.i = i + 1
        if tok.kind == "word" and colon is not None:     # `name: value`, the common form
            self.i += 1
            parts = [Value([tok])]
        elif tok.kind == "punct" and tok.text in _CLOSERS:
            parts = [self.message()]
        elif colon is None:
            raise self.error(f"expected `:` or `{{` after field `{name.text}`", tok)
        elif tok.kind == "punct" and tok.text == "[":
            parts = self.list_parts()
        else:
            parts = [self.value()]
        tok = toks[self.i]
        sep = None
        if tok.kind == "punct" and tok.text in (",", ";"):
            sep = tok
            self.i += 1
        return Field(name, colon, parts, sep)

    def list_parts(self):
        parts = [self.take()]
        if self.at("]"):
            parts.append(self.take())
            return parts
        while True:
            tok = self.peek()
            if tok.kind == "punct" and tok.text in _CLOSERS:
                parts.append(self.message())
            else:
                parts.append(self.value())
            if self.at("]"):
                parts.append(self.take())
                return parts
            if not self.at(","):
                raise self.error(f"expected `,` or `]` in list, found `{self.peek().text}`")
            parts.append(self.take())

    def value(self):
        tok = self.peek()
        if tok.kind in ("word", "placeholder"):
            return Value([self.take()])
        if tok.kind == "str":
            group = [self.take()]
            while self.peek().kind == "str":
                group.append(self.take())
            return Value(group)
        shown = tok.text or "end of file"
        raise self.error(f"expected a value, found `{shown}`", tok)


def parse_tokens(text, filename="<string>"):
    """Parse text into (root Message, eof Token). Raises SurgeryError on bad syntax."""
    tokens = scan(text, filename)
    parser = _Parser(tokens, filename)
    fields = parser.body(None)
    return Message(None, fields, None), tokens[-1]


_END = Token("eof", "")     # where a part of the file (scan_blocks) ends


def parse_fields(tokens, filename="<string>"):
    """The top-level fields of one part from `scan_blocks`."""
    if tokens[-1].kind != "eof":
        tokens.append(_END)
    return _Parser(tokens, filename).body(None)
