"""The dilate pass: every rule and option on small nets, the error paths, and the
MSRA ResNet-101 conversion DeepLab v2 made by hand. Numeric proof is in test_verify.py."""

import json

import pytest

from surgery.analysis.analyse import analyse
from surgery.analysis.check import compare
from surgery.cli import main
from surgery.errors import SurgeryError
from surgery.io.caffemodel import read_caffemodel, write_caffemodel
from surgery.io.prototxt import parse_prototxt
from surgery.io.netfile import load_prototxt
from surgery.layers import rule_for
from surgery.transform.dilate import dilate
from surgery.transform.judge import judge

from conftest import CORPUS

HEADER = 'name: "t"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: %d dim: %d } } }\n'


def conv(name, bottom, k=3, s=1, p=None, extra=""):
    p = (k - 1) // 2 if p is None else p
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f'convolution_param {{ num_output: 4 kernel_size: {k} stride: {s} pad: {p} {extra}}} }}\n')


def relu(name, blob):
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'


def pool(name, bottom, k=2, s=2, p=0, kind="MAX", extra=""):
    return (f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" '
            f'pooling_param {{ pool: {kind} kernel_size: {k} stride: {s} pad: {p} {extra}}} }}\n')


def net_of(*layers, size=64, width=None):
    return parse_prototxt(HEADER % (size, width or size) + "".join(layers))


def window(net, name):
    layer = next(l for l in net.layer if l.name == name)
    return rule_for(layer.type).window(layer)


def changed(report):
    return {c.layer: c for c in report.changes}


# A five-stride chain: stride 32 at c5.
CHAIN = [conv("c1", "data", 3, 2), conv("c2", "c1", 3, 2), conv("c3", "c2", 3, 2),
         conv("c4", "c3", 3, 2), conv("c5", "c4", 3, 2), conv("c6", "c5", 3, 1), conv("c7", "c6", 1, 1)]


def test_stride_removed_at_the_end_and_later_layers_dilated():
    net = net_of(*CHAIN)
    new, report = dilate(net, output_stride=8)
    # c4 and c5 lose their stride but keep their own dilation (their input grid is unchanged
    # for c4; c5's input has factor 2, so it is dilated by 2).
    assert window(new, "c4") == ((3, 3), (1, 1), (1, 1), (1, 1))
    assert window(new, "c5") == ((3, 3), (1, 1), (2, 2), (2, 2))
    assert window(new, "c6") == ((3, 3), (1, 1), (4, 4), (4, 4))
    assert window(new, "c7") == ((1, 1), (1, 1), (0, 0), (1, 1))   # 1x1: nothing to spread
    for name in ("c1", "c2", "c3"):                                 # the stem is never touched
        assert window(new, name) == window(net, name)
    assert report.exact and set(changed(report)) == {"c4", "c5", "c6"}
    assert report.stride_before == (32, 32) and report.stride_after == (8, 8)
    assert report.rf_before == report.rf_after
    assert report.grids["c7"].factor == (4, 4) and report.grids["c7"].offset == (0, 0)
    assert net == net_of(*CHAIN), "the input net must not be modified"


def test_output_stride_16_touches_only_the_last_stride():
    new, report = dilate(net_of(*CHAIN), output_stride=16)
    assert set(changed(report)) == {"c5", "c6"}
    assert window(new, "c6").dilation == (2, 2)


def test_unreachable_output_stride_names_the_reachable_ones():
    with pytest.raises(SurgeryError) as err:
        dilate(net_of(*CHAIN), output_stride=12)
    message = str(err.value)
    assert "not reachable" in message and "4, 8, 16, 32" in message


def test_already_at_target_is_unchanged_with_a_note():
    net = net_of(*CHAIN)
    new, report = dilate(net, output_stride=32)
    assert new == net and not report.changes
    assert any("already" in n for n in report.notes)


