"""The `param_str` of a Caffe Python layer, as py-faster-rcnn's layers read it.

py-faster-rcnn's layers hand `param_str` to `yaml.load`: `'feat_stride': 16` is a
one-entry mapping with a quoted key, and forks write the brace form
`{'feat_stride': 16, 'scales': [8, 16, 32]}` or YAML's own `feat_stride: 16`. `read`
gives the mapping (Python literals, or `key: value` lines of numbers and lists);
`replace` writes one key's number anew and leaves every other character of the text as
it was, so quotes, spacing and the other keys survive an edit.
"""

import ast
import re

from .errors import SurgeryError

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def read(text):
    """The mapping `text` spells; SurgeryError when it is not one."""
    body = text.strip()
    if not body:
        return {}
    for candidate in (body, "{" + body + "}"):
        try:
            value = ast.literal_eval(candidate)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return _block(body)


def _block(body):
    """YAML block style, one `key: value` a line (values: Python literals or bare words)."""
    found = {}
    for line in body.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, colon, value = line.partition(":")
        if not colon or not key.strip():
            raise SurgeryError(f"param_str {body!r} is not a mapping of keys to values")
        try:
            found[key.strip().strip("'\"")] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            found[key.strip().strip("'\"")] = value.strip()
    return found


def _span(text, key):
    """(start, end) of the number given to `key` in `text`, or None when no key `key`
    has a plain number."""
    pattern = re.compile(r"(?:(?<=[{,\s])|^)(['\"]?)" + re.escape(key) + r"\1\s*:\s*(" +
                         _NUMBER + r")(?=\s*(?:[,}\n#]|$))")
    found = [m for m in pattern.finditer(text)]
    if len(found) != 1:
        return None
    return found[0].span(2)


def replace(text, key, value):
    """`text` with the number of `key` set to `value` (an int, or a float), every other
    character unchanged; SurgeryError when `key` has no plain number there."""
    span = _span(text, key)
    before = read(text)
    if span is None or not isinstance(before.get(key), (int, float)):
        raise SurgeryError(f"param_str {text!r} gives '{key}' no number to rewrite")
    old = text[span[0]:span[1]]
    whole = float(value).is_integer() and re.fullmatch(r"[-+]?\d+", old)
    new_text = text[:span[0]] + (str(int(value)) if whole else repr(float(value))) + text[span[1]:]
    after = read(new_text)
    if after.get(key) != value or {k: v for k, v in after.items() if k != key} != \
            {k: v for k, v in before.items() if k != key}:
        raise SurgeryError(f"param_str {text!r}: rewriting '{key}' would change more than it")
    return new_text
