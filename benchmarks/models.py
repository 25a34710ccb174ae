"""Synthetic caffemodels with VGG-16 layer sizes, for timing readers on big files.

Generated with our own streaming writer. Every blob of a given shape is the same
zero-filled array (numpy allocates it lazily), so making a 2.5 GB file needs far
less than 2.5 GB of RAM; the values do not matter to either reader.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from surgery.io.caffemodel import NewLayer, write_entries  # noqa: E402

# (name, weight shape) of VGG-16's layers with parameters; each also has a bias.
VGG16 = [
    ("conv1_1", (64, 3, 3, 3)), ("conv1_2", (64, 64, 3, 3)),
    ("conv2_1", (128, 64, 3, 3)), ("conv2_2", (128, 128, 3, 3)),
    ("conv3_1", (256, 128, 3, 3)), ("conv3_2", (256, 256, 3, 3)), ("conv3_3", (256, 256, 3, 3)),
    ("conv4_1", (512, 256, 3, 3)), ("conv4_2", (512, 512, 3, 3)), ("conv4_3", (512, 512, 3, 3)),
    ("conv5_1", (512, 512, 3, 3)), ("conv5_2", (512, 512, 3, 3)), ("conv5_3", (512, 512, 3, 3)),
    ("fc6", (4096, 25088)), ("fc7", (4096, 4096)), ("fc8", (1000, 4096)),
]


def _layer_bytes(shape):
    return 4 * (int(np.prod(shape)) + shape[0])


def vgg_layers(target_bytes):
    """(name, type, shape) in VGG-16 order, repeating the net until target_bytes is reached."""
    out, total, copy = [], 0, 0
    while total < target_bytes:
        for name, shape in VGG16:
            if total >= target_bytes:
                break
            suffix = f"_{copy}" if copy else ""
            kind = "InnerProduct" if name.startswith("fc") else "Convolution"
            out.append((name + suffix, kind, shape))
            total += _layer_bytes(shape)
        copy += 1
    return out


def write_vgg_like(path, target_bytes):
    """Write a caffemodel of at least target_bytes (layer-granular); returns its layer count."""
    arrays = {}

    def zeros(shape):
        if shape not in arrays:
            arrays[shape] = np.zeros(shape, np.float32)
        return arrays[shape]

    entries = []
    previous = "data"
    for name, kind, shape in vgg_layers(target_bytes):
        entries.append(NewLayer(name, kind, blobs=(zeros(shape), zeros((shape[0],))),
                                bottoms=(previous,), tops=(name,)))
        previous = name
    write_entries(path, entries)
    return len(entries)


# A net made only of big fully connected layers, for init-weights and fcn at any size:
# a 512x7x7 map (VGG-16's pool5) then InnerProducts alternating 25088 -> 4096 -> 25088,
# each weight 4096 x 25088 float32 = 411 MB.
FC_BYTES = 4096 * 25088 * 4


def fc_chain_prototxt(path, target_bytes):
    """Write the prototxt of the fc chain with round(target / 411 MB) layers (at least 1);
    returns the bytes its weights take (biases included)."""
    count = max(1, round(target_bytes / FC_BYTES))
    lines = ['name: "fc_chain"',
             'layer { name: "data" type: "Input" top: "data" '
             'input_param { shape { dim: 1 dim: 512 dim: 7 dim: 7 } } }']
    bottom, total = "data", 0
    for i in range(count):
        outputs = 4096 if i % 2 == 0 else 25088
        lines.append(f'layer {{ name: "fc{i}" type: "InnerProduct" bottom: "{bottom}" '
                     f'top: "fc{i}" inner_product_param {{ num_output: {outputs} }} }}')
        bottom = f"fc{i}"
        total += FC_BYTES + 4 * outputs
    Path(path).write_text("\n".join(lines) + "\n")
    return total


if __name__ == "__main__":
    write_vgg_like(sys.argv[1], int(sys.argv[2]))
