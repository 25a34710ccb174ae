"""init-weights and verify: exact conversions pass, wrong ones fail, on every reference family.

Everything runs on OpenCV DNN with small widths and 64-97 px inputs so the file
fits a 2-core machine.
"""

import json

import numpy as np
import pytest

from surgery.analysis.analyse import analyse
from surgery.cli import main
from surgery.errors import SurgeryError
from surgery.weights.initweights import init_weights, random_weights
from surgery.io.caffemodel import read_blob, read_caffemodel
from surgery.io.prototxt import save_prototxt
from surgery.io.netfile import load_prototxt
from surgery.models import build
from conftest import run_cli, write_file

pytest.importorskip("cv2")

TOL = 1e-4


def _write(tmp_path, name, net):
    path = tmp_path / f"{name}.prototxt"
    save_prototxt(net, path)
    return path


# ---------------------------------------------------------------- init-weights

def test_init_weights_has_exactly_the_analysed_param_shapes(tmp_path):
    net = build("resnet50", width=0.125, input_size=64)
    model = tmp_path / "r.caffemodel"
    init_weights(net, model, seed=3)
    expected = {k: [tuple(s) for s in v] for k, v in analyse(net).param_shapes.items() if v}
    summary = read_caffemodel(str(model))
    got = {layer.name: [tuple(b.shape) for b in layer.blobs] for layer in summary.layers}
    assert got == expected
    var = read_blob(str(model), "bn2a_branch2a", 1)
    assert (var > 0).all()
    np.testing.assert_array_equal(read_blob(str(model), "bn2a_branch2a", 2), [1.0])


def test_init_weights_is_seeded_per_layer_name():
    small = random_weights(build("asymmetric", width=0.25, input_size=64), seed=1)
    again = random_weights(build("asymmetric", width=0.25, input_size=64), seed=1)
    other = random_weights(build("asymmetric", width=0.25, input_size=64), seed=2)
    for a, b, c in zip(small, again, other):
        np.testing.assert_array_equal(a["blobs"][0], b["blobs"][0])
        assert not np.array_equal(a["blobs"][0], c["blobs"][0])
    # A layer keeps its numbers when an unrelated later layer changes.
    wider_fc = {l["name"]: l for l in random_weights(
        build("asymmetric", width=0.25, input_size=64, num_classes=7), seed=1)}
    np.testing.assert_array_equal(wider_fc["conv1"]["blobs"][0], small[0]["blobs"][0])


@pytest.mark.parametrize("name", ["vgg16", "googlenet-mini", "mobilenet-mini", "asymmetric"])
def test_random_weights_keep_activations_order_one(tmp_path, name):
    from surgery.engines.engine import get_engine

    net = build(name, width=0.25, input_size=64)
    proto = _write(tmp_path, name, net)
    init_weights(net, tmp_path / "w.caffemodel")
    deepest = analyse(net).deepest_blob()
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    out = get_engine("opencv").run(proto, tmp_path / "w.caffemodel", {"data": x}, [deepest])[deepest]
    rms = float(np.sqrt(np.mean(np.square(out))))
    assert 0.05 < rms < 20, (deepest, rms)


def test_init_weights_cli(tmp_path):
    proto = _write(tmp_path, "m", build("mobilenet-mini", width=0.25, input_size=64))
    out = tmp_path / "m.caffemodel"
    assert main(["init-weights", str(proto), "-o", str(out), "--seed", "5"]) == 0
    assert {l.name for l in read_caffemodel(str(out)).layers} >= {"conv1", "conv1/bn", "fc7"}
    assert main(["init-weights", str(proto), "-o", str(proto)]) == 2  # never clobbers the input


# ---------------------------------------------------------------- verify, no dilate needed

def _trunk(name, **options):
    """A reference net without its classifier head (global pooling is not exact on a finer grid)."""
    net = build(name, **options)
    keep = [l for l in net.layer if l.type not in ("InnerProduct", "Softmax")
            and not (l.type == "Pooling" and l.pooling_param.global_pooling)]
    del net.layer[:]
    net.layer.extend(keep)
    return net


