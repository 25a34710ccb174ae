"""Our shapes against a second Caffe implementation: OpenCV DNN's Caffe importer.

`analyse()` claims Caffe's own output sizes (CEIL pooling with the padded-window rule,
dilation, Crop offsets, Deconvolution, the fork's `ceil_mode`...). OpenCV re-implements
those rules independently, so every blob shape we infer is compared with the shape
OpenCV reports for the layer that last writes the blob (`Net.getLayersShapes`, which
sizes the net without running it; one test below checks that a real forward pass gives
the same shapes).

Nets checked:
- every corpus deploy net (MANIFEST kind `deploy`, or `deploy` in the file name) whose
  input size is declared, at the declared size and/or at small odd non-square sizes
  (`SIZES`; a net missing from that table is checked at its declared size);
- every `surgery.models` net at width 1/8, with its OS-16 and OS-8 conversions
  (`dilate(head="cut", pooling="cover")`), at the declared 224 and at 209x225.

cv2.dnn needs weights, written by `init_weights` for the shapes at each size (one file is
reused across sizes when the weight shapes do not change). Nets OpenCV cannot load are
skipped with OpenCV's own error as the reason; the expected refusals are listed in
`OPENCV_REFUSES` and any other OpenCV error fails the test.

Slow by design (about 40 s on 2 cores): the fully convolutional FCN-8s and Dilation-8
alone need ~275M random weights; the others are checked at sizes that keep their fully
connected layers small.
"""

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from surgery.analysis.analyse import analyse
from surgery.errors import SurgeryError
from surgery.weights.initweights import init_weights
from surgery.io.prototxt import parse_prototxt, save_prototxt
from surgery.models import MODELS, build
from surgery.transform.dilate import dilate

cv2 = pytest.importorskip("cv2")

pytestmark = pytest.mark.slow

from conftest import corpus_manifest, corpus_net

# Input sizes (H, W) per corpus file; "declared" is the file's own size. Odd non-square
# sizes leave partial CEIL windows and catch swapped axes. Nets whose fully connected
# weights grow with the input skip the declared size (AlexNet's fc6 alone is 38M at 227).
DECLARED = "declared"
SIZES = {
    "bvlc_alexnet/deploy.prototxt": ((67, 73),),
    "bvlc_reference_caffenet/deploy.prototxt": ((67, 73),),
    "bvlc_reference_rcnn_ilsvrc13/deploy.prototxt": ((69, 67),),
    "finetune_flickr_style/deploy.prototxt": ((67, 75),),
    "bvlc_googlenet/deploy.prototxt": (DECLARED, (225, 243)),
    "resnet_kaiming/ResNet-50-deploy.prototxt": (DECLARED, (197, 215)),
    "resnet_kaiming/ResNet-101-deploy.prototxt": (DECLARED, (215, 201)),
    "resnet_kaiming/ResNet-152-deploy.prototxt": (DECLARED, (199, 223)),
    "squeezenet/SqueezeNet_v1.0_deploy.prototxt": (DECLARED, (97, 113), (116, 117)),
    "densenet/DenseNet_121.prototxt": (DECLARED, (97, 113)),
    "senet/SE-ResNet-50.prototxt": (DECLARED, (201, 217)),
    "shufflenet/shufflenet_1x_g3_deploy.prototxt": (DECLARED,),
    "pspnet/pspnet101_VOC2012_473.prototxt": (DECLARED,),
    "fcn/voc-fcn8s_deploy.prototxt": (DECLARED, (97, 113)),
    "dilation/dilation8_pascal_voc_deploy.prototxt": (DECLARED, (901, 917)),
    "faster_rcnn/ZF_test.prototxt": (DECLARED,),
    "soeaver_cls/deploy_inception-v3.prototxt": (DECLARED, (261, 293)),
    "soeaver_cls/deploy_resnext50-32x4d.prototxt": (DECLARED, (97, 113)),
    "soeaver_cls/deploy_resnet101-v2.prototxt": (DECLARED, (97, 113)),
    "bvlc_examples/bvlc_caffenet_full_conv.prototxt": (DECLARED, (411, 429)),
    "bvlc_examples/lenet.prototxt": (DECLARED, (29, 35)),
    "vgg/VGG_ILSVRC_16_layers_deploy.prototxt": ((33, 47),),
    "ssd/SSD_300x300_deploy.prototxt": (DECLARED, (261, 293)),
    "mobilenet/mobilenet_deploy.prototxt": (DECLARED, (97, 113)),
    "enet/enet_deploy_final.prototxt": (DECLARED,),
}