def test_per_axis_strides_are_handled_per_axis():
    layers = [conv("c1", "data", 3, 2),
              'layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2" convolution_param '
              '{ num_output: 4 kernel_h: 3 kernel_w: 5 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2 } }\n',
              'layer { name: "c3" type: "Convolution" bottom: "c2" top: "c3" convolution_param '
              '{ num_output: 4 kernel_h: 1 kernel_w: 3 pad_h: 0 pad_w: 1 } }\n',
              conv("c4", "c3", 3, 1)]
    net = net_of(*layers)
    new, report = dilate(net, output_stride=2)
    assert window(new, "c2").stride == (1, 1)
    assert window(new, "c3").dilation == (1, 1)   # factor (2, 1), 1-high kernel: nothing to spread in h
    assert window(new, "c4").dilation == (2, 1) and window(new, "c4").pad == (2, 1)
    c3 = next(l for l in new.layer if l.name == "c3").convolution_param
    assert c3.HasField("pad_h") and c3.pad_h == 0, "pad_h/pad_w form is kept"
    assert report.exact


def test_pooling_after_a_removed_stride_is_strict_by_default():
    net = net_of(conv("c1", "data", 3, 2), pool("p1", "c1"), conv("c2", "p1"), pool("p2", "c2", 3, 1, 1))
    with pytest.raises(SurgeryError) as err:
        dilate(net, output_stride=2)
    assert "layer 'p2'" in str(err.value) and "--pooling cover" in str(err.value)
    new, report = dilate(net, output_stride=2, pooling="cover")
    assert window(new, "p2") == ((5, 5), (1, 1), (2, 2), (1, 1))
    assert not changed(report)["p2"].exact and changed(report)["p1"].exact
    judged = judge(net, new)     # the pair alone gives the same answer
    assert judged.status("p2") == "APPROXIMATE" and judged.status("p1") == "EXACT"


def test_ceil_pool_keeps_its_partial_window_with_one_more_pad():
    # 63 -> conv s1 -> 63; pool k3 s2 CEIL on 63 has 31 windows, none partial; on 64 -> 32
    # windows, the last one partial. Only the latter needs the extra pad.
    for size, partial in ((63, False), (64, True)):
        net = net_of(conv("c1", "data", 3, 1), pool("p1", "c1", 3, 2), conv("c2", "p1"), size=size)
        new, report = dilate(net, output_stride=1)
        p1 = window(new, "p1")
        assert p1.stride == (1, 1)
        assert p1.pad == ((1, 1) if partial else (0, 0))
        assert report.grids["c2"].offset == ((1, 1) if partial else (0, 0))
        assert report.exact
        assert "mod 2" in report.exact_sizes


def test_ave_pool_extra_pad_is_not_exact():
    net = net_of(conv("c1", "data", 3, 1), pool("p1", "c1", 3, 2, kind="AVE"), conv("c2", "p1"), size=64)
    _, report = dilate(net, output_stride=1)
    assert not changed(report)["p1"].exact


def test_pspnet_convention_dilates_the_formerly_strided_layer_and_says_so():
    net = net_of(*CHAIN)
    new, report = dilate(net, output_stride=16, convention="pspnet")
    assert window(new, "c5").dilation == (2, 2) and window(new, "c5").pad == (2, 2)
    assert not changed(report)["c5"].exact and not report.exact
    # Judged from the two files alone, the layer is not the exact rewrite either.
    judged = judge(net, new)
    assert judged.status("c5") == "APPROXIMATE" and "not the exact rewrite" in \
        next(c.note for c in judged.changes if c.layer == "c5")


# A pre-activation stage: the stride sits on the first unit's 3x3 (c2), two more units follow.
STAGE = [conv("c1", "data", 3, 2), conv("c2", "c1", 3, 2), conv("u0", "c2", 3, 1),
         conv("u1", "u0", 3, 1)]


@pytest.mark.parametrize("convention,rates", [("exact", [1, 4, 8]), ("pspnet", [2, 4, 8])])
def test_multi_grid_multiplies_every_unit_from_the_one_that_lost_its_stride(convention, rates):
    """DeepLab v3's definition: unit i gets its rate times grid[i], unit 1 being the one
    whose stride was removed (pspnet + 1,2,4 at factor 4 is PSP ResNet-101-v2's 4, 8, 16)."""
    new, report = dilate(net_of(*STAGE), output_stride=2, multi_grid=[1, 2, 4],
                         convention=convention)
    assert [window(new, n).dilation.h for n in ("c2", "u0", "u1")] == rates
    assert [window(new, n).pad.h for n in ("c2", "u0", "u1")] == rates
    assert not report.exact


