"""One error type for everything a user can get wrong.

The CLI turns a SurgeryError into a single line on stderr and exit status 2,
so every message must say where (file:line:col, or the layer/blob) and what to do.
"""


class SurgeryError(Exception):
    """Bad input or an impossible request."""

    def __init__(self, message, *, file=None, line=None, col=None, layer=None, blob=None,
                 hint=""):
        super().__init__(message)
        self.message = message
        self.hint = hint        # what to try, appended after "; " (left out where moot)
        self.file = file
        self.line = line
        self.col = col
        self.layer = layer
        self.blob = blob
        self.blocking = []      # a refusal's layers in the way, in file order

    def __str__(self):
        where = []
        if self.file is not None:
            loc = str(self.file)
            if self.line is not None:
                loc += f":{self.line}"
                if self.col is not None:
                    loc += f":{self.col}"
            where.append(loc)
        if self.layer is not None:
            where.append(f"layer '{self.layer}'")
        if self.blob is not None:
            where.append(f"blob '{self.blob}'")
        text = " ".join((self.message + (f"; {self.hint}" if self.hint else "")).split())
        return f"{': '.join(where)}: {text}" if where else text


# Reasons for the OS errors a user can cause or fix, in the project's lower-case wording;
# any other error keeps the system's own text.
_REASONS = {
    "ENOENT": "no such file or directory",
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
    "EROFS": "read-only file system",
    "ENOSPC": "no space left on device",
    "EDQUOT": "disk quota exceeded",
    "EFBIG": "file too large (over the file-size limit: see `ulimit -f`)",
    "EISDIR": "is a directory",
    "ENOTDIR": "a part of the path is not a directory",
    "ENAMETOOLONG": "file name too long",
    "ENXIO": "no such device",
}


def os_reason(exc):
    """What went wrong in an OSError, as a few lower-case words without the path."""
    import errno

    name = errno.errorcode.get(exc.errno or 0)
    if name in _REASONS:
        return _REASONS[name]
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]
