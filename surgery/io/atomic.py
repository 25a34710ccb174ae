"""Atomic output: a failed run never leaves a half-written or clobbered file."""

import os
import tempfile

from ..errors import SurgeryError


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def guard_output(path, inputs=(), *, in_place=False):
    """Refuse to overwrite an input unless the user asked for it (--in-place)."""
    for src in inputs:
        if src is not None and _same_file(path, src) and not in_place:
            raise SurgeryError(
                f"output {path} is the input file; choose another -o or pass --in-place"
            )


def write_atomic(path, data, *, inputs=(), in_place=False):
    """Write bytes (or call data(fileobj)) to a temp file beside path, then rename.

    The rename is atomic on POSIX, so readers see the old file or the new one,
    never a partial one; on any error the temp file is removed.
    """
    guard_output(path, inputs, in_place=in_place)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise SurgeryError(f"cannot write {path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            if callable(data):
                data(out)
            else:
                out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