@pytest.mark.parametrize("grid", [[1, 2], [1, 2, 4, 8]])
def test_multi_grid_of_the_wrong_length_lists_the_units(grid):
    with pytest.raises(SurgeryError) as err:
        dilate(net_of(*STAGE), output_stride=2, multi_grid=grid)
    assert "3 units (c2, u0, u1)" in str(err.value)


CLASSIFIER = CHAIN + [pool("pool5", "c7", 2, 1, kind="AVE"),
                      'layer { name: "fc" type: "InnerProduct" bottom: "pool5" top: "fc" '
                      'inner_product_param { num_output: 10 } }\n',
                      'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n']


def test_classifier_head_must_be_chosen():
    net = net_of(*CLASSIFIER)
    with pytest.raises(SurgeryError) as err:
        dilate(net, output_stride=8)
    assert "pool5, fc, prob" in str(err.value) and "--head cut" in str(err.value)


def test_head_cut_removes_the_pooling_and_the_classifier():
    net = net_of(*CLASSIFIER)
    new, report = dilate(net, output_stride=8, head="cut")
    assert [l.name for l in new.layer][-1] == "c7"
    assert {c.layer for c in report.changes if c.action == "remove"} == {"pool5", "fc", "prob"}
    assert report.exact


def test_head_global_keeps_the_classifier_when_the_pool_covers_the_map():
    net = net_of(*CLASSIFIER, size=64)
    assert analyse(net).shapes["pool5"][2:] == (1, 1)
    new, report = dilate(net, output_stride=8, head="global")
    p5 = next(l for l in new.layer if l.name == "pool5").pooling_param
    assert p5.global_pooling and not p5.HasField("kernel_size")
    assert analyse(new).param_shapes["fc"] == analyse(net).param_shapes["fc"]
    assert not report.exact


def test_head_global_refuses_a_pool_that_does_not_cover_the_map():
    net = net_of(*CLASSIFIER, size=128)         # pool5 output 3x3
    with pytest.raises(SurgeryError) as err:
        dilate(net, output_stride=8, head="global")
    assert "layer 'pool5'" in str(err.value) and "--head cut" in str(err.value)


def test_global_pooling_then_1x1_conv_is_not_a_head():
    layers = CHAIN + ['layer { name: "gp" type: "Pooling" bottom: "c7" top: "gp" '
                      'pooling_param { pool: AVE global_pooling: true } }\n', conv("cls", "gp", 1)]
    new, report = dilate(net_of(*layers), output_stride=8)
    assert "cls" in [l.name for l in new.layer]
    assert not changed(report)["gp"].exact     # averaging a denser map is approximate


def test_cut_after_keeps_only_what_computes_the_blob():
    net = net_of(*CLASSIFIER)
    new, report = dilate(net, output_stride=8, cut_after="c6")
    assert [l.name for l in new.layer] == ["data", "c1", "c2", "c3", "c4", "c5", "c6"]
    with pytest.raises(SurgeryError):
        dilate(net, output_stride=8, cut_after="nope")


def test_branches_on_different_grids_cannot_join():
    layers = [conv("c1", "data", 3, 2), pool("pa", "c1", 3, 2), conv("cb", "c1", 3, 2),
              'layer { name: "sum" type: "Eltwise" bottom: "pa" bottom: "cb" top: "sum" }\n',
              conv("c3", "sum")]
    net = net_of(*layers, size=64)             # pa keeps a partial window: offset 1, cb offset 0
    assert analyse(net).shapes["pa"] == analyse(net).shapes["cb"]
    with pytest.raises(SurgeryError) as err:
        dilate(net, output_stride=2)
    assert "layer 'sum'" in str(err.value)


