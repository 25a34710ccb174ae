"""Run a Caffe net forward: one small interface over OpenCV DNN and pycaffe.

`get_engine(name).run(net, caffemodel, inputs, blobs)` returns the named blobs as
float32 arrays with Caffe's meaning of a blob name: the value after every in-place
layer (BatchNorm, Scale, ReLU) has rewritten it. OpenCV's forward() takes layer names,
so blobs are mapped to their last writer. `net` is a prototxt path, or a NetParameter
(a net prepared for the engine, engines/prepare.py), which is written to a temporary
folder for the engine to read.

The caffe engine runs fork layers as Python layers (engines/pylayers/forklayers.py):
their folder goes on the pycaffe child's PYTHONPATH.
"""

import json
import os
import re
import subprocess
import tempfile
from typing import NamedTuple

import numpy as np

from .. import layers
from ..errors import SurgeryError
from ..analysis.graph import build_graph
from ..layers import rule_for
from ..io.prototxt import save_prototxt
from ..io.netfile import load_net

INSTALL_HINT = "pip install 'caffe-surgery[verify]'"
# The folder of the fork layers' Python module (layers.FORK_MODULE), for pycaffe's path.
PYLAYERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pylayers")


class Engine:
    """Forward a net; subclasses implement `_forward`."""

    name = "?"
    # Layer settings this engine is known to miscompute: rule class -> check(layer) -> reason.
    # (Where a different form of the layer computes right, engines/prepare.py uses that
    # form instead: OpenCV's Axpy with its operands swapped.)
    miscomputes = {}

    def caveats(self, *nets):
        """One line per layer in `nets` that this engine does not compute as Caffe does:
        its numbers there say nothing about the conversion. The table is keyed by
        registry rule class, so every type a rule serves is covered."""
        lines = []
        for net in nets:
            for layer in net.layer:
                check = self.miscomputes.get(type(rule_for(layer.type)))
                reason = check(layer) if check else None
                if reason and not any(f"'{layer.name}'" in line for line in lines):
                    lines.append(f"{self.name} miscomputes layer '{layer.name}': {reason}")
        return lines

    def run(self, net, caffemodel_path, inputs, blobs):
        """{blob: ndarray} for each of `blobs`, after feeding `inputs` ({name: ndarray})."""
        return self.run_many([(net, caffemodel_path, inputs, blobs)])[0]

    def run_many(self, runs, *, labels=(), progress=None):
        """`run` for each (net, caffemodel, inputs, blobs) in `runs`, in one go where the
        engine gains from it (the caffe engine starts one child process for all).
        `labels`: what to call each NetParameter in messages (its source file);
        `progress(text)`, when given, is told which net runs (surgery/progress.py)."""
        with tempfile.TemporaryDirectory(prefix="caffe-surgery-nets-") as folder:
            plans, asked = [], []
            for i, (net, caffemodel_path, inputs, blobs) in enumerate(runs):
                label = labels[i] if i < len(labels) else None
                plans.append(self._plan(net, caffemodel_path, inputs, blobs, folder, i, label))
                asked.append(list(blobs))
            outputs = []
            answers = self._forward_many(plans, progress or (lambda text: None))
            for plan, blobs, results in zip(plans, asked, answers):
                results.update({b: plan.inputs[b].copy() for b in blobs if b in plan.inputs})
                outputs.append({b: results[b] for b in blobs})
            return outputs

    def _plan(self, net, caffemodel_path, inputs, blobs, folder, index, label=None):
        """The run, checked: a Plan(net, path, label, caffemodel, inputs as float32,
        [(blob, last writer)]). A path is loaded (the one loader); a NetParameter is
        written to `folder`."""
        caffemodel_path = os.fspath(caffemodel_path)
        if isinstance(net, (str, os.PathLike)):
            path = os.fspath(net)
            if not os.path.isfile(path):
                raise SurgeryError("no such file", file=path)
            net, label = load_net(path).net, path
        else:
            path = os.path.join(folder, f"net-{index}.prototxt")
            save_prototxt(net, path)
            label = label or "the prepared net"
        if not os.path.isfile(caffemodel_path):
            raise SurgeryError("no such file", file=caffemodel_path)
        graph = build_graph(net)
        inputs = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        for name in inputs:
            if name not in graph.inputs:
                raise SurgeryError(f"not an input of the net (inputs: {', '.join(graph.inputs)})",
                                   file=label, blob=name)
        wanted = []
        for blob in dict.fromkeys(blobs):
            if blob in inputs:
                continue
            writer = graph.last_writer(blob)
            if writer is None:
                raise SurgeryError("no layer writes this blob", file=label, blob=blob)
            wanted.append((blob, writer))
        return Plan(net, path, label, caffemodel_path, inputs, wanted)

    def _forward_many(self, plans, progress):
        answers = []
        for plan in plans:
            progress(f"running {plan.label} ({self.name})")
            answers.append(self._forward(plan))
        return answers

    def _forward(self, plan):
        raise NotImplementedError


