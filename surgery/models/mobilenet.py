"""A compact MobileNet-v1-style net: depthwise 3x3 (group == channels) + pointwise 1x1.

Names follow the widely used Caffe port (`conv2_1/dw`, `conv2_1/dw/bn`,
`conv2_1/dw/scale`, `relu2_1/dw`, `conv2_1/sep`, ..., `pool6`, `fc7`, `prob`).
The stride-2 layers are the depthwise ones, as in the paper.
"""

from ..builder import NetBuilder

# (tag, output channels of the pointwise conv, stride of the depthwise conv)
UNITS = (("2_1", 64, 1), ("2_2", 128, 2), ("3_1", 128, 1), ("3_2", 256, 2),
         ("4_1", 256, 1), ("4_2", 512, 2), ("5_1", 512, 1), ("5_2", 1024, 2), ("6", 1024, 1))


def mobilenet_mini(*, width=1.0, input_size=224, num_classes=1000, name="MobileNet-mini"):
    def ch(n):
        return max(1, int(round(n * width)))

    b = NetBuilder(name)
    x = b.input("data", (1, 3, input_size, input_size))
    x = b.conv("conv1", x, num_output=ch(32), kernel=3, stride=2, pad=1, bias=False)
    b.bn_scale(x, bn="conv1/bn", scale="conv1/scale", relu="relu1")
    channels = ch(32)
    for tag, out, stride in UNITS:
        x = b.conv(f"conv{tag}/dw", x, num_output=channels, kernel=3, stride=stride, pad=1,
                   group=channels, bias=False)
        b.bn_scale(x, bn=f"conv{tag}/dw/bn", scale=f"conv{tag}/dw/scale", relu=f"relu{tag}/dw")
        channels = ch(out)
        x = b.conv(f"conv{tag}/sep", x, num_output=channels, kernel=1, bias=False)
        b.bn_scale(x, bn=f"conv{tag}/sep/bn", scale=f"conv{tag}/sep/scale", relu=f"relu{tag}/sep")
    x = b.pool("pool6", x, method="AVE", global_pooling=True)
    x = b.conv("fc7", x, num_output=num_classes, kernel=1)
    b.softmax("prob", x)
    return b.net
