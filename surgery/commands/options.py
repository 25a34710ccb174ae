"""Option value types: a bad value is refused while the command line is parsed.

Each function takes the text of one option value and returns the value, or raises
argparse.ArgumentTypeError with what was expected; the CLI's parser turns that into one
line on stderr and exit status 2 before anything is read or written. Values that only a
file can refute (a blob name, an input that the net lacks) are checked when the net is
loaded, with the same one-line error.
"""

import argparse
import math
import os


def _refuse(text):
    return argparse.ArgumentTypeError(text)


def _integer(text):
    try:
        return int(text.strip())
    except ValueError:
        raise _refuse(f"'{text}' is not an integer") from None


def positive_int(text):
    value = _integer(text)
    if value <= 0:
        raise _refuse(f"'{text}' is not a positive integer")
    return value


def seed(text):
    """A random seed: numpy takes any non-negative integer."""
    value = _integer(text)
    if value < 0:
        raise _refuse(f"'{text}': a seed is zero or a positive integer")
    return value


def positive_ints(text):
    """'1,2,4' -> [1, 2, 4]; every value present and a positive integer."""
    parts = text.split(",")
    if not text.strip() or any(not p.strip() for p in parts):
        raise _refuse(f"'{text}': expected positive integers separated by commas, like 1,2,4")
    try:
        return [positive_int(p) for p in parts]
    except argparse.ArgumentTypeError:
        raise _refuse(f"'{text}': expected positive integers separated by commas, "
                      "like 1,2,4") from None


def scales(text):
    """'1,0.75,0.5' -> ['1', '0.75', '0.5']: positive decimals (the pass checks that Interp
    can make each and that 1 is among them)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        if not all(parts) or any(not math.isfinite(float(p)) or float(p) <= 0 for p in parts):
            raise ValueError
    except ValueError:
        raise _refuse(f"'{text}': expected positive numbers separated by commas, "
                      "like 1,0.75,0.5") from None
    return parts


def tolerance(text):
    try:
        value = float(text)
    except ValueError:
        raise _refuse(f"'{text}' is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise _refuse(f"'{text}': the tolerance is a finite number, zero or positive")
    return value


def input_shape(text):
    """One NAME=N,C,H,W spec, checked as the commands will parse it (kept as text)."""
    from ..analysis.analyse import parse_input_shapes
    from ..errors import SurgeryError

    try:
        parse_input_shapes([text])
    except SurgeryError as exc:
        raise _refuse(exc.message) from None
    return text


def decimate(text):
    """One LAYER=KxK:N spec, checked as fcn will parse it (kept as text)."""
    from ..errors import SurgeryError
    from ..transform.fcn import parse_decimate

    try:
        parse_decimate([text])
    except SurgeryError as exc:
        raise _refuse(exc.message) from None
    return text


def rename_pattern(text):
    """A new-name pattern with {name} for the old name, e.g. '{name}-conv'."""
    try:
        new = text.format(name="fc6")
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise _refuse(f"'{text}' ({exc!s}); use {{name}} for the old name, "
                      "e.g. '{name}-conv'") from None
    if new == text.format(name="fc7"):
        raise _refuse(f"'{text}' gives every layer the same name; put {{name}} in it")
    return text


def executable_file(text):
    """A program to run: a file that exists and may be executed."""
    if not text.strip():
        raise _refuse("an empty file name")
    if not os.path.isfile(text):
        raise _refuse(f"{text}: no such file" if not os.path.isdir(text)
                      else f"{text} is a directory; give the interpreter's path")
    if not os.access(text, os.X_OK):
        raise _refuse(f"{text} is not executable")
    return text


def output_file(text):
    """A file to write: not empty. Whether it can be written is found out by claiming
    it (io/atomic.Outputs.reserve), before the command's work starts."""
    if not text.strip():
        raise _refuse("an empty file name")
    return text


def output_file_or_stdout(text):
    """An output file, or '-' for stdout."""
    return text if text == "-" else output_file(text)


def name(text):
    """A layer or blob name: not empty."""
    if not text.strip():
        raise _refuse("an empty name")
    return text


def integer(text):
    """Any integer (e.g. a label value)."""
    return _integer(text)


def crop(text):
    """'321' or '321,481' (H,W) -> (h, w), both positive."""
    parts = text.split(",")
    if len(parts) not in (1, 2) or any(not p.strip() for p in parts):
        raise _refuse(f"'{text}': expected a crop size H or H,W, like 321 or 321,481")
    try:
        values = [positive_int(p) for p in parts]
    except argparse.ArgumentTypeError:
        raise _refuse(f"'{text}': a crop size is one or two positive integers, "
                      "like 321 or 321,481") from None
    return (values[0], values[-1])


def define(text):
    """'NAME=VALUE' -> (NAME, VALUE): fills `${NAME}` of a template net for the run."""
    name, eq, value = text.partition("=")
    if not eq or not name or any(c in name for c in "${} \t") or "\n" in value:
        raise _refuse(f"'{text}': expected NAME=VALUE, like NUM_LABELS=21 (NAME as in "
                      "${NAME}, a value on one line)")
    return name, value