def test_param_shapes_are_unchanged_so_weights_load(tmp_path):
    net = net_of(*CLASSIFIER, size=64)
    original = analyse(net).param_shapes
    blobs = [{"name": n, "type": "Convolution" if n.startswith("c") else "InnerProduct",
              "blobs": [__import__("numpy").zeros(s, "float32") for s in shapes]}
             for n, shapes in original.items() if shapes]
    write_caffemodel(tmp_path / "w.caffemodel", blobs)
    new, _ = dilate(net, output_stride=8, head="cut")
    report = compare(analyse(new).param_shapes, read_caffemodel(tmp_path / "w.caffemodel"))
    kept = {r.name: r.status for r in report.layers}
    assert all(kept[n] == "ok" for n in ("c1", "c4", "c5", "c6", "c7"))
    assert kept["fc"] == "unused"


def test_train_and_test_phases_are_rewritten_together():
    text = (HEADER % (64, 64)).replace('type: "Input"', 'type: "Input" include { phase: TEST }') + \
        'layer { name: "data" type: "Input" top: "data" include { phase: TRAIN } ' \
        'input_param { shape { dim: 2 dim: 3 dim: 64 dim: 64 } } }\n' + "".join(CHAIN) + \
        'layer { name: "loss" type: "EuclideanLoss" bottom: "c7" bottom: "c7" top: "loss" include { phase: TRAIN } }\n'
    net = parse_prototxt(text)
    new, report = dilate(net, output_stride=8)
    assert window(new, "c6").dilation == (4, 4)
    assert "loss" in [l.name for l in new.layer]


def test_options_are_validated():
    net = net_of(*CHAIN)
    for kwargs in ({"output_stride": 0}, {"output_stride": 8, "head": "x"},
                   {"output_stride": 8, "multi_grid": [0]}):
        with pytest.raises(SurgeryError):
            dilate(net, **kwargs)


# --- the command -------------------------------------------------------------------------

