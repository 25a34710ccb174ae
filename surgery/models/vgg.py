"""VGG-16 (configuration D) in new-style `layer` syntax with the Oxford names."""

from ..builder import NetBuilder

STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def vgg16(*, width=1.0, fc_width=4096, input_size=224, num_classes=1000, name="VGG_ILSVRC_16_layers"):
    """3x3 pad-1 convolutions, MAX 2x2/2 pools, fc6/fc7 with ReLU+Dropout, fc8, prob."""
    b = NetBuilder(name)
    x = b.input("data", (1, 3, input_size, input_size))
    for stage, (channels, count) in enumerate(STAGES, start=1):
        for i in range(1, count + 1):
            x = b.conv(f"conv{stage}_{i}", x, num_output=max(1, int(round(channels * width))),
                       kernel=3, pad=1)
            b.relu(f"relu{stage}_{i}", x)
        x = b.pool(f"pool{stage}", x, kernel=2, stride=2)
    for i in (6, 7):
        x = b.fc(f"fc{i}", x, num_output=fc_width)
        b.relu(f"relu{i}", x)
        b.dropout(f"drop{i}", x)
    b.fc("fc8", x, num_output=num_classes)
    b.softmax("prob", "fc8")
    return b.net
