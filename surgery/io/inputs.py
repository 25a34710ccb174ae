"""Opening an input file: one place that turns every way it can fail into one line.

A FIFO, a terminal or another device is refused rather than read: reading a FIFO with no
writer blocks forever, and a device never ends. The file is opened without blocking and
checked by its descriptor, so nothing can swap it between the check and the read.
"""

import fcntl
import os
import stat

from ..errors import SurgeryError, os_reason


def open_input(path, what="file"):
    """`path` opened for binary reading; SurgeryError naming it when it is missing,
    unreadable, a directory or not a regular file. `what` names the kind of file
    ("prototxt", "caffemodel") in the message."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SurgeryError(f"cannot read {what}: {_reason(exc)}", file=path) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise SurgeryError(f"is a directory, not a {what} file", file=path)
        if not stat.S_ISREG(mode):
            raise SurgeryError(f"cannot read {what}: not a regular file (a FIFO, device or "
                               "socket); save the input to a file first", file=path)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_input(path, what="file"):
    """The whole of `path` as bytes (see open_input)."""
    with open_input(path, what) as handle:
        try:
            return handle.read()
        except OSError as exc:
            raise SurgeryError(f"cannot read {what}: {_reason(exc)}",
                               file=os.fspath(path)) from None


def _reason(exc):
    reason = os_reason(exc)
    return "no such file" if reason == "no such file or directory" else reason
