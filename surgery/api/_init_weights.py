"""`surgery.api.init_weights`: random weights for a net, streamed, with Caffe's shapes."""

import math
import os
from dataclasses import dataclass

from .base import Log, Result, choose_phases, load, refuse_open_sizes, transaction


@dataclass
class Initialised(Result):
    output: str
    seed: int
    layers: list        # [{"name", "type", "shapes": [shape]}] in file order

    @property
    def text(self):
        count = sum(math.prod(s) for l in self.layers for s in l["shapes"])
        return f"wrote {self.output}: {len(self.layers)} layers, {count} parameters " \
               f"(seed {self.seed})\n"

    def to_json(self):
        return {"output": self.output, "seed": self.seed, "layers": [
            {"name": l["name"], "type": l["type"], "shapes": [list(s) for s in l["shapes"]]}
            for l in self.layers]}


def init_weights(net, output, *, seed=0, input_shapes=None, phase=None, strict=False,
                 outputs=None, on_message=None, progress=None):
    """Write random weights for the net at `net` to the .caffemodel `output`: activations
    stay O(1) through the net, and the same seed and layer name give the same numbers.
    `phase` as in `check`: default every phase in which the net is complete."""
    from ..weights.initweights import init_weights as stream

    output = os.fspath(output)
    log = Log(on_message)
    with transaction(outputs, inputs=[net], targets=[output], progress=progress) as out:
        loaded = load(net, strict=strict, log=log)
        refuse_open_sizes(loaded, "substitute the placeholders before making weights")
        layers = stream(loaded.net, output, seed=seed, input_shapes=input_shapes or None,
                        inputs=(loaded.path,), outputs=out,
                        phases=choose_phases(phase, loaded.net, log=log))
    return log.done(Initialised(output, seed, layers))