class Plan(NamedTuple):
    """One net to run: the NetParameter, the file the engine reads, what to call it in
    messages, the weights, the inputs, and [(blob, the layer that last writes it)]."""

    net: object
    path: str
    label: str
    caffemodel: str
    inputs: dict
    wanted: list


class OpenCVEngine(Engine):
    """cv2.dnn on the CPU in float32, single-threaded enough to be reproducible."""

    name = "opencv"
    miscomputes = {
        layers.Convolution: lambda layer: _depthwise_3x3_gap(layer),
        layers.Proposal: lambda layer: (
            "it stands for py-faster-rcnn's Python proposal layer: its anchor centres sit "
            "half a pixel off py-faster-rcnn's (8 vs 7.5) and it has no min_size filter "
            "(both nets run the same variant)"),
    }

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

    def _forward(self, plan):
        cv2 = self.cv2
        inputs, wanted = plan.inputs, plan.wanted
        try:
            net = cv2.dnn.readNetFromCaffe(plan.path, plan.caffemodel)
        except cv2.error as exc:
            raise SurgeryError(f"OpenCV cannot load {plan.label} with these weights: "
                               f"{_cv_message(exc)}", file=plan.caffemodel) from None
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
                               file=plan.label) from None
        return {blob: np.array(out, dtype=np.float32) for (blob, _), out in zip(wanted, outputs)}


class CaffeUnreadable(SurgeryError):
    """Caffe cannot build the net at all (a layer type or a field it lacks), as opposed to
    a net it builds but refuses or computes otherwise; `--engine auto` falls back on it."""

    def __init__(self, reason):
        super().__init__(f"{reason}; use --engine opencv")
        self.reason = reason