def _hand_dilated_asymmetric(tmp_path, *, dilate_conv7=True):
    """OS 16 by hand: conv6 loses its stride, conv7 (after it) is dilated 2 with pad x2."""
    net = _trunk("asymmetric", width=0.25, input_size=64)
    orig = _write(tmp_path, "orig", net)
    for layer in net.layer:
        p = layer.convolution_param
        if layer.name == "conv6":
            p.ClearField("stride")
        if layer.name == "conv7" and dilate_conv7:
            p.dilation.append(2)
            p.pad_h, p.pad_w = 2 * p.pad_h, 2 * p.pad_w
    conv = _write(tmp_path, "conv", net)
    model = tmp_path / "w.caffemodel"
    init_weights(load_prototxt(orig), model)
    return orig, conv, model


def test_a_hand_made_exact_conversion_verifies(tmp_path, capsys):
    orig, conv, model = _hand_dilated_asymmetric(tmp_path)
    code = main(["verify", str(orig), str(conv), "--weights", str(model), "--blob", "conv7",
                 "--input-shape", "data=1,3,75,70", "--json"])
    report = json.loads(capsys.readouterr().out)
    conv7 = next(b for b in report["blobs"] if b["blob"] == "conv7")
    assert conv7["factor"] == [2, 2] and conv7["status"] == "ok"
    assert conv7["rel_error"] <= TOL and conv7["max_abs_original"] > 0
    assert code == 0 and report["passed"]


def test_forgetting_the_dilation_fails(tmp_path, capsys):
    orig, conv, model = _hand_dilated_asymmetric(tmp_path, dilate_conv7=False)
    code = main(["verify", str(orig), str(conv), "--weights", str(model), "--blob", "conv7"])
    out = capsys.readouterr().out
    assert code == 1
    line = next(l for l in out.splitlines() if l.startswith("conv7"))
    assert line.endswith("FAIL") and out.splitlines()[-1].startswith("FAIL")


def test_a_shifted_grid_is_compared_where_the_samples_meet_and_fails(tmp_path, capsys):
    net = _trunk("asymmetric", width=0.25, input_size=64)
    orig = _write(tmp_path, "orig", net)
    for layer in net.layer:
        if layer.name == "conv1":
            layer.convolution_param.pad_w = 0  # moves every later centre by 2 px on W
    conv = _write(tmp_path, "conv", net)
    model = tmp_path / "w.caffemodel"
    init_weights(load_prototxt(orig), model)
    assert main(["verify", str(orig), str(conv), "--weights", str(model), "--blob", "conv2"]) == 1
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("conv2"))
    assert "0x-1" in line and line.endswith("FAIL")    # offset -1 on W: measured, not excused


def test_verify_user_errors(tmp_path):
    orig, conv, model = _hand_dilated_asymmetric(tmp_path)
    with pytest.raises(SurgeryError, match="blob 'nope'"):
        from surgery.engines.verify import verify
        verify(orig, conv, model, blobs=["nope"])
    assert main(["verify", str(orig), str(conv), "--weights", str(tmp_path / "none")]) == 2


# ---------------------------------------------------------------- dilate -> verify, per family

def _dilate_and_verify(tmp_path, net, *, output_stride, pooling="strict", convention="exact",
                       blobs=(), input_shape=None, strict=False):
    from surgery.transform.dilate import dilate
    from surgery.engines.verify import verify

    orig = _write(tmp_path, "orig", net)
    converted, _report = dilate(net, output_stride=output_stride, head="cut", pooling=pooling,
                                convention=convention)
    conv = _write(tmp_path, "conv", converted)
    model = tmp_path / "w.caffemodel"
    init_weights(net, model, seed=11)
    shapes = {"data": input_shape} if input_shape else None
    return (verify(orig, conv, model, blobs=blobs, input_shapes=shapes, tol=TOL, strict=strict),
            analyse(net))


