"""A small net whose windows differ per axis: `kernel_h != kernel_w`,
`stride_h != stride_w`, `pad_h != pad_w`.

The strides are placed so that the two axes reach the same total stride (32)
through different layers: an output-stride rewrite has to remove the H stride
and the W stride at different places, which is what this net is for.
"""

from ..builder import NetBuilder

# (name, channels, kernel (h, w), stride (h, w), pad (h, w))
CONVS = (
    ("conv1", 16, (3, 5), (2, 2), (1, 2)),
    ("conv2", 24, (5, 3), (2, 1), (2, 1)),
    ("conv3", 32, (3, 3), (1, 2), (1, 1)),
    ("pool1", None, (3, 2), (2, 2), (1, 0)),
    ("conv4", 48, (1, 7), (2, 1), (0, 3)),
    ("conv5", 64, (7, 1), (1, 2), (3, 0)),
    ("conv6", 96, (3, 3), (2, 2), (1, 1)),
    ("conv7", 128, (3, 5), (1, 1), (1, 2)),
)


def asymmetric(*, width=1.0, input_size=224, num_classes=1000, name="Asymmetric"):
    b = NetBuilder(name)
    x = b.input("data", (1, 3, input_size, input_size))
    for layer, channels, kernel, stride, pad in CONVS:
        if channels is None:
            x = b.pool(layer, x, kernel=kernel, stride=stride, pad=pad)
            continue
        x = b.conv(layer, x, num_output=max(1, int(round(channels * width))), kernel=kernel,
                   stride=stride, pad=pad)
        b.relu(f"relu{layer[4:]}", x)
    x = b.pool("pool_global", x, method="AVE", global_pooling=True)
    b.fc("fc", x, num_output=num_classes)
    b.softmax("prob", "fc")
    return b.net
