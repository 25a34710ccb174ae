"""Reference backbones, generated in Python so tests can build any width or input size.

`MODELS` maps a model name to a function returning a NetParameter; `build(name,
**options)` calls it. The committed files in models/<name>/deploy.prototxt are
`write_models(out_dir)` at full width and 224 input.
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
    """Write <out_dir>/<name>/deploy.prototxt for each model; returns the paths."""
    from ..io.prototxt import save_prototxt

    paths = []
    for name in names or MODELS:
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "deploy.prototxt")
        save_prototxt(build(name), path)
        paths.append(path)
    return paths