class CaffeEngine(Engine):
    """pycaffe (BVLC or a fork) in CPU mode: in this process when `import caffe` works,
    otherwise in a child process under the interpreter pycaffe was built for
    (`python=`, else $CAFFE_PYTHON; $CAFFE_PYTHONPATH is added to its PYTHONPATH).
    Arrays go to the child and back as .npy files in a temporary folder."""

    name = "caffe"

    def __init__(self, *, python=None):
        self.caffe = None
        self.python = None
        if python is None:
            self.caffe = _import_caffe()
            if self.caffe is None:
                python = os.environ.get("CAFFE_PYTHON") or None
                if python is None:
                    raise SurgeryError(
                        "the caffe engine needs pycaffe: 'import caffe' fails here and neither "
                        "--caffe-python nor $CAFFE_PYTHON names the interpreter it was built "
                        "for (tools/build_caffe.sh builds BVLC Caffe); or use --engine opencv")
                self.python = _interpreter(python, "$CAFFE_PYTHON")
        else:
            self.python = _interpreter(python, "--caffe-python")
        if self.caffe is not None:
            import sys

            from . import caffe_child

            self.caffe.set_mode_cpu()
            self._child = caffe_child
            if PYLAYERS not in sys.path:
                sys.path.append(PYLAYERS)

    @property
    def where(self):
        return "in-process" if self.python is None else f"{self.python}, child process"

    def _forward_many(self, plans, progress):
        progress(f"running {', '.join(plan.label for plan in plans)} (caffe, {self.where})")
        with tempfile.TemporaryDirectory(prefix="caffe-surgery-nets-") as folder:
            jobs = []
            for i, plan in enumerate(plans):
                path = _declaring(plan, os.path.join(folder, f"{i}.prototxt"))
                # a refusal names the user's own file by line, a copy made for the run by layer
                label = None if path == os.path.abspath(plan.label) else plan.label
                jobs.append({"prototxt": path, "label": label,
                             "weights": os.path.abspath(plan.caffemodel), "inputs": plan.inputs,
                             "blobs": [blob for blob, _ in plan.wanted]})
            return [{blob: answer["blobs"][blob] for blob, _ in plan.wanted}
                    for plan, answer in zip(plans, self._jobs(jobs))]

    def blob_shapes(self, prototxt_path, caffemodel_path=None):
        """{blob: shape} of every blob of the net as Caffe builds it (with the weights
        loaded when given, so a refusal shows as Caffe's SurgeryError)."""
        return self.blob_shapes_many([(prototxt_path, caffemodel_path)], unreadable="raise")[0]

    def blob_shapes_many(self, nets, *, unreadable="return"):
        """blob_shapes for each (prototxt, caffemodel or None) in one go; a net Caffe
        cannot build gives its CaffeUnreadable (unless unreadable="raise")."""
        jobs = [{"prototxt": os.path.abspath(proto), "inputs": {}, "blobs": [],
                 "weights": os.path.abspath(model) if model else None} for proto, model in nets]
        return [answer if isinstance(answer, CaffeUnreadable)
                else {blob: tuple(dims) for blob, dims in answer["shapes"].items()}
                for answer in self._jobs(jobs, unreadable=unreadable)]

    def _jobs(self, jobs, *, unreadable="raise"):
        """Run jobs (inputs as arrays) in pycaffe; answers with arrays loaded. A net Caffe
        cannot build raises CaffeUnreadable, or with unreadable="return" is answered by it."""
        with tempfile.TemporaryDirectory(prefix="caffe-surgery-caffe-") as folder:
            for i, job in enumerate(jobs):
                files = {}
                for k, (name, array) in enumerate(job["inputs"].items()):
                    files[name] = os.path.join(folder, f"in-{i}-{k}.npy")
                    np.save(files[name], np.ascontiguousarray(array, dtype=np.float32))
                job["inputs"] = files
            if self.python is None:
                answers = self._child.run_jobs(self.caffe, jobs, folder)
            else:
                answers = self._run_child(jobs, folder)
            for i, answer in enumerate(answers):
                if "unreadable" in answer:
                    answers[i] = CaffeUnreadable(f"Caffe cannot read {answer['unreadable']}")
                    if unreadable == "raise":
                        raise answers[i]
                else:
                    answer["blobs"] = {b: np.load(p) for b, p in answer["blobs"].items()}
            return answers

    def _run_child(self, jobs, folder):
        with open(os.path.join(folder, "request.json"), "w", encoding="utf-8") as handle:
            json.dump({"jobs": jobs}, handle)
        env = dict(os.environ)
        env.setdefault("GLOG_minloglevel", "2")
        extra = os.environ.get("CAFFE_PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH"), PYLAYERS)
                                            if p)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "caffe_child.py")
        try:
            proc = subprocess.run([self.python, script, folder], cwd=folder, env=env,
                                  capture_output=True, text=True, errors="replace")
        except OSError as exc:
            raise SurgeryError(f"cannot run the Caffe interpreter {self.python}: "
                               f"{exc.strerror or exc}") from None
        result = os.path.join(folder, "result.json")
        if proc.returncode != 0 or not os.path.isfile(result):
            raise SurgeryError(f"Caffe failed: {_caffe_message(proc.stderr, proc.returncode)}")
        with open(result, encoding="utf-8") as handle:
            answer = json.load(handle)
        if "error" in answer:
            raise SurgeryError(f"the caffe engine cannot start: {answer['error']}")
        return answer["results"]


def _declaring(plan, copy_path):
    """A prototxt that declares the shapes of the plan's inputs: the plan's file itself
    when it does, else a copy at `copy_path` with its declarations changed. Caffe builds
    the net, and loads its weights, at the declared sizes before any input is fed; a
    size-bound layer (InnerProduct on a map) would be refused at another size than the
    weights were made for."""
    net = type(plan.net)()
    net.CopyFrom(plan.net)
    inputs = plan.inputs
    changed = False
    for layer in net.layer:
        if isinstance(rule_for(layer.type), layers.Input):
            for i, top in enumerate(layer.top):
                shapes = layer.input_param.shape
                if top in inputs and (i >= len(shapes) or
                                      tuple(shapes[i].dim) != inputs[top].shape):
                    while len(shapes) <= i:
                        shapes.add()
                    del shapes[i].dim[:]
                    shapes[i].dim.extend(inputs[top].shape)
                    changed = True
    if list(net.input) and any(name in inputs for name in net.input):
        old = [tuple(s.dim) for s in net.input_shape] if len(net.input_shape) else \
            [tuple(net.input_dim[4 * i:4 * i + 4]) for i in range(len(net.input))]
        new = [inputs[name].shape if name in inputs else old[i] if i < len(old) else ()
               for i, name in enumerate(net.input)]
        if new != old:
            del net.input_dim[:]
            del net.input_shape[:]
            for shape in new:
                net.input_shape.add().dim.extend(shape)
            changed = True
    if not changed:
        return os.path.abspath(plan.path)
    save_prototxt(net, copy_path)
    return copy_path


