"""Run a Caffe net forward: one small interface over OpenCV DNN and pycaffe.

`get_engine(name).run(prototxt, caffemodel, inputs, blobs)` returns the named
blobs as float32 arrays with Caffe's meaning of a blob name: the value after
every in-place layer (BatchNorm, Scale, ReLU) has rewritten it. OpenCV's
forward() takes layer names, so blobs are mapped to their last writer.
"""

import os
import re

import numpy as np

from . import layers
from .errors import SurgeryError
from .graph import build_graph
from .layers import rule_for
from .io.prototxt import load_prototxt

INSTALL_HINT = "pip install 'caffe-surgery[verify]'"


class Engine:
    """Forward a net; subclasses implement `_forward`."""

    name = "?"
    # Layer types this engine is known to compute differently from Caffe: rule class -> how.
    differs_from_caffe = {}

    # Layer settings this engine is known to miscompute: rule class -> check(layer) -> reason.
    miscomputes = {}

    def caveats(self, *nets):
        """One line per layer type, or layer, in `nets` that this engine does not compute
        as Caffe does: its numbers there say nothing about the conversion. Both tables
        are keyed by registry rule class, so every type a rule serves is covered."""
        types = {layer.type for net in nets for layer in net.layer}
        lines = [f"{self.name} computes {t} differently from Caffe: {how}"
                 for t in sorted(types)
                 for how in [self.differs_from_caffe.get(type(rule_for(t)))] if how]
        for net in nets:
            for layer in net.layer:
                check = self.miscomputes.get(type(rule_for(layer.type)))
                reason = check(layer) if check else None
                if reason and not any(f"'{layer.name}'" in line for line in lines):
                    lines.append(f"{self.name} miscomputes layer '{layer.name}': {reason}")
        return lines

    def run(self, prototxt_path, caffemodel_path, inputs, blobs):
        """{blob: ndarray} for each of `blobs`, after feeding `inputs` ({name: ndarray})."""
        prototxt_path, caffemodel_path = os.fspath(prototxt_path), os.fspath(caffemodel_path)
        for path in (prototxt_path, caffemodel_path):
            if not os.path.isfile(path):
                raise SurgeryError("no such file", file=path)
        graph = build_graph(load_prototxt(prototxt_path))
        inputs = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        for name in inputs:
            if name not in graph.inputs:
                raise SurgeryError(f"not an input of the net (inputs: {', '.join(graph.inputs)})",
                                   file=prototxt_path, blob=name)
        wanted = []
        for blob in dict.fromkeys(blobs):
            if blob in inputs:
                continue
            writer = graph.last_writer(blob)
            if writer is None:
                raise SurgeryError("no layer writes this blob", file=prototxt_path, blob=blob)
            wanted.append((blob, writer))
        results = self._forward(prototxt_path, caffemodel_path, inputs, wanted)
        results.update({b: inputs[b].copy() for b in blobs if b in inputs})
        return {b: results[b] for b in blobs}

    def _forward(self, prototxt_path, caffemodel_path, inputs, wanted):
        raise NotImplementedError


class OpenCVEngine(Engine):
    """cv2.dnn on the CPU in float32, single-threaded enough to be reproducible."""

    name = "opencv"
    differs_from_caffe = {
        layers.Axpy: "a*bottom[2] + bottom[1] where SENet's layer computes a*bottom[1] + "
                     "bottom[2] (both nets run the same variant, so a rewrite check still holds)",
    }
    miscomputes = {layers.Convolution: lambda layer: _depthwise_3x3_gap(layer)}

    def __init__(self, *, threads=2):
        try:
            import cv2
        except ImportError:
            raise SurgeryError("the opencv engine needs OpenCV (4.x; 5.0 dropped the Caffe "
                               f"importer): {INSTALL_HINT}") from None
        if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
            raise SurgeryError(f"this OpenCV ({cv2.__version__}) has no Caffe importer; "
                               f"install a 4.x build: {INSTALL_HINT}")
        self.cv2 = cv2
        cv2.setNumThreads(threads)
        logging = getattr(getattr(cv2, "utils", None), "logging", None)
        if logging is not None:   # errors come back as cv2.error; its log lines are noise
            logging.setLogLevel(logging.LOG_LEVEL_SILENT)

    def _forward(self, prototxt_path, caffemodel_path, inputs, wanted):
        cv2 = self.cv2
        try:
            net = cv2.dnn.readNetFromCaffe(prototxt_path, caffemodel_path)
        except cv2.error as exc:
            raise SurgeryError(f"OpenCV cannot load the net with these weights: {_cv_message(exc)}",
                               file=caffemodel_path) from None
        # Fusion writes Concat inputs straight into the Concat buffer (and folds ReLU
        # into convolutions), so the intermediate blobs verify reads would be wrong.
        net.enableFusion(False)
        if hasattr(net, "enableWinograd"):   # its 3x3 fast path adds ~1e-4 rounding error
            net.enableWinograd(False)
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        for name, array in inputs.items():
            net.setInput(array, name)
        known = set(net.getLayerNames())
        layer_names = [_opencv_layer(known, blob, writer) for blob, writer in wanted]
        if not layer_names:
            return {}
        try:
            outputs = net.forward(layer_names)
        except cv2.error as exc:
            raise SurgeryError(f"OpenCV forward pass failed: {_cv_message(exc)}",
                               file=prototxt_path) from None
        return {blob: np.array(out, dtype=np.float32) for (blob, _), out in zip(wanted, outputs)}