# Corpus nets OpenCV 4.x refuses, with a piece of the error it gives. Neither is a shape
# question: OpenCV's Caffe schema lacks the forks' `bn_param` (its importer then expects a
# name/value pair and stops), and it has no layer for Faster R-CNN's Python proposal layer.
OPENCV_REFUSES = {
    "pspnet/pspnet101_VOC2012_473.prototxt": "UnknownField should have at least 2 items",
    "enet/enet_deploy_final.prototxt": "UnknownField should have at least 2 items",
    # fc6's input comes from the Python proposal layer, so init-weights cannot size it either.
    "faster_rcnn/ZF_test.prototxt": "Can't create layer \"proposal\" of type \"Python\"",
}

MODEL_WIDTH = 0.125
MODEL_OPTIONS = {"vgg16": {"fc_width": 64}}   # keep the fc layers small; shapes unaffected
MODEL_SIZES = (DECLARED, (209, 225))   # >= 193 keeps res5c >= 7 for the 7x7 pool5


@lru_cache(maxsize=None)
def _deploy_files():
    """Manifest paths of deploy nets, in manifest order (empty without the corpus)."""
    return tuple(r["local_path"] for r in corpus_manifest()
                 if r["kind"] == "deploy" or "deploy" in Path(r["local_path"]).name)


def _short(path):
    """A short case id: the folder, or the file stem when the folder holds several nets."""
    folder, stem = Path(path).parent.name, Path(path).stem
    siblings = [p for p in list(_deploy_files()) + list(SIZES) if Path(p).parent.name == folder]
    if len(set(siblings)) <= 1:
        return folder
    for word in ("-deploy", "_deploy", "deploy_"):
        stem = stem.replace(word, "")
    return stem


def _size_id(size):
    return size if size == DECLARED else f"{size[0]}x{size[1]}"


def _corpus_params():
    files = list(_deploy_files()) or list(SIZES)   # without the corpus the cases skip
    return [pytest.param(path, size, id=f"{_short(path)}-{_size_id(size)}")
            for path in files for size in SIZES.get(path, (DECLARED,))]


def _model_params():
    return [pytest.param(name, stride, size,
                         id=f"{name}{'' if stride is None else f'-os{stride}'}-{_size_id(size)}")
            for name in MODELS for stride in (None, 16, 8) for size in MODEL_SIZES]


# ---------------------------------------------------------------------------
# comparing one net


def _input_shapes(net, size):
    """{input: shape} at the declared size, or with (H, W) replaced; None if undeclared."""
    declared = analyse(net)
    shapes = {blob: declared.shapes.get(blob) for blob in declared.graph.inputs}
    if any(shape is None or None in shape for shape in shapes.values()):
        return None
    if size == DECLARED:
        return shapes
    return {blob: shape[:2] + tuple(size) if len(shape) == 4 else shape
            for blob, shape in shapes.items()}


def _opencv_error(exc):
    """An OpenCV error in one line: its 'error:' line and the '>' expectation lines."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    head = next((line for line in lines if "error:" in line), lines[0] if lines else "?")
    return " ".join([head[head.index("error:"):] if "error:" in head else head]
                    + [line.lstrip("> ") for line in lines if line.startswith(">")])


def _reported(cv_net, analysis, shapes):
    """{OpenCV layer name: [output shapes]} for the net fed `shapes` (no forward pass)."""
    order = [list(shapes[blob]) for blob in analysis.graph.inputs]
    ids, _, outs = cv_net.getLayersShapes(order)
    return {cv_net.getLayer(int(i)).name: [tuple(int(d) for d in s) for s in o]
            for i, o in zip(ids, outs)}


def _opencv_shape(reported, graph, blob):
    """OpenCV's shape for `blob`: the matching output of its last writer. OpenCV keeps a
    Caffe layer under its own name, or (for some layers with weights) under its top's."""
    writer = graph.last_writer(blob)
    for candidate in (writer.name, blob):
        outputs = reported.get(candidate)
        if outputs is not None:
            index = writer.tops.index(blob)
            return outputs[index] if index < len(outputs) else None
    raise AssertionError(f"OpenCV has no layer for blob '{blob}' (writer '{writer.name}')")


