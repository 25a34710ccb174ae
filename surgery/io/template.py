"""`${NAME}` placeholders of template nets (DeepLab's run scripts fill them with sed),
filled for one run: `verify --define NAME=VALUE`.

Values go into the text before it is parsed, as the pipelines' sed does, so a filled
template loads like the file the pipeline would write. The user's file is not changed.
"""

import re

PLACEHOLDER = re.compile(r"\$\{([^{}\s]*)\}")


def names(text):
    """The placeholder names a text uses."""
    return {match.group(1) for match in PLACEHOLDER.finditer(text)}


def fill(text, defines):
    """`text` with each `${NAME}` of `defines` replaced by its value (others stay)."""
    if not defines:
        return text
    return PLACEHOLDER.sub(lambda m: defines.get(m.group(1), m.group(0)), text)


def position_in(template, filled, line, col, placeholder):
    """(line, col) in `template` of the placeholder text that sits at (line, col) of
    `filled`: values have no newline, so only columns move, and a placeholder left open
    is the same k-th occurrence on its line in both texts."""
    if line is None or col is None:
        return line, col
    before = filled.splitlines()[line - 1][:col - 1].count(placeholder)
    original = template.splitlines()[line - 1]
    at = -1
    for _ in range(before + 1):
        at = original.find(placeholder, at + 1)
        if at < 0:
            return line, col
    return line, at + 1