FAMILIES = [
    # (model, options, pooling, input size)
    ("resnet50", {"width": 0.125}, "strict", 64),
    ("resnet50-s3x3", {"width": 0.125}, "strict", 97),
    ("vgg16", {"width": 0.125, "fc_width": 32}, "cover", 97),
    ("googlenet-mini", {"width": 0.25}, "cover", 97),
    ("googlenet-mini", {"width": 0.25, "pool_branch_stages": (3,)}, "cover", 80),
    ("mobilenet-mini", {"width": 0.25}, "strict", 97),
    ("asymmetric", {"width": 0.25}, "cover", 97),
]


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("name,options,pooling,size", FAMILIES,
                         ids=[f"{f[0]}-{i}" for i, f in enumerate(FAMILIES)])
def test_dilate_then_verify_is_exact(tmp_path, name, options, pooling, size, output_stride):
    net = build(name, input_size=size, **options)
    report, analysis = _dilate_and_verify(tmp_path, net, output_stride=output_stride,
                                          pooling=pooling)
    assert report.passed, report.format_text()
    default = report.blobs[0]
    assert not default.approximate and default.rel_error <= TOL
    assert default.max_abs_original > 0
    # The compared blob is at least as deep as the target stride; at OS 8 it is past a
    # removed stride in every family (at OS 16 "cut" can leave VGG with nothing past it).
    assert analysis.geometry[default.blob].stride.h >= output_stride
    if output_stride == 8:
        assert default.factor[0] > 1


def test_inception_pool_branch_after_a_removed_stride_is_approximate(tmp_path):
    net = build("googlenet-mini", width=0.25, input_size=97)
    report, _ = _dilate_and_verify(tmp_path, net, output_stride=8, pooling="cover",
                                   blobs=["inception_4a/output", "inception_4a/7x1"])
    by_blob = {r.blob: r for r in report.blobs}
    assert by_blob["inception_4a/output"].approximate
    assert by_blob["inception_4a/output"].status == "approximate"
    # The factorised 1x7 -> 7x1 branch is dilated on a grid twice as fine, and exact.
    assert by_blob["inception_4a/7x1"].status == "ok" and by_blob["inception_4a/7x1"].factor == (2, 2)
    assert report.passed


def test_pspnet_convention_on_stride_3x3_resnet_is_not_exact(tmp_path):
    net = build("resnet50-s3x3", width=0.125, input_size=97)
    (tmp_path / "exact").mkdir()
    exact, _ = _dilate_and_verify(tmp_path / "exact", net, output_stride=8, blobs=["res5c"],
                                  strict=True)
    assert exact.passed, exact.format_text()
    psp, _ = _dilate_and_verify(tmp_path, net, output_stride=8, convention="pspnet",
                                blobs=["res5c"])
    res5c = next(r for r in psp.blobs if r.blob == "res5c")
    assert res5c.rel_error > 100 * TOL
    assert not psp.passed, psp.format_text()


