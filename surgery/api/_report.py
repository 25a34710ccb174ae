"""`surgery.api.report`: one self-contained HTML page of a net, or of a conversion."""

import os
from dataclasses import dataclass

from ..errors import SurgeryError
from .base import Log, Result, load, transaction


@dataclass
class Page(Result):
    html: str           # the page
    output: str = None  # where it was written, or None

    @property
    def text(self):
        size = f"{len(self.html.encode('utf-8')) / 1024:.0f} KiB"
        return f"wrote {self.output} ({size})\n" if self.output else f"a page of {size}\n"

    def to_json(self):
        return {"output": self.output, "bytes": len(self.html.encode("utf-8"))}


def report(net, converted=None, *, output=None, input_shapes=None, phase=None, verify=None,
           strict=False, outputs=None, on_message=None, progress=None):
    """The page for the net at `net`, or for the conversion `net` -> `converted`: the graph
    with each changed layer's status, stride and receptive field against depth, costs,
    the exactness summary; `verify` (the path of `verify --json`'s output) adds the
    errors measured. `phase`: default TEST, or TRAIN for a train-only file. Written to
    `output` when given."""
    from ..report.html import find_layout, make_page, read_verify
    from ..analysis.graph import described_phases

    if verify and not converted:
        raise SurgeryError("--verify needs CONVERTED.prototxt (it measures a conversion)")
    log = Log(on_message)
    inputs = [p for p in (net, converted, verify) if p]
    with transaction(outputs, inputs=inputs, targets=[output], progress=progress) as out:
        measured = read_verify(verify) if verify else None
        layout = find_layout()   # before the nets load: a missing tool fails at once
        before = load(net, strict=strict, log=log)
        after = load(converted, strict=strict, log=log) if converted else None
        phase = phase or ("TEST" if "TEST" in described_phases(before.net) else "TRAIN")
        html = make_page(before, after, input_shapes=input_shapes or None, phase=phase,
                         verify=measured, layout=layout, progress=progress)
        if output is not None:
            out.write(output, html.encode("utf-8"))
    return log.done(Page(html, None if output is None else os.fspath(output)))