class CaffeEngine(Engine):
    """pycaffe (BVLC or a fork) in CPU mode."""

    name = "caffe"

    def __init__(self):
        try:
            import caffe
        except ImportError:
            raise SurgeryError("the caffe engine needs pycaffe importable as 'caffe' (build Caffe "
                               f"with its Python bindings), or use --engine opencv: {INSTALL_HINT}"
                               ) from None
        self.caffe = caffe
        caffe.set_mode_cpu()

    def _forward(self, prototxt_path, caffemodel_path, inputs, wanted):
        caffe = self.caffe
        net = caffe.Net(prototxt_path, caffe.TEST, weights=caffemodel_path)
        for name, array in inputs.items():
            net.blobs[name].reshape(*array.shape)
        net.reshape()
        for name, array in inputs.items():
            net.blobs[name].data[...] = array
        net.forward()
        return {blob: np.array(net.blobs[blob].data, dtype=np.float32) for blob, _ in wanted}


ENGINES = {"opencv": OpenCVEngine, "caffe": CaffeEngine}


def get_engine(name="opencv"):
    """An Engine by name; SurgeryError saying what to install when it is missing."""
    try:
        factory = ENGINES[name]
    except KeyError:
        raise SurgeryError(f"unknown engine '{name}'; choose one of {', '.join(ENGINES)}") from None
    return factory()


def _opencv_layer(known, blob, writer):
    """OpenCV's id for the layer that last writes `blob`.

    Its Caffe importer keeps in-place layers under their own names but files a
    layer that has weights under its top blob's name, so try both.
    """
    if writer.tops.index(blob) != 0:
        raise SurgeryError(f"OpenCV can only fetch a layer's first top (layer '{writer.name}'); "
                           "use --engine caffe", blob=blob)
    for candidate in (writer.name, blob):
        if candidate in known:
            return candidate
    raise SurgeryError(f"OpenCV has no layer for it (looked for '{writer.name}')", blob=blob)


_CV_HEAD = re.compile(r"error: \((-?\d+):([^)]*)\)\s*(.*?)\s*(?:in function '.*)?$")


def _cv_message(exc):
    """The meaning of a cv2.error on one line. Its first line is 'OpenCV(v) file:line:
    error: (code:kind) MESSAGE in function ...'; a failed CV_Check leaves MESSAGE empty and
    explains itself on '>' lines (what was expected, then each operand's value), so those
    come after it. The source path, version and C++ signature are left out."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    match = _CV_HEAD.search(lines[0])
    kind, head = (match.group(2).strip(), match.group(3).strip()) if match else ("", lines[0])
    if head and kind and kind != "Unspecified error":
        head = f"{kind}: {head}"      # e.g. 'Assertion failed: ngroups > 0 && ...'
    details = " ".join(line.lstrip("> ").strip() for line in lines[1:] if line.startswith(">"))
    if details:
        return f"{head}: {details}" if head else f"check failed {details}"
    return head or kind or lines[0]


def _depthwise_3x3_gap(layer):
    """OpenCV 4.x's depthwise 3x3 path is wrong with pad_w 1 and dilation_w > 1 (measured
    against a float64 reference; see tests/test_numeric_properties.py)."""
    cp = layer.convolution_param
    try:
        window = rule_for(layer.type).window(layer)
    except SurgeryError:
        return None
    if cp.group > 1 and cp.group == cp.num_output and window.kernel == (3, 3) \
            and window.pad.w == 1 and window.dilation.w > 1:
        return "depthwise 3x3 with pad_w 1 and dilation_w > 1 (an OpenCV bug)"
    return None