def _mismatches(analysis, reported):
    """[(blob, ours, OpenCV's)] for every fully known, non-input blob that differs; and how
    many blobs were compared."""
    bad, compared = [], 0
    for blob, ours in analysis.shapes.items():
        if ours is None or None in ours or blob in analysis.graph.inputs:
            continue
        theirs = _opencv_shape(reported, analysis.graph, blob)
        compared += 1
        if theirs != tuple(ours):
            bad.append((blob, tuple(ours), theirs))
    return bad, compared


class _Loaded:
    """One OpenCV net per (case, weight shapes): weights are drawn once and reused for
    every size that needs the same weight shapes. Only the latest net is kept, since the
    cases of one net run together and FCN-8s's weights alone are 0.5 GB."""

    def __init__(self, root):
        self.root, self.key, self.value = root, None, None

    def get(self, tag, net, analysis, shapes):
        key = (tag, repr(sorted(analysis.param_shapes.items())))
        if key != self.key:
            self.clear()
            prototxt, weights = self.root / f"{tag}.prototxt", self.root / f"{tag}.caffemodel"
            save_prototxt(net, prototxt)      # upgraded: OpenCV reads it as current Caffe text
            self.key = key
            try:
                cv2.dnn.readNetFromCaffe(str(prototxt))   # a text OpenCV refuses needs no weights
                init_weights(net, weights, input_shapes=shapes)
                self.value = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
            except (cv2.error, SurgeryError) as exc:
                self.value = exc
        return self.value

    def clear(self):
        if self.key is not None:
            (self.root / f"{self.key[0]}.caffemodel").unlink(missing_ok=True)
        self.key = self.value = None


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    cache = _Loaded(tmp_path_factory.mktemp("shapes-opencv"))
    yield cache
    cache.clear()


def _check(loaded, tag, net, shapes, *, refused=None):
    """Assert OpenCV reports our shape for every blob we know at input `shapes`.
    `refused`: None when OpenCV must load the net, else a piece of the OpenCV error that
    turns a refusal into a skip ("" for any error)."""
    analysis = analyse(net, input_shapes=shapes)
    cv_net = loaded.get(tag, net, analysis, shapes)
    if isinstance(cv_net, SurgeryError):     # weights cannot be sized: nothing for OpenCV to run
        if refused is None:
            pytest.fail(f"cannot write weights for {tag}: {cv_net}")
        pytest.skip(f"cannot write weights for {tag}: {cv_net}")
    try:
        if isinstance(cv_net, cv2.error):
            raise cv_net
        reported = _reported(cv_net, analysis, shapes)
    except cv2.error as exc:
        message = _opencv_error(exc)
        if refused is None or refused not in message:
            pytest.fail(f"OpenCV refused {tag}, which it is expected to load"
                        f"{f' only with {refused!r}' if refused else ''}: {message}")
        pytest.skip(f"OpenCV cannot load {tag}: {message}")
    bad, compared = _mismatches(analysis, reported)
    assert compared, f"no blob of {tag} had a known shape to compare"
    assert not bad, (f"{len(bad)} of {compared} blob shapes differ from OpenCV's "
                     "(blob, ours, OpenCV's): " + "; ".join(map(str, bad[:8])))


# ---------------------------------------------------------------------------
# the nets


@pytest.mark.parametrize("path, size", _corpus_params())
def test_corpus_deploy_shapes_match_opencv(loaded, path, size):
    net = corpus_net(path)
    shapes = _input_shapes(net, size)
    if shapes is None:
        pytest.skip(f"{path} does not declare its input size")
    if size != DECLARED:
        declared = analyse(net)
        at_size = analyse(net, input_shapes=shapes)   # a SurgeryError here: size invalid
        assert set(at_size.stopped) <= set(declared.stopped), \
            f"{size} is not a valid input for {path}: {at_size.stopped}"
    refused = OPENCV_REFUSES.get(path) if path in SIZES else ""
    _check(loaded, _short(path), net, shapes, refused=refused)


def test_size_table_names_manifest_files():
    """A renamed corpus file must not silently drop out of the comparison."""
    files = _deploy_files()
    if not files:
        pytest.skip("corpus absent")
    assert set(SIZES) <= set(files), sorted(set(SIZES) - set(files))