def _import_caffe():
    """The caffe module when pycaffe imports in this interpreter, else None."""
    os.environ.setdefault("GLOG_minloglevel", "2")   # Caffe's INFO/WARNING logs, as in the child
    try:
        import caffe
    except Exception:    # ImportError, or a protobuf clash inside pycaffe's caffe_pb2
        return None
    return caffe


def _interpreter(path, where):
    """The path of an executable file, or a SurgeryError naming where it came from."""
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise SurgeryError(f"{where} {path} is not an executable file (the Python that "
                           "pycaffe was built for, e.g. /usr/bin/python3)")
    return path


# glog: "F20261203 06:30:00.123456 12345 net.cpp:752] Check failed: ..." (older glogs: F1203)
_GLOG = re.compile(r"^([EF])\d{4,8} [\d:.]+\s+\d+ [^\]]+\] (.*)$")
_PROTOBUF = re.compile(r"^\[libprotobuf (?:ERROR|FATAL) [^\]]*\] (.*)$")


def _caffe_message(stderr, status):
    """Caffe's reason for failing, on one line: a protobuf parse error first (Caffe then
    only adds 'Failed to parse'), else glog's fatal line, else its last error line, else
    the last line of a Python traceback."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    found = {"proto": None, "F": None, "E": None}
    for line in lines:
        match = _PROTOBUF.match(line)
        if match and found["proto"] is None:
            found["proto"] = match.group(1)
        match = _GLOG.match(line)
        if match:
            found[match.group(1)] = match.group(2)
    why = found["proto"] or found["F"] or found["E"]
    if why is None:
        tail = [line for line in lines if not line.startswith(("@", "***"))]
        why = tail[-1] if tail else None
    if why is None:
        why = f"exit status {status}" if status >= 0 else f"killed by signal {-status}"
    return " ".join(why.split())


ENGINES = {"opencv": OpenCVEngine, "caffe": CaffeEngine}
CHOICES = ("auto", *ENGINES)


def get_engine(name="opencv", *, caffe_python=None):
    """An Engine by name; SurgeryError saying what to install when it is missing.
    `caffe_python`: the interpreter pycaffe runs under (caffe engine only)."""
    try:
        factory = ENGINES[name]
    except KeyError:
        raise SurgeryError(f"unknown engine '{name}'; choose one of {', '.join(ENGINES)}") from None
    return factory(python=caffe_python) if factory is CaffeEngine else factory()


def caffe_available(caffe_python=None):
    """Whether the caffe engine can be made: an interpreter is named, or $CAFFE_PYTHON is
    set (then it is used, and checked, even by auto), or pycaffe imports here."""
    return bool(caffe_python or os.environ.get("CAFFE_PYTHON")) or _import_caffe() is not None


def bvlc_gaps(*nets):
    """The layer types in `nets` that BVLC Caffe has no layer for (the registry's
    `fork_types`), each with its first layer, as text ("PriorBox (layer 'mbox_prior')");
    '' when there are none. Asked of nets prepared for Caffe, where the fork layers
    caffe-surgery can run are Python layers already."""
    found = {}
    for net in nets:
        for layer in net.layer:
            if layer.type in rule_for(layer.type).fork_types:
                found.setdefault(layer.type, layer.name)
    return ", ".join(f"{t} (layer '{n}')" for t, n in found.items())


def choose_engine(name, nets, *, caffe_python=None):
    """(engine, note) for `verify --engine NAME` on `nets` (prepared for Caffe). caffe
    refuses nets with layer types neither BVLC Caffe nor a Python layer of ours runs,
    naming them; auto takes Caffe when it is available and can run the nets, else OpenCV,
    and the note says why it had to fall back."""
    if name not in CHOICES:
        raise SurgeryError(f"unknown engine '{name}'; choose one of {', '.join(CHOICES)}")
    gaps = bvlc_gaps(*nets) if name != "opencv" else ""
    if name == "caffe" and gaps:
        raise SurgeryError(f"BVLC Caffe has no layer type {gaps}; use --engine opencv")
    if name != "auto":
        return get_engine(name, caffe_python=caffe_python), ""
    if caffe_available(caffe_python):
        if not gaps:
            return get_engine("caffe", caffe_python=caffe_python), ""
        return get_engine("opencv"), f"auto: BVLC Caffe has no layer type {gaps}"
    return get_engine("opencv"), ""


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
