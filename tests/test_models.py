"""The generated reference nets: reproducible files, and faithful to the public originals."""

import filecmp
from pathlib import Path

import pytest

from surgery import caffe_pb2
from surgery.models import MODELS, build, write_models

REPO = Path(__file__).resolve().parents[1]
from conftest import corpus_net

CORPUS_FILES = {
    "resnet50": "resnet_kaiming/ResNet-50-deploy.prototxt",
    "resnet101": "resnet_kaiming/ResNet-101-deploy.prototxt",
    "resnet152": "resnet_kaiming/ResNet-152-deploy.prototxt",
    "vgg16": "vgg/VGG_ILSVRC_16_layers_deploy.prototxt",
}


def test_committed_files_are_regenerated_byte_for_byte(tmp_path):
    paths = write_models(str(tmp_path))
    assert sum(Path(p).name == "deploy.prototxt" for p in paths) == len(MODELS)
    for name in MODELS:
        committed = REPO / "models" / name / "deploy.prototxt"
        assert committed.exists(), f"{committed} missing: run python -m surgery.models"
        assert filecmp.cmp(committed, tmp_path / name / "deploy.prototxt", shallow=False), (
            f"models/{name}/deploy.prototxt is stale: run python -m surgery.models")


def _window(param, base, default):
    """(h, w) of kernel/stride/pad whichever form the file used."""
    h, w = getattr(param, f"{base}_h", 0), getattr(param, f"{base}_w", 0)
    if param.HasField(f"{base}_h") or param.HasField(f"{base}_w"):
        return (h, w)
    field = "kernel_size" if base == "kernel" else base
    value = getattr(param, field)
    if isinstance(value, int):  # Pooling uses scalars
        return (value, value) if param.HasField(field) else (default, default)
    values = list(value) or [default]
    return (values[0], values[-1])


def _signature(layer):
    sig = {"name": layer.name, "type": layer.type,
           "bottom": list(layer.bottom), "top": list(layer.top)}
    if layer.type == "Convolution":
        p = layer.convolution_param
        sig.update(num_output=p.num_output, bias=p.bias_term, group=p.group,
                   dilation=list(p.dilation) or [1],
                   kernel=_window(p, "kernel", None), stride=_window(p, "stride", 1),
                   pad=_window(p, "pad", 0))
    elif layer.type == "Pooling":
        p = layer.pooling_param
        sig.update(pool=p.pool, global_pooling=p.global_pooling,
                   kernel=_window(p, "kernel", None), stride=_window(p, "stride", 1),
                   pad=_window(p, "pad", 0))
    elif layer.type == "InnerProduct":
        sig.update(num_output=layer.inner_product_param.num_output)
    elif layer.type == "BatchNorm":
        sig.update(global_stats=layer.batch_norm_param.use_global_stats)
    elif layer.type == "Scale":
        sig.update(bias=layer.scale_param.bias_term)
    elif layer.type == "Eltwise":
        sig.update(op=layer.eltwise_param.operation)
    elif layer.type == "Dropout":
        sig.update(ratio=layer.dropout_param.dropout_ratio)
    return sig


@pytest.mark.parametrize("name", sorted(CORPUS_FILES))
def test_generated_net_matches_the_public_file(name):
    theirs = [_signature(l) for l in corpus_net(CORPUS_FILES[name]).layer if l.type != "Input"]
    ours = [_signature(l) for l in build(name).layer if l.type != "Input"]
    assert [s["name"] for s in ours] == [s["name"] for s in theirs]
    for mine, ref in zip(ours, theirs):
        assert mine == ref, mine["name"]


def test_stride_on_3x3_variant_moves_only_the_stride():
    msra = {l.name: l for l in build("resnet50").layer}
    v15 = {l.name: l for l in build("resnet50-s3x3").layer}
    assert list(msra) == list(v15)
    moved = {n for n in msra if _signature(msra[n]) != _signature(v15[n])}
    assert moved == {f"res{s}a_branch2{b}" for s in (3, 4, 5) for b in "ab"}
    assert list(v15["res3a_branch2b"].convolution_param.stride) == [2]
    assert list(v15["res3a_branch2a"].convolution_param.stride) in ([], [1])
    assert list(v15["res3a_branch1"].convolution_param.stride) == [2]


def test_deep_resnets_number_their_middle_blocks():
    names = {l.name for l in build("resnet101", width=0.125).layer}
    assert {"res3b3", "res4b22", "res5c", "bn4b22_branch2b", "scale4b22_branch2b",
            "res4b22_branch2b_relu"} <= names
    assert "res4b23" not in names and "res3d" not in names
    names = {l.name for l in build("resnet152", width=0.125).layer}
    assert {"res3b7", "res4b35"} <= names and "res4b36" not in names


def test_width_and_input_size_are_parameters():
    net = build("mobilenet-mini", width=0.25, input_size=64)
    layers = {l.name: l for l in net.layer}
    assert list(layers["data"].input_param.shape[0].dim) == [1, 3, 64, 64]
    dw = layers["conv2_2/dw"].convolution_param
    assert dw.group == dw.num_output == 16 and list(dw.stride) == [2]
    assert layers["pool6"].pooling_param.global_pooling


def test_inception_has_asymmetric_branches_and_optional_pool_branches():
    layers = {l.name: l for l in build("googlenet-mini").layer}
    p = layers["inception_4a/1x7"].convolution_param
    assert (p.kernel_h, p.kernel_w, p.pad_h, p.pad_w) == (1, 7, 0, 3)
    assert "inception_4a/pool" in layers
    assert len(layers["inception_4a/output"].bottom) == 4
    lean = {l.name for l in build("googlenet-mini", pool_branch_stages=(3,)).layer}
    assert "inception_3a/pool" in lean and "inception_4a/pool" not in lean


