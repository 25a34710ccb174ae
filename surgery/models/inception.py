"""A compact GoogLeNet/Inception-style DAG.

Stem as in GoogLeNet, then Inception modules joined by Concat: square 3x3/5x5
branches in stage 3, factorised 1x7/7x1 branches (Inception-v3 style, with
matching `pad_h/pad_w`) in stage 4, and a 3x3 max-pool + 1x1 projection branch.
The pooling branches are where an a-trous rewrite stops being exact, so
`pool_branch_stages` lets tests build a variant that is exact end to end.
"""

from ..builder import NetBuilder


def inception_mini(*, width=1.0, input_size=224, num_classes=1000, pool_branch_stages=(3, 4, 5),
                   name="GoogLeNet-mini"):
    def ch(n):
        return max(1, int(round(n * width)))

    b = NetBuilder(name)
    x = b.input("data", (1, 3, input_size, input_size))
    x = b.conv("conv1/7x7_s2", x, num_output=ch(64), kernel=7, stride=2, pad=3)
    b.relu("conv1/relu_7x7", x)
    x = b.pool("pool1/3x3_s2", x, kernel=3, stride=2)
    x = b.conv("conv2/3x3", x, num_output=ch(192), kernel=3, pad=1)
    b.relu("conv2/relu_3x3", x)
    x = b.pool("pool2/3x3_s2", x, kernel=3, stride=2)

    def conv_relu(tag, bottom, name, channels, kernel, pad=0):
        top = b.conv(f"{tag}/{name}", bottom, num_output=ch(channels), kernel=kernel, pad=pad)
        b.relu(f"{tag}/relu_{name}", top)
        return top

    def module(tag, bottom, stage, branches):
        tops = [_chain(conv_relu, tag, bottom, chain) for chain in branches]
        if stage in pool_branch_stages:
            pooled = b.pool(f"{tag}/pool", bottom, kernel=3, stride=1, pad=1)
            tops.append(conv_relu(tag, pooled, "pool_proj", 32, 1))
        return b.concat(f"{tag}/output", tops)

    square = [
        [("1x1", 64, 1, 0)],
        [("3x3_reduce", 96, 1, 0), ("3x3", 128, 3, 1)],
        [("5x5_reduce", 16, 1, 0), ("5x5", 32, 5, 2)],
    ]
    factorised = [
        [("1x1", 128, 1, 0)],
        [("7x7_reduce", 64, 1, 0), ("1x7", 96, (1, 7), (0, 3)), ("7x1", 128, (7, 1), (3, 0))],
        [("7x7dbl_reduce", 64, 1, 0), ("7x1_dbl", 64, (7, 1), (3, 0)), ("1x7_dbl", 96, (1, 7), (0, 3))],
    ]
    x = module("inception_3a", x, 3, square)
    x = module("inception_3b", x, 3, square)
    x = b.pool("pool3/3x3_s2", x, kernel=3, stride=2)
    x = module("inception_4a", x, 4, factorised)
    x = module("inception_4b", x, 4, factorised)
    x = b.pool("pool4/3x3_s2", x, kernel=3, stride=2)
    x = module("inception_5a", x, 5, square)
    x = b.pool("pool5/global", x, method="AVE", global_pooling=True)
    b.fc("loss3/classifier", x, num_output=num_classes)
    b.softmax("prob", "loss3/classifier")
    return b.net


def _chain(conv_relu, tag, bottom, chain):
    for name, channels, kernel, pad in chain:
        bottom = conv_relu(tag, bottom, name, channels, kernel, pad)
    return bottom
