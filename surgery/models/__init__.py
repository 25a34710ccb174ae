"""Reference backbones, generated in Python so tests can build any width or input size.

`MODELS` maps a model name to a function returning a NetParameter; `build(name,
**options)` calls it. The committed files in models/ are `write_models(out_dir)`: each
net at full width and 224 input, its OS-16 and OS-8 conversions, and README.md.
"""

import os

from ..errors import SurgeryError
from .asymmetric import asymmetric
from .inception import inception_mini
from .mobilenet import mobilenet_mini
from .resnet import resnet
from .vgg import vgg16

MODELS = {
    "resnet50": lambda **kw: resnet(50, **kw),
    "resnet50-s3x3": lambda **kw: resnet(50, stride_on="3x3", name="ResNet-50-s3x3", **kw),
    "resnet101": lambda **kw: resnet(101, **kw),
    "resnet152": lambda **kw: resnet(152, **kw),
    "vgg16": vgg16,
    "googlenet-mini": inception_mini,
    "mobilenet-mini": mobilenet_mini,
    "asymmetric": asymmetric,
}


def build(name, **options):
    """The NetParameter of model `name` (options: width, input_size, num_classes, ...)."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise SurgeryError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}") from None
    return factory(**options)


def write_models(out_dir, names=None):
    """Write <out_dir>/<name>/deploy.prototxt and its OS-16 and OS-8 conversions for each
    model, and <out_dir>/README.md (the cost table) when all models are written; returns
    the paths written."""
    from ..io.atomic import Outputs
    from ..io.prototxt import save_prototxt
    from .conversions import STRIDES, convert, file_name, readme

    chosen = list(names or MODELS)
    for name in chosen:
        if name not in MODELS:
            build(name)      # raises the "unknown model" error before anything is written
    paths, tables = [], []
    with Outputs() as outputs:     # every file or none (io/atomic.py)
        for name in chosen:
            folder = os.path.join(out_dir, name)
            os.makedirs(folder, exist_ok=True)
            original = build(name)
            conversions = {stride: convert(original, stride) for stride in STRIDES}
            for stride, net in [(None, original)] + [(s, c.net) for s, c in conversions.items()]:
                path = os.path.join(folder, file_name(stride))
                save_prototxt(net, path, outputs=outputs)
                paths.append(path)
            tables.append((name, original, conversions))
        if set(chosen) == set(MODELS):
            path = os.path.join(out_dir, "README.md")
            tables.sort(key=lambda table: list(MODELS).index(table[0]))
            outputs.write(path, readme(tables).encode("utf-8"))
            paths.append(path)
        outputs.commit()
    return paths
