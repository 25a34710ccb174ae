"""One question, one answer (issue 28): on published nets, `inspect`, `dilate`, `report`
and the pair judgement `verify` reads say the same thing about the same conversion.

- `inspect` lists exactly the output strides `dilate -s N --head cut` accepts, and the
  flags each needs: every listed stride converts with its flags, and a stride that is
  not listed, or listed with flags, is refused without them.
- For each conversion made, the two files judged alone (what `report` and `verify`
  read) give every layer the status `dilate` gave it, the same exact blobs and the same
  input-size condition, and the report's common grid is the one dilate recorded.
"""

import json

import pytest

from surgery.io.netfile import load_net
from surgery.transform.dilate import dilate
from surgery.transform.judge import judge

from conftest import corpus_path, run_cli

NETS = [
    "resnet_kaiming/ResNet-50-deploy.prototxt",
    "vgg/VGG_ILSVRC_16_layers_deploy.prototxt",
    "squeezenet/SqueezeNet_v1.0_deploy.prototxt",
    "fcn/voc-fcn8s_deploy.prototxt",
    "pspnet/pspnet101_VOC2012_473.prototxt",
    "deeplab_v2/vgg16_train.prototxt",
    "dilation/dilation8_pascal_voc_deploy.prototxt",
    "mobilenet/mobilenet_deploy.prototxt",
    "soeaver_cls/deploy_resnet101-v2.prototxt",
]


@pytest.mark.slow
@pytest.mark.parametrize("rel", NETS)
def test_inspect_dilate_and_the_pair_judgement_agree(rel):
    path = corpus_path(rel)
    code, out, _ = run_cli("inspect", path, "--json")
    assert code == 0
    data = json.loads(out)
    listed = {s: () for s in data["reachable_output_strides"]}
    listed.update({int(s): tuple(f) for s, f in data["reachable_with_flags"].items()})
    assert listed, "inspect lists no stride"
    _same_word(path, data, listed)
    tried = sorted(set(listed) | {max(listed) * 2, 1, 2, 4, 8, 16, 32})
    original = load_net(path)
    for stride in tried:
        flags = [w for flag in listed.get(stride, ()) for w in flag.split()]
        code, out, err = run_cli("dilate", path, "-s", stride, "--head", "cut", *flags, "--json",
                                 "--dry-run")
        assert (code == 0) == (stride in listed), (stride, flags, err)
        if stride in listed and flags:     # and it needs them: refused without
            refused, _, why = run_cli("dilate", path, "-s", stride, "--head", "cut", "--dry-run")
            assert refused == 2 and flags[0] in why, (stride, why)
        if code != 0:
            assert err.count("\n") == 1 and "Traceback" not in err
            continue
        summary = json.loads(out)
        if not summary["changes"]:
            continue        # already at that stride: nothing to judge
        options = dict(zip(flags[::2], flags[1::2]))
        new, _ = dilate(original.net, output_stride=stride, head="cut",
                        pooling=options.get("--pooling", "strict"),
                        dilation=options.get("--dilation", "strict"), unknowns=original.unknowns)
        judged = judge(original.net, new, phase=_phase(original),
                       unknowns=(original.unknowns, original.unknowns))
        said = {c["layer"]: c["status"] if c["action"] != "remove" else "REMOVED"
                for c in summary["changes"]}
        seen = {k: v for k, v in judged.statuses().items() if v is not None}
        assert seen == said, stride
        assert sorted(judged.exact_blobs) == summary["exact_blobs"], stride
        assert f"exact for {judged.sizes.text}" == summary["exact_sizes"], stride
        if judged.deepest is not None:
            grid = summary["grid"][judged.deepest]
            assert [float(v) for v in judged.grids[judged.deepest].factor] == grid["factor"]


def _same_word(path, data, listed):
    """Each listed stride's word (exact, approximate, adapted) is the one dilate's result
    gives that conversion: its `exact` flag and the statuses of its changes."""
    for stride, flags in listed.items():
        args = [w for flag in flags for w in flag.split()]
        code, out, err = run_cli("dilate", path, "-s", stride, "--head", "cut", *args, "--json",
                                 "--dry-run")
        assert code == 0, err
        summary = json.loads(out)
        statuses = {c["status"] for c in summary["changes"]}
        word = "EXACT" if summary["exact"] else \
            "APPROXIMATE" if "APPROXIMATE" in statuses else "ADAPTED"
        assert data["reachable_status"][str(stride)] == word, (stride, flags)


# A squeeze-and-excitation block after the last stride: global average pooling, two 1x1
# convolutions, a sigmoid and a two-bottom Scale (axis 0) that weighs the trunk's channels.
SE_NET = """name: "se-mini"
input: "data"
input_shape { dim: 1 dim: 3 dim: 64 dim: 64 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "se/pool" type: "Pooling" bottom: "conv3" top: "se/pool"
  pooling_param { pool: AVE global_pooling: true } }
layer { name: "se/down" type: "Convolution" bottom: "se/pool" top: "se/down"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "se/relu" type: "ReLU" bottom: "se/down" top: "se/down" }
layer { name: "se/up" type: "Convolution" bottom: "se/down" top: "se/up"
  convolution_param { num_output: 16 kernel_size: 1 } }
layer { name: "se/prob" type: "Sigmoid" bottom: "se/up" top: "se/up" }
layer { name: "se/flat" type: "Reshape" bottom: "se/up" top: "se/w"
  reshape_param { shape { dim: 0 dim: 0 } } }
layer { name: "se/scale" type: "Scale" bottom: "conv3" bottom: "se/w" top: "se"
  scale_param { axis: 0 } }
layer { name: "conv4" type: "Convolution" bottom: "se" top: "conv4"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
"""


def test_a_stride_reached_with_no_flag_but_not_exactly_is_not_listed_as_exact(tmp_path):
    """The SE block's global pooling reads the denser map after conv3's stride goes: every
    finer stride converts with no flag, and dilate calls each result APPROXIMATE; inspect
    must not list them under `exact:`."""
    path = tmp_path / "se.prototxt"
    path.write_text(SE_NET)
    code, out, _ = run_cli("inspect", path, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["reachable_output_strides"] == [1, 2, 4, 8]
    assert data["reachable_status"] == {"1": "APPROXIMATE", "2": "APPROXIMATE",
                                        "4": "APPROXIMATE", "8": "EXACT"}
    _same_word(path, data, {s: () for s in data["reachable_output_strides"]})
    code, out, _ = run_cli("inspect", path)
    assert out.rstrip().endswith("reachable output strides (dilate -s N --head cut): "
                                 "exact: 8; approximate: 1, 2, 4")


def _phase(loaded):
    from surgery.analysis.graph import complete_phases

    built, _ = complete_phases(loaded.net)
    return next(iter(built))