@pytest.mark.parametrize("name, stride, size", _model_params())
def test_model_shapes_match_opencv(loaded, name, stride, size):
    net = build(name, width=MODEL_WIDTH, **MODEL_OPTIONS.get(name, {}))
    if stride is not None:
        net, _ = dilate(net, output_stride=stride, head="cut", pooling="cover")
    tag = name if stride is None else f"{name}-os{stride}"
    _check(loaded, tag, net, _input_shapes(net, size))


def test_forward_gives_the_reported_shapes(tmp_path):
    """getLayersShapes is the oracle above; a real forward pass (fusion off, as in
    engine.py) must produce the same shapes, and ours, for every layer."""
    net = build("googlenet-mini", width=MODEL_WIDTH)
    shapes = {"data": (1, 3, 97, 113)}
    analysis = analyse(net, input_shapes=shapes)
    prototxt, weights = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    save_prototxt(net, prototxt)
    init_weights(net, weights, input_shapes=shapes)
    cv_net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    cv_net.enableFusion(False)
    cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    reported = _reported(cv_net, analysis, shapes)
    cv_net.setInput(np.zeros(shapes["data"], dtype=np.float32), "data")
    names = [n for n in cv_net.getLayerNames() if len(reported[n]) == 1]
    ran = {name: [tuple(out.shape)] for name, out in zip(names, cv_net.forward(names))}
    assert ran == {name: reported[name] for name in names}
    bad, compared = _mismatches(analysis, ran)
    assert compared > 40 and not bad, bad


# ---------------------------------------------------------------------------
# the comparison can fail: sizes where Caffe's rounding rule decides the answer


TINY = """name: "tiny"
layer {{ name: "in" type: "Input" top: "data"
        input_param {{ shape {{ dim: 1 dim: 1 dim: {h} dim: {w} }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param {{ num_output: 2 kernel_size: 1 }} }}
layer {{ name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param {{ pool: MAX kernel_size: {k} stride: {s} pad: {p} {extra} }} }}
"""


def _floor(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def _ceil_unclipped(n, k, s, p):
    return -(-(n + 2 * p - k) // s) + 1


@pytest.mark.parametrize("h, w, k, s, p, extra, wrong", [
    # Caffe's default CEIL: a partial last window counts (6 -> 3; FLOOR would say 2).
    pytest.param(6, 9, 3, 2, 0, "", _floor, id="ceil"),
    pytest.param(6, 6, 3, 2, 1, "", _floor, id="ceil-pad"),
    # CEIL with padding: a last window starting in the padding is dropped (5 -> 3, not 4).
    pytest.param(5, 7, 2, 2, 1, "", _ceil_unclipped, id="ceil-pad-clip"),
    # The fork field ceil_mode: false floors (OpenCV's schema has it too).
    pytest.param(6, 9, 3, 2, 0, "ceil_mode: false", _ceil_unclipped, id="ceil_mode-false"),
    # BVLC's round_mode: FLOOR is not here. OpenCV's Caffe schema has no round_mode (it
    # took the fork's ceil_mode instead): any unknown field inside pooling_param, even
    # 'round_mode: CEIL', makes OpenCV lose the whole pooling_param, and the layer fails
    # with "kernel[i] > 0 in function 'getKernelSize'" (OpenCV's gap, not ours; it was a
    # strict xfail here). Real Caffe checks these sizes, FLOOR included:
    # tests/test_caffe_engine.py::test_inspect_shapes_are_caffes_for_the_shipped_models_and_floor_pooling.
])
def test_rounding_sizes_are_discriminating(tmp_path, h, w, k, s, p, extra, wrong):
    net = parse_prototxt(TINY.format(h=h, w=w, k=k, s=s, p=p, extra=extra))
    ours = analyse(net).shapes["pool"]
    prototxt, weights = tmp_path / "tiny.prototxt", tmp_path / "tiny.caffemodel"
    save_prototxt(net, prototxt)
    init_weights(net, weights)
    cv_net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    analysis = analyse(net)
    theirs = _opencv_shape(_reported(cv_net, analysis, {"data": (1, 1, h, w)}),
                           analysis.graph, "pool")
    assert tuple(ours) == theirs
    # The size is one where the other rounding rule gives a different height.
    assert ours[2] != wrong(h, k, s, p)