def test_cli_writes_a_minimal_edit_and_prints_the_summary(tmp_path, capsys):
    src = tmp_path / "net.prototxt"
    src.write_text("# a comment that must survive\n" + HEADER % (64, 64) + "".join(CHAIN))
    out = tmp_path / "out.prototxt"
    assert main(["dilate", str(src), "--output-stride", "8", "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# a comment that must survive\n")
    assert parse_prototxt(text) == dilate(load_prototxt(src), output_stride=8)[0]
    summary = capsys.readouterr().out
    assert "EXACT" in summary and "c6" in summary


def test_cli_json_and_dry_run(tmp_path, capsys):
    src = tmp_path / "net.prototxt"
    src.write_text(HEADER % (64, 64) + "".join(CHAIN))
    assert main(["dilate", str(src), "-s", "8", "--dry-run", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["exact"] and data["output_stride"] == {"before": [32, 32], "after": [8, 8]}
    assert {c["layer"] for c in data["changes"]} == {"c4", "c5", "c6"}
    assert list(tmp_path.iterdir()) == [src]


@pytest.mark.parametrize("args, needle", [
    (["-s", "12"], "not reachable"),
    (["-s", "8", "--cut-after", "nope"], "nope"),
])
def test_cli_errors_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, args, needle):
    src = tmp_path / "net.prototxt"
    src.write_text(HEADER % (64, 64) + "".join(CHAIN))
    out = tmp_path / "out.prototxt"
    assert main(["dilate", str(src), *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert not out.exists()


def test_cli_refuses_to_overwrite_the_input(tmp_path, capsys):
    src = tmp_path / "net.prototxt"
    src.write_text(HEADER % (64, 64) + "".join(CHAIN))
    before = src.read_bytes()
    assert main(["dilate", str(src), "-s", "8", "-o", str(src)]) == 2
    assert src.read_bytes() == before
    assert main(["dilate", str(src), "-s", "8", "-o", str(src), "--in-place"]) == 0
    assert src.read_bytes() != before


# --- the real net ---------------------------------------------------------------------------

@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")
def test_msra_resnet101_os8_matches_deeplab_v2():
    net = load_prototxt(CORPUS / "resnet_kaiming" / "ResNet-101-deploy.prototxt")
    new, report = dilate(net, output_stride=8, head="cut")
    by_name = {l.name: l for l in new.layer}
    win = lambda name: rule_for("Convolution").window(by_name[name])
    for name in ("res4a_branch1", "res4a_branch2a", "res5a_branch1", "res5a_branch2a"):
        assert win(name).stride == (1, 1) and win(name).dilation == (1, 1)
    res4 = [n for n in by_name if n.startswith("res4") and n.endswith("_branch2b")]
    res5 = [n for n in by_name if n.startswith("res5") and n.endswith("_branch2b")]
    assert len(res4) == 23 and len(res5) == 3
    assert all(win(n).dilation == (2, 2) and win(n).pad == (2, 2) for n in res4)
    assert all(win(n).dilation == (4, 4) and win(n).pad == (4, 4) for n in res5)
    rewritten = {c.layer for c in report.changes if c.action == "rewrite"}
    assert rewritten == set(res4) | set(res5) | {"res4a_branch1", "res4a_branch2a",
                                                  "res5a_branch1", "res5a_branch2a"}
    after = analyse(new)
    assert after.geometry["res5c"].rf == (1027, 1027) and after.geometry["res5c"].stride == (8, 8)
    assert after.geometry["res4b22"].rf == (835, 835)
    assert [l.name for l in new.layer][-1] == "res5c_relu"
    assert report.exact and report.exact_sizes == "exact for every input size"


def test_unknown_layer_types_are_never_rewritten_through():
    layers = [conv("c1", "data", 3, 2), 'layer { name: "x" type: "Mystery" bottom: "c1" top: "x" }\n',
              conv("c2", "x", 3, 2)]
    net = net_of(*layers)
    with pytest.raises(SurgeryError) as err:
        dilate(net, output_stride=2)          # the stride after 'x' is unknown
    assert "layer 'x'" in str(err.value) and "unknown" in str(err.value)
    with pytest.raises(SurgeryError) as err:
        dilate(net, output_stride=1)          # 'x' would see a removed stride
    assert "layer 'x'" in str(err.value) and "registry" in str(err.value)
    new, _ = dilate(net, output_stride=1, cut_after="c1")
    assert [l.name for l in new.layer] == ["data", "c1"]


def test_resampling_layers_after_a_removed_stride_stop_the_run():
    layers = CHAIN + ['layer { name: "up" type: "Deconvolution" bottom: "c7" top: "up" '
                      'convolution_param { num_output: 4 kernel_size: 4 stride: 2 } }\n']
    with pytest.raises(SurgeryError) as err:
        dilate(net_of(*layers), output_stride=8)
    assert "layer 'up'" in str(err.value) and "--cut-after c7" in str(err.value)


PYRAMID = CHAIN[:4] + [
    pool("pp", "c4", 4, 4, kind="AVE"), conv("pc", "pp", 1),
    'layer { name: "pi" type: "Interp" bottom: "pc" top: "pi" interp_param { height: 4 width: 4 } }\n',
    'layer { name: "cat" type: "Concat" bottom: "c4" bottom: "pi" top: "cat" }\n', conv("c5", "cat", 3)]


def test_a_pyramid_branch_resampled_back_to_the_trunk_is_not_the_output_stride():
    # PSPNet's layout: the trunk is at stride 16; a pooled branch at stride 64 is brought back
    # by Interp. The net's output stride is 16, so asking for 16 changes nothing.
    net = net_of(*PYRAMID)
    analysis = analyse(net)
    assert analysis.geometry["pp"].stride == (64, 64)
    assert analysis.resampled_branches() == {"pp", "pc"}
    assert analysis.deepest_blob() == "c4"
    new, report = dilate(net, output_stride=16)
    assert new == net and not report.changes


@pytest.mark.parametrize("target, kernel", [(8, 8), (4, 16)])
def test_a_pyramid_keeps_its_bins_and_its_upsample_follows_the_trunk(target, kernel):
    # At 8 the trunk map doubles (4x4 -> 8x8): the pyramid pool keeps one bin per 4x4 of
    # the old map (kernel 8), the Interp back to the trunk takes the trunk's new size, and
    # the Concat lines up; both are ADAPTED, not exact.
    net = net_of(*PYRAMID)
    new, report = dilate(net, output_stride=target)
    status = {c.layer: c.status for c in report.changes}
    assert status["pp"] == status["pi"] == "ADAPTED"
    assert window(new, "pp").kernel == (kernel, kernel)
    after = analyse(new)
    assert after.shapes["pi"][2:] == after.shapes["c4"][2:] and not after.warnings
    assert max(after.geometry["c4"].stride) == target
    assert not report.exact and "c4" in report.exact_blobs


def test_diff_file_with_json_and_dry_run(tmp_path, capsys):
    src = tmp_path / "net.prototxt"
    src.write_text(HEADER % (64, 64) + "".join(CHAIN))
    out, diff = tmp_path / "out.prototxt", tmp_path / "d.diff"
    assert main(["dilate", str(src), "-s", "8", "-o", str(out), "--diff", str(diff),
                 "--json"]) == 0
    json.loads(capsys.readouterr().out)               # stdout is one JSON object
    assert "+" in diff.read_text() and "dilation: 4" in diff.read_text() and out.exists()
    out.unlink()
    assert main(["dilate", str(src), "-s", "8", "--dry-run", "--diff", "-"]) == 0
    printed = capsys.readouterr().out
    assert "dilation: 4" in printed and not out.exists()


GLOBAL_CLASSIFIER = CHAIN + [
    'layer { name: "gp" type: "Pooling" bottom: "c7" top: "gp" pooling_param { pool: AVE global_pooling: true } }\n',
    'layer { name: "flat" type: "Flatten" bottom: "gp" top: "flat" }\n',
    'layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc" inner_product_param { num_output: 10 } }\n',
    'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n']


def test_a_classifier_behind_global_pooling_loads_but_head_cut_removes_it():
    net = net_of(*GLOBAL_CLASSIFIER)
    kept, report = dilate(net, output_stride=8)              # valid: weights still load
    assert [l.name for l in kept.layer][-1] == "prob" and not report.exact
    cut, report = dilate(net, output_stride=8, head="cut")
    assert [l.name for l in cut.layer][-1] == "c7" and report.exact
    assert {c.layer for c in report.changes if c.action == "remove"} == {"gp", "flat", "fc", "prob"}


def test_package_level_api(tmp_path):
    import surgery

    src = tmp_path / "net.prototxt"
    src.write_text(HEADER % (64, 64) + "".join(CHAIN))
    net = surgery.load(src)
    new, report = surgery.dilate(net, output_stride=8)
    assert report.exact and surgery.analyse(new).geometry["c7"].stride == (8, 8)
    surgery.save(new, tmp_path / "out.prototxt")
    assert surgery.load(tmp_path / "out.prototxt") == new


def eltwise(name, a, b):
    return f'layer {{ name: "{name}" type: "Eltwise" bottom: "{a}" bottom: "{b}" top: "{name}" }}\n'


# A join misaligned in the original: a 2x2 stride-2 conv (centre +0.5) beside a strided 1x1.
MISALIGNED = [conv("c1", "data", 3, 2), conv("ap", "c1", 2, 2, 0), conv("ab", "c1", 1, 2, 0),
              eltwise("aj", "ap", "ab"), conv("c2", "aj", 3, 2), conv("c3", "c2", 3, 1)]


def test_a_join_misaligned_in_the_original_does_not_stop_a_rewrite_after_it(tmp_path):
    """The rewrite removes c2's stride, after the join: the join keeps its relation, so the
    conversion goes on, and is exact (checked in OpenCV: the join and c3 on their grids)."""
    pytest.importorskip("cv2")
    from surgery.weights.initweights import init_weights
    from surgery.io.prototxt import save_prototxt
    from surgery.engines.verify import verify

    net = net_of(*MISALIGNED, size=32)
    assert analyse(net).misaligned_joins() == {"aj"}
    new, report = dilate(net, output_stride=4)
    assert report.exact and window(new, "c3").dilation == (2, 2)
    save_prototxt(net, tmp_path / "a.prototxt")
    save_prototxt(new, tmp_path / "b.prototxt")
    init_weights(net, tmp_path / "w.caffemodel")
    result = verify(tmp_path / "a.prototxt", tmp_path / "b.prototxt", tmp_path / "w.caffemodel",
                    blobs=["aj", "c3"])
    assert result.passed and {r.blob for r in result.blobs} >= {"aj", "c3"}


def test_a_join_the_rewrite_would_reshape_is_refused_naming_it():
    """Removing the join's own strides changes its branches' sizes differently (no
    symmetric pad restores them): a one-line refusal naming the join, not a crash."""
    net = net_of(*MISALIGNED, size=32)
    with pytest.raises(SurgeryError) as err:
        dilate(net, output_stride=1)
    assert "layer 'aj'" in str(err.value) and "would not build" in str(err.value)


# --------------------------------------------------------------- conditions and heads

POOLED = [conv("c1", "data", 3, 1), pool("p1", "c1", 2, 2), conv("c2", "p1", 3, 1),
          pool("p2", "c2", 2, 2), conv("c3", "p2", 3, 1), pool("p3", "c3", 2, 2),
          conv("c4", "p3", 3, 1)]


def test_an_approximate_summary_states_the_size_condition_of_its_exact_part():
    """p2 loses its stride exactly (its CEIL window depends on the size); p3 then sees a
    removed stride and is widened: the exact prefix still says for which sizes it holds."""
    new, report = dilate(net_of(*POOLED, size=32), output_stride=2, pooling="cover")
    assert not report.exact
    # p1's output is odd (p2 then has a partial window) for sizes 1 and 2 mod 4
    assert report.exact_sizes.startswith("exact for input sizes with H mod 4 in {0, 3} ")
    from surgery.report.text import format_changes

    text = format_changes(report)
    assert "exact up to 'c3', exact for input sizes with H mod 4" in text


def test_verify_says_when_the_conversion_was_made_for_another_input_size(tmp_path):
    pytest.importorskip("cv2")
    from surgery.weights.initweights import init_weights
    from surgery.io.prototxt import save_prototxt
    from surgery.engines.verify import verify

    net = net_of(*POOLED[:5], size=32)          # p2's window: whole at 32, partial at 34
    save_prototxt(net, tmp_path / "a.prototxt")
    init_weights(net, tmp_path / "w.caffemodel")
    for size, name in ((32, "at32.prototxt"), (34, "at34.prototxt")):
        new, _ = dilate(net, output_stride=2, input_shapes={"data": (1, 3, size, size)})
        save_prototxt(new, tmp_path / name)
    wrong = verify(tmp_path / "a.prototxt", tmp_path / "at32.prototxt", tmp_path / "w.caffemodel",
                   input_shapes={"data": (1, 3, 34, 34)}, blobs=["c3"])
    assert not wrong.passed
    assert any("'p2'" in h and "--input-shape data=1,3,34,34" in h for h in wrong.size_hints)
    assert "hint: layer 'p2'" in wrong.format_text()
    right = verify(tmp_path / "a.prototxt", tmp_path / "at34.prototxt", tmp_path / "w.caffemodel",
                   input_shapes={"data": (1, 3, 34, 34)}, blobs=["c3"])
    assert right.passed and not right.size_hints


HEADED = CHAIN + [pool("pool5", "c7", 2, 1, kind="AVE"),
                  'layer { name: "fc" type: "InnerProduct" bottom: "pool5" top: "fc" '
                  'inner_product_param { num_output: 10 } }\n']


def test_a_stride_coarser_than_the_net_can_reach_is_refused_listing_the_reachable_ones():
    with pytest.raises(SurgeryError) as err:
        dilate(net_of(*HEADED), output_stride=64, head="cut")
    assert "output stride 64 is not reachable" in str(err.value)
    assert str(err.value).endswith("reachable output strides: exact: 1, 2, 4, 8, 16, 32")


@pytest.mark.parametrize("target", [32])
def test_an_explicit_head_cut_applies_to_a_net_already_at_the_target(target):
    new, report = dilate(net_of(*HEADED), output_stride=target, head="cut")
    assert [l.name for l in new.layer][-1] == "c7"
    assert {c.layer for c in report.changes if c.action == "remove"} == {"pool5", "fc"}


def test_the_default_head_choice_leaves_a_net_at_the_target_alone():
    net = net_of(*HEADED)
    new, report = dilate(net, output_stride=32)
    assert new == net and not report.changes
