"""Reading and writing prototxt text, with errors a person can act on.

Parsing uses protobuf's own text_format against our superset schema, so any
file Caffe (or a known fork) accepts is accepted here. What we add is the
explanation when a file is wrong: one line, FILE:LINE:COL, and a hint
(did-you-mean, where a misplaced field belongs, unsubstituted template).
"""

import os
import re

from google.protobuf import text_format

from .. import caffe_pb2
from ..errors import SurgeryError
from .atomic import write_atomic
from .inputs import read_input

# "12:5 : " prefix that text_format puts on every ParseError message.
_LOC_PREFIX = re.compile(r"^\d+(?::\d+)? : ")
_NO_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')
_NO_ENUM = re.compile(r'Enum type "([\w.]+)" has no value named (\w+)')
_REPEATED_SINGLE = re.compile(r'Message type "([\w.]+)" should not have multiple "(\w+)" fields')
_EXPECTED_STRING = re.compile(r"Expected string but found: '(\w+)'")
_LEGACY_MESSAGES = ("V0LayerParameter", "V1LayerParameter")
_PLACEHOLDER = re.compile(r"\$\{[^}\n]*\}?")


# --------------------------------------------------------------------------
# reading


def read_text(path):
    """Return the file's text, or a one-line SurgeryError naming the file."""
    path = os.fspath(path)
    return _decode(read_input(path, "prototxt"), path)


def _decode(data, filename):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        head = data[: exc.start]
        line = head.count(b"\n") + 1
        col = exc.start - (head.rfind(b"\n") + 1) + 1
        raise SurgeryError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x}); a binary file such as a "
            ".caffemodel cannot be read as a prototxt",
            file=filename, line=line, col=col,
        ) from None


def parse_prototxt(text, filename="<string>", message_type=None):
    """Parse prototxt text into a fresh message (NetParameter by default)."""
    if message_type is None:
        message_type = caffe_pb2.NetParameter
    if isinstance(text, (bytes, bytearray)):
        text = _decode(bytes(text), filename)
    if not _has_content(text):
        raise SurgeryError("file is empty (nothing but whitespace or comments)", file=filename)
    message = message_type()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise _explain(exc, text, filename, message_type) from None
    return message


def _first_keyword(text, word):
    """(line, col) of the first top-level-looking ``word {`` / ``word:`` outside strings."""
    pattern = re.compile(r"(?<![\w.])" + re.escape(word) + r"\s*[:{]")
    for number, line in enumerate(text.splitlines(), 1):
        match = pattern.search(_code_part(line))
        if match:
            return number, match.start() + 1
    return None


def _has_content(text):
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return True
    return False


# --------------------------------------------------------------------------
# writing


def format_prototxt(net):
    """Canonical text: fields in schema order, shortest round-trip floats, UTF-8 kept."""
    return text_format.MessageToString(net, as_utf8=True)


def save_prototxt(net, path, *, inputs=(), in_place=False, outputs=None):
    """Write ``net`` atomically (staged in `outputs`, an io.atomic.Outputs transaction,
    when given); refuses to overwrite an input unless in_place."""
    write_atomic(os.fspath(path), format_prototxt(net).encode("utf-8"),
                 inputs=inputs, in_place=in_place, outputs=outputs)


# --------------------------------------------------------------------------
# explaining parse errors


def _explain(exc, text, filename, message_type):
    raw = _LOC_PREFIX.sub("", str(exc), count=1)
    line, col = exc.GetLine(), exc.GetColumn()
    lines = text.splitlines()
    source_line = lines[line - 1] if line and 0 < line <= len(lines) else ""
    # Tokenizer errors quote the whole source line first; drop that echo.
    echo = f"'{source_line}': "
    if source_line and raw.startswith(echo):
        raw = raw[len(echo):]

    placeholder = _first_placeholder(lines, upto=line)
    if placeholder is not None:
        p_line, p_col, token = placeholder
        return SurgeryError(
            f"template placeholder {token}: protobuf's parser cannot hold it; load the file "
            "with surgery.io.netfile.load_net (as every command does) or substitute it first",
            file=filename, line=p_line, col=p_col,
        )

    match = _NO_FIELD.search(raw)
    if match:
        return SurgeryError(_unknown_field(match.group(1), match.group(2)),
                            file=filename, line=line, col=col)
    match = _NO_ENUM.search(raw)
    if match:
        return SurgeryError(_unknown_enum(match.group(1), match.group(2)),
                            file=filename, line=line, col=col)
    match = _REPEATED_SINGLE.search(raw)
    if match:
        return SurgeryError(
            f"`{match.group(2)}` is given twice in one {_short(match.group(1))}; "
            "it takes a single value", file=filename, line=line, col=col)
    match = _EXPECTED_STRING.search(raw)
    if match and match.group(1) in _v1_type_names():
        return SurgeryError(
            f"`type: {match.group(1)}` is the old V1 enum form, valid only inside `layers {{ }}`; "
            f"in `layer {{ }}` write a quoted string such as \"{_v1_type_names()[match.group(1)]}\"",
            file=filename, line=line, col=col,
        )
    return SurgeryError(f"syntax error: {raw.rstrip('.')}", file=filename, line=line, col=col)


