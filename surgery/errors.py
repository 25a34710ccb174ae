"""One error type for everything a user can get wrong.

The CLI turns a SurgeryError into a single line on stderr and exit status 2,
so every message must say where (file:line:col, or the layer/blob) and what to do.
"""


class SurgeryError(Exception):
    """Bad input or an impossible request."""

    def __init__(self, message, *, file=None, line=None, col=None, layer=None, blob=None):
        super().__init__(message)
        self.message = message
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
        text = " ".join(self.message.split())  # always one line
        return f"{': '.join(where)}: {text}" if where else text