def test_weights_that_do_not_load_are_named_before_any_engine_runs(tmp_path, capsys):
    net = build("asymmetric", width=0.125, input_size=64)
    other = build("mobilenet-mini", width=0.125, input_size=64)
    orig, wrong = tmp_path / "orig.prototxt", tmp_path / "wrong.caffemodel"
    save_prototxt(net, orig)
    init_weights(other, wrong)
    assert main(["verify", str(orig), str(orig), "--weights", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "do not load" in err and "layer '" in err


def test_a_classifier_original_at_another_size_is_compared_before_its_head(tmp_path, capsys):
    """The original's fc weights fit only its own input size: at another size verify
    compares the blobs before that head, and says so, instead of refusing the weights."""
    net = build("resnet50", width=0.125, input_size=64)
    orig = _write(tmp_path, "orig", net)
    conv, model = tmp_path / "os8.prototxt", tmp_path / "w.caffemodel"
    assert main(["dilate", str(orig), "-s", "8", "--head", "cut", "-o", str(conv)]) == 0
    assert main(["init-weights", str(orig), "-o", str(model)]) == 0
    capsys.readouterr()
    argv = ["verify", str(orig), str(conv), "--weights", str(model),
            "--input-shape", "data=1,3,97,97"]
    assert main(argv) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "fc1000" in out and "before" in out and "input size" in out
    assert "res5c" in out and "PASS" in out
    assert main(argv + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["size_bound_heads"] == {"original": ["fc1000"]}
    assert data["passed"] and data["blobs"][0]["blob"] == "res5c"
    # A wrong weight elsewhere is still refused, naming that layer.
    with pytest.raises(SurgeryError, match="do not load"):
        from surgery.engines.verify import verify
        other = tmp_path / "other.caffemodel"
        init_weights(build("resnet50", width=0.25, input_size=64), other)
        verify(orig, conv, other, input_shapes={"data": (1, 3, 97, 97)})


# ---------------------------------------------------------------- the verdict at the tolerance

BOUNDARY = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 33 dim: 33 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "side" type: "Convolution" bottom: "conv1" top: "side"
        convolution_param { num_output: 4 kernel_size: 1 } }
"""


@pytest.fixture(scope="module")
def boundary(tmp_path_factory):
    """(original, converted at output stride 1, weights, {blob: max|original|}): conv2 and
    side (the default blob, the deepest) compared exactly first, to know their scale."""
    from surgery import api

    folder = tmp_path_factory.mktemp("boundary")
    original = write_file(folder, "net.prototxt", BOUNDARY)
    converted, weights = folder / "os1.prototxt", folder / "w.caffemodel"
    api.dilate(original, output_stride=1, output=converted)
    api.init_weights(original, weights, seed=4)
    exact = api.verify(original, converted, weights, weights_converted=weights,
                       blobs=["conv2"], engine="opencv").report
    assert [b.blob for b in exact.blobs] == ["side", "conv2"]
    assert all(b.rel_error < TOL / 100 and b.max_abs_original > 0 for b in exact.blobs)
    return original, converted, weights, {b.blob: b.max_abs_original for b in exact.blobs}


def _nudged(folder, weights, layer, delta):
    """A copy of `weights` with the first bias of `layer` moved by `delta`: that output
    channel moves by `delta` at every position, so max|err| on its blob is |delta|."""
    import surgery

    net = surgery.load(weights)
    blobs = next(l for l in net.layer if l.name == layer).blobs
    blobs[1].data[0] += delta
    path = folder / f"{layer}-{delta:.3e}.caffemodel"
    surgery.save(net, path)
    return path


def _table(out):
    """{blob: its line} of verify's table, and the verdict line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("blob "))
    return {line.split()[0]: line for line in lines[start + 1:-1]}, lines[-1]


@pytest.mark.parametrize("times, status, code", [(2, "FAIL", 1), (0.5, "ok", 0)])
def test_an_error_just_over_the_tolerance_fails_and_just_under_passes(boundary, tmp_path,
                                                                      times, status, code):
    original, converted, weights, scale = boundary
    nudged = _nudged(tmp_path, weights, "side", times * TOL * scale["side"])
    rc, out, err = run_cli("verify", original, converted, "--weights", weights,
                           "--weights-converted", nudged, "--engine", "opencv", "--json")
    report = json.loads(out)
    [side] = report["blobs"]
    assert report["tolerance"] == TOL
    assert side["rel_error"] == pytest.approx(times * TOL, rel=1e-2)
    assert side["status"] == status and report["passed"] == (code == 0) and rc == code, err
    rc, out, _ = run_cli("verify", original, converted, "--weights", weights,
                         "--weights-converted", nudged, "--engine", "opencv")
    rows, verdict = _table(out)
    assert rows["side"].endswith(status) and rc == code
    assert verdict.startswith("PASS: 1/1" if code == 0 else "FAIL: 0/1")


@pytest.mark.parametrize("failing", ["side", "conv2"])     # the first line, the last line
def test_any_fail_line_makes_the_verdict_fail(boundary, tmp_path, failing):
    original, converted, weights, scale = boundary
    nudged = _nudged(tmp_path, weights, failing, 2 * TOL * scale[failing])
    rc, out, err = run_cli("verify", original, converted, "--weights", weights,
                           "--weights-converted", nudged, "--engine", "opencv",
                           "--blob", "conv2")
    rows, verdict = _table(out)
    assert list(rows) == ["side", "conv2"]
    assert [blob for blob, line in rows.items() if line.endswith("FAIL")] == [failing]
    assert [blob for blob, line in rows.items() if line.endswith("ok")] == \
        [b for b in rows if b != failing]
    assert verdict.startswith("FAIL: 1/2 exact blobs") and rc == 1, out + err