def _first_placeholder(lines, *, upto):
    """First unquoted ``${...}`` outside comments, on or before the error's line."""
    last = min(len(lines), upto or len(lines))
    for number in range(1, last + 1):
        code = _code_part(lines[number - 1])
        match = _PLACEHOLDER.search(code)
        if match:
            return number, match.start() + 1, match.group(0)
    return None


def _code_part(line):
    """The line with string literals blanked and any trailing comment removed."""
    out = []
    quote = None
    escaped = False
    for char in line:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
            out.append(" ")
        elif char in "\"'":
            quote = char
            out.append(" ")
        elif char == "#":
            break
        else:
            out.append(char)
    return "".join(out)


def _all_messages():
    """Every message descriptor of the schema, by full name."""
    found = {}

    def walk(descriptor):
        found[descriptor.full_name] = descriptor
        for nested in descriptor.nested_types:
            walk(nested)

    for descriptor in caffe_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(descriptor)
    return found


def _short(full_name):
    return full_name.rsplit(".", 1)[-1]


def _holders(message_full_name, messages, prefer):
    """Fields (as 'owner.field') whose type is the given message, preferred owners first."""
    result = []
    for owner in prefer + [m for m in messages.values() if m not in prefer]:
        for field in owner.fields:
            if field.message_type is not None and field.message_type.full_name == message_full_name:
                result.append((owner, field))
    return result


def _unknown_field(type_name, name):
    messages = _all_messages()
    where = messages.get(type_name)
    short = _short(type_name)
    text = f"`{name}` is not a field of {short}"
    if where is None:
        return text
    if where.full_name.endswith("V1LayerParameter") and name == "layer":
        return ("a V0 net (`layers { layer { ... } }`, Caffe's oldest format) is not supported; "
                "convert it with Caffe's upgrade_net_proto_text first")
    import difflib      # error paths only: a clean load does not import it

    close = difflib.get_close_matches(name, [f.name for f in where.fields], n=2, cutoff=0.7)
    if close:
        text = f"`{name}`: did you mean " + " or ".join(f"`{c}`" for c in close) + f"? ({short} has no field `{name}`)"
    homes = [m for m in messages.values() if m is not where and name in m.fields_by_name]
    current = [m for m in homes if _short(m.full_name) not in _LEGACY_MESSAGES]
    homes = current or homes
    if homes:
        text += "; " + _belongs(name, homes, where, messages)
    solver = messages.get("caffe.SolverParameter")
    if where.full_name == "caffe.NetParameter" and solver is not None and name in solver.fields_by_name:
        text += " (this looks like a solver file, not a net)"
    return text


def _belongs(name, homes, where, messages):
    layer = messages.get("caffe.LayerParameter")
    prefer = [m for m in (where, layer) if m is not None]
    phrases = []
    for home in homes[:3]:
        holders = _holders(home.full_name, messages, prefer)
        if holders:
            owner, field = holders[0]
            inner = f"{name} {{ ... }}" if home.fields_by_name[name].message_type else f"{name}: ..."
            phrases.append(f"{_short(home.full_name)} (`{field.name} {{ {inner} }}`)")
        else:
            phrases.append(_short(home.full_name))
    more = " ..." if len(homes) > 3 else ""
    return f"`{name}` belongs in " + " or ".join(phrases) + more


def _unknown_enum(type_name, value):
    enum = None
    for message in _all_messages().values():
        for candidate in message.enum_types:
            if candidate.full_name == type_name:
                enum = candidate
    if enum is None:
        enum = caffe_pb2.DESCRIPTOR.enum_types_by_name.get(_short(type_name))
    text = f"`{value}` is not a value of {_short(type_name)}"
    if enum is None:
        return text
    names = [v.name for v in enum.values]
    close = enum_near_misses(enum, value)
    if close:
        return f"`{value}`: did you mean " + " or ".join(f"`{c}`" for c in close) + f"? ({text})"
    return f"{text} (choose one of {', '.join(names)})"


def enum_near_misses(enum, value, n=2):
    """Names of `enum` (a descriptor) one slip away from `value`, closest first."""
    import difflib      # error and warning paths only

    names = [v.name for v in enum.values]
    return (difflib.get_close_matches(value, names, n=n, cutoff=0.6)
            or difflib.get_close_matches(value.upper(), names, n=n, cutoff=0.6))


def _v1_type_names():
    from .v1types import V1_TYPE_BY_NAME

    return V1_TYPE_BY_NAME