def test_asymmetric_net_strides_differ_per_axis():
    layers = {l.name: l for l in build("asymmetric").layer}
    stride_h = stride_w = 1
    for layer in layers.values():
        if layer.type == "Convolution":
            p = layer.convolution_param
        elif layer.type == "Pooling" and not layer.pooling_param.global_pooling:
            p = layer.pooling_param
        else:
            continue
        sh, sw = _window(p, "stride", 1)
        stride_h, stride_w = stride_h * sh, stride_w * sw
    assert stride_h == stride_w == 32
    assert layers["conv2"].convolution_param.stride_h == 2
    assert layers["conv2"].convolution_param.stride_w == 1


def test_builder_output_is_a_netparameter():
    assert isinstance(build("vgg16", width=0.25), caffe_pb2.NetParameter)


# ---------------------------------------------------------------- conversions and README

@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    return out, [Path(p) for p in write_models(str(out))]


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_every_committed_file_is_regenerated_byte_for_byte(regenerated):
    out, paths = regenerated
    committed = REPO / "models"
    assert _files(out) == _files(committed), "run python -m surgery.models (files differ)"
    assert sorted(p.relative_to(out).as_posix() for p in paths) == _files(out)
    assert "README.md" in _files(out)
    for name in MODELS:
        for stride in ("", "-os16", "-os8"):
            assert f"{name}/deploy{stride}.prototxt" in _files(out)
    stale = [f for f in _files(out) if not filecmp.cmp(out / f, committed / f, shallow=False)]
    assert not stale, f"stale committed files {stale}: run python -m surgery.models"


def test_conversions_reach_their_stride_and_keep_the_receptive_field(regenerated):
    from surgery.analysis.analyse import analyse
    from surgery.io.netfile import load_prototxt

    out, _ = regenerated
    for name in MODELS:
        original = analyse(load_prototxt(out / name / "deploy.prototxt"))
        for stride in (16, 8):
            conv = analyse(load_prototxt(out / name / f"deploy-os{stride}.prototxt"))
            deepest = conv.deepest_blob()
            assert tuple(conv.geometry[deepest].stride) == (stride, stride), (name, stride)
            # The a-trous rewrite keeps every kernel's footprint on the image.
            assert conv.geometry[deepest].rf == original.geometry[deepest].rf, (name, stride)


def _readme_row(text, model, file, size):
    section = text.split(f"\n## {model}\n", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 2 and cells[0] == f"`{file}`" and cells[1] == str(size):
            return cells
    raise AssertionError(f"no row for {model} {file} {size}")


@pytest.mark.parametrize("model, file, size", [
    ("resnet50", "deploy-os8.prototxt", 513),
    ("vgg16", "deploy.prototxt", 224),
    ("asymmetric", "deploy-os16.prototxt", 224),
])
def test_readme_rows_are_what_inspect_prints(regenerated, capsys, model, file, size):
    import json

    from surgery.cli import main
    from surgery.report.text import human

    out, _ = regenerated
    assert main(["inspect", str(out / model / file), "--input-shape",
                 f"data=1,3,{size},{size}", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    blob = data["totals"]["output_blob"]
    geom = data["blobs"][blob]
    axes = lambda v: str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"
    row = _readme_row((out / "README.md").read_text(encoding="utf-8"), model, file, size)
    assert row[2:8] == [f"`{blob}`", "x".join(map(str, geom["shape"])), axes(geom["stride"]),
                        axes(geom["rf"]), human(data["totals"]["params"]),
                        human(data["totals"]["flops"])]


def test_readme_says_which_conversions_are_approximate(regenerated):
    out, _ = regenerated
    text = (out / "README.md").read_text(encoding="utf-8")
    assert _readme_row(text, "resnet101", "deploy-os8.prototxt", 513)[8] == "exact"
    # googlenet-mini: a 3x3 pooling branch follows the removed stride -> cover.
    assert _readme_row(text, "googlenet-mini", "deploy-os16.prototxt", 224)[8].startswith(
        "approximate (pooling cover)")
    # vgg16 OS 8 keeps pool4's partial CEIL window at 224 with one more pad; at 513 the
    # window falls differently, so the committed file is not exact there.
    assert _readme_row(text, "vgg16", "deploy-os8.prototxt", 224)[8] == "exact"
    assert _readme_row(text, "vgg16", "deploy-os8.prototxt", 513)[8].startswith("not exact")


def test_convert_uses_cover_only_when_strict_refuses_a_pooling_window():
    from surgery.errors import SurgeryError
    from surgery.models.conversions import convert
    from surgery.transform.dilate import dilate

    net = build("googlenet-mini", width=0.25)
    with pytest.raises(SurgeryError) as refused:
        dilate(net, output_stride=16, head="cut")
    assert "Pooling window" in str(refused.value) and "--pooling cover" in str(refused.value)
    assert convert(net, 16).pooling == "cover" and not convert(net, 16).report.exact
    assert convert(build("resnet50", width=0.125), 8).pooling == "strict"
    with pytest.raises(SurgeryError, match="not reachable"):
        convert(build("resnet50", width=0.125), 3)   # other refusals are not papered over


def test_partial_regeneration_writes_no_readme_and_unknown_names_write_nothing(tmp_path):
    from surgery.errors import SurgeryError

    paths = write_models(str(tmp_path / "some"), ["asymmetric"])
    assert [Path(p).name for p in paths] == ["deploy.prototxt", "deploy-os16.prototxt",
                                              "deploy-os8.prototxt"]
    assert not (tmp_path / "some" / "README.md").exists()
    with pytest.raises(SurgeryError, match="unknown model"):
        write_models(str(tmp_path / "none"), ["asymmetric", "nope"])
    assert not (tmp_path / "none").exists()
